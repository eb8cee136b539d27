"""A dataset's box sizes against the levels' size ranges (Section 3.2), as a figure.

:func:`box_size_histogram_figure` places the sizes of a file's boxes after the training resize
(:func:`fcos_lab.analysis.dataset_boxes.load_dataset_boxes`) against the size ranges of an objective. The
best possible recall and ambiguous samples shown beside it on the app's Dataset statistics page are
:func:`fcos_lab.analysis.recall_ambiguity.recall_and_ambiguity`, the training assignment's own numbers.

Arrays in, plotly figures out; plotly is imported inside the function.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from fcos_lab.objective import Objective


def box_size_histogram_figure(
    widths: np.ndarray, heights: np.ndarray, objective: Objective, *, bins_per_octave: int = 4
) -> go.Figure:
    """Box sizes against the levels' size ranges (Section 3.2), on a log2 axis.

    A box of longer side ``s`` is seen by locations with ``max(l*, t*, r*, b*)`` from ``s/2`` (its
    center) to about ``s`` (its corners), so both are drawn: a level can regress the box when its
    range meets that interval.

    Args:
        widths, heights: ``[N]`` box sizes in input pixels (after the training resize).
        objective: the levels (``level_names``) and their ``size_ranges``.
    """
    import plotly.graph_objects as go

    longer = np.maximum(np.asarray(widths, dtype=float), np.asarray(heights, dtype=float))
    longer = longer[longer > 0]
    figure = go.Figure()
    if len(longer):
        low = math.floor(math.log2(max(longer.min() / 2, 1.0)))
        high = math.ceil(math.log2(longer.max())) + 1
    else:
        low, high = 2, 11
    edges = np.arange(low, high + 1e-9, 1 / bins_per_octave)
    for values, name, color in (
        (longer / 2, "max(l*,t*,r*,b*) at the box center = longer side / 2", "#1f77b4"),
        (longer, "at the box corners ≈ longer side", "#ff7f0e"),
    ):
        counts, _ = np.histogram(np.log2(np.maximum(values, 1e-6)), bins=edges)
        figure.add_trace(go.Bar(
            x=(edges[:-1] + edges[1:]) / 2, y=counts, width=1 / bins_per_octave, name=name, opacity=0.65,
            marker_color=color, hovertemplate="%{y} boxes<extra>" + name + "</extra>",
        ))
    band_colors = ("rgba(31,119,180,0.10)", "rgba(44,160,44,0.12)")
    for i, (name, (lo, hi)) in enumerate(zip(objective.level_names, objective.size_ranges)):
        x0 = max(math.log2(lo), low) if lo > 0 else low
        x1 = min(math.log2(hi), high) if math.isfinite(hi) else high
        if x1 <= x0:
            continue
        figure.add_vrect(x0=x0, x1=x1, fillcolor=band_colors[i % 2], line_width=0, layer="below",
                         annotation_text=f"{name} [{lo:g}, {hi:g}]", annotation_position="top left")
        if lo > 0:
            figure.add_vline(x=math.log2(lo), line_dash="dot", line_color="grey")
    ticks = list(range(low, high + 1))
    figure.update_xaxes(tickvals=ticks, ticktext=[f"{2 ** t:g}" for t in ticks], title="pixels (log scale)",
                        range=[low, high])
    figure.update_yaxes(title="boxes")
    figure.update_layout(barmode="overlay", height=420, title=f"{len(longer)} boxes against the size ranges",
                         legend={"orientation": "h", "y": -0.25}, margin={"t": 60})
    return figure
