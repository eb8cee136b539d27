"""Center-ness as heatmaps over the image (Section 3.3, Eq. 3, Figure 3).

- :func:`centerness_target_figure`: the Eq. (3) target of every positive location, level by level,
  over the image (red 1, blue 0, as in Figure 3).
- :func:`prediction_maps_figure`: a model's predicted center-ness, classification score and their
  product (the ranking score of Section 3.3) side by side over the image.
- :func:`centerness_function_figure`: Eq. (3) inside a single box.

The image is drawn in grey under the maps and the ground-truth boxes are outlined on every panel (a dark
line under a white one), so that the colours of the maps stay readable on any image: red 1 is never red on
a red object.

Arrays in, plotly figures out; plotly is imported inside the figure functions. The grids, and where each
level's locations are, come from :mod:`fcos_lab.analysis.centerness_maps` (:class:`LevelGrid`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from fcos_lab.boxes import centerness_from_ltrb
from fcos_lab.viz.image_figures import box_outline_traces, image_trace

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from fcos_lab.analysis.centerness_maps import LevelGrid

# Figure 3: "Red, blue, and other colors denote 1, 0 and the values between them".
CENTERNESS_COLORSCALE = "Jet"


def _heatmap(grid: LevelGrid, *, opacity: float, name: str = "") -> go.Heatmap:
    """A level's grid drawn over the image: cell (i, j) centred on its location; colours from the shared axis."""
    import plotly.graph_objects as go

    return go.Heatmap(
        z=grid.values, x0=grid.x0, dx=grid.dx, y0=grid.y0, dy=grid.dy, coloraxis="coloraxis", opacity=opacity,
        name=name, hoverongaps=False, hovertemplate=f"{name} at (%{{x:.0f}}, %{{y:.0f}}): %{{z:.3f}}<extra></extra>",
    )


def _image_size(image: Tensor | np.ndarray) -> tuple[int, int]:
    """``(h, w)`` of a ``[3, H, W]`` tensor or an ``[H, W, 3]`` array."""
    return (image.shape[-2], image.shape[-1]) if isinstance(image, Tensor) else image.shape[:2]


def _panel(figure: go.Figure, backdrop: go.Image, grid: LevelGrid, boxes: Tensor | np.ndarray | None, *, row: int,
           col: int, axis: int, size: tuple[int, int], opacity: float, name: str) -> None:
    """One panel: the grey image, the grid over it, the boxes outlined, axes in image pixels."""
    height, width = size
    figure.add_trace(backdrop, row=row, col=col)
    figure.add_trace(_heatmap(grid, opacity=opacity, name=name), row=row, col=col)
    if boxes is not None and len(boxes):
        figure.add_traces(box_outline_traces(boxes, "white", width=1.5, halo=True, name="ground truth"), rows=row, cols=col)
    figure.update_xaxes(range=[0, width], showticklabels=False, showgrid=False, zeroline=False, row=row, col=col)
    figure.update_yaxes(range=[height, 0], showticklabels=False, showgrid=False, zeroline=False,
                        scaleanchor=f"x{axis if axis > 1 else ''}", row=row, col=col)


# One colour axis for every panel: the same colour means the same value, and one colour bar is drawn.
_COLOR_AXIS = {"colorscale": CENTERNESS_COLORSCALE, "cmin": 0, "cmax": 1, "colorbar": {"len": 0.8, "thickness": 12}}


def centerness_target_figure(
    image: Tensor | np.ndarray,
    grids: Sequence[LevelGrid],
    *,
    boxes: Tensor | np.ndarray | None = None,
    columns: int = 3,
    opacity: float = 0.65,
    panel_height: int = 300,
) -> go.Figure:
    """Figure 3 on an image: the center-ness target of every positive location, one panel per level.

    Args:
        image: the input image (``[3, H, W]`` tensor or ``[H, W, 3]`` array) in the frame of the grids.
        grids: :func:`fcos_lab.analysis.centerness_maps.target_centerness_grids` (NaN on background).
        boxes: ``[M, 4]`` xyxy ground truth in the same frame, outlined on every panel.
    """
    from plotly.subplots import make_subplots

    count = len(grids)
    columns = min(columns, count)
    rows = -(-count // columns)
    titles = [f"{g.name} (stride {g.stride}): {int(np.isfinite(g.values).sum())} positives" for g in grids]
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=titles, horizontal_spacing=0.03,
                           vertical_spacing=0.08)
    backdrop = image_trace(image, gray=True)
    for level, grid in enumerate(grids):
        _panel(figure, backdrop, grid, boxes, row=level // columns + 1, col=level % columns + 1, axis=level + 1,
               size=_image_size(image), opacity=opacity, name=f"center-ness* {grid.name}")
    figure.update_layout(height=panel_height * rows + 60, margin={"l": 10, "r": 10, "t": 60, "b": 10},
                         title="Center-ness targets (Eq. 3) per level: red 1, blue 0", coloraxis=_COLOR_AXIS)
    return figure


def prediction_maps_figure(
    image: Tensor | np.ndarray,
    maps: Mapping[str, LevelGrid],
    *,
    boxes: Tensor | np.ndarray | None = None,
    opacity: float = 0.6,
    panel_height: int = 380,
) -> go.Figure:
    """Predicted maps of :func:`fcos_lab.analysis.centerness_maps.prediction_maps` side by side over the image
    (in the model's input frame); ``boxes`` ``[M, 4]`` xyxy ground truth in that frame, outlined on each."""
    from plotly.subplots import make_subplots

    names = list(maps)
    figure = make_subplots(rows=1, cols=len(names), subplot_titles=[f"predicted {n} {maps[n].name}" for n in names],
                           horizontal_spacing=0.03)
    backdrop = image_trace(image, gray=True)
    for col, name in enumerate(names, start=1):
        _panel(figure, backdrop, maps[name], boxes, row=1, col=col, axis=col, size=_image_size(image), opacity=opacity,
               name=name)
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
