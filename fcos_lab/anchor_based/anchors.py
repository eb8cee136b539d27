"""RetinaNet anchors and IoU matching, the anchor-based side of the paper's Table 1 (Section 4.1.1).

RetinaNet (Lin et al., 2017) places 9 anchors at every location of P3-P7: sizes ``32 * 2^(l-3)`` times
the scales ``2^0, 2^(1/3), 2^(2/3)``, each with aspect ratios (h/w) 0.5, 1 and 2. An anchor is positive
for the ground-truth box of highest IoU when that IoU is >= 0.5 and negative below 0.4 (ignored in
between). "Low-quality matches" additionally make positive, for every ground-truth box, the anchors
of highest IoU with it (ties included); Table 1 compares three variants of that rule.

The anchor layout and the matcher serve both Table 1's statistics and the RetinaNet / RPN baselines'
training (:mod:`fcos_lab.anchor_based.detector`, :mod:`fcos_lab.anchor_based.losses`): anchors are flattened level by level, row-major within a level, with the 9 cell anchors
innermost (``[P * A, 4]``, channels-last like the head outputs), and :func:`match_anchors` takes an IoU
matrix with or without a batch dimension.

Glossary: A anchors, M ground-truth boxes, B images, L levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torchvision
from torch import Tensor

from fcos_lab import paper
from fcos_lab.errors import InputError

# RetinaNet's anchor layout is written once, in fcos_lab.paper.
RETINANET_STRIDES = paper.STRIDES
RETINANET_SIZES = paper.RETINANET_ANCHOR_SIZES
RETINANET_SCALES = paper.RETINANET_ANCHOR_SCALES
RETINANET_ASPECT_RATIOS = paper.RETINANET_ANCHOR_RATIOS

LowQuality = Literal["none", "0.4", "all"]
LOW_QUALITY_CHOICES: tuple[str, ...] = ("none", "0.4", "all")
MATCH_NEGATIVE = -1
MATCH_IGNORED = -2


def cell_anchor_sizes(
    stride: int,
    size: float,
    scales: Sequence[float] = RETINANET_SCALES,
    aspect_ratios: Sequence[float] = RETINANET_ASPECT_RATIOS,
    *,
    detectron_rounding: bool = True,
) -> Tensor:
    """Widths and heights ``[len(scales) * len(aspect_ratios), 2]`` (scale-major) of one level's cell anchors.

    Args:
        stride: the level's stride.
        size: the level's base anchor size (side of the square anchor at scale 1).
        scales: octave scales.
        aspect_ratios: h / w.
        detectron_rounding: reproduce Detectron's ``generate_anchors``: the aspect ratio is applied to
            a ``stride x stride`` base anchor with widths and heights rounded to integers
            (``w = round(sqrt(s^2 / r))``, ``h = round(w * r)``, half to even), then scaled by
            ``size * scale / stride``. At P3 the "0.5" anchor becomes 44 x 24 instead of 45.3 x 22.6.
            False gives the exact ``w = size * scale / sqrt(r)``, ``h = size * scale * sqrt(r)``
            (torchvision, detectron2).
    """
    sizes = []
    for scale in scales:
        for ratio in aspect_ratios:
            if detectron_rounding:
                base_w = torch.round(torch.tensor(math.sqrt(stride * stride / ratio), dtype=torch.float64))
                base_h = torch.round(base_w * ratio)
                factor = size * scale / stride
                sizes.append((base_w.item() * factor, base_h.item() * factor))
            else:
                sizes.append((size * scale / math.sqrt(ratio), size * scale * math.sqrt(ratio)))
    return torch.tensor(sizes, dtype=torch.float64)


def generate_anchors(
    shapes: Sequence[tuple[int, int]],
    strides: Sequence[int] = RETINANET_STRIDES,
    sizes: Sequence[float] = RETINANET_SIZES,
    scales: Sequence[float] = RETINANET_SCALES,
    aspect_ratios: Sequence[float] = RETINANET_ASPECT_RATIOS,
    *,
    offset: float = 0.5,
    detectron_rounding: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """All anchors ``[sum_l H_l * W_l * A, 4]`` xyxy, level-major, then row-major, then cell anchor.

    Args:
        shapes: ``(H_l, W_l)`` of each level (:func:`fcos_lab.points.feature_shapes`).
        strides, sizes: per level.
        scales, aspect_ratios: the cell anchors, see :func:`cell_anchor_sizes`.
        offset: anchor centers at ``(x + offset) * stride``. Detectron's base anchor
            ``[0, 0, s-1, s-1]`` is centered at ``(s-1)/2`` in its "+1" pixel convention, which is
            ``s/2`` in the continuous coordinates used here, so 0.5 reproduces Detectron (and matches
            the FCOS locations ``floor(s/2) + x*s``); 0.0 gives torchvision and detectron2.
        detectron_rounding: see :func:`cell_anchor_sizes`.
    """
    if not (len(shapes) == len(strides) == len(sizes)):
        raise InputError(f"got {len(shapes)} shapes, {len(strides)} strides and {len(sizes)} sizes")
    per_level = []
    for (height, width), stride, size in zip(shapes, strides, sizes):
        wh = cell_anchor_sizes(stride, size, scales, aspect_ratios, detectron_rounding=detectron_rounding)
        half = torch.cat([-wh / 2, wh / 2], dim=1).to(dtype)  # [A, 4]
        xs = (torch.arange(width, dtype=torch.float64) + offset) * stride
        ys = (torch.arange(height, dtype=torch.float64) + offset) * stride
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        centers = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=-1).reshape(-1, 1, 4).to(dtype)
        per_level.append((centers + half[None]).reshape(-1, 4))
    return torch.cat(per_level).to(device)


def pairwise_box_iou(anchors: Tensor, boxes: Tensor) -> Tensor:
    """IoU of every anchor with every box: ``[A, 4] x [M, 4] -> [A, M]`` or ``[B, A, 4] x [B, M, 4] -> [B, A, M]``.

    Boxes are xyxy in continuous coordinates (area ``(x1 - x0) * (y1 - y0)``, no "+1"). The 2-D case is
    :func:`torchvision.ops.box_iou`; the batched case is the same arithmetic broadcast over B.
    """
    if anchors.ndim == 2 and boxes.ndim == 2:
        return torchvision.ops.box_iou(anchors, boxes)
    if anchors.ndim != 3 or boxes.ndim != 3 or anchors.shape[0] != boxes.shape[0]:
        raise InputError(f"expected [A, 4] and [M, 4] or [B, A, 4] and [B, M, 4], got {list(anchors.shape)} and {list(boxes.shape)}")
    area_anchors = ((anchors[..., 2] - anchors[..., 0]) * (anchors[..., 3] - anchors[..., 1]))[:, :, None]
    area_boxes = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))[:, None, :]
    left_top = torch.maximum(anchors[:, :, None, :2], boxes[:, None, :, :2])
    right_bottom = torch.minimum(anchors[:, :, None, 2:], boxes[:, None, :, 2:])
    wh = (right_bottom - left_top).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_anchors + area_boxes - inter)


def match_anchors(
    iou: Tensor,
    pos_thresh: float = 0.5,
    neg_thresh: float = 0.4,
    low_quality: LowQuality = "0.4",
) -> Tensor:
    """Match anchors to ground-truth boxes by IoU, as RetinaNet's training does.

    Every anchor takes the box of highest IoU (the first one on ties). It is positive when that IoU is
    ``>= pos_thresh``, negative below ``neg_thresh`` and ignored in between. Low-quality matches then
    add, for every box, the anchors whose IoU with it equals that box's highest IoU over all anchors
    (ties included). Such an anchor still regresses *its own* best box, not necessarily the box that
    chose it, exactly as in Detectron, detectron2 and torchvision, so a box can stay unmatched even
    with low-quality matches on.

    Args:
        iou: ``[A, M]`` or ``[B, A, M]``; padding (anchors or boxes) marked by a negative IoU.
        pos_thresh: IoU for a positive anchor (0.5).
        neg_thresh: IoU below which an anchor is negative (0.4).
        low_quality: ``"none"``: no low-quality matches. ``"0.4"``: Detectron's RetinaNet (the paper's
            "official implementation"), which adds them but then sets every anchor whose highest IoU is
            below ``neg_thresh`` back to background, so only low-quality matches with IoU >=
            ``neg_thresh`` survive. ``"all"``: keep them whatever the IoU (detectron2 and torchvision
            ``allow_low_quality_matches=True``).

    Returns:
        ``[A]`` or ``[B, A]`` int64: the matched box index, :data:`MATCH_NEGATIVE` (-1) or
        :data:`MATCH_IGNORED` (-2).

    Deviation from Detectron: a box that overlaps no anchor at all (highest IoU 0) gets no low-quality
    match; Detectron and torchvision would mark every anchor tied at IoU 0 with it.
    """
    if low_quality not in LOW_QUALITY_CHOICES:
        raise InputError(f"low_quality must be one of {LOW_QUALITY_CHOICES}, got {low_quality!r}")
    if iou.ndim not in (2, 3):
        raise InputError(f"iou: expected [A, M] or [B, A, M], got {list(iou.shape)}")
    if iou.shape[-1] == 0:
        return torch.full(iou.shape[:-1], MATCH_NEGATIVE, dtype=torch.int64, device=iou.device)
    anchor_max, anchor_argmax = iou.max(dim=-1)
    matched = torch.where(
        anchor_max >= pos_thresh,
        anchor_argmax,
        torch.where(anchor_max < neg_thresh, MATCH_NEGATIVE, MATCH_IGNORED),
    )
    if low_quality == "none" or iou.shape[-2] == 0:
        return matched
    gt_max = iou.amax(dim=-2, keepdim=True)  # [.., 1, M]
    is_best_for_some_gt = ((iou == gt_max) & (gt_max > 0)).any(dim=-1)
    if low_quality == "0.4":
        is_best_for_some_gt &= anchor_max >= neg_thresh
    return torch.where(is_best_for_some_gt, anchor_argmax, matched)


def candidate_anchors(
    gt_boxes: Tensor,
    gt_valid: Tensor,
    shapes: Sequence[tuple[int, int]],
    strides: Sequence[int] = RETINANET_STRIDES,
    sizes: Sequence[float] = RETINANET_SIZES,
    scales: Sequence[float] = RETINANET_SCALES,
    aspect_ratios: Sequence[float] = RETINANET_ASPECT_RATIOS,
    *,
    offset: float = 0.5,
    detectron_rounding: bool = True,
    pos_thresh: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """The anchors that can become positive for a batch, without computing the dense ``[B, A, M]`` IoU.

    An anchor can be positive (under any low-quality rule) only if its IoU with some box ``m`` is at
    least ``min(pos_thresh, best_m)``, where ``best_m`` is the highest IoU of box ``m`` with any anchor.
    Because the intersection of an anchor of fixed shape with a box is a product of two trapezoids of
    the center offsets, ``best_m`` is attained per cell-anchor shape at the grid position nearest to the
    box center, and the positions reaching a given IoU lie in a window around it. This returns every
    anchor of those windows (a superset, with a small slack for rounding). :func:`match_anchors` on the
    IoU of these anchors with *all* boxes of their image gives exactly the positives of the dense
    matrix: every anchor of highest IoU for a box and every anchor with IoU >= ``pos_thresh`` is in
    the set, so the column maxima, their ties and each candidate's best box are unchanged.

    Args:
        gt_boxes: ``[B, M, 4]`` xyxy, in the coordinates IoU is computed in.
        gt_valid: ``[B, M]`` False for padding.
        shapes, strides, sizes, scales, aspect_ratios, offset, detectron_rounding: as for
            :func:`generate_anchors`, whose anchor order the returned indices refer to.
        pos_thresh: the positive IoU.

    Returns:
        ``(image_index, anchor_index)``, each ``[K]`` int64, sorted and without duplicates.
    """
    image_of_box, box_slot = gt_valid.nonzero(as_tuple=True)
    box = gt_boxes[image_of_box, box_slot].to(torch.float64)  # [G, 4]
    box_w, box_h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    center_x, center_y = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    box_area = (box_w * box_h)[:, None]
    num_cell = len(scales) * len(aspect_ratios)
    cells = [cell_anchor_sizes(s, z, scales, aspect_ratios, detectron_rounding=detectron_rounding) for s, z in zip(strides, sizes)]

    def overlap_1d(anchor_len: Tensor, box_len: Tensor, distance: Tensor) -> Tensor:
        return (torch.minimum(torch.minimum(anchor_len, box_len), (anchor_len + box_len) / 2 - distance)).clamp(min=0)

    def nearest(center: Tensor, stride: int, length: int) -> Tensor:
        return (torch.round(center / stride - offset)).clamp(0, length - 1)

    # Pass 1: the highest IoU of each box over all anchors (per shape, at the nearest grid position).
    best = torch.zeros(len(box), dtype=torch.float64)
    for (height, width), stride, wh in zip(shapes, strides, cells):
        dx = ((nearest(center_x, stride, width) + offset) * stride - center_x).abs()[:, None]
        dy = ((nearest(center_y, stride, height) + offset) * stride - center_y).abs()[:, None]
        inter = overlap_1d(wh[None, :, 0], box_w[:, None], dx) * overlap_1d(wh[None, :, 1], box_h[:, None], dy)
        iou = inter / (wh[None, :, 0] * wh[None, :, 1] + box_area - inter)
        best = torch.maximum(best, iou.amax(dim=1))

    # Pass 2: windows of grid positions where IoU >= tau is possible, per (box, level, cell shape).
    # Slack of 1e-4 (relative) for the float32 IoU the matcher computes.
    tau = (torch.minimum(best, torch.tensor(pos_thresh, dtype=torch.float64)) * (1 - 1e-4))[:, None]
    image_parts, anchor_parts = [], []
    level_start = 0
    for (height, width), stride, wh in zip(shapes, strides, cells):
        anchor_w, anchor_h = wh[None, :, 0], wh[None, :, 1]
        min_inter = tau * (anchor_w * anchor_h + box_area) / (1 + tau)  # IoU >= tau  <=>  inter >= this
        min_w, min_h = torch.minimum(anchor_w, box_w[:, None]), torch.minimum(anchor_h, box_h[:, None])
        reach_x = (anchor_w + box_w[:, None]) / 2 - min_inter / min_h + 1e-3  # |dx| allowed
        reach_y = (anchor_h + box_h[:, None]) / 2 - min_inter / min_w + 1e-3
        possible = (min_inter <= min_w * min_h * (1 + 1e-9)) & (best[:, None] > 0)
        col0 = torch.ceil((center_x[:, None] - reach_x) / stride - offset).clamp(min=0)
        col1 = torch.floor((center_x[:, None] + reach_x) / stride - offset).clamp(max=width - 1)
        row0 = torch.ceil((center_y[:, None] - reach_y) / stride - offset).clamp(min=0)
        row1 = torch.floor((center_y[:, None] + reach_y) / stride - offset).clamp(max=height - 1)
        num_cols = (col1 - col0 + 1).clamp(min=0).long()
        num_rows = (row1 - row0 + 1).clamp(min=0).long()
        count = torch.where(possible, num_cols * num_rows, 0).reshape(-1)  # [G * num_cell]
        window = torch.repeat_interleave(torch.arange(len(count)), count)
        local = torch.arange(len(window)) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        cols_in_window = num_cols.reshape(-1)[window]
        col = col0.reshape(-1)[window].long() + local % cols_in_window
        row = row0.reshape(-1)[window].long() + torch.div(local, cols_in_window, rounding_mode="floor")
        cell = window % num_cell
        image_parts.append(image_of_box[window // num_cell])
        anchor_parts.append(level_start + (row * width + col) * num_cell + cell)
        level_start += height * width * num_cell

    image_index = torch.cat(image_parts)
    anchor_index = torch.cat(anchor_parts)
    key = torch.unique(image_index * level_start + anchor_index)
    return torch.div(key, level_start, rounding_mode="floor"), key % level_start


def anchor_recall(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_valid: Tensor,
    image_index: Tensor,
    anchor_index: Tensor,
    *,
    pos_thresh: float = 0.5,
    neg_thresh: float = 0.4,
    low_quality_rules: Sequence[str] = LOW_QUALITY_CHOICES,
) -> dict[str, tuple[Tensor, int]]:
    """Which boxes some anchor is matched to, per low-quality rule, for a batch of images.

    Args:
        anchors: ``[A, 4]`` xyxy anchors of the batch's padded size (:func:`generate_anchors`).
        gt_boxes: ``[B, M, 4]`` xyxy; gt_valid: ``[B, M]``.
        image_index, anchor_index: ``[K]`` the anchors to match (all anchors that can be positive, from
            :func:`candidate_anchors`).

    Returns:
        ``{rule: (recalled [B, M] bool, number of positive anchors)}``.
    """
    num_images, num_boxes = gt_valid.shape
    per_image = torch.bincount(image_index, minlength=num_images)
    most = int(per_image.max()) if len(image_index) else 0
    slot = torch.arange(len(image_index)) - torch.repeat_interleave(torch.cumsum(per_image, 0) - per_image, per_image)
    candidate_boxes = torch.zeros((num_images, most, 4), dtype=anchors.dtype)
    candidate_valid = torch.zeros((num_images, most), dtype=torch.bool)
    candidate_boxes[image_index, slot] = anchors[anchor_index]
    candidate_valid[image_index, slot] = True
    iou = pairwise_box_iou(candidate_boxes, gt_boxes.to(anchors.dtype))
    iou = iou.masked_fill(~(candidate_valid[:, :, None] & gt_valid[:, None, :]), -1.0)
    result = {}
    for rule in low_quality_rules:
        matched = match_anchors(iou, pos_thresh, neg_thresh, rule)
        recalled = torch.zeros((num_images, num_boxes), dtype=torch.bool)
        hit_image, hit_anchor = (matched >= 0).nonzero(as_tuple=True)
        recalled[hit_image, matched[hit_image, hit_anchor]] = True
        result[rule] = (recalled, len(hit_image))
    return result
