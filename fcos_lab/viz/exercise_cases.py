"""The failing case of a workshop check, drawn: boxes on an empty canvas and the points the case is about.

:func:`case_figure` draws what :mod:`fcos_lab.workshop.checks` names in words, e.g. the location two boxes
compete for with the box that should win and the box the participant's code chose, or the locations a
feature map should have against those the code produced. The canvas is the input image's size in pixels
(dark grey), with the axes of :func:`fcos_lab.viz.image_figures.image_figure`.

Arrays in, plotly figures out; plotly is imported inside the function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from fcos_lab.viz.image_figures import add_boxes, box_colors, image_figure

if TYPE_CHECKING:
    import plotly.graph_objects as go

CANVAS_GREY = 50


class Mark(NamedTuple):
    """Points drawn with one marker: ``points`` ``[N, 2]`` (x, y) in pixels."""

    name: str
    points: np.ndarray
    color: str
    symbol: str = "circle"
    size: int = 10


def case_figure(
    image_size: tuple[int, int],
    boxes: np.ndarray,
    *,
    box_texts: Sequence[str] = (),
    colors: Sequence[str] | None = None,
    marks: Sequence[Mark] = (),
    title: str = "",
    height: int = 380,
) -> go.Figure:
    """Boxes ``[M, 4]`` (xyxy pixels) and marked points on an empty canvas of ``image_size`` (h, w)."""
    import plotly.graph_objects as go

    height_px, width_px = (max(int(v), 1) for v in image_size)
    canvas = np.full((height_px, width_px, 3), CANVAS_GREY, dtype=np.uint8)
    figure = image_figure(canvas, height=height)
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    if len(boxes):
        add_boxes(figure, boxes, list(colors) if colors is not None else box_colors(len(boxes)), list(box_texts))
    for mark in marks:
        points = np.asarray(mark.points, dtype=float).reshape(-1, 2)
        figure.add_trace(go.Scatter(
            x=points[:, 0], y=points[:, 1], mode="markers", name=mark.name,
            marker={"size": mark.size, "color": mark.color, "symbol": mark.symbol, "line": {"width": 2, "color": mark.color}},
            hovertemplate=f"{mark.name} (%{{x:g}}, %{{y:g}})<extra></extra>",
        ))
    figure.update_layout(title=title, showlegend=bool(marks))
    return figure
