"""Target assignment: which locations are positive and what they regress (Sections 3.1, 3.2, 3.3).

A location is a candidate for a ground-truth box when it falls inside the box (Section 3.1), the
largest of its regression distances lies in its level's size range (Section 3.2,
``m_{i-1} <= max(l*, t*, r*, b*) <= m_i``), and, with center sampling (Table 3), it lies within
``radius * stride`` of the box center. A location with several candidates is an *ambiguous sample*
and regresses the box of minimal area. Crowd boxes and padding are never assigned.

Everything is computed for the whole batch at once on padded ground truth (no Python loop over
images or boxes), and the intermediate masks are returned so that the paper's statistics
(best possible recall, ambiguous samples) reuse this exact code.

Speed: on a grid, l* and r* depend only on a location's column and t* and b* only on its row, and so
does every test on them (inside the box, size range, center region). They are computed per column and
per row (``[B, X, M]`` and ``[B, Y, M]`` with X, Y a few hundred) and combined per location by one
boolean AND or OR, instead of on float ``[B, P, M]`` tensors. The minimal-area rule ranks the boxes of
each image once and takes the best-ranked candidate. Results are identical to the direct formulas.

Glossary: B images, P locations over all levels, M ground-truth boxes (padded), L levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import torch
from torch import Tensor

from fcos_lab.boxes import centerness_from_ltrb, encode_ltrb
from fcos_lab.errors import InputError
from fcos_lab.points import Locations


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

    def to(self, device: torch.device | str) -> "GroundTruth":
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


@dataclass(frozen=True)
class _Layout:
    """Locations as per-level grids of columns (x) and rows (y); see :func:`_layout`.

    ``blocks`` holds ``(first location, H_l, W_l, first row, first column)`` per level; None means the
    locations are no grid and "columns" and "rows" are simply the P locations themselves.
    """

    x: Tensor  # [X] x of each column
    y: Tensor  # [Y] y of each row
    x_stride: Tensor  # [X] nominal stride of each column's level
    y_stride: Tensor  # [Y]
    x_level: Tensor  # [X] level index of each column
    y_level: Tensor  # [Y]
    blocks: tuple[tuple[int, int, int, int, int], ...] | None
    num_points: int


@lru_cache(maxsize=64)
def _layout(locations: Locations) -> _Layout:
    """The grid structure of ``locations``, checked once per (cached) :class:`Locations` object."""
    points, strides, levels = locations.points, locations.strides, locations.level_index
    num_points = points.shape[0]
    elementwise = _Layout(points[:, 0], points[:, 1], strides, strides, levels, levels, None, num_points)
    if len(locations.shapes) != len(locations.num_per_level) or sum(locations.num_per_level) != num_points:
        return elementwise
    columns, rows, blocks = [], [], []
    start = first_row = first_column = 0
    for (height, width), count in zip(locations.shapes, locations.num_per_level):
        if height * width != count:
            return elementwise
        level = slice(start, start + count)
        grid_x, grid_y = points[level, 0].view(height, width), points[level, 1].view(height, width)
        is_grid = (
            torch.equal(grid_x, grid_x[:1].expand(height, width))
            and torch.equal(grid_y, grid_y[:, :1].expand(height, width))
            and bool((strides[level] == strides[start]).all())
            and bool((levels[level] == levels[start]).all())
        ) if count else True
        if not is_grid:
            return elementwise
        columns.append((grid_x[0] if height else grid_x.new_zeros(width), start, width))
        rows.append((grid_y[:, 0], start, height))
        blocks.append((start, height, width, first_row, first_column))
        start, first_row, first_column = start + count, first_row + height, first_column + width

    def per_axis(parts, values):
        return torch.cat([values[first].expand(size) if size else values[:0] for _, first, size in parts])

    return _Layout(
        x=torch.cat([c for c, _, _ in columns]),
        y=torch.cat([r for r, _, _ in rows]),
        x_stride=per_axis(columns, strides),
        y_stride=per_axis(rows, strides),
        x_level=per_axis(columns, levels),
        y_level=per_axis(rows, levels),
        blocks=tuple(blocks),
        num_points=num_points,
    )


def _per_location(op: Callable[..., Tensor], per_row: Tensor, per_column: Tensor, layout: _Layout) -> Tensor:
    """``[B, P, M]`` = ``op(per_row[row of p], per_column[column of p])`` for boolean ``[B, Y, M]``, ``[B, X, M]``."""
    if layout.blocks is None:
        return op(per_row, per_column)
    num_images, _, num_boxes = per_row.shape
    out = torch.empty((num_images, layout.num_points, num_boxes), dtype=torch.bool, device=per_row.device)
    for start, height, width, first_row, first_column in layout.blocks:
        op(
            per_row[:, first_row : first_row + height, None, :],
            per_column[:, None, first_column : first_column + width, :],
            out=out[:, start : start + height * width].view(num_images, height, width, num_boxes),
        )
    return out


def assign(
    locations: Locations,
    gt: GroundTruth,
    size_ranges: Sequence[tuple[float, float]] = ((0, 64), (64, 128), (128, 256), (256, 512), (512, math.inf)),
    *,
    size_range_inclusive: bool = True,
    center_sampling_radius: float = 0.0,
    normalize_by_stride: bool = False,
    area_tiebreak_float32: bool = False,
) -> Assignment:
    """Assign every location of every image to a ground-truth box or to background.

    Args:
        locations: the location grid (:func:`fcos_lab.points.make_locations`).
        gt: padded ground truth, boxes in the coordinates of the input image.
        size_ranges: ``(m_{i-1}, m_i)`` per level (Section 3.2); ``((0, inf),)`` with one level = no FPN.
        size_range_inclusive: paper/official code ``m_{i-1} <= max <= m_i``; False gives torchvision's
            strict ``m_{i-1} < max < m_i``.
        center_sampling_radius: Table 3 "ctr. sampling": only locations within ``radius * stride`` of the
            box center (and inside the box) are candidates; 0 turns it off.
        normalize_by_stride: divide the regression targets by the level stride (Table 3 "Normalization").
        area_tiebreak_float32: pick the minimal area through float32 ``1e8 - area`` as torchvision does
            (areas closer than float32 resolution at 1e8 then tie and the first box wins).

    Returns:
        An :class:`Assignment`; see its attributes for shapes.
    """
    boxes, gt_labels = gt.boxes, gt.labels
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise InputError(f"gt.boxes: expected [B, M, 4] xyxy, got {list(boxes.shape)}")
    num_images, num_boxes, _ = boxes.shape
    points, strides = locations.points, locations.strides
    num_points = points.shape[0]
    ranges = size_ranges_per_location(locations, size_ranges)  # validates the number of ranges
    layout = _layout(locations)
    table = torch.tensor([[float(lo), float(hi)] for lo, hi in size_ranges], device=points.device)

    # Eq. (1) per column ([B, X, M]: l*, r*) and per row ([B, Y, M]: t*, b*).
    x, y = layout.x[None, :, None], layout.y[None, :, None]
    x0, y0, x1, y1 = (boxes[:, None, :, k] for k in range(4))
    left, right, top, bottom = x - x0, x1 - x, y - y0, y1 - y
    inside_x, inside_y = (left > 0) & (right > 0), (top > 0) & (bottom > 0)
    inside_box = _per_location(torch.logical_and, inside_y, inside_x, layout)

    # max(l*, t*, r*, b*) = max(max(l*, r*), max(t*, b*)): it is <= m_i when both are, >= m_{i-1} when either is.
    reach_x, reach_y = torch.maximum(left, right), torch.maximum(top, bottom)
    lower_x, upper_x = table[layout.x_level, 0][None, :, None], table[layout.x_level, 1][None, :, None]
    lower_y, upper_y = table[layout.y_level, 0][None, :, None], table[layout.y_level, 1][None, :, None]
    if size_range_inclusive:
        above_x, below_x, above_y, below_y = reach_x >= lower_x, reach_x <= upper_x, reach_y >= lower_y, reach_y <= upper_y
    else:
        above_x, below_x, above_y, below_y = reach_x > lower_x, reach_x < upper_x, reach_y > lower_y, reach_y < upper_y
    in_size_range = _per_location(torch.logical_and, below_y, below_x, layout)
    in_size_range &= _per_location(torch.logical_or, above_y, above_x, layout)

    # Center sampling: max(|x - cx|, |y - cy|) < radius * stride holds when both distances are below it.
    usable = (gt.valid & ~gt.crowd)[:, None, :]
    eligible_x, eligible_y = inside_x & usable, inside_y
    if center_sampling_radius > 0:
        near_x = (x - (x0 + x1) / 2).abs() < (center_sampling_radius * layout.x_stride)[None, :, None]
        near_y = (y - (y0 + y1) / 2).abs() < (center_sampling_radius * layout.y_stride)[None, :, None]
        in_center_region = _per_location(torch.logical_and, near_y, near_x, layout)
        eligible_x, eligible_y = eligible_x & near_x, eligible_y & near_y
    else:
        in_center_region = torch.ones_like(inside_box)

    candidates = _per_location(torch.logical_and, eligible_y, eligible_x, layout) & in_size_range
    num_candidates = candidates.sum(dim=2)

    # Minimal-area rule for ambiguous samples (Section 3.1): rank each image's boxes once (ties keep the
    # first box, as argmin / argmax do) and take the best-ranked candidate of every location.
    areas = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    if num_boxes == 0:
        matched_gt = torch.full((num_images, num_points), -1, dtype=torch.int64, device=points.device)
    else:
        if area_tiebreak_float32:
            key = 1e8 - areas.to(torch.float32)
            order = torch.sort(key, dim=1, descending=True, stable=True).indices
        else:
            order = torch.sort(areas, dim=1, stable=True).indices
        # priority M for the best box of an image, 1 for the worst, 0 for "not a candidate".
        rank_dtype = torch.int16 if num_boxes < 2**15 else torch.int64
        priority = torch.empty_like(order, dtype=rank_dtype).scatter_(
            1, order, torch.arange(num_boxes, 0, -1, dtype=rank_dtype, device=order.device).expand_as(order)
        )
        best = torch.where(candidates, priority[:, None, :], 0).amax(dim=2)
        matched_gt = order.gather(1, (num_boxes - best.long()).clamp(max=num_boxes - 1))
        found = best > 0
        if area_tiebreak_float32:
            # torchvision: max over boxes of candidate * (1e8 - area), background when below 1e-5.
            found &= key.gather(1, matched_gt) >= 1e-5
        matched_gt = torch.where(found, matched_gt, -1)

    positive = matched_gt >= 0
    safe_index = matched_gt.clamp(min=0)
    if num_boxes == 0:
        matched_boxes = torch.zeros((num_images, num_points, 4), dtype=boxes.dtype, device=boxes.device)
        labels = torch.full_like(matched_gt, -1)
    else:
        matched_boxes = boxes.gather(1, safe_index[..., None].expand(-1, -1, 4))
        labels = torch.where(positive, gt_labels.gather(1, safe_index), -1)
    box_targets = encode_ltrb(points[None], matched_boxes)
    centerness_targets = torch.where(positive, centerness_from_ltrb(box_targets), 0.0)
    if normalize_by_stride:
        box_targets = box_targets / strides[None, :, None]
    box_targets = torch.where(positive[..., None], box_targets, 0.0)
    del ranges

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
