"""An image as a plotly figure in pixel coordinates, with boxes outlined on it.

The background of the app's figures (:mod:`fcos_lab.viz.assignments`, :mod:`fcos_lab.viz.heatmaps`,
:func:`fcos_lab.viz.detections.detections_figure`): the image as a compressed data URI
(:func:`image_uri`), a figure whose axes are the image's pixels (:func:`image_figure`) and xyxy boxes
drawn on it (:func:`add_boxes`, :func:`box_colors`). The PIL drawing of Figure 8 is
:mod:`fcos_lab.viz.draw`. plotly is imported inside the functions.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor

if TYPE_CHECKING:
    import plotly.graph_objects as go


def box_colors(count: int) -> list[str]:
    """A distinct colour per box index (plotly's Light24 cycled)."""
    import plotly.colors

    palette = plotly.colors.qualitative.Light24
    return [palette[i % len(palette)] for i in range(count)]


def image_uri(image: Tensor | np.ndarray, quality: int = 85) -> str:
    """A ``[3, H, W]`` float tensor in [0, 1] or ``[H, W, 3]`` uint8 array as a base64 JPEG data URI.

    A compressed source keeps the figure small: an 800 x 1066 image is ~100 KB of JSON instead of the
    ~10 MB a pixel array would cost on every re-render.
    """
    if isinstance(image, Tensor):
        image = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_figure(image: Tensor | np.ndarray | str, size: tuple[int, int] | None = None, *, height: int = 640) -> go.Figure:
    """An image (or a data URI with its ``(h, w)``) as the background of a figure in pixel coordinates."""
    import plotly.graph_objects as go

    if isinstance(image, str):
        if size is None:
            raise ValueError("a data URI needs its (h, w) size")
        uri, (img_h, img_w) = image, size
    else:
        img_h, img_w = (image.shape[-2], image.shape[-1]) if isinstance(image, Tensor) else image.shape[:2]
        uri = image_uri(image)
    figure = go.Figure(go.Image(source=uri, hoverinfo="skip", name="image"))
    figure.update_xaxes(range=[0, img_w], showgrid=False, zeroline=False)
    figure.update_yaxes(range=[img_h, 0], showgrid=False, zeroline=False, scaleanchor="x")
    figure.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, hoverlabel={"align": "left"},
        legend={"x": 1.01, "y": 1, "xanchor": "left", "yanchor": "top"},
    )
    return figure


def add_boxes(
    figure: go.Figure,
    boxes: np.ndarray | Tensor,
    colors: Sequence[str],
    texts: Sequence[str] = (),
    *,
    dash: str = "solid",
    width: float = 2,
    name: str = "boxes",
) -> None:
    """Outline xyxy ``boxes`` ``[K, 4]``, one colour each, with an optional label at the top-left corner.

    Boxes of one colour share a trace and the labels are added in one layout update: a hundred
    detections then cost milliseconds instead of the seconds of one ``add_trace`` per box.
    """
    import plotly.graph_objects as go

    boxes = boxes.detach().cpu().numpy() if isinstance(boxes, Tensor) else np.asarray(boxes)
    boxes = boxes.reshape(-1, 4)
    by_color: dict[str, list[int]] = {}
    for k, color in enumerate(colors[: len(boxes)]):
        by_color.setdefault(color, []).append(k)
    for color, members in by_color.items():
        x0, y0, x1, y1 = (boxes[members, i] for i in range(4))
        gap = np.full(len(members), np.nan)
        xs = np.stack([x0, x1, x1, x0, x0, gap], axis=1).reshape(-1)
        ys = np.stack([y0, y0, y1, y1, y0, gap], axis=1).reshape(-1)
        figure.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines", hoverinfo="skip", line={"color": color, "width": width, "dash": dash},
            name=name, legendgroup=name, showlegend=False, connectgaps=False,
        ))
    labels = [
        {"x": float(boxes[k, 0]), "y": float(boxes[k, 1]), "text": text, "showarrow": False, "xanchor": "left",
         "yanchor": "bottom", "font": {"size": 11, "color": "black"}, "bgcolor": colors[k], "opacity": 0.9,
         "borderpad": 1}
        for k, text in enumerate(texts[: len(boxes)]) if text
    ]
    if labels:
        figure.update_layout(annotations=[*figure.layout.annotations, *labels])
