"""Reference solutions of the workshop's exercises (:mod:`fcos_lab.workshop.exercises`).

Each is the package's own code behind the exercise's signature, or a restatement of it where the package
computes the step inside a larger function (the masks of :func:`fcos_lab.targets.assign_dense`, the greedy
matching and error rules of :mod:`fcos_lab.analysis.tide_matching`); ``tests/workshop/test_solutions.py``
proves the restatements equal to the package on hand-made and real scenes. The checks compare a
participant's function with these; ``solutions=True`` in a workshop notebook uses them instead of the
participant's (instructors, CI).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_iou, sigmoid_focal_loss

from fcos_lab.boxes import box_area, centerness_from_ltrb, decode_ltrb, encode_ltrb
from fcos_lab.losses import box_loss_per_location
from fcos_lab.points import Locations, grid_shapes, level_points
from fcos_lab.postprocess import batched_nms_groups, location_scores
from fcos_lab.targets import assign_dense, pad_ground_truth

# TIDE's thresholds (fcos_lab.analysis.tide): t_f, t_b.
FOREGROUND_IOU, BACKGROUND_IOU = 0.5, 0.1


def level_locations(height: int, width: int, stride: int) -> Tensor:
    """1.1: :func:`fcos_lab.points.level_points` with the paper's offset floor(s/2)."""
    return level_points(height, width, stride, offset="half_stride")


def feature_shapes(image_height: int, image_width: int, strides: list[int]) -> list[tuple[int, int]]:
    """1.2: :func:`fcos_lab.points.grid_shapes`, ceil(H / s) x ceil(W / s)."""
    return list(grid_shapes((image_height, image_width), strides))


def ltrb_targets(points: Tensor, boxes: Tensor) -> Tensor:
    """2.1: Eq. (1) for every (location, box) pair, :func:`fcos_lab.boxes.encode_ltrb` broadcast."""
    return encode_ltrb(points[:, None, :], boxes[None, :, :])


def inside_boxes(ltrb: Tensor) -> Tensor:
    """2.2: ``assign_dense``'s ``inside_box``: every distance positive."""
    return ltrb.min(dim=-1).values > 0


def in_size_range(ltrb: Tensor, size_ranges: Tensor) -> Tensor:
    """2.3: ``assign_dense``'s inclusive range test on max(l*, t*, r*, b*)."""
    reach = ltrb.max(dim=-1).values
    return (reach >= size_ranges[:, None, 0]) & (reach <= size_ranges[:, None, 1])


def in_center_region(points: Tensor, boxes: Tensor, strides: Tensor, radius: float) -> Tensor:
    """2.4: ``assign_dense``'s center region (the authors' arithmetic, equal to ``|x - cx| < r s`` on whole pixels)."""
    x, y = points[:, None, 0], points[:, None, 1]
    cx, cy = (boxes[None, :, 0] + boxes[None, :, 2]) / 2, (boxes[None, :, 1] + boxes[None, :, 3]) / 2
    reach = radius * strides[:, None]
    return (x > cx - reach) & (cx + reach > x) & (y > cy - reach) & (cy + reach > y)


def minimal_area_box(candidates: Tensor, boxes: Tensor) -> Tensor:
    """2.5: ``assign_dense``'s minimal-area rule: argmin of the candidates' areas (the first on ties), -1 without."""
    if boxes.shape[0] == 0:
        return torch.full((candidates.shape[0],), -1, dtype=torch.int64)
    area = torch.where(candidates, box_area(boxes)[None, :], math.inf)
    return torch.where(candidates.any(dim=1), area.argmin(dim=1), -1)


def assign_locations(locations: Locations, boxes: Tensor, size_ranges: list[tuple[float, float]],
                     radius: float) -> Tensor:
    """2.6: :func:`fcos_lab.targets.assign_dense` on one image."""
    gt = pad_ground_truth([boxes.float()], [torch.zeros(len(boxes), dtype=torch.int64)])
    return assign_dense(locations, gt, size_ranges, center_sampling_radius=radius).matched_gt[0]


def centerness_target(ltrb: Tensor) -> Tensor:
    """3.1: :func:`fcos_lab.boxes.centerness_from_ltrb`, Eq. (3)."""
    return centerness_from_ltrb(ltrb)


def iou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """3.2: :func:`fcos_lab.losses.box_loss_per_location` ``"iou"``, -ln(IoU)."""
    return box_loss_per_location(pred, target, "iou")


def giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """3.3: :func:`fcos_lab.losses.box_loss_per_location` ``"giou"``, 1 - GIoU."""
    return box_loss_per_location(pred, target, "giou")


def focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """4.1: torchvision's sigmoid focal loss, summed (what :func:`fcos_lab.losses.focal_loss_sum` computes)."""
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="sum")


def decode_boxes(points: Tensor, ltrb: Tensor) -> Tensor:
    """5.1: :func:`fcos_lab.boxes.decode_ltrb`."""
    return decode_ltrb(points, ltrb)


def ranking_scores(cls_logits: Tensor, centerness_logits: Tensor) -> Tensor:
    """5.2: :func:`fcos_lab.postprocess.location_scores` with the learned center-ness and no threshold."""
    no_boxes = torch.zeros((1, cls_logits.shape[0], 4))
    ranked, _, _ = location_scores(cls_logits[None], no_boxes, centerness_logits[None], score_thresh=-1.0)
    return ranked[0]


def class_aware_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """5.3: :func:`fcos_lab.postprocess.batched_nms_groups` with one group per class."""
    return batched_nms_groups(boxes, scores, labels, iou_threshold)


def match_detections(det_boxes: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """6.1: the greedy matching of :mod:`fcos_lab.analysis.tide_matching`, for one image and one class.

    Rank by rank, as there: a Python loop over the K detections is the algorithm (each takes a box from
    those the earlier ones left).
    """
    matched = torch.full((det_boxes.shape[0],), -1, dtype=torch.int64)
    if not len(det_boxes) or not len(gt_boxes):
        return matched
    iou = box_iou(det_boxes.double(), gt_boxes.double())
    available = torch.ones(len(gt_boxes), dtype=torch.bool)
    for rank in range(len(det_boxes)):
        candidates = iou[rank] * available
        best = int(candidates.argmax())
        if candidates[best] >= iou_threshold:
            matched[rank] = best
            available[best] = False
    return matched


def error_types(own_class_iou: Tensor, other_class_iou: Tensor, taken_own_class_iou: Tensor) -> list[str]:
    """6.2: the rules of :mod:`fcos_lab.analysis.tide_matching` for an unmatched detection, in their order."""
    t_f, t_b = FOREGROUND_IOU, BACKGROUND_IOU
    is_loc = (t_b <= own_class_iou) & (own_class_iou <= t_f)
    is_cls = ~is_loc & (other_class_iou >= t_f)
    is_dupe = ~is_loc & ~is_cls & (taken_own_class_iou >= t_f)
    is_bkg = ~is_loc & ~is_cls & ~is_dupe & (torch.maximum(own_class_iou, other_class_iou) <= t_b)
    kinds = ["loc", "cls", "dupe", "bkg"]
    return [next((k for k, flag in zip(kinds, flags) if flag), "both")
            for flags in torch.stack([is_loc, is_cls, is_dupe, is_bkg], dim=1).tolist()]


SOLUTIONS = {
    "1.1": level_locations, "1.2": feature_shapes,
    "2.1": ltrb_targets, "2.2": inside_boxes, "2.3": in_size_range, "2.4": in_center_region,
    "2.5": minimal_area_box, "2.6": assign_locations,
    "3.1": centerness_target, "3.2": iou_loss, "3.3": giou_loss,
    "4.1": focal_loss,
    "5.1": decode_boxes, "5.2": ranking_scores, "5.3": class_aware_nms,
    "6.1": match_detections, "6.2": error_types,
}
