"""The notebooks' figures: paper vs measured, statistics per level, Figure 3, Figure 7, Figure 8.

Arrays in, figures out: plotly for a reader who wants to hover (saved as HTML next to a single
``plotly.min.js``), matplotlib on an Agg canvas for print (PNG); never ``plt.show()``. The one
interactive piece, :func:`detection_browser`, builds ipywidgets that display their first state at once,
so a papermill run never waits on them. plotly, matplotlib and ipywidgets are imported inside the
functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from fcos_lab.analysis.centerness_iou import ScoreIoU
    from fcos_lab.analysis.centerness_maps import LevelGrid
    from fcos_lab.analysis.report import Measurement

PAPER_COLOR = "#7f7f7f"
MEASURED_COLOR = "#1f77b4"


def save_html(figure: go.Figure, path: str | Path) -> Path:
    """Write a plotly figure as HTML that works offline (``plotly.min.js`` written once beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(path, include_plotlyjs="directory", full_html=True)
    return path


def _canvas(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save_png(figure: Any, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def _rows_for(measurements: Sequence[Measurement], metric: str | None) -> tuple[str, list[Measurement]]:
    chosen = [m for m in measurements if metric is None or m.metric == metric]
    if metric is None and chosen:
        metric = chosen[0].metric
        chosen = [m for m in chosen if m.metric == metric]
    return metric or "", chosen


def paper_vs_measured_figure(measurements: Sequence[Measurement], metric: str | None = None, *,
                             title: str = "Paper vs measured") -> go.Figure:
    """Grouped bars, one pair per row: the paper's value and the measured one, for one metric.

    Args:
        measurements: :class:`~fcos_lab.analysis.report.Measurement` rows (any tables).
        metric: the metric to draw (``"AP"``, ``"BPR"``, ...); None: the first one found.
    """
    import plotly.graph_objects as go

    metric, rows = _rows_for(measurements, metric)
    labels = [f"{m.table}: {m.row}" for m in rows]
    hover = [f"{m.note}" for m in rows]
    figure = go.Figure([
        go.Bar(name="paper", x=labels, y=[m.paper for m in rows], marker_color=PAPER_COLOR),
        go.Bar(name="measured", x=labels, y=[m.measured for m in rows], marker_color=MEASURED_COLOR,
               hovertext=hover),
    ])
    figure.update_layout(barmode="group", title=f"{title}: {metric}", yaxis_title=f"{metric} ({rows[0].unit if rows else '%'})",
                         height=460, margin={"b": 160})
    return figure


def paper_vs_measured_png(measurements: Sequence[Measurement], path: str | Path, metric: str | None = None, *,
                          title: str = "Paper vs measured") -> Path:
    """The figure of :func:`paper_vs_measured_figure` as a PNG (horizontal bars, labels readable in print)."""
    metric, rows = _rows_for(measurements, metric)
    figure = _canvas(8, 0.45 * max(len(rows), 2) + 1.2)
    ax = figure.subplots()
    y = np.arange(len(rows))
    nan = float("nan")
    ax.barh(y - 0.2, [nan if m.paper is None else m.paper for m in rows], 0.4, label="paper", color=PAPER_COLOR)
    ax.barh(y + 0.2, [nan if m.measured is None else m.measured for m in rows], 0.4, label="measured",
            color=MEASURED_COLOR)
    ax.set_yticks(y, [m.row for m in rows], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} ({rows[0].unit if rows else '%'})")
    ax.set_title(f"{title}: {metric}")
    ax.grid(axis="x", alpha=0.3)
    figure.legend(loc="outside right upper", fontsize="small")  # beside the axes: it never covers a bar
    return _save_png(figure, path)


def per_level_figure(per_level: Mapping[str, Mapping[str, Mapping[str, int]]], key: str = "positive_locations", *,
                     title: str = "Per FPN level") -> go.Figure:
    """Bars per level of ``statistics["per_level"]`` (one series per setting, e.g. FPN and P4 only)."""
    import plotly.graph_objects as go

    figure = go.Figure([
        go.Bar(name=setting, x=list(levels), y=[levels[level][key] for level in levels])
        for setting, levels in per_level.items()
    ])
    figure.update_layout(barmode="group", title=f"{title}: {key.replace('_', ' ')}", yaxis_title=key.replace("_", " "),
                         height=380)
    return figure


def per_level_png(per_level: Mapping[str, Mapping[str, Mapping[str, int]]], path: str | Path,
                  key: str = "positive_locations", *, title: str = "Per FPN level") -> Path:
    """The figure of :func:`per_level_figure` as a PNG."""
    figure = _canvas(6.5, 3.6)
    ax = figure.subplots()
    levels = sorted({level for per in per_level.values() for level in per})
    width = 0.8 / max(len(per_level), 1)
    for k, (setting, per) in enumerate(per_level.items()):
        x = np.arange(len(levels)) + (k - (len(per_level) - 1) / 2) * width
        ax.bar(x, [per.get(level, {}).get(key, 0) for level in levels], width, label=setting)
    ax.set_xticks(np.arange(len(levels)), levels)
    ax.set(title=f"{title}: {key.replace('_', ' ')}", ylabel=key.replace("_", " "))
    ax.grid(axis="y", alpha=0.3)
    figure.legend(loc="outside right upper", fontsize="small")  # beside the axes: it never covers a bar
    return _save_png(figure, path)


# ----------------------------------------------------------------------------------------------
# Figure 3: center-ness


def centerness_png(image: np.ndarray | Any, grids: Sequence[LevelGrid], path: str | Path, *,
                   title: str = "Center-ness", boxes: np.ndarray | Any | None = None) -> Path:
    """Center-ness grids (one per level, NaN hidden) over the image, red 1 and blue 0 as in Figure 3.

    The image is drawn in grey, so that the colours of the grids read the same on any object.

    Args:
        image: ``[3, H, W]`` float tensor in [0, 1] or ``[H, W, 3]`` array, in the frame of the grids.
        grids: one per level (:func:`fcos_lab.analysis.centerness_maps.target_centerness_grids`, or the
            ``"center-ness"`` map of :func:`~fcos_lab.analysis.centerness_maps.prediction_maps`); cell
            ``(i, j)`` is drawn centred on its location ``(x0 + j dx, y0 + i dy)``.
        boxes: ``[M, 4]`` xyxy ground truth in the same frame, outlined on every panel (white over black).
    """
    from fcos_lab.viz.draw import to_pil

    picture = np.asarray(to_pil(image).convert("L").convert("RGB"))
    outlines = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=float).reshape(-1, 4)
    height, width = picture.shape[:2]
    columns = min(len(grids), 3)
    rows = math.ceil(len(grids) / max(columns, 1))
    figure = _canvas(3.4 * columns, 3.0 * rows * height / max(width, 1) + 0.6)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    image_artist = None
    for k, ax in enumerate(axes):
        ax.set_axis_off()
        if k >= len(grids):
            continue
        level = grids[k]
        grid = np.ma.masked_invalid(level.values)
        ax.imshow(picture)
        extent = (level.x0 - level.dx / 2, level.x0 + level.dx * (grid.shape[1] - 0.5),
                  level.y0 + level.dy * (grid.shape[0] - 0.5), level.y0 - level.dy / 2)
        image_artist = ax.imshow(grid, cmap="jet", vmin=0, vmax=1, alpha=0.6, extent=extent, interpolation="nearest")
        for x0, y0, x1, y1 in outlines:
            for color, line in (("black", 2.2), ("white", 1.0)):
                ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color=color, linewidth=line)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_title(f"{level.name} (stride {level.stride})", fontsize="small")
    if image_artist is not None:
        figure.colorbar(image_artist, ax=list(axes), shrink=0.7, label="center-ness")
    figure.suptitle(title)
    return _save_png(figure, path)


# ----------------------------------------------------------------------------------------------
# Figure 7: score vs IoU, before and after center-ness


def score_iou_figure(points: ScoreIoU, *, max_points: int = 5000, seed: int = 0) -> go.Figure:
    """Figure 7: IoU against the classification score (left) and against classification x center-ness (right).

    Hovering a point shows its image, level, both scores, its center-ness and IoU. At most ``max_points``
    (a random sample) are drawn, so the page stays light.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    index = np.arange(len(points))
    if len(index) > max_points:
        index = np.sort(np.random.default_rng(seed).choice(index, max_points, replace=False))
    hover = [f"image {points.image_id[i]}, P{points.level[i]}<br>cls {points.cls_score[i]:.3f} x ctr "
             f"{points.centerness[i]:.3f} = {points.score[i]:.3f}<br>IoU {points.iou[i]:.3f}" for i in index]
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True,
                           subplot_titles=["w/o center-ness: classification score", "w/ center-ness: cls x center-ness"])
    for col, score in ((1, points.cls_score), (2, points.score)):
        figure.add_trace(go.Scattergl(x=score[index], y=points.iou[index], mode="markers", hovertext=hover,
                                      hoverinfo="text", marker={"size": 4, "opacity": 0.5, "color": points.level[index],
                                                                "colorscale": "Viridis"},
                                      showlegend=False), row=1, col=col)
        figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "black"},
                                    showlegend=False, hoverinfo="skip"), row=1, col=col)
    figure.update_xaxes(title_text="score", range=[0, 1])
    figure.update_yaxes(title_text="IoU with ground truth", range=[0, 1], col=1)
    figure.update_layout(title=f"Figure 7: {len(points)} detections (color: FPN level)", height=450, width=950)
    return figure


def score_iou_png(points: ScoreIoU, path: str | Path, *, max_points: int = 20000, seed: int = 0) -> Path:
    """The figure of :func:`score_iou_figure` as a PNG."""
    index = np.arange(len(points))
    if len(index) > max_points:
        index = np.random.default_rng(seed).choice(index, max_points, replace=False)
    figure = _canvas(9, 4.2)
    axes = figure.subplots(1, 2, sharey=True)
    for ax, score, name in ((axes[0], points.cls_score, "w/o center-ness"), (axes[1], points.score, "w/ center-ness")):
        ax.scatter(score[index], points.iou[index], s=3, alpha=0.4, c=points.level[index], cmap="viridis")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="score", title=name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("IoU with ground truth")
    figure.suptitle(f"Figure 7: {len(points)} detections")
    return _save_png(figure, path)


# ----------------------------------------------------------------------------------------------
# Figure 8: detections on images


def image_grid_png(images: Sequence[Any], path: str | Path, *, titles: Sequence[str] = (), columns: int = 3,
                   title: str = "") -> Path:
    """Images (PIL, arrays or ``[3, H, W]`` tensors) in a grid, as one PNG."""
    from fcos_lab.viz.draw import to_pil

    columns = max(1, min(columns, len(images)))
    rows = max(1, math.ceil(len(images) / columns))
    figure = _canvas(4.2 * columns, 3.4 * rows + (0.4 if title else 0))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        ax.set_axis_off()
        if k < len(images):
            ax.imshow(np.asarray(to_pil(images[k])))
            if k < len(titles):
                ax.set_title(titles[k], fontsize="small")
    if title:
        figure.suptitle(title)
    return _save_png(figure, path)


def draw_all(images: Sequence[Any], detections: Sequence[Any], class_names: Sequence[str], *,
             threshold: float = 0.3) -> list[Any]:
    """Each image with its detections of score >= ``threshold`` drawn (class, score, level): PIL images."""
    from fcos_lab.viz.draw import draw_detections

    drawn = []
    for image, det in zip(images, detections, strict=True):
        keep = det.scores >= threshold
        drawn.append(draw_detections(image, det.boxes[keep], det.labels[keep], det.scores[keep], list(class_names),
                                     levels=det.levels[keep]))
    return drawn


def detection_browser(images: Sequence[Any], detections: Sequence[Any], class_names: Sequence[str], *,
                      titles: Sequence[str] = (), gt_boxes: Sequence[Any] | None = None, threshold: float = 0.3) -> Any:
    """ipywidgets to page through images and move the score threshold; shows its first state at once.

    Args:
        images: ``[3, H, W]`` tensors in [0, 1].
        detections: one :class:`~fcos_lab.postprocess.Detections` per image (boxes in its pixels).
        class_names: names of the class indices.
        titles: a caption per image.
        gt_boxes: optional ``[M, 4]`` xyxy ground truth per image, drawn white.
        threshold: initial score threshold.

    Returns:
        An ``ipywidgets.VBox`` (display it); nothing blocks, so papermill runs straight through.
    """
    import io

    import ipywidgets as widgets

    from fcos_lab.viz.draw import draw_detections

    options = [(titles[k] if k < len(titles) else f"image {k}", k) for k in range(len(images))]
    choose = widgets.Dropdown(options=options, value=0 if options else None, description="image")
    slider = widgets.FloatSlider(value=threshold, min=0.0, max=1.0, step=0.05, description="score >=",
                                 continuous_update=False)
    picture = widgets.Image(format="png")
    caption = widgets.HTML()

    def render(_change: Any = None) -> None:
        if choose.value is None:
            return
        det = detections[choose.value]
        keep = det.scores >= slider.value
        drawn = draw_detections(images[choose.value], det.boxes[keep], det.labels[keep], det.scores[keep],
                                list(class_names), levels=det.levels[keep],
                                gt_boxes=None if gt_boxes is None else gt_boxes[choose.value])
        buffer = io.BytesIO()
        drawn.save(buffer, format="png")
        picture.value = buffer.getvalue()
        caption.value = f"{int(keep.sum())} of {len(det.scores)} detections with score >= {slider.value:.2f}"

    choose.observe(render, names="value")
    slider.observe(render, names="value")
    render()
    return widgets.VBox([widgets.HBox([choose, slider]), caption, picture])
