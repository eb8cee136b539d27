"""TIDE error figures (Bolya et al., ECCV 2020) for FCOS detections: the summary bars and the breakdowns.

Dicts in, figures out: the input is the ``summary`` of :func:`fcos_lab.analysis.tide_breakdowns.analyze_errors`
(or the ``errors.json`` that ``fcos-lab errors --out`` writes); nothing here computes a metric. Every bar
carries its error type (``cls``, ``loc``, ``both``, ``dupe``, ``bkg``, ``miss``, ``FalsePos``, ``FalseNeg``)
and group in ``customdata``, so that an app can answer a click with
:func:`fcos_lab.analysis.tide_breakdowns.example_image_ids`; :func:`error_example_figure` draws one example
image (:func:`fcos_lab.analysis.tide_breakdowns.example_boxes`). plotly is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from fcos_lab.analysis.tide import MAIN_ERRORS as ERROR_NAMES
from fcos_lab.analysis.tide import SPECIAL_ERRORS as SPECIAL_NAMES
from fcos_lab.viz.image_figures import add_boxes, box_outline_traces, image_figure

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Each error type's color, the same in every figure.
ERROR_COLORS = {"cls": "#e15759", "loc": "#f28e2b", "both": "#b07aa1", "dupe": "#76b7b2", "bkg": "#4e79a7",
                "miss": "#59a14f", "FalsePos": "#9c755f", "FalseNeg": "#bab0ac"}
BREAKDOWN_TITLES = {"size": "object size (COCO)", "level": "FPN level", "centerness": "predicted center-ness",
                    "ambiguous": "location under the training assignment"}


def tide_summary_figure(summary: Mapping[str, Any], *, title: str | None = None) -> go.Figure:
    """TIDE's summary: dAP of the six main error types (left) and of the two special ones (right).

    Args:
        summary: a dict with the keys ``Cls Loc Both Dupe Bkg Miss FalsePos FalseNeg`` (AP points) and
            optionally ``AP50`` and ``counts``.
        title: the figure title (default: the AP).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, column_widths=[0.72, 0.28], horizontal_spacing=0.1,
                           subplot_titles=("main errors", "special errors"))
    counts = summary.get("counts", {})
    keys = list(ERROR_NAMES)
    figure.add_trace(go.Bar(
        x=[ERROR_NAMES[k] for k in keys], y=[summary[ERROR_NAMES[k]] for k in keys],
        marker_color=[ERROR_COLORS[k] for k in keys], customdata=[[k, None] for k in keys],
        text=[f"{summary[ERROR_NAMES[k]]:.2f}" for k in keys], textposition="outside",
        hovertext=[f"{counts.get(k, '?')} {'boxes' if k == 'miss' else 'detections'}" for k in keys],
        hovertemplate="%{x}: dAP %{y:.2f}<br>%{hovertext}<extra></extra>", showlegend=False), row=1, col=1)
    figure.add_trace(go.Bar(
        x=list(SPECIAL_NAMES), y=[summary[k] for k in SPECIAL_NAMES], marker_color=[ERROR_COLORS[k] for k in SPECIAL_NAMES],
        customdata=[[k, None] for k in SPECIAL_NAMES], text=[f"{summary[k]:.2f}" for k in SPECIAL_NAMES],
        textposition="outside", hovertemplate="%{x}: dAP %{y:.2f}<extra></extra>", showlegend=False), row=1, col=2)
    ap = next((value for key, value in summary.items() if key.startswith("AP") and key[2:].isdigit()), None)
    default_title = "TIDE error breakdown" + (f" (AP {ap:.2f})" if isinstance(ap, (int, float)) else "")
    figure.update_yaxes(title_text="dAP (AP points)", row=1, col=1)
    figure.update_layout(title=title or default_title, template="plotly_white", height=420, bargap=0.25)
    return figure


def breakdown_figure(rows: Sequence[Mapping[str, Any]], grouping: str, *, value: str = "dAP",
                     title: str | None = None) -> go.Figure:
    """One breakdown as grouped bars: a bar per error type in each group.

    Args:
        rows: ``summary["breakdowns"][grouping]`` (each with ``group``, ``counts``, ``dAP``).
        grouping: ``size``, ``level``, ``centerness`` or ``ambiguous`` (names the axis).
        value: ``"dAP"`` (fixing only that group's errors of the type) or ``"counts"`` (detections / boxes).
        title: the figure title.
    """
    import plotly.graph_objects as go

    if value not in ("dAP", "counts"):
        raise ValueError(f"value must be 'dAP' or 'counts', got {value!r}")
    groups = [row["group"] for row in rows]
    figure = go.Figure()
    for key, name in ERROR_NAMES.items():
        values = [row[value][name if value == "dAP" else key] for row in rows]
        if all(v is None for v in values):
            continue  # e.g. Miss by center-ness: boxes have none
        figure.add_trace(go.Bar(
            x=groups, y=values, name=name, marker_color=ERROR_COLORS[key], customdata=[[key, g] for g in groups],
            hovertemplate=f"{name} in %{{x}}: %{{y}}<extra></extra>"))
    axis = "dAP of fixing only the group's errors (AP points)" if value == "dAP" else "detections (Miss: boxes)"
    figure.update_layout(
        barmode="group", template="plotly_white", height=420, xaxis_title=BREAKDOWN_TITLES.get(grouping, grouping),
        yaxis_title=axis, legend_title="error",
        title=title or f"TIDE errors by {BREAKDOWN_TITLES.get(grouping, grouping)}: {value}")
    return figure


def breakdown_figures(summary: Mapping[str, Any]) -> dict[str, go.Figure]:
    """The summary figure and every breakdown's dAP and count figures, by file stem
    (``tide``, ``by_level_dAP``, ``by_level_counts``, ...)."""
    figures = {"tide": tide_summary_figure(summary)}
    for grouping, rows in summary.get("breakdowns", {}).items():
        for value in ("dAP", "counts"):
            figures[f"by_{grouping}_{value}"] = breakdown_figure(rows, grouping, value=value)
    return figures


def error_example_figure(image: Tensor, example: Mapping[str, Any], error_type: str, *, title: str = "",
                         height: int = 420, max_boxes: int = 10, max_labels: int = 8) -> go.Figure:
    """One example image: its ground truth dashed white, the errors of one type in the type's colour, and
    (for Cls, Loc and Dupe) the box each error points at, dotted white. Only the first ``max_boxes`` errors
    (the best scored) are drawn, the first ``max_labels`` labelled where a label fits.

    Args:
        image: ``[3, H, W]`` in [0, 1], in the pixels of the annotation file.
        example: :func:`fcos_lab.analysis.tide_breakdowns.example_boxes` of the image (xyxy boxes).
        error_type: ``cls``, ``loc``, ``both``, ``dupe``, ``bkg`` or ``miss``.
    """
    figure = image_figure(image, height=height, gray=True)
    gt = np.asarray(example["gt_boxes"]).reshape(-1, 4)
    if len(gt):
        figure.add_traces(box_outline_traces(gt, "white", width=1.5, dash="dash", halo=True, name="ground truth"))
    targets = np.asarray(example["targets"]).reshape(-1, 4)[:max_boxes]
    targets = targets[~np.isnan(targets).any(axis=1)]
    if len(targets):
        figure.add_traces(box_outline_traces(targets, "white", width=2.5, dash="dot", name="pointed at"))
    color = ERROR_COLORS.get(error_type, "#e15759")
    boxes = np.asarray(example["boxes"]).reshape(-1, 4)
    drawn = boxes[:max_boxes]
    scale = min(height / max(image.shape[-2], 1), 600 / max(image.shape[-1], 1))
    add_boxes(figure, drawn, [color] * len(drawn), list(example["texts"])[:max_labels], width=3, name=error_type,
              screen_per_pixel=scale)
    name = ERROR_NAMES.get(error_type, error_type)
    shown = f", {len(drawn)} best drawn" if len(drawn) < len(boxes) else ""
    figure.update_layout(title=f"{title or f'{len(boxes)} {name} errors'}{shown}",
                         showlegend=False, margin={"l": 5, "r": 5, "t": 40, "b": 5})
    return figure
