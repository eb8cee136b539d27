"""Per-level location grids (Section 3.1).

A location ``(x, y)`` on the feature map of stride ``s`` maps back onto the input image as
``(floor(s/2) + x*s, floor(s/2) + y*s)``, near the center of its receptive field. The offset is
defined here once; torchvision places locations at ``x*s`` (offset zero) and, for P6/P7, uses
``padded_size // grid_size`` as the spacing, which the ``stride_from_image`` switch reproduces.

Glossary: L levels, P locations over all levels (level-major, row-major within a level).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor


@dataclass(frozen=True)
class Locations:
    """Locations of all levels, flattened level by level.

    Attributes:
        points: ``[P, 2]`` (x, y) image coordinates of each location.
        strides: ``[P]`` nominal stride of each location's level (8, 16, ...).
        level_index: ``[P]`` index of the level (0 for P3).
        num_per_level: number of locations on each level; sums to P.
        shapes: ``(H_l, W_l)`` of each level's feature map.
    """

    points: Tensor
    strides: Tensor
    level_index: Tensor
    num_per_level: tuple[int, ...]
    shapes: tuple[tuple[int, int], ...]


def make_locations(
    shapes: tuple[tuple[int, int], ...] | list[tuple[int, int]],
    strides: tuple[int, ...],
    offset: str = "half_stride",
    image_size: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
) -> Locations:
    """Location grids for feature maps of the given shapes, cached per (shapes, strides, device).

    Args:
        shapes: ``(H_l, W_l)`` of each level.
        strides: nominal stride of each level.
        offset: ``"half_stride"`` (the paper's floor(s/2)) or ``"zero"`` (torchvision).
        image_size: padded ``(H, W)`` of the batch; when given, the spacing along each axis is
            ``size // grid`` (torchvision's anchor generator) instead of the nominal stride.
        device: where the tensors live.
    """
    key_image = tuple(image_size) if image_size is not None else None
    return _make_locations_cached(
        tuple(tuple(int(v) for v in s) for s in shapes), tuple(int(s) for s in strides), offset, key_image, str(device)
    )


@lru_cache(maxsize=64)
def _make_locations_cached(
    shapes: tuple[tuple[int, int], ...],
    strides: tuple[int, ...],
    offset: str,
    image_size: tuple[int, int] | None,
    device: str,
) -> Locations:
    points, point_strides, levels = [], [], []
    for level, ((height, width), stride) in enumerate(zip(shapes, strides)):
        points.append(level_points(height, width, stride, offset, image_size, device))
        point_strides.append(torch.full((height * width,), float(stride), device=device))
        levels.append(torch.full((height * width,), level, dtype=torch.int64, device=device))
    return Locations(
        points=torch.cat(points),
        strides=torch.cat(point_strides),
        level_index=torch.cat(levels),
        num_per_level=tuple(h * w for h, w in shapes),
        shapes=shapes,
    )


def level_points(
    height: int,
    width: int,
    stride: int,
    offset: str = "half_stride",
    image_size: tuple[int, int] | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``[H*W, 2]`` (x, y) image coordinates of one level's locations, row-major.

    ``height``, ``width`` and ``image_size`` may be symbolic sizes (``torch.export``, ONNX export with
    dynamic height and width): only tensor arithmetic on them is used, no Python branching.

    Args:
        height, width: the level's feature-map size.
        stride: the level's nominal stride s.
        offset: ``"half_stride"`` places location x at ``floor(s/2) + x*s`` (Section 3.1); ``"zero"`` at
            ``x*s`` (torchvision).
        image_size: padded ``(H, W)``; when given the spacing is ``H // height`` and ``W // width``.
        device: where the tensor lives.
    """
    if offset not in ("half_stride", "zero"):
        raise ValueError(f"offset must be 'half_stride' or 'zero', got {offset!r}")
    shift = stride // 2 if offset == "half_stride" else 0
    step_y = image_size[0] // height if image_size is not None else stride
    step_x = image_size[1] // width if image_size is not None else stride
    ys = torch.arange(height, dtype=torch.float32, device=device) * step_y + shift
    xs = torch.arange(width, dtype=torch.float32, device=device) * step_x + shift
    # Broadcast against zeros instead of torch.meshgrid: the ONNX export of meshgrid's expand gave wrong
    # shapes for levels one location wide (torch 2.14, onnxruntime 1.32). Adding 0 is exact.
    zeros = torch.zeros(height, width, device=device)
    return torch.stack([(xs[None, :] + zeros).reshape(-1), (ys[:, None] + zeros).reshape(-1)], dim=1)


def grid_shapes(image_size: tuple[int, int], strides: tuple[int, ...] | list[int]) -> tuple[tuple[int, int], ...]:
    """``(ceil(H / s), ceil(W / s))`` of each stride for a padded input of ``image_size`` (H, W).

    ResNet halves the size with ceil at each stride-2 stage (conv 3x3 pad 1, max-pool pad 1), and P6/P7
    are stride-2 3x3 convs with padding 1, so the map of stride ``2^k`` is ``k`` ceil-halvings of the
    input, which is ``ceil(H / 2^k)``: the network's feature-map shapes, for any input size.
    """
    height, width = image_size
    return tuple((-(-int(height) // int(s)), -(-int(width) // int(s))) for s in strides)


def feature_shapes(image_size: tuple[int, int], num_levels: int = 5) -> tuple[tuple[int, int], ...]:
    """Feature-map shapes P3..P(2+num_levels) for a padded input of ``image_size`` (H, W)."""
    return grid_shapes(image_size, tuple(2 ** level for level in range(3, 3 + num_levels)))
