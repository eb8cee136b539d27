"""An image as a plotly figure in pixel coordinates, with boxes outlined on it.

The background of the app's figures (:mod:`fcos_lab.viz.assignments`, :mod:`fcos_lab.viz.heatmaps`,
:func:`fcos_lab.viz.detections.detections_figure`): the image as a compressed data URI
(:func:`image_uri`), a figure whose axes are the image's pixels (:func:`image_figure`) and xyxy boxes
drawn on it (:func:`add_boxes`, :func:`box_outline_traces`, :func:`box_colors`), their labels placed so
that none hides another (:func:`place_labels`). The PIL drawing of Figure 8 is :mod:`fcos_lab.viz.draw`.

Overlays stay visible on any image because the image can be drawn in grey (``gray=True``): a red dot or a
red heatmap cell then never sits on a red object. plotly is imported inside the functions.
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


def image_uri(image: Tensor | np.ndarray, quality: int = 85, *, gray: bool = False, max_side: int | None = None) -> str:
    """A ``[3, H, W]`` float tensor in [0, 1] or ``[H, W, 3]`` uint8 array as a base64 JPEG data URI.

    A compressed source keeps the figure small: an 800 x 1066 image is ~100 KB of JSON instead of the
    ~10 MB a pixel array would cost on every re-render.

    Args:
        gray: the image in grey levels (a backdrop on which any colour of an overlay stays visible).
        max_side: shrink the image so that its longer side is at most this (thumbnails of small multiples);
            draw it with :func:`image_trace`, which stretches it back over the full pixel frame.
    """
    if isinstance(image, Tensor):
        image = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("L" if gray else "RGB")
    if max_side is not None and max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _size_of(image: Tensor | np.ndarray) -> tuple[int, int]:
    """``(h, w)`` of a ``[3, H, W]`` tensor or an ``[H, W, 3]`` array."""
    return (image.shape[-2], image.shape[-1]) if isinstance(image, Tensor) else image.shape[:2]


def image_trace(image: Tensor | np.ndarray, *, gray: bool = False, max_side: int | None = None) -> go.Image:
    """The image as a plotly trace covering its ``(h, w)`` pixel frame, however much it was shrunk."""
    import plotly.graph_objects as go

    img_h, img_w = _size_of(image)
    shrink = 1.0 if max_side is None else max(1.0, max(img_h, img_w) / max_side)
    # Pixel (i, j) of the shrunk picture covers [j * dx, (j + 1) * dx) of the frame: its center is (j + 0.5) dx.
    dx = img_w / round(img_w / shrink)
    dy = img_h / round(img_h / shrink)
    return go.Image(source=image_uri(image, gray=gray, max_side=max_side), x0=dx / 2 - 0.5, dx=dx, y0=dy / 2 - 0.5,
                    dy=dy, hoverinfo="skip", name="image")


def image_figure(image: Tensor | np.ndarray | str, size: tuple[int, int] | None = None, *, height: int = 640,
                 gray: bool = False) -> go.Figure:
    """An image (or a data URI with its ``(h, w)``) as the background of a figure in pixel coordinates.

    ``gray`` draws the image in grey levels, so that coloured overlays stay visible on any image.
    """
    import plotly.graph_objects as go

    if isinstance(image, str):
        if size is None:
            raise ValueError("a data URI needs its (h, w) size")
        trace, (img_h, img_w) = go.Image(source=image, hoverinfo="skip", name="image"), size
    else:
        img_h, img_w = _size_of(image)
        trace = image_trace(image, gray=gray)
    figure = go.Figure(trace)
    # The image keeps its aspect ratio by shrinking the plot area, kept at the top left (no band above it).
    figure.update_xaxes(range=[0, img_w], showgrid=False, zeroline=False, constrain="domain", constraintoward="left")
    figure.update_yaxes(range=[img_h, 0], showgrid=False, zeroline=False, scaleanchor="x", constrain="domain",
                        constraintoward="top")
    figure.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, hoverlabel={"align": "left"},
        legend={"x": 1.01, "y": 1, "xanchor": "left", "yanchor": "top"},
    )
    return figure


def box_outline_traces(boxes: np.ndarray | Tensor, color: str, *, width: float = 2, dash: str = "solid",
                       name: str = "boxes", halo: bool = False) -> list[go.Scatter]:
    """xyxy ``boxes`` ``[K, 4]`` outlined in one colour, as one line trace (two with ``halo``: a dark line under
    a light one, visible on any image)."""
    import plotly.graph_objects as go

    boxes = boxes.detach().cpu().numpy() if isinstance(boxes, Tensor) else np.asarray(boxes, dtype=float)
    x0, y0, x1, y1 = boxes.reshape(-1, 4).T
    gap = np.full(len(x0), np.nan)
    xs = np.stack([x0, x1, x1, x0, x0, gap], axis=1).reshape(-1)
    ys = np.stack([y0, y0, y1, y1, y0, gap], axis=1).reshape(-1)
    lines = [(color, width)] if not halo else [("black", width + 2), (color, width)]
    return [go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", line={"color": c, "width": w, "dash": dash},
                       name=name, legendgroup=name, showlegend=False, connectgaps=False) for c, w in lines]


LABEL_FONT_SIZE = 11
CHAR_WIDTH, LINE_HEIGHT = 6.6, 15.0  # screen pixels of one character and one line of an 11-pixel label


def place_labels(boxes: np.ndarray, texts: Sequence[str], image_size: tuple[int, int],
                 screen_per_pixel: float) -> list[tuple[float, float, str] | None]:
    """Where each box's label goes so that no label covers another: ``(x, y, yanchor)`` or None (left out).

    Labels are placed in the order given (best first): above the box's top-left corner, else just inside
    it, else under its bottom-left corner; a label that fits nowhere is left out (hovering still shows it).

    Args:
        boxes: ``[K, 4]`` xyxy in image pixels.
        texts: one label per box.
        image_size: ``(h, w)`` of the image.
        screen_per_pixel: screen pixels per image pixel in the drawn figure (labels have a screen size).
    """
    height, width = image_size
    placed: list[tuple[float, float, float, float]] = []
    result: list[tuple[float, float, str] | None] = []
    line = LINE_HEIGHT / screen_per_pixel
    for (x0, y0, _, y1), text in zip(np.asarray(boxes, dtype=float).reshape(-1, 4).tolist(), texts):
        span = len(text) * CHAR_WIDTH / screen_per_pixel
        left = min(max(x0, 0.0), max(width - span, 0.0))
        spot = None
        for top, anchor in ((y0 - line, "bottom"), (y0, "top"), (y1, "top")):
            rect = (left, top, left + span, top + line)
            inside = top >= 0 and top + line <= height
            if inside and not any(rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3] for r in placed):
                placed.append(rect)
                spot = (left, top + line if anchor == "bottom" else top, anchor)
                break
        result.append(spot)
    return result


def add_boxes(
    figure: go.Figure,
    boxes: np.ndarray | Tensor,
    colors: Sequence[str],
    texts: Sequence[str] = (),
    *,
    dash: str = "solid",
    width: float = 2,
    name: str = "boxes",
    screen_per_pixel: float | None = None,
) -> None:
    """Outline xyxy ``boxes`` ``[K, 4]``, one colour each, with an optional label at the top-left corner.

    Boxes of one colour share a trace and the labels are added in one layout update: a hundred
    detections then cost milliseconds instead of the seconds of one ``add_trace`` per box. With
    ``screen_per_pixel`` (screen pixels per image pixel) the labels are placed by :func:`place_labels`, so
    that none covers another; without it each sits above its box's corner.
    """
    boxes = boxes.detach().cpu().numpy() if isinstance(boxes, Tensor) else np.asarray(boxes)
    boxes = boxes.reshape(-1, 4)
    by_color: dict[str, list[int]] = {}
    for k, color in enumerate(colors[: len(boxes)]):
        by_color.setdefault(color, []).append(k)
    for color, members in by_color.items():
        figure.add_traces(box_outline_traces(boxes[members], color, width=width, dash=dash, name=name))
    texts = list(texts[: len(boxes)])
    if screen_per_pixel is None:
        spots = [(float(boxes[k, 0]), float(boxes[k, 1]), "bottom") for k in range(len(texts))]
    else:
        y_range = figure.layout.yaxis.range
        image_size = (abs(y_range[0] - y_range[1]), figure.layout.xaxis.range[1]) if y_range else (np.inf, np.inf)
        spots = place_labels(boxes[: len(texts)], texts, image_size, screen_per_pixel)
    labels = [
        {"x": spot[0], "y": spot[1], "text": text, "showarrow": False, "xanchor": "left", "yanchor": spot[2],
         "font": {"size": LABEL_FONT_SIZE, "color": "black"}, "bgcolor": colors[k], "opacity": 0.9, "borderpad": 1}
        for k, (text, spot) in enumerate(zip(texts, spots)) if text and spot is not None
    ]
    if labels:
        figure.update_layout(annotations=[*figure.layout.annotations, *labels])
