"""Center-ness as heatmaps over the image (Section 3.3, Eq. 3, Figure 3).

- :func:`centerness_target_figure`: the Eq. (3) target of every positive location, level by level,
  over the image (red 1, blue 0, as in Figure 3).
- :func:`prediction_maps`: a model's predicted center-ness, classification score and their product
  (the ranking score of Section 3.3) on one level, as ``[H_l, W_l]`` grids;
  :func:`prediction_maps_figure` draws them side by side over the image.
- :func:`centerness_function_figure`: Eq. (3) inside a single box.

Arrays in, plotly figures out; plotly is imported inside the figure functions. Grids are indexed
``[row, column]`` of a level's feature map; the location of cell ``(i, j)`` is
``(offset + j * stride, offset + i * stride)`` in input-image pixels (Section 3.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from fcos_lab.boxes import centerness_from_ltrb
from fcos_lab.viz.assignments import ImageAssignment
from fcos_lab.viz.image_figures import image_uri

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Figure 3: "Red, blue, and other colors denote 1, 0 and the values between them".
CENTERNESS_COLORSCALE = "Jet"


def level_grid(values: np.ndarray | Tensor, shapes: Sequence[tuple[int, int]], level: int) -> np.ndarray:
    """The ``[H_l, W_l]`` grid of level ``level`` out of values ``[P, ...]`` flattened level by level."""
    values = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    counts = [h * w for h, w in shapes]
    start = sum(counts[:level])
    height, width = shapes[level]
    return values[start : start + counts[level]].reshape(height, width, *values.shape[1:])


def location_offset(stride: int, offset: str = "half_stride") -> float:
    """Where the first location of a level sits: ``floor(s/2)`` (Section 3.1) or 0 (torchvision)."""
    return float(stride // 2) if offset == "half_stride" else 0.0


def _mask_outside(grid: np.ndarray, stride: int, offset: float, image_size: tuple[int, int]) -> np.ndarray:
    """NaN where a location lies in the padding, beyond the image."""
    height, width = image_size
    rows = offset + stride * np.arange(grid.shape[0]) >= height
    cols = offset + stride * np.arange(grid.shape[1]) >= width
    grid = grid.astype(float).copy()
    grid[rows, :] = np.nan
    grid[:, cols] = np.nan
    return grid


def target_centerness_grids(assignment: ImageAssignment, hide_background: bool = True) -> list[np.ndarray]:
    """Per level, the ``[H_l, W_l]`` center-ness target (Eq. 3); NaN on background when ``hide_background``."""
    a = assignment
    grids = []
    for level, stride in enumerate(a.setup.strides):
        grid = level_grid(a.centerness, a.shapes, level).astype(float)
        if hide_background:
            grid[level_grid(a.matched_gt, a.shapes, level) < 0] = np.nan
        grids.append(grid)
    return grids


def prediction_maps(
    cls_logits: Tensor,
    centerness_logits: Tensor | None,
    shapes: Sequence[tuple[int, int]],
    level: int,
    *,
    stride: int,
    image_size: tuple[int, int],
    offset: str = "half_stride",
    score_sqrt: bool = False,
) -> dict[str, np.ndarray]:
    """Predicted maps of one image on one level, ``[H_l, W_l]`` each, NaN in the padding.

    Args:
        cls_logits: ``[P, C]``; the classification score of a location is its highest class probability.
        centerness_logits: ``[P]``, or None for a model without the branch (center-ness 1).
        shapes: ``(H_l, W_l)`` of every level.
        level: which level.
        stride: its stride; ``offset`` its location offset; ``image_size`` ``(h, w)`` before padding.
        score_sqrt: the score is ``sqrt(cls x ctr)`` (official code, torchvision) instead of the product.

    Returns:
        ``{"center-ness": ..., "classification": ..., "score": ...}``.
    """
    cls = level_grid(cls_logits.float().sigmoid().amax(dim=-1), shapes, level)
    if centerness_logits is None:
        ctr = np.ones_like(cls)
    else:
        ctr = level_grid(centerness_logits.float().sigmoid(), shapes, level)
    score = np.sqrt(cls * ctr) if score_sqrt else cls * ctr
    first = location_offset(stride, offset)
    return {name: _mask_outside(grid, stride, first, image_size)
            for name, grid in (("center-ness", ctr), ("classification", cls), ("score", score))}


def _heatmap(grid: np.ndarray, stride: int, first: float, *, opacity: float, name: str = "") -> go.Heatmap:
    """A level's grid drawn over the image: cell (i, j) centred on its location; colours from the shared axis."""
    import plotly.graph_objects as go

    return go.Heatmap(
        z=grid, x0=first, dx=stride, y0=first, dy=stride, coloraxis="coloraxis", opacity=opacity, name=name,
        hoverongaps=False, hovertemplate=f"{name} at (%{{x:.0f}}, %{{y:.0f}}): %{{z:.3f}}<extra></extra>",
    )


# One colour axis for every panel: the same colour means the same value, and one colour bar is drawn.
_COLOR_AXIS = {"colorscale": CENTERNESS_COLORSCALE, "cmin": 0, "cmax": 1, "colorbar": {"len": 0.8, "thickness": 12}}


def centerness_target_figure(
    image: Tensor | np.ndarray,
    assignment: ImageAssignment,
    *,
    offset: str = "half_stride",
    columns: int = 3,
    opacity: float = 0.65,
    panel_height: int = 300,
) -> go.Figure:
    """Figure 3 on an image: the center-ness target of every positive location, one panel per level."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    a = assignment
    grids = target_centerness_grids(a)
    count = len(grids)
    columns = min(columns, count)
    rows = -(-count // columns)
    titles = [
        f"{name} (stride {s}): {int(np.isfinite(g).sum())} positives"
        for name, s, g in zip(a.setup.names, a.setup.strides, grids)
    ]
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=titles, horizontal_spacing=0.03,
                           vertical_spacing=0.08)
    uri = image_uri(image)
    height, width = a.image_size
    for level, (grid, stride) in enumerate(zip(grids, a.setup.strides)):
        row, col = level // columns + 1, level % columns + 1
        figure.add_trace(go.Image(source=uri, hoverinfo="skip"), row=row, col=col)
        figure.add_trace(
            _heatmap(grid, stride, location_offset(stride, offset), opacity=opacity,
                     name=f"center-ness* {a.setup.names[level]}"),
            row=row, col=col,
        )
        figure.update_xaxes(range=[0, width], showticklabels=False, row=row, col=col)
        figure.update_yaxes(range=[height, 0], showticklabels=False, scaleanchor=f"x{level + 1 if level else ''}",
                            row=row, col=col)
    figure.update_layout(height=panel_height * rows + 60, margin={"l": 10, "r": 10, "t": 60, "b": 10},
                         title="Center-ness targets (Eq. 3) per level: red 1, blue 0", coloraxis=_COLOR_AXIS)
    return figure


def prediction_maps_figure(
    image: Tensor | np.ndarray,
    maps: dict[str, np.ndarray],
    *,
    stride: int,
    offset: str = "half_stride",
    level_name: str = "",
    opacity: float = 0.6,
    panel_height: int = 380,
) -> go.Figure:
    """Predicted maps of :func:`prediction_maps` side by side over the image (in the model's input frame)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(maps)
    figure = make_subplots(rows=1, cols=len(names), subplot_titles=[f"predicted {n} {level_name}" for n in names],
                           horizontal_spacing=0.03)
    height, width = (image.shape[-2], image.shape[-1]) if isinstance(image, Tensor) else image.shape[:2]
    uri = image_uri(image)
    first = location_offset(stride, offset)
    for col, name in enumerate(names, start=1):
        figure.add_trace(go.Image(source=uri, hoverinfo="skip"), row=1, col=col)
        figure.add_trace(_heatmap(maps[name], stride, first, opacity=opacity, name=name), row=1, col=col)
        figure.update_xaxes(range=[0, width], showticklabels=False, row=1, col=col)
        figure.update_yaxes(range=[height, 0], showticklabels=False, scaleanchor=f"x{col if col > 1 else ''}",
                            row=1, col=col)
    figure.update_layout(height=panel_height, margin={"l": 10, "r": 10, "t": 50, "b": 10}, coloraxis=_COLOR_AXIS)
    return figure


def centerness_function_figure(width: float = 160, height: float = 100, samples: int = 81) -> go.Figure:
    """Eq. (3) over a single ``width x height`` box: 1 at the center, 0 on the sides (Figure 3)."""
    import plotly.graph_objects as go

    xs = torch.linspace(0, width, samples)
    ys = torch.linspace(0, height, samples)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    ltrb = torch.stack([grid_x, grid_y, width - grid_x, height - grid_y], dim=-1)
    values = centerness_from_ltrb(ltrb).numpy()
    figure = go.Figure(go.Heatmap(
        z=values, x=xs.numpy(), y=ys.numpy(), zmin=0, zmax=1, colorscale=CENTERNESS_COLORSCALE,
        hovertemplate="x=%{x:.0f} y=%{y:.0f}<br>center-ness*=%{z:.3f}<extra></extra>",
    ))
    figure.update_yaxes(autorange="reversed", scaleanchor="x")
    figure.update_layout(height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         title=f"Eq. (3) inside a {width:g} x {height:g} box")
    return figure
