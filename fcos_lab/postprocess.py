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

from collections.abc import Sequence
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


def location_scores(
    cls_logits: Tensor,
    box_regression: Tensor,
    centerness_logits: Tensor | None,
    *,
    score_thresh: float = 0.05,
    threshold_on: str = "cls",
    centerness_mode: str = "learned",
    score_sqrt: bool = False,
    oracle_centerness: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The ranking score of every (location, class), with the candidates' threshold applied.

    Args: as :func:`postprocess`.

    Returns:
        ``(ranked, cls_prob, centerness)``: ``[B, P, C]`` classification x center-ness (or its square
        root) where the threshold is passed and -1 elsewhere, ``[B, P, C]`` classification probability,
        ``[B, P]`` the center-ness used.
    """
    cls_prob = cls_logits.float().sigmoid()
    if centerness_mode == "learned":
        if centerness_logits is None:
            raise ValueError("centerness_mode='learned' needs a model with a center-ness branch")
        centerness = centerness_logits.float().sigmoid()
    elif centerness_mode == "none":
        centerness = torch.ones_like(cls_prob[..., 0])
    elif centerness_mode == "from_box":
        centerness = centerness_from_ltrb(box_regression.float())
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
    return torch.where(gate > score_thresh, scores, torch.full_like(scores, -1.0)), cls_prob, centerness


def clip_boxes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Clip xyxy ``boxes`` ``[..., 4]`` to ``[0, w] x [0, h]`` for ``sizes`` ``[..., 2]`` (h, w), broadcast."""
    sizes = sizes.to(boxes.dtype)
    limits = torch.stack([sizes[..., 1], sizes[..., 0], sizes[..., 1], sizes[..., 0]], dim=-1)
    return boxes.clamp(min=0).minimum(limits)


def top_candidates(
    ranked: Tensor, num_per_level: Sequence[int], pre_nms_topk: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``pre_nms_topk`` highest (location, class) pairs of each level.

    Works with symbolic level sizes (ONNX export): the levels are a Python loop of L steps, the rest is
    tensor arithmetic.

    Args:
        ranked: ``[B, P, C]`` scores, -1 below the threshold (:func:`location_scores`).
        num_per_level: locations of each level; sums to P.
        pre_nms_topk: candidates per level.

    Returns:
        ``(scores, location_index, labels)``, each ``[B, K]`` with K the sum over levels of
        ``min(pre_nms_topk, P_l * C)``; level by level, best first; entries of score -1 are not candidates.
    """
    num_images, _, num_classes = ranked.shape
    top_scores, top_location, top_label = [], [], []
    start = 0
    for count in num_per_level:
        level_scores = ranked[:, start : start + count].reshape(num_images, -1)
        values, flat = level_scores.topk(min(pre_nms_topk, count * num_classes), dim=1)
        top_scores.append(values)
        top_location.append(start + torch.div(flat, num_classes, rounding_mode="floor"))
        top_label.append(flat % num_classes)
        start = start + count
    return torch.cat(top_scores, dim=1), torch.cat(top_location, dim=1), torch.cat(top_label, dim=1)


def select_detections(
    boxes: Tensor,
    ranked: Tensor,
    num_per_level: Sequence[int],
    *,
    pre_nms_topk: int = 1000,
    nms_thresh: float = 0.6,
    max_detections: int = 100,
    class_agnostic_nms: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top-k per level, class-aware NMS and the per-image limit over dense boxes and scores.

    Args:
        boxes: ``[B, P, 4]`` xyxy of every location, clipped to its image.
        ranked: ``[B, P, C]`` scores, -1 below the threshold (:func:`location_scores`).
        num_per_level: locations of each level; sums to P.
        pre_nms_topk, nms_thresh, max_detections, class_agnostic_nms: as :func:`postprocess`.

    Returns:
        ``(image_index, location_index, labels, scores)`` of the N kept detections, each ``[N]``, grouped
        by image in batch order and by decreasing score inside an image.
    """
    num_images, _, num_classes = ranked.shape
    cand_scores, cand_location, cand_label = top_candidates(ranked, num_per_level, pre_nms_topk)
    image_index, slot = (cand_scores > -1).nonzero(as_tuple=True)
    location_index = cand_location[image_index, slot]
    labels = cand_label[image_index, slot]
    scores = cand_scores[image_index, slot]
    groups = image_index if class_agnostic_nms else image_index * num_classes + labels
    keep = batched_nms_groups(boxes[image_index, location_index], scores, groups, nms_thresh)
    # `keep` is sorted by score; a stable sort by image keeps that order inside each image.
    keep = keep[torch.sort(image_index[keep], stable=True).indices]
    kept_image = image_index[keep]
    counts = torch.bincount(kept_image, minlength=num_images)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(keep), device=keep.device) - first[kept_image]
    keep = keep[rank < max_detections]
    return image_index[keep], location_index[keep], labels[keep], scores[keep]


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
    num_images = cls_logits.shape[0]
    ranked, cls_prob, centerness = location_scores(
        cls_logits,
        box_regression,
        centerness_logits,
        score_thresh=score_thresh,
        threshold_on=threshold_on,
        centerness_mode=centerness_mode,
        score_sqrt=score_sqrt,
        oracle_centerness=oracle_centerness,
    )
    sizes = torch.tensor(image_sizes, dtype=torch.float32, device=cls_logits.device)  # [B, 2] (h, w)
    boxes = clip_boxes(decode_ltrb(locations.points, box_regression.float()), sizes[:, None])
    image_index, location_index, labels, scores = select_detections(
        boxes,
        ranked,
        locations.num_per_level,
        pre_nms_topk=pre_nms_topk,
        nms_thresh=nms_thresh,
        max_detections=max_detections,
        class_agnostic_nms=class_agnostic_nms,
    )
    per_image = torch.bincount(image_index, minlength=num_images).tolist()
    level_number = torch.log2(locations.strides).round().long()
    fields = (
        boxes[image_index, location_index],
        scores,
        labels,
        level_number[location_index],
        locations.points[location_index],
        cls_prob[image_index, location_index, labels],
        centerness[image_index, location_index],
        location_index,
    )
    split = [f.split(per_image) for f in fields]
    return [Detections(*(s[i] for s in split)) for i in range(num_images)]
