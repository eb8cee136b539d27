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
per row (``[B, X, M]`` and ``[B, Y, M]`` with X, Y a few hundred) and combined into the ``[B, P, M]``
masks by one boolean AND or OR per level, instead of on float ``[B, P, M]`` tensors. The minimal-area
rule ranks each image's boxes once; the candidates of each location are also kept as int64 bit sets in
that order, so that counting them and picking the best-ranked one are integer operations on ``[B, P]``
rather than reductions over M. The results are identical to the direct formulas (which run,
element-wise, when the locations are no grid); ``tests/test_targets.py`` checks both against them.

Glossary: B images, P locations over all levels, M ground-truth boxes (padded), L levels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

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
    """The columns and rows of every level's grid, or the element-wise layout when the points are no grid.

    The check reads the points (a device synchronisation); :func:`fcos_lab.points.make_locations`
    returns cached objects, so it runs once per feature-map shape rather than once per step.
    """
    points, strides, levels = locations.points, locations.strides, locations.level_index
    num_points = points.shape[0]
    elementwise = _Layout(points[:, 0], points[:, 1], strides, strides, levels, levels, None, num_points)
    if len(locations.shapes) != len(locations.num_per_level) or sum(locations.num_per_level) != num_points:
        return elementwise
    first_row_locations, first_column_locations, column_of, row_of, blocks = [], [], [], [], []
    start = first_row = first_column = 0
    for (height, width), count in zip(locations.shapes, locations.num_per_level):
        if height * width != count or count == 0:
            return elementwise
        index = torch.arange(count, device=points.device).view(height, width)
        first_row_locations.append(start + index[0])  # one location per column
        first_column_locations.append(start + index[:, 0])  # one location per row
        column_of.append(first_column + index.remainder(width).flatten())
        row_of.append(first_row + index.div(width, rounding_mode="floor").flatten())
        blocks.append((start, height, width, first_row, first_column))
        start, first_row, first_column = start + count, first_row + height, first_column + width
    columns, rows = torch.cat(first_row_locations), torch.cat(first_column_locations)
    column_of, row_of = torch.cat(column_of), torch.cat(row_of)
    grid = _Layout(
        points[columns, 0], points[rows, 1], strides[columns], strides[rows], levels[columns], levels[rows],
        tuple(blocks), num_points,
    )
    # A grid only if every location is rebuilt exactly from its column and its row.
    is_grid = (
        torch.equal(points[:, 0], grid.x[column_of])
        and torch.equal(points[:, 1], grid.y[row_of])
        and torch.equal(strides, grid.x_stride[column_of])
        and torch.equal(strides, grid.y_stride[row_of])
        and torch.equal(levels, grid.x_level[column_of])
        and torch.equal(levels, grid.y_level[row_of])
    )
    return grid if is_grid else elementwise


def _per_location(op: Callable[..., Tensor], per_row: Tensor, per_column: Tensor, layout: _Layout) -> Tensor:
    """``[B, P, K]`` = ``op(per_row[row of p], per_column[column of p])`` for ``[B, Y, K]`` and ``[B, X, K]``.

    ``op`` is a logical (bool masks, K = M) or bitwise (int64 bit sets, K = words) AND / OR with ``out=``.
    """
    if layout.blocks is None:
        return op(per_row, per_column)
    num_images, _, depth = per_row.shape
    out = torch.empty((num_images, layout.num_points, depth), dtype=per_row.dtype, device=per_row.device)
    for start, height, width, first_row, first_column in layout.blocks:
        op(
            per_row[:, first_row : first_row + height, None, :],
            per_column[:, None, first_column : first_column + width, :],
            out=out[:, start : start + height * width].view(num_images, height, width, depth),
        )
    return out


# Boxes per int64 word of a bit set: below 2**53, so float64 holds every set exactly (frexp finds the top bit).
_BITS_PER_WORD = 52


def _bit_sets(mask: Tensor, order: Tensor) -> Tensor:
    """Pack ``mask`` ``[B, N, M]`` into int64 bit sets ``[B, N, W]``, boxes in ``order`` from the top bit down.

    The box of rank k (``order[:, k]``) is bit ``51 - k % 52`` of word ``k // 52``: the best-ranked box of a
    set is its first non-empty word's highest bit.
    """
    num_images, num_rows, num_boxes = mask.shape
    num_words = -(-num_boxes // _BITS_PER_WORD)
    ranked = mask.gather(2, order[:, None, :].expand(-1, num_rows, -1)).long()
    ranked = torch.nn.functional.pad(ranked, (0, num_words * _BITS_PER_WORD - num_boxes))
    weights = 2 ** torch.arange(_BITS_PER_WORD - 1, -1, -1, device=mask.device)
    return (ranked.view(num_images, num_rows, num_words, _BITS_PER_WORD) * weights).sum(dim=-1)


def _popcount(words: Tensor) -> Tensor:
    """Number of set bits of non-negative int64 ``words`` (the classic SWAR bit count)."""
    x = words - ((words >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    x = x + (x >> 8)
    x = x + (x >> 16)
    x = x + (x >> 32)
    return x & 0x7F


def _first_rank(words: Tensor) -> Tensor:
    """Rank of the best box in bit sets ``[B, P, W]`` (from :func:`_bit_sets`); W * 52 where empty."""
    num_words = words.shape[-1]
    top_bit = torch.frexp(words.double()).exponent - 1  # -1 for an empty word
    rank = torch.full(words.shape[:-1], num_words * _BITS_PER_WORD, dtype=torch.int64, device=words.device)
    for w in range(num_words - 1, -1, -1):  # one word up to 52 boxes: a loop of one in practice
        rank = torch.where(words[..., w] != 0, w * _BITS_PER_WORD + _BITS_PER_WORD - 1 - top_bit[..., w], rank)
    return rank


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
    if len(size_ranges) != len(locations.num_per_level):
        raise InputError(f"{len(size_ranges)} size ranges for {len(locations.num_per_level)} levels")
    layout = _layout(locations)
    table = torch.tensor([[float(lo), float(hi)] for lo, hi in size_ranges], device=points.device)

    # Eq. (1) per column ([B, X, M]: l*, r*) and per row ([B, Y, M]: t*, b*).
    x, y = layout.x[None, :, None], layout.y[None, :, None]
    x0, y0, x1, y1 = (boxes[:, None, :, k] for k in range(4))
    left, right, top, bottom = x - x0, x1 - x, y - y0, y1 - y
    inside_x, inside_y = (left > 0) & (right > 0), (top > 0) & (bottom > 0)
    inside_box = _per_location(torch.logical_and, inside_y, inside_x, layout)

    # max(l*, t*, r*, b*) = max(max(l*, r*), max(t*, b*)) is <= m_i when both are and >= m_{i-1} when either is.
    reach_x, reach_y = torch.maximum(left, right), torch.maximum(top, bottom)
    lower_x, upper_x = table[layout.x_level, 0][None, :, None], table[layout.x_level, 1][None, :, None]
    lower_y, upper_y = table[layout.y_level, 0][None, :, None], table[layout.y_level, 1][None, :, None]
    above, below = (torch.ge, torch.le) if size_range_inclusive else (torch.gt, torch.lt)
    above_x, below_x = above(reach_x, lower_x), below(reach_x, upper_x)
    above_y, below_y = above(reach_y, lower_y), below(reach_y, upper_y)
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
    candidates = _per_location(torch.logical_and, eligible_y, eligible_x, layout)
    candidates &= in_size_range

    areas = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
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
        sets = _per_location(torch.bitwise_and, _bit_sets(row_above, order), _bit_sets(column, order), layout)
        sets |= _per_location(torch.bitwise_and, _bit_sets(row, order), _bit_sets(column_above, order), layout)
        num_candidates = _popcount(sets).sum(dim=2)
        rank = _first_rank(sets)
        matched_gt = order.gather(1, rank.clamp(max=num_boxes - 1))
        found = num_candidates > 0
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
        # Rows of the flattened [B * M, 4] boxes: faster than a gather along M with an expanded index.
        flat_index = safe_index + torch.arange(num_images, device=boxes.device)[:, None] * num_boxes
        matched_boxes = boxes.reshape(-1, 4)[flat_index]
        labels = torch.where(positive, gt_labels.reshape(-1)[flat_index], -1)
    box_targets = encode_ltrb(points[None], matched_boxes)
    centerness_targets = torch.where(positive, centerness_from_ltrb(box_targets), 0.0)
    if normalize_by_stride:
        box_targets = box_targets / strides[None, :, None]
    box_targets = torch.where(positive[..., None], box_targets, 0.0)

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
