"""Center-ness over the image, level by level (Section 3.3, Eq. 3, Figure 3): the numbers behind the heatmaps.

- :func:`target_centerness_grids`: the Eq. (3) target of every positive location of an image's training
  assignment (:class:`~fcos_lab.analysis.image_assignment.ImageAssignment`), one grid per level.
- :func:`prediction_maps`: a model's predicted center-ness, classification score and their product (the
  ranking score of Section 3.3) on one level.

Each grid is a :class:`LevelGrid`: the values of a level's locations as ``[H_l, W_l]`` (row ``i``, column
``j`` of the feature map) and where its first location and spacing are in input-image pixels, read off
the locations themselves, so a preset whose spacing is not the stride (torchvision's ``padded_size //
grid_size`` on P6/P7) is drawn where its locations really are. The figures are :mod:`fcos_lab.viz.heatmaps`
and :func:`fcos_lab.viz.figures.centerness_png`.

Glossary: P locations over all levels, C classes, L levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from fcos_lab.analysis.image_assignment import ImageAssignment
from fcos_lab.points import Locations


@dataclass(frozen=True)
class LevelGrid:
    """One level's values as a grid over the input image.

    Attributes:
        name: the level (``"P3"``); ``stride`` its nominal stride.
        values: ``[H_l, W_l]``; NaN where nothing is drawn.
        x0, y0: the location of cell ``(0, 0)``; ``dx``, ``dy`` the spacing of columns and rows (pixels):
            cell ``(i, j)`` is the location ``(x0 + j * dx, y0 + i * dy)``.
    """

    name: str
    stride: int
    values: np.ndarray
    x0: float
    y0: float
    dx: float
    dy: float


def level_grid(values: np.ndarray | Tensor, shapes: Sequence[tuple[int, int]], level: int) -> np.ndarray:
    """The ``[H_l, W_l, ...]`` grid of level ``level`` out of values ``[P, ...]`` flattened level by level."""
    values = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    counts = [h * w for h, w in shapes]
    start = sum(counts[:level])
    height, width = shapes[level]
    return values[start : start + counts[level]].reshape(height, width, *values.shape[1:])


def _grid(values: np.ndarray, points: np.ndarray | Tensor, shapes: Sequence[tuple[int, int]], level: int,
          name: str, stride: int) -> LevelGrid:
    """``values`` ``[H_l, W_l]`` of ``level`` placed by the level's location ``points`` ``[P, 2]``."""
    cells = level_grid(points, shapes, level).astype(float)  # [H_l, W_l, 2] (x, y)
    height, width = cells.shape[:2]
    dx = cells[0, 1, 0] - cells[0, 0, 0] if width > 1 else float(stride)
    dy = cells[1, 0, 1] - cells[0, 0, 1] if height > 1 else float(stride)
    return LevelGrid(name, int(stride), values, float(cells[0, 0, 0]), float(cells[0, 0, 1]), float(dx), float(dy))


def target_centerness_grids(assignment: ImageAssignment, hide_background: bool = True) -> list[LevelGrid]:
    """Per level, the ``[H_l, W_l]`` center-ness target (Eq. 3); NaN on background when ``hide_background``."""
    a = assignment
    grids = []
    for level, (name, stride) in enumerate(zip(a.objective.level_names, a.objective.strides)):
        values = level_grid(a.centerness, a.shapes, level).astype(float)
        if hide_background:
            values[level_grid(a.matched_gt, a.shapes, level) < 0] = np.nan
        grids.append(_grid(values, a.points, a.shapes, level, name, stride))
    return grids


def prediction_maps(
    cls_logits: Tensor,
    centerness_logits: Tensor | None,
    locations: Locations,
    level: int,
    *,
    image_size: tuple[int, int],
    level_name: str = "",
    score_sqrt: bool = False,
) -> dict[str, LevelGrid]:
    """Predicted maps of one image on one level, NaN at the locations in the padding.

    Args:
        cls_logits: ``[P, C]``; the classification score of a location is its highest class probability.
        centerness_logits: ``[P]``, or None for a model without the branch (center-ness 1).
        locations: the P locations of the output (:meth:`fcos_lab.objective.Objective.output_locations`).
        level: which level; ``level_name`` its name.
        image_size: ``(h, w)`` of the image before padding.
        score_sqrt: the score is ``sqrt(cls x ctr)`` (official code, torchvision) instead of the product.

    Returns:
        ``{"center-ness": ..., "classification": ..., "score": ...}``.
    """
    shapes = locations.shapes
    cls = level_grid(cls_logits.float().sigmoid().amax(dim=-1), shapes, level)
    ctr = np.ones_like(cls) if centerness_logits is None else level_grid(centerness_logits.float().sigmoid(), shapes, level)
    score = np.sqrt(cls * ctr) if score_sqrt else cls * ctr
    points = level_grid(locations.points, shapes, level)
    height, width = image_size
    padding = (points[..., 0] >= width) | (points[..., 1] >= height)
    stride = int(locations.strides[sum(h * w for h, w in shapes[:level])]) if len(locations.strides) else 0
    maps = {}
    for name, values in (("center-ness", ctr), ("classification", cls), ("score", score)):
        values = values.astype(float).copy()
        values[padding] = np.nan
        maps[name] = _grid(values, locations.points, shapes, level, level_name, stride)
    return maps
