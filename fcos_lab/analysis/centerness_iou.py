"""Detection score against localization quality, before and after center-ness (Appendix 8, Figure 7).

Figure 7 plots every detected box as a point ``(score, IoU with its ground-truth box)``: on the left the
score is the classification score alone, on the right the classification score times the predicted
center-ness (Section 3.3). Low-quality boxes with high scores lie under the line ``y = x``; center-ness
should push them to the left. :func:`score_vs_iou` gives the arrays; :func:`summarize` the numbers a
table can hold (the paper gives none): the share of boxes under ``y = x`` and the rank correlation of
score and IoU, before and after.

A detection's IoU is with the best-matching ground-truth box of its image and class (any class with
``class_agnostic``); crowd boxes are left out, and a detection on an image without such a box has IoU 0.

Glossary: D detections, N images, M ground-truth boxes per image (padded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class ScoreIoU:
    """Per detection, ``[D]`` each.

    Attributes:
        cls_score: classification probability alone (Figure 7, left).
        score: classification x center-ness, the ranking score (Figure 7, right).
        centerness: the center-ness used.
        iou: IoU with the best-matching ground-truth box.
        level: FPN level number (3 for P3).
        image_id: COCO image id.
    """

    cls_score: np.ndarray
    score: np.ndarray
    centerness: np.ndarray
    iou: np.ndarray
    level: np.ndarray
    image_id: np.ndarray

    def __len__(self) -> int:
        return len(self.iou)


def _pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``a`` ``[D, 4]`` with each of ``b`` ``[D, M, 4]`` (xyxy): ``[D, M]``."""
    lt = torch.maximum(a[:, None, :2], b[..., :2])
    rb = torch.minimum(a[:, None, 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)[:, None]
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def score_vs_iou(gt: str | Path | Any, detections: Sequence[dict[str, Any]], *, class_agnostic: bool = False,
                 chunk: int = 65536) -> ScoreIoU:
    """Figure 7's points: each detection's scores before and after center-ness and its IoU.

    Args:
        gt: a COCO annotation file or a pycocotools-style COCO object.
        detections: COCO records (``bbox`` xywh absolute pixels, ``score``, ``cls_score``, ``centerness``,
            optional ``level``), as :func:`fcos_lab.predict.predict_dataset` writes them.
        class_agnostic: match boxes of any class (True) or of the detection's class only (False).
        chunk: detections per batched IoU computation (bounds memory at ``chunk x M``).
    """
    from fcos_lab.data.coco_annotations import load_coco_annotations

    coco = load_coco_annotations(gt) if isinstance(gt, (str, Path)) else gt
    image_ids = sorted(coco.imgs)
    row_of = {image_id: i for i, image_id in enumerate(image_ids)}
    per_image = [[a for a in coco.imgToAnns.get(i, []) if not a.get("iscrowd", 0)] for i in image_ids]
    num_boxes = max((len(anns) for anns in per_image), default=0)
    gt_boxes = torch.zeros((len(image_ids), max(num_boxes, 1), 4), dtype=torch.float64)
    gt_category = torch.full((len(image_ids), max(num_boxes, 1)), -1, dtype=torch.int64)
    for row, anns in enumerate(per_image):
        if anns:
            xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64)
            gt_boxes[row, : len(anns)] = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
            gt_category[row, : len(anns)] = torch.tensor([a["category_id"] for a in anns])

    def column(key: str, default: float = 0.0) -> np.ndarray:
        return np.array([float(d.get(key, default)) for d in detections], dtype=np.float64)

    boxes = torch.tensor([d["bbox"] for d in detections], dtype=torch.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    rows = torch.tensor([row_of[d["image_id"]] for d in detections], dtype=torch.int64)
    category = torch.tensor([d["category_id"] for d in detections], dtype=torch.int64)
    ious = []
    for start in range(0, len(detections), chunk):
        part = slice(start, start + chunk)
        candidates = gt_boxes[rows[part]]  # [D', M, 4]
        usable = gt_category[rows[part]] >= 0
        if not class_agnostic:
            usable &= gt_category[rows[part]] == category[part, None]
        iou = torch.where(usable, _pairwise_iou(boxes[part], candidates), torch.zeros(()))
        ious.append(iou.amax(dim=1) if iou.shape[1] else torch.zeros(iou.shape[0]))
    iou = torch.cat(ious).numpy() if ious else np.zeros(0)
    cls_score = column("cls_score", np.nan)
    centerness = column("centerness", 1.0)
    return ScoreIoU(
        cls_score=cls_score,
        score=cls_score * centerness,
        centerness=centerness,
        iou=iou,
        level=column("level", 0).astype(np.int64),
        image_id=np.array([d["image_id"] for d in detections], dtype=np.int64),
    )


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (ties broken by order: scores are continuous)."""
    if len(x) < 2:
        return float("nan")
    rx, ry = np.argsort(np.argsort(x)).astype(float), np.argsort(np.argsort(y)).astype(float)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def summarize(points: ScoreIoU, *, high_score: float = 0.5, low_iou: float = 0.5) -> dict[str, float]:
    """The numbers behind Figure 7, before (classification score) and after (x center-ness).

    Returns:
        ``below_diagonal_before`` / ``_after``: percent of detections under ``y = x`` (score > IoU);
        ``high_score_low_iou_before`` / ``_after``: percent of detections with score >= ``high_score`` and
        IoU < ``low_iou`` (the false positives NMS cannot remove); ``spearman_before`` / ``_after``: rank
        correlation of score and IoU (center-ness should raise it); ``detections``.
    """
    out: dict[str, float] = {"detections": float(len(points))}
    total = max(len(points), 1)
    for name, score in (("before", points.cls_score), ("after", points.score)):
        out[f"below_diagonal_{name}"] = 100.0 * float((score > points.iou).sum()) / total if len(points) else float("nan")
        bad = (score >= high_score) & (points.iou < low_iou)
        out[f"high_score_low_iou_{name}"] = 100.0 * float(bad.sum()) / total if len(points) else float("nan")
        out[f"spearman_{name}"] = _spearman(score, points.iou)
    return out
