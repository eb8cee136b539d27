"""``fcos-lab tune``'s figure: best possible recall against ambiguity for each size-range setting (Section 3.2).

Two panels from the summary of :meth:`fcos_lab.analysis.tune.TuneResult.summary`: left, every setting the
search tried on its sample (the ambiguity limit as a dashed line, the reference and the recommendation
marked, as measured on the sample); right, the report's settings (reference, recommended, with and without
P2), each on the boxes it was measured on. :func:`tuning_figure` is plotly (HTML), :func:`tuning_png` the
same on a matplotlib Agg canvas (PNG bytes). Dicts in, figures out; plotly and matplotlib are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

SEARCH_COLOR, REFERENCE_COLOR, CHOSEN_COLOR = "#9fb7d0", "#7f7f7f", "#d62728"
ROW_COLORS = ("#7f7f7f", "#d62728", "#1f77b4", "#2ca02c", "#9467bd")


def _points(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The arrays both figures draw."""
    candidates = summary["search"]["candidates"]
    reference = next(c for c in candidates if c["boundaries"] == summary["search"]["reference"])
    chosen = next((c for c in candidates if c["boundaries"] == summary["search"]["recommended"]), reference)
    return {
        "x": [c["ambiguous"] for c in candidates], "y": [c["best_possible_recall"] for c in candidates],
        "labels": [", ".join(f"{b:g}" for b in c["boundaries"]) for c in candidates],
        "marked": (("reference", reference, REFERENCE_COLOR), ("recommended", chosen, CHOSEN_COLOR)),
        "limit": summary["search"]["max_ambiguity"],
        "rows": [(f"{r['setting']} ({r['measured_on']})", r["ambiguous"], r["best_possible_recall"],
                  ", ".join(r["levels"][:1] + r["levels"][-1:])) for r in summary["rows"]],
    }


def tuning_figure(summary: Mapping[str, Any]) -> go.Figure:
    """Best possible recall against ambiguity: the search's settings (left), the report's (right)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    p = _points(summary)
    sample = summary["counts"]["sample_images"]
    figure = make_subplots(1, 2, subplot_titles=(f"search ({sample} images): boundaries m tried",
                                                 "settings of the report"))
    figure.add_trace(go.Scatter(x=p["x"], y=p["y"], mode="markers", name="setting tried", text=p["labels"],
                                marker={"color": SEARCH_COLOR, "size": 6},
                                hovertemplate="m = %{text}<br>ambiguous %{x:.2f} %<br>BPR %{y:.2f} %<extra></extra>"),
                     row=1, col=1)
    for name, point, color in p["marked"]:
        figure.add_trace(go.Scatter(x=[point["ambiguous"]], y=[point["best_possible_recall"]], mode="markers",
                                    name=f"{name}: m = {', '.join(f'{b:g}' for b in point['boundaries'])}",
                                    marker={"color": color, "size": 12, "symbol": "diamond"}), row=1, col=1)
    figure.add_vline(x=p["limit"], line_dash="dash", line_color="grey", row=1, col=1,
                     annotation_text=f"ambiguity limit {p['limit']:.2f} %")
    for (label, x, y, levels), color in zip(p["rows"], ROW_COLORS):
        figure.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=f"{label}, {levels.replace(', ', '-')}",
                                    marker={"color": color, "size": 12}), row=1, col=2)
    figure.update_xaxes(title="ambiguous samples (% of positive locations)")
    figure.update_yaxes(title="best possible recall (%)", col=1)
    figure.update_layout(height=480, title="Size ranges: best possible recall against ambiguity",
                         legend={"orientation": "h", "y": -0.25}, margin={"t": 80})
    return figure


def tuning_png(summary: Mapping[str, Any]) -> bytes:
    """:func:`tuning_figure` as PNG bytes (matplotlib), for the caller to write whole."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p = _points(summary)
    figure = Figure(figsize=(11, 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    left.scatter(p["x"], p["y"], s=14, color=SEARCH_COLOR, label="setting tried")
    for name, point, color in p["marked"]:
        left.scatter([point["ambiguous"]], [point["best_possible_recall"]], s=80, marker="D", color=color,
                     label=f"{name}: m = {', '.join(f'{b:g}' for b in point['boundaries'])}")
    left.axvline(p["limit"], linestyle="--", color="grey", label=f"ambiguity limit {p['limit']:.2f} %")
    left.set(title=f"search ({summary['counts']['sample_images']} images)", ylabel="best possible recall (%)")
    for (label, x, y, levels), color in zip(p["rows"], ROW_COLORS):
        right.scatter([x], [y], s=80, color=color, label=f"{label}, {levels.replace(', ', '-')}")
    right.set(title="settings of the report")
    for ax in (left, right):
        ax.set_xlabel("ambiguous samples (% of positive locations)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    figure.suptitle("Size ranges: best possible recall against ambiguity")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
