"""Precision-recall curves (FCOS paper Figures 4-6) and training curves, as figures.

Arrays in, figures out: curves come from `fcos_lab.evaluate.precision_recall_curves` and training
rows from the training loop's metrics log; nothing here computes a metric, and nothing calls
`plt.show()`. plotly and matplotlib are imported inside the functions so that importing this module
stays cheap. The PNG writers draw on an Agg canvas directly, never touching pyplot's global state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import plotly.graph_objects as go

Curve = tuple[np.ndarray, np.ndarray]  # (recall [R], precision [R])
CurvesPerIou = Mapping[float, Curve]
LOSS_KEYS = ("loss_cls", "loss_box", "loss_centerness", "loss")
LR_KEY = "lr"
EVAL_KEYS = ("AP", "AP50")


def _curves_by_method(
    curves: Mapping[str, CurvesPerIou] | CurvesPerIou | Sequence[CurvesPerIou],
    names: Sequence[str] | None,
) -> dict[str, CurvesPerIou]:
    """Normalizes the accepted inputs to {method name: {IoU: curve}}."""
    if isinstance(curves, Mapping) and all(isinstance(key, str) for key in curves):
        methods = list(curves.values())
        names = list(curves) if names is None else names
    elif isinstance(curves, Mapping):
        methods = [curves]
    else:
        methods = list(curves)
    if names is None:
        names = ["detector"] if len(methods) == 1 else [f"method {i + 1}" for i in range(len(methods))]
    if len(names) != len(methods):
        raise ValueError(f"got {len(names)} names for {len(methods)} sets of curves")
    return dict(zip(names, methods, strict=True))


def _iou_list(by_method: Mapping[str, CurvesPerIou]) -> list[float]:
    return sorted({float(iou) for per_iou in by_method.values() for iou in per_iou})


def _label(name: str, iou: float, precision: np.ndarray) -> str:
    # The mean of COCO's 101-point precision is exactly the AP at this IoU, so the legend can
    # carry the number the paper quotes next to each curve.
    return f"{name} (AP{round(iou * 100)}={float(np.mean(precision)):.3f})"


def pr_curves_figure(
    curves: Mapping[str, CurvesPerIou] | CurvesPerIou | Sequence[CurvesPerIou],
    names: Sequence[str] | None = None,
    *,
    title: str = "Precision-recall",
) -> go.Figure:
    """Overlays the precision-recall curves of several methods, one subplot per IoU threshold.

    Args:
        curves: `{method name: {IoU: (recall, precision)}}`, a single `{IoU: (recall, precision)}`
            or a sequence of them (named by `names`).
        names: Method names, overriding the mapping's keys when given.
        title: Figure title.

    Returns:
        A plotly figure with one trace per (method, IoU).
    """
    import plotly.colors
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    by_method = _curves_by_method(curves, names)
    ious = _iou_list(by_method)
    figure = make_subplots(
        rows=1, cols=max(len(ious), 1), subplot_titles=[f"IoU = {iou:.2f}" for iou in ious]
    )
    palette = plotly.colors.qualitative.Plotly
    for m, (name, per_iou) in enumerate(by_method.items()):
        for col, iou in enumerate(ious, start=1):
            match = [curve for key, curve in per_iou.items() if math.isclose(float(key), iou)]
            if not match:
                continue
            recall, precision = (np.asarray(a, dtype=float) for a in match[0])
            figure.add_trace(
                go.Scatter(
                    x=recall, y=precision, mode="lines", name=_label(name, iou, precision),
                    legendgroup=name, line={"color": palette[m % len(palette)]},
                ),
                row=1, col=col,
            )
    figure.update_xaxes(title_text="recall", range=[0, 1])
    figure.update_yaxes(title_text="precision", range=[0, 1.02])
    figure.update_layout(title=title, width=380 * max(len(ious), 1) + 120, height=420)
    return figure


def pr_curves_png(
    curves: Mapping[str, CurvesPerIou] | CurvesPerIou | Sequence[CurvesPerIou],
    path: str | Path,
    names: Sequence[str] | None = None,
    *,
    title: str = "Precision-recall",
) -> Path:
    """Writes the figure of `pr_curves_figure` as a PNG with matplotlib.

    Args:
        curves: As for `pr_curves_figure`.
        path: Destination PNG; parent directories are created.
        names: As for `pr_curves_figure`.
        title: Figure title.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_method = _curves_by_method(curves, names)
    ious = _iou_list(by_method)
    figure = Figure(figsize=(4 * max(len(ious), 1), 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, max(len(ious), 1), squeeze=False)[0]
    for ax, iou in zip(axes, ious, strict=False):
        for m, (name, per_iou) in enumerate(by_method.items()):
            match = [curve for key, curve in per_iou.items() if math.isclose(float(key), iou)]
            if match:
                recall, precision = (np.asarray(a, dtype=float) for a in match[0])
                ax.plot(recall, precision, color=f"C{m}", label=_label(name, iou, precision))
        ax.set(title=f"IoU = {iou:.2f}", xlabel="recall", ylabel="precision", xlim=(0, 1),
               ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")
    figure.suptitle(title)
    return _save(figure, path)


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(iters, values) of the rows that carry `key` as a number, sorted by iteration."""
    points = sorted(
        (float(row["iter"]), float(row[key]))
        for row in rows
        # Rows mix training logs and evaluation results; each series uses the rows that have it.
        if _is_number(row.get("iter")) and _is_number(row.get(key))
    )
    return [p[0] for p in points], [p[1] for p in points]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _panels(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, tuple[list, list]]]]:
    """The panels to draw: losses, learning rate and, when rows carry them, AP metrics."""
    panels = [
        ("loss", {key: _series(rows, key) for key in LOSS_KEYS}),
        ("learning rate", {LR_KEY: _series(rows, LR_KEY)}),
    ]
    ap = {key: _series(rows, key) for key in EVAL_KEYS}
    if any(iters for iters, _ in ap.values()):
        panels.append(("COCO AP", ap))
    return panels


def training_curves_figure(metrics_rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Plots losses, learning rate and (when present) AP against the training iteration.

    Args:
        metrics_rows: Rows such as `{"iter": 10, "loss_cls": .., "loss_box": ..,
            "loss_centerness": .., "loss": .., "lr": ..}`; evaluation rows with `AP` / `AP50`
            add a third panel. Missing keys are skipped; rows without `iter` are ignored.

    Returns:
        A plotly figure with stacked panels sharing the iteration axis.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = _panels(metrics_rows)
    figure = make_subplots(
        rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.08,
        subplot_titles=[name for name, _ in panels],
    )
    for row, (_, series) in enumerate(panels, start=1):
        for key, (iters, values) in series.items():
            if iters:
                figure.add_trace(
                    go.Scatter(x=iters, y=values, mode="lines+markers" if len(iters) < 30 else "lines",
                               name=key),
                    row=row, col=1,
                )
    figure.update_xaxes(title_text="iter", row=len(panels), col=1)
    figure.update_layout(title="Training curves", height=260 * len(panels) + 100, width=800)
    return figure


def training_curves_png(metrics_rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Writes the figure of `training_curves_figure` as a PNG with matplotlib.

    Args:
        metrics_rows: As for `training_curves_figure`.
        path: Destination PNG; parent directories are created.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = _panels(metrics_rows)
    figure = Figure(figsize=(8, 2.6 * len(panels) + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, series) in zip(axes, panels, strict=True):
        for key, (iters, values) in series.items():
            if iters:
                ax.plot(iters, values, marker="o" if len(iters) < 30 else None, label=key)
        ax.set(title=name)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
    axes[-1].set_xlabel("iter")
    figure.suptitle("Training curves")
    return _save(figure, path)


def _save(figure: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
