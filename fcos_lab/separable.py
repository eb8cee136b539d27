"""The grid arithmetic behind the fast assignment of :mod:`fcos_lab.targets` (Sections 3.1 and 3.2).

On a grid, l* and r* depend only on a location's column and t* and b* only on its row, and so does
every test on them (inside the box, size range, center region). :func:`layout` finds the columns and
rows of every level's grid; :func:`per_location` combines per-row and per-column ``[B, Y, K]`` and
``[B, X, K]`` tests into ``[B, P, K]`` with one logical or bitwise operation per level. Candidate boxes
are kept as int64 bit sets in minimal-area order (:func:`bit_sets`), so counting them
(:func:`popcount`) and picking the best-ranked one (:func:`first_rank`) are integer operations on
``[B, P]``. Glossary: B images, P locations, M boxes, X columns, Y rows, W words of a bit set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from fcos_lab.points import Locations


@dataclass(frozen=True)
class Layout:
    """Locations as per-level grids of columns (x) and rows (y); see :func:`layout`.

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
def layout(locations: Locations) -> Layout:
    """The columns and rows of every level's grid, or the element-wise layout when the points are no grid.

    The check reads the points (a device synchronisation); :func:`fcos_lab.points.make_locations`
    returns cached objects, so it runs once per feature-map shape rather than once per step.
    """
    points, strides, levels = locations.points, locations.strides, locations.level_index
    num_points = points.shape[0]
    elementwise = Layout(points[:, 0], points[:, 1], strides, strides, levels, levels, None, num_points)
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
    grid = Layout(
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


def per_location(op: Callable[..., Tensor], per_row: Tensor, per_column: Tensor, layout: Layout) -> Tensor:
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
BITS_PER_WORD = 52


def bit_sets(mask: Tensor, order: Tensor) -> Tensor:
    """Pack ``mask`` ``[B, N, M]`` into int64 bit sets ``[B, N, W]``, boxes in ``order`` from the top bit down.

    The box of rank k (``order[:, k]``) is bit ``51 - k % 52`` of word ``k // 52``: the best-ranked box of a
    set is its first non-empty word's highest bit.
    """
    num_images, num_rows, num_boxes = mask.shape
    num_words = -(-num_boxes // BITS_PER_WORD)
    ranked = mask.gather(2, order[:, None, :].expand(-1, num_rows, -1)).long()
    ranked = torch.nn.functional.pad(ranked, (0, num_words * BITS_PER_WORD - num_boxes))
    weights = 2 ** torch.arange(BITS_PER_WORD - 1, -1, -1, device=mask.device)
    return (ranked.view(num_images, num_rows, num_words, BITS_PER_WORD) * weights).sum(dim=-1)


def popcount(words: Tensor) -> Tensor:
    """Number of set bits of non-negative int64 ``words`` (the classic SWAR bit count)."""
    x = words - ((words >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    x = x + (x >> 8)
    x = x + (x >> 16)
    x = x + (x >> 32)
    return x & 0x7F


def first_rank(words: Tensor) -> Tensor:
    """Rank of the best box in bit sets ``[B, P, W]`` (from :func:`bit_sets`); W * 52 where empty."""
    num_words = words.shape[-1]
    top_bit = torch.frexp(words.double()).exponent - 1  # -1 for an empty word
    rank = torch.full(words.shape[:-1], num_words * BITS_PER_WORD, dtype=torch.int64, device=words.device)
    for w in range(num_words - 1, -1, -1):  # one word up to 52 boxes: a loop of one in practice
        rank = torch.where(words[..., w] != 0, w * BITS_PER_WORD + BITS_PER_WORD - 1 - top_bit[..., w], rank)
    return rank
