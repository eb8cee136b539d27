"""Target assignment: which locations are positive and what they regress (Sections 3.1, 3.2, 3.3).

A location is a candidate for a ground-truth box when it falls inside the box (Section 3.1), the
largest of its regression distances lies in its level's size range (Section 3.2,
``m_{i-1} <= max(l*, t*, r*, b*) <= m_i``), and, with center sampling (Table 3), it lies within
``radius * stride`` of the box center. A location with several candidates is an *ambiguous sample*
and regresses the box of minimal area. Crowd boxes and padding are never assigned.

Everything is computed for the whole batch at once on padded ground truth (no Python loop over
images or boxes), and the intermediate masks are returned so that the paper's statistics
(best possible recall, ambiguous samples) reuse this exact code.

Two implementations, tested equal on hand-made, random and real boxes (``tests/test_targets.py``):
:func:`assign_dense`, the readable one, states Sections 3.1 and 3.2 line by line on dense float
``[B, P, M]`` tensors; :func:`assign`, the one training uses, computes every test per grid column and
row (``[B, X, M]``, ``[B, Y, M]``) and combines them with one boolean operation per level, and keeps each
location's candidates as int64 bit sets in minimal-area order (:mod:`fcos_lab.separable`); for
locations that are no grid it runs the same code element-wise.

Two arithmetic details follow the reference codebases exactly, because in float32 they decide locations
on the boundary: center sampling (``center_sampling_rule``: the authors' clamped region, or torchvision's
distance test) and the area of the minimal-area rule (``area_offset`` 1 for the authors' "+1" areas of
"legacy" boxes; ``area_tiebreak_float32`` for torchvision's ``1e8 - area`` in float32).

Glossary: B images, P locations over all levels, M ground-truth boxes (padded), L levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fcos_lab import paper, separable
from fcos_lab.boxes import box_area, centerness_from_ltrb, encode_ltrb
from fcos_lab.errors import InputError
from fcos_lab.points import Locations

CENTER_SAMPLING_RULES = ("region", "distance")


@dataclass(frozen=True)
class GroundTruth:
    """Padded ground truth of a batch.

    Attributes:
        boxes: ``[B, M, 4]`` xyxy, absolute pixels of the (resized) input image.
        labels: ``[B, M]`` contiguous class indices ``0..C-1``.
        valid: ``[B, M]`` False for padding.
        crowd: ``[B, M]`` True for ``iscrowd`` regions, which are never assigned.
    """

    boxes: Tensor
    labels: Tensor
    valid: Tensor
    crowd: Tensor

    def to(self, device: torch.device | str) -> GroundTruth:
        return GroundTruth(*(t.to(device, non_blocking=True) for t in (self.boxes, self.labels, self.valid, self.crowd)))


def pad_ground_truth(
    boxes_per_image: Sequence[Tensor],
    labels_per_image: Sequence[Tensor],
    crowd_per_image: Sequence[Tensor] | None = None,
) -> GroundTruth:
    """Pad per-image boxes ``[M_i, 4]`` and labels ``[M_i]`` into a :class:`GroundTruth` with M = max M_i.

    Raises:
        InputError: for boxes of the wrong shape or dtype, non-finite coordinates, or
            labels that do not match the boxes.
    """
    if len(boxes_per_image) != len(labels_per_image):
        raise InputError(f"got {len(boxes_per_image)} box tensors but {len(labels_per_image)} label tensors")
    num_images = len(boxes_per_image)
    if crowd_per_image is None:
        crowd_per_image = [torch.zeros(len(b), dtype=torch.bool) for b in boxes_per_image]
    max_boxes = max([len(b) for b in boxes_per_image] + [0])
    device = boxes_per_image[0].device if num_images else torch.device("cpu")
    boxes = torch.zeros((num_images, max_boxes, 4), dtype=torch.float32, device=device)
    labels = torch.zeros((num_images, max_boxes), dtype=torch.int64, device=device)
    valid = torch.zeros((num_images, max_boxes), dtype=torch.bool, device=device)
    crowd = torch.zeros((num_images, max_boxes), dtype=torch.bool, device=device)
    for i, (b, lab, cr) in enumerate(zip(boxes_per_image, labels_per_image, crowd_per_image)):
        if not isinstance(b, Tensor) or b.ndim != 2 or b.shape[-1] != 4 or not b.is_floating_point():
            shape = list(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise InputError(f"boxes of image {i}: expected a float tensor [M, 4] (xyxy), got {shape}")
        if not isinstance(lab, Tensor) or lab.shape != (len(b),) or lab.is_floating_point():
            shape = list(lab.shape) if isinstance(lab, Tensor) else type(lab).__name__
            raise InputError(f"labels of image {i}: expected an integer tensor [{len(b)}], got {shape}")
        if len(b) and not torch.isfinite(b).all():
            raise InputError(f"boxes of image {i}: NaN or infinite coordinates in {b[~torch.isfinite(b).all(1)].tolist()}")
        m = len(b)
        boxes[i, :m] = b
        labels[i, :m] = lab
        valid[i, :m] = True
        crowd[i, :m] = cr.bool()
    return GroundTruth(boxes, labels, valid, crowd)


def ground_truth_of(targets: Sequence[dict]) -> GroundTruth:
    """Padded ground truth of a dataset batch's targets (``boxes``, ``labels``, ``iscrowd`` of each image)."""
    return pad_ground_truth([t["boxes"] for t in targets], [t["labels"] for t in targets], [t["iscrowd"] for t in targets])


@dataclass(frozen=True)
class Assignment:
    """The result of :func:`assign` for a batch.

    Attributes:
        labels: ``[B, P]`` class index of each location, -1 for background.
        matched_gt: ``[B, P]`` index into M of the box each location regresses, -1 for background.
        box_targets: ``[B, P, 4]`` l*, t*, r*, b* (Eq. 1), divided by the stride when asked; zero on background.
        centerness_targets: ``[B, P]`` Eq. (3); zero on background.
        positive: ``[B, P]`` ``labels >= 0``.
        inside_box: ``[B, P, M]`` the location falls strictly inside the box.
        in_size_range: ``[B, P, M]`` max(l*, t*, r*, b*) is in the location's level range.
        in_center_region: ``[B, P, M]`` within ``radius * stride`` of the center (all True when radius = 0).
        candidates: ``[B, P, M]`` all three, for valid non-crowd boxes.
        num_candidates: ``[B, P]`` how many boxes a location could regress; > 1 means ambiguous.
    """

    labels: Tensor
    matched_gt: Tensor
    box_targets: Tensor
    centerness_targets: Tensor
    positive: Tensor
    inside_box: Tensor
    in_size_range: Tensor
    in_center_region: Tensor
    candidates: Tensor
    num_candidates: Tensor


def size_ranges_per_location(locations: Locations, size_ranges: Sequence[tuple[float, float]]) -> Tensor:
    """``[P, 2]`` (m_{i-1}, m_i) of each location's level."""
    if len(size_ranges) != len(locations.num_per_level):
        raise InputError(f"{len(size_ranges)} size ranges for {len(locations.num_per_level)} levels")
    table = torch.tensor([[float(lo), float(hi)] for lo, hi in size_ranges], device=locations.points.device)
    return table[locations.level_index]


def _check_inputs(locations: Locations, gt: GroundTruth, size_ranges, center_sampling_rule: str) -> None:
    if gt.boxes.ndim != 3 or gt.boxes.shape[-1] != 4:
        raise InputError(f"gt.boxes: expected [B, M, 4] xyxy, got {list(gt.boxes.shape)}")
    if len(size_ranges) != len(locations.num_per_level):
        raise InputError(f"{len(size_ranges)} size ranges for {len(locations.num_per_level)} levels")
    if center_sampling_rule not in CENTER_SAMPLING_RULES:
        raise InputError(f"center_sampling_rule must be one of {CENTER_SAMPLING_RULES}, got {center_sampling_rule!r}")


def _targets(
    locations: Locations, gt: GroundTruth, matched_gt: Tensor, normalize_by_stride: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Labels, Eq. (1) box targets and Eq. (3) center-ness targets of each location's matched box.

    Returns:
        ``(labels, positive, box_targets, centerness_targets)`` ``[B, P]``, ``[B, P]``, ``[B, P, 4]``, ``[B, P]``;
        background locations get label -1 and zero targets.
    """
    boxes, points = gt.boxes, locations.points
    num_images, num_boxes, _ = boxes.shape
    positive = matched_gt >= 0
    if num_boxes == 0:
        matched_boxes = torch.zeros((num_images, points.shape[0], 4), dtype=boxes.dtype, device=boxes.device)
        labels = torch.full_like(matched_gt, -1)
    else:
        # Rows of the flattened [B * M, 4] boxes: faster than a gather along M with an expanded index.
        flat_index = matched_gt.clamp(min=0) + torch.arange(num_images, device=boxes.device)[:, None] * num_boxes
        matched_boxes = boxes.reshape(-1, 4)[flat_index]
        labels = torch.where(positive, gt.labels.reshape(-1)[flat_index], -1)
    box_targets = encode_ltrb(points[None], matched_boxes)
    centerness_targets = torch.where(positive, centerness_from_ltrb(box_targets), 0.0)
    if normalize_by_stride:
        box_targets = box_targets / locations.strides[None, :, None]
    box_targets = torch.where(positive[..., None], box_targets, 0.0)
    return labels, positive, box_targets, centerness_targets


def assign_dense(
    locations: Locations,
    gt: GroundTruth,
    size_ranges: Sequence[tuple[float, float]] = paper.SIZE_RANGES,
    *,
    size_range_inclusive: bool = True,
    center_sampling_radius: float = 0.0,
    center_sampling_rule: str = "region",
    normalize_by_stride: bool = False,
    area_offset: float = 0.0,
    area_tiebreak_float32: bool = False,
) -> Assignment:
    """The assignment as Sections 3.1 and 3.2 write it, on dense ``[B, P, M]`` tensors.

    Readable and slow (memory ``B * P * M * 4`` floats): the reference that :func:`assign`, the fast path
    training uses, is tested equal to. Arguments and result are :func:`assign`'s.
    """
    _check_inputs(locations, gt, size_ranges, center_sampling_rule)
    x = locations.points[None, :, None, 0]  # [1, P, 1]
    y = locations.points[None, :, None, 1]
    x0, y0, x1, y1 = gt.boxes[:, None, :, :].unbind(dim=-1)  # [B, 1, M] each

    # Section 3.1, Eq. (1): the distances from every location to the four sides of every box.
    ltrb = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=-1)  # [B, P, M, 4]
    # A location inside a box is a candidate for it ...
    inside_box = ltrb.min(dim=-1).values > 0
    # ... when, Section 3.2, max(l*, t*, r*, b*) lies in its level's range [m_{i-1}, m_i].
    reach = ltrb.max(dim=-1).values
    ranges = torch.tensor(size_ranges, dtype=torch.float32, device=x.device)[locations.level_index]  # [P, 2]
    lower, upper = ranges[None, :, None, 0], ranges[None, :, None, 1]
    if size_range_inclusive:
        in_size_range = (reach >= lower) & (reach <= upper)
    else:  # torchvision
        in_size_range = (reach > lower) & (reach < upper)
    # Table 3, "ctr. sampling": and only near the box center, within radius * stride of it.
    if center_sampling_radius > 0:
        radius = center_sampling_radius * locations.strides[None, :, None]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        if center_sampling_rule == "region":  # the authors' get_sample_region: all four sides > 0
            in_center_region = (x > cx - radius) & (cx + radius > x) & (y > cy - radius) & (cy + radius > y)
        else:  # torchvision: max(|x - cx|, |y - cy|) < radius * stride
            in_center_region = torch.maximum((x - cx).abs(), (y - cy).abs()) < radius
    else:
        in_center_region = torch.ones_like(inside_box)
    usable = (gt.valid & ~gt.crowd)[:, None, :]
    candidates = inside_box & in_size_range & in_center_region & usable

    # Section 3.1: a location with several candidates (an ambiguous sample) regresses the box of minimal area.
    area = box_area(gt.boxes, area_offset)[:, None, :].expand_as(reach)
    if area_tiebreak_float32:  # torchvision: the largest candidate * (1e8 - area) in float32, background below 1e-5
        best, matched_gt = (candidates.float() * (1e8 - area.float())).max(dim=2)
        matched_gt = torch.where(best < 1e-5, -1, matched_gt)
    else:  # argmin keeps the first of equal areas
        matched_gt = torch.where(candidates, area, math.inf).argmin(dim=2)
        matched_gt = torch.where(candidates.any(dim=2), matched_gt, -1)
    if gt.boxes.shape[1] == 0:
        matched_gt = torch.full(inside_box.shape[:2], -1, dtype=torch.int64, device=x.device)

    labels, positive, box_targets, centerness_targets = _targets(locations, gt, matched_gt, normalize_by_stride)
    return Assignment(
        labels=labels, matched_gt=matched_gt, box_targets=box_targets, centerness_targets=centerness_targets,
        positive=positive, inside_box=inside_box, in_size_range=in_size_range, in_center_region=in_center_region,
        candidates=candidates, num_candidates=candidates.sum(dim=2),
    )


def assign(
    locations: Locations,
    gt: GroundTruth,
    size_ranges: Sequence[tuple[float, float]] = paper.SIZE_RANGES,
    *,
    size_range_inclusive: bool = True,
    center_sampling_radius: float = 0.0,
    center_sampling_rule: str = "region",
    normalize_by_stride: bool = False,
    area_offset: float = 0.0,
    area_tiebreak_float32: bool = False,
) -> Assignment:
    """Assign every location of every image to a ground-truth box or to background.

    Equal to :func:`assign_dense`, computed per grid row and column (see the module docstring).

    Args:
        locations: the location grid (:func:`fcos_lab.points.make_locations`).
        gt: padded ground truth, boxes in the coordinates of the input image.
        size_ranges: ``(m_{i-1}, m_i)`` per level (Section 3.2); ``((0, inf),)`` with one level = no FPN.
        size_range_inclusive: paper/official code ``m_{i-1} <= max <= m_i``; False gives torchvision's
            strict ``m_{i-1} < max < m_i``.
        center_sampling_radius: Table 3 "ctr. sampling": only locations within ``radius * stride`` of the
            box center (and inside the box) are candidates; 0 turns it off.
        center_sampling_rule: ``"region"``: the authors' arithmetic, ``cx - r < x < cx + r`` (and for y)
            with ``cx +- r`` rounded to float32 first; ``"distance"``: torchvision's ``|x - cx| < r``.
        normalize_by_stride: divide the regression targets by the level stride (Table 3 "Normalization").
        area_offset: the minimal-area rule ranks ``(x1 - x0 + offset) * (y1 - y0 + offset)``: 1 for the
            authors' "+1" areas of "legacy" boxes, 0 otherwise.
        area_tiebreak_float32: pick the minimal area through float32 ``1e8 - area`` as torchvision does
            (areas closer than float32 resolution at 1e8 then tie and the first box wins).

    Returns:
        An :class:`Assignment`; see its attributes for shapes.
    """
    _check_inputs(locations, gt, size_ranges, center_sampling_rule)
    boxes = gt.boxes
    num_images, num_boxes, _ = boxes.shape
    points = locations.points
    num_points = points.shape[0]
    layout = separable.layout(locations)
    table = torch.tensor([[float(lo), float(hi)] for lo, hi in size_ranges], device=points.device)

    # Eq. (1) per column ([B, X, M]: l*, r*) and per row ([B, Y, M]: t*, b*).
    x, y = layout.x[None, :, None], layout.y[None, :, None]
    x0, y0, x1, y1 = (boxes[:, None, :, k] for k in range(4))
    left, right, top, bottom = x - x0, x1 - x, y - y0, y1 - y
    inside_x, inside_y = (left > 0) & (right > 0), (top > 0) & (bottom > 0)
    inside_box = separable.per_location(torch.logical_and, inside_y, inside_x, layout)

    # max(l*, t*, r*, b*) = max(max(l*, r*), max(t*, b*)) is <= m_i when both are and >= m_{i-1} when either is.
    reach_x, reach_y = torch.maximum(left, right), torch.maximum(top, bottom)
    lower_x, upper_x = table[layout.x_level, 0][None, :, None], table[layout.x_level, 1][None, :, None]
    lower_y, upper_y = table[layout.y_level, 0][None, :, None], table[layout.y_level, 1][None, :, None]
    above, below = (torch.ge, torch.le) if size_range_inclusive else (torch.gt, torch.lt)
    above_x, below_x = above(reach_x, lower_x), below(reach_x, upper_x)
    above_y, below_y = above(reach_y, lower_y), below(reach_y, upper_y)
    in_size_range = separable.per_location(torch.logical_and, below_y, below_x, layout)
    in_size_range &= separable.per_location(torch.logical_or, above_y, above_x, layout)

    # Center sampling holds when it holds along both axes (both rules are per-axis tests).
    usable = (gt.valid & ~gt.crowd)[:, None, :]
    eligible_x, eligible_y = inside_x & usable, inside_y
    if center_sampling_radius > 0:
        radius_x = (center_sampling_radius * layout.x_stride)[None, :, None]
        radius_y = (center_sampling_radius * layout.y_stride)[None, :, None]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        if center_sampling_rule == "region":
            near_x = (x > cx - radius_x) & (cx + radius_x > x)
            near_y = (y > cy - radius_y) & (cy + radius_y > y)
        else:
            near_x, near_y = (x - cx).abs() < radius_x, (y - cy).abs() < radius_y
        in_center_region = separable.per_location(torch.logical_and, near_y, near_x, layout)
        eligible_x, eligible_y = eligible_x & near_x, eligible_y & near_y
    else:
        in_center_region = torch.ones_like(inside_box)
    candidates = separable.per_location(torch.logical_and, eligible_y, eligible_x, layout)
    candidates &= in_size_range

    areas = box_area(boxes, area_offset)
    if num_boxes == 0:
        matched_gt = torch.full((num_images, num_points), -1, dtype=torch.int64, device=points.device)
        num_candidates = torch.zeros((num_images, num_points), dtype=torch.int64, device=points.device)
    else:
        # Minimal-area rule for ambiguous samples (Section 3.1): rank each image's boxes once (ties keep
        # the first box, as argmin / argmax do); a location regresses its best-ranked candidate.
        if area_tiebreak_float32:
            key = 1e8 - areas.to(torch.float32)
            order = torch.sort(key, dim=1, descending=True, stable=True).indices
        else:
            order = torch.sort(areas, dim=1, stable=True).indices
        # Each location's candidate boxes as int64 bit sets (a few bytes per location instead of M), built
        # from its row's and its column's: a candidate is eligible and below m_i on both axes and above
        # m_{i-1} on either, so the set is (row: E, B, A) & (column: E, B) | (row: E, B) & (column: E, B, A).
        # Its popcount is the number of candidates, its highest bit the best-ranked one.
        row, column = eligible_y & below_y, eligible_x & below_x
        row_above, column_above = row & above_y, column & above_x
        bits = separable.bit_sets
        sets = separable.per_location(torch.bitwise_and, bits(row_above, order), bits(column, order), layout)
        sets |= separable.per_location(torch.bitwise_and, bits(row, order), bits(column_above, order), layout)
        num_candidates = separable.popcount(sets).sum(dim=2)
        rank = separable.first_rank(sets)
        matched_gt = order.gather(1, rank.clamp(max=num_boxes - 1))
        found = num_candidates > 0
        if area_tiebreak_float32:
            # torchvision: max over boxes of candidate * (1e8 - area), background when below 1e-5.
            found &= key.gather(1, matched_gt) >= 1e-5
        matched_gt = torch.where(found, matched_gt, -1)

    labels, positive, box_targets, centerness_targets = _targets(locations, gt, matched_gt, normalize_by_stride)
    return Assignment(
        labels=labels,
        matched_gt=matched_gt,
        box_targets=box_targets,
        centerness_targets=centerness_targets,
        positive=positive,
        inside_box=inside_box,
        in_size_range=in_size_range,
        in_center_region=in_center_region,
        candidates=candidates,
        num_candidates=num_candidates,
    )
