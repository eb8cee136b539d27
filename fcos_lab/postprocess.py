"""Inference post-processing (Section 3.1 "Inference", Section 3.3, Section 4 "Inference Details").

Per level, candidates with classification score above the threshold (0.05) are kept, the top 1000 by
``classification x center-ness`` are decoded by inverting Eq. (1), clipped to the image, and
class-aware NMS leaves at most 100 detections per image. Table 4's variants replace the learned
center-ness by none, by the center-ness of the predicted box, or by an oracle (ground-truth targets).

The whole batch is processed at once: top-k runs on ``[B, P_l * C]`` per level and a single NMS call
covers every image (boxes of different images are kept apart by the group offset), so there is no
Python loop over images in this module.

Shapes: B images, P locations, C classes, K detections of one image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from fcos_lab.boxes import centerness_from_ltrb, decode_ltrb
from fcos_lab.points import Locations


@dataclass(frozen=True)
class Detections:
    """Detections of one image.

    Attributes:
        boxes: ``[K, 4]`` xyxy in pixels of the image they refer to.
        scores: ``[K]`` ranking score (classification x center-ness, or its square root).
        labels: ``[K]`` contiguous class indices.
        levels: ``[K]`` FPN level number (3 for P3, ...).
        locations: ``[K, 2]`` (x, y) of the location that produced each box, input-image pixels.
        cls_scores: ``[K]`` classification probability alone.
        centerness: ``[K]`` the center-ness used (learned, from the box, oracle, or 1).
        location_index: ``[K]`` flat index into P (to look up assignments, e.g. ambiguity).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    levels: Tensor
    locations: Tensor
    cls_scores: Tensor
    centerness: Tensor
    location_index: Tensor

    def rescaled(self, from_size: tuple[int, int], to_size: tuple[int, int]) -> Detections:
        """Map boxes and locations from an image of ``from_size`` (h, w) to ``to_size`` (h, w).

        Ratios computed in float32 as torchvision's ``transform.postprocess`` does.
        """
        ratio_h = torch.tensor(to_size[0], dtype=torch.float32) / torch.tensor(from_size[0], dtype=torch.float32)
        ratio_w = torch.tensor(to_size[1], dtype=torch.float32) / torch.tensor(from_size[1], dtype=torch.float32)
        scale = torch.stack([ratio_w, ratio_h, ratio_w, ratio_h]).to(self.boxes.device)
        return Detections(
            boxes=self.boxes * scale,
            scores=self.scores,
            labels=self.labels,
            levels=self.levels,
            locations=self.locations * scale[:2],
            cls_scores=self.cls_scores,
            centerness=self.centerness,
            location_index=self.location_index,
        )

    def to(self, device: torch.device | str) -> Detections:
        return Detections(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def batched_nms_groups(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each group (image x class) of the whole batch, in one call.

    :func:`torchvision.ops.batched_nms` runs one NMS per group for large inputs, so the cost is the sum of
    the groups' quadratic costs, not the square of the batch's candidates. Float64 keeps the coordinate
    offsets it uses for small inputs exact.

    Returns:
        Indices of the kept boxes, sorted by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    return batched_nms(boxes.to(torch.float64), scores.to(torch.float64), groups, iou_threshold)


def postprocess(
    cls_logits: Tensor,
    box_regression: Tensor,
    centerness_logits: Tensor | None,
    locations: Locations,
    image_sizes: list[tuple[int, int]] | tuple[tuple[int, int], ...],
    *,
    score_thresh: float = 0.05,
    threshold_on: str = "cls",
    pre_nms_topk: int = 1000,
    nms_thresh: float = 0.6,
    max_detections: int = 100,
    centerness_mode: str = "learned",
    score_sqrt: bool = False,
    class_agnostic_nms: bool = False,
    oracle_centerness: Tensor | None = None,
) -> list[Detections]:
    """Turn dense predictions into detections for each image of the batch.

    Args:
        cls_logits: ``[B, P, C]`` classification logits.
        box_regression: ``[B, P, 4]`` predicted l, t, r, b in pixels.
        centerness_logits: ``[B, P]`` center-ness logits, or None when the model has no branch.
        locations: the location grid the predictions were made on.
        image_sizes: ``(h, w)`` of each image inside the padded batch; boxes are clipped to it.
        score_thresh: candidates need a score above this (Section 3.1: 0.05).
        threshold_on: ``"cls"`` thresholds the classification probability (paper, official code);
            ``"combined"`` thresholds the final score (torchvision).
        pre_nms_topk: candidates per level kept before NMS.
        nms_thresh: IoU threshold of the class-aware NMS.
        max_detections: detections kept per image.
        centerness_mode: ``"learned"`` (Section 3.3), ``"none"``, ``"from_box"`` (Table 4 "center-ness†",
            Eq. 3 on the predicted ltrb) or ``"oracle"`` (``oracle_centerness`` from the ground truth).
        score_sqrt: report ``sqrt(cls x ctr)`` (official code, torchvision) instead of the product.
        class_agnostic_nms: one NMS over all classes (proposals).
        oracle_centerness: ``[B, P]`` ground-truth center-ness targets for ``centerness_mode="oracle"``.

    Returns:
        One :class:`Detections` per image, in the coordinates of the (resized) input image.
    """
    num_images, _, num_classes = cls_logits.shape
    device = cls_logits.device
    cls_prob = cls_logits.float().sigmoid()
    box_regression = box_regression.float()
    if centerness_mode == "learned":
        if centerness_logits is None:
            raise ValueError("centerness_mode='learned' needs a model with a center-ness branch")
        centerness = centerness_logits.float().sigmoid()
    elif centerness_mode == "none":
        centerness = torch.ones(cls_prob.shape[:2], device=device)
    elif centerness_mode == "from_box":
        centerness = centerness_from_ltrb(box_regression)
    elif centerness_mode == "oracle":
        if oracle_centerness is None:
            raise ValueError("centerness_mode='oracle' needs oracle_centerness (ground-truth targets)")
        centerness = oracle_centerness.float()
    else:
        raise ValueError(f"unknown centerness_mode {centerness_mode!r}; valid: learned, none, from_box, oracle")

    scores = cls_prob * centerness[..., None]
    if score_sqrt:
        scores = scores.sqrt()
    gate = cls_prob if threshold_on == "cls" else scores
    ranked = torch.where(gate > score_thresh, scores, torch.full_like(scores, -1.0))

    # Top-k per level over [B, P_l * C]; the -1 entries mark locations below the threshold.
    top_scores, top_location, top_label = [], [], []
    start = 0
    for count in locations.num_per_level:
        level_scores = ranked[:, start : start + count].reshape(num_images, -1)
        k = min(pre_nms_topk, level_scores.shape[1])
        values, flat = level_scores.topk(k, dim=1)
        top_scores.append(values)
        top_location.append(start + torch.div(flat, num_classes, rounding_mode="floor"))
        top_label.append(flat % num_classes)
        start += count
    cand_scores = torch.cat(top_scores, dim=1)
    cand_location = torch.cat(top_location, dim=1)
    cand_label = torch.cat(top_label, dim=1)

    image_index, slot = (cand_scores > -1).nonzero(as_tuple=True)
    location_index = cand_location[image_index, slot]
    labels = cand_label[image_index, slot]
    det_scores = cand_scores[image_index, slot]
    points = locations.points[location_index]
    boxes = decode_ltrb(points, box_regression[image_index, location_index])
    sizes = torch.tensor(image_sizes, dtype=boxes.dtype, device=device)[image_index]  # [N, 2] (h, w)
    boxes = torch.stack(
        [
            boxes[:, 0].clamp(min=0).minimum(sizes[:, 1]),
            boxes[:, 1].clamp(min=0).minimum(sizes[:, 0]),
            boxes[:, 2].clamp(min=0).minimum(sizes[:, 1]),
            boxes[:, 3].clamp(min=0).minimum(sizes[:, 0]),
        ],
        dim=1,
    )

    groups = image_index if class_agnostic_nms else image_index * num_classes + labels
    keep = batched_nms_groups(boxes, det_scores, groups, nms_thresh)
    # `keep` is sorted by score; a stable sort by image keeps that order inside each image.
    keep = keep[torch.sort(image_index[keep], stable=True).indices]
    kept_image = image_index[keep]
    counts = torch.bincount(kept_image, minlength=num_images)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(keep), device=device) - first[kept_image]
    keep = keep[rank < max_detections]
    per_image = torch.bincount(image_index[keep], minlength=num_images).tolist()

    level_number = torch.log2(locations.strides).round().long()
    fields = (
        boxes[keep],
        det_scores[keep],
        labels[keep],
        level_number[location_index[keep]],
        points[keep],
        cls_prob[image_index[keep], location_index[keep], labels[keep]],
        centerness[image_index[keep], location_index[keep]],
        location_index[keep],
    )
    split = [f.split(per_image) for f in fields]
    return [Detections(*(s[i] for s in split)) for i in range(num_images)]
