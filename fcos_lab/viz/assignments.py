"""Which locations regress which box, one image at a time (Sections 3.1 and 3.2, Table 3), as a figure.

:func:`assignment_figure` draws the training assignment of one image
(:func:`fcos_lab.analysis.image_assignment.assign_image`) over it, one level or all: the positive
locations coloured by the box they regress, the ambiguous ones as diamonds, the boxes no location
regresses dashed red. Hovering a location shows its level, l*, t*, r*, b*, center-ness target and box.
A dataset's box sizes against the levels' size ranges are drawn by :mod:`fcos_lab.viz.dataset_statistics`;
the image and box drawing is :mod:`fcos_lab.viz.image_figures`.

Arrays in, plotly figures out; plotly is imported inside the figure functions.
Glossary: P locations over all levels, M boxes, L levels; boxes xyxy in input-image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from fcos_lab.viz.image_figures import add_boxes, box_colors, box_outline_traces, image_figure, image_trace

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from fcos_lab.analysis.image_assignment import ImageAssignment


# ----------------------------------------------------------------------------------------------
# Figures


def _location_hover(
    assignment: ImageAssignment, index: np.ndarray, class_names: Sequence[str]
) -> list[str]:
    """Hover text of locations ``index``: level, position, l*t*r*b*, center-ness target, box, candidates."""
    a = assignment
    areas = (a.boxes[:, 2] - a.boxes[:, 0]) * (a.boxes[:, 3] - a.boxes[:, 1])
    texts = []
    for p in index.tolist():
        level = int(a.level_index[p])
        m = int(a.matched_gt[p])
        l, t, r, b = a.ltrb[p].tolist()
        label = int(a.labels[m])
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        x0, y0, x1, y1 = a.boxes[m].tolist()
        text = (
            f"<b>{a.objective.level_names[level]}</b> (stride {a.objective.strides[level]}) at ({a.points[p, 0]:.0f}, {a.points[p, 1]:.0f})"
            f"<br>l*={l:.1f}  t*={t:.1f}  r*={r:.1f}  b*={b:.1f}  (max {max(l, t, r, b):.1f})"
            f"<br>center-ness*={a.centerness[p]:.3f}"
            f"<br>regresses box {m} ({name}) [{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}]"
        )
        if a.num_candidates[p] > 1:
            choices = np.flatnonzero(a.candidates[p])
            listed = ", ".join(f"box {c} (area {areas[c]:.0f})" for c in choices)
            text += f"<br><b>ambiguous</b>: inside {listed}<br>minimal area chose box {m}"
        texts.append(text)
    return texts


LEVEL_MARKER_SIZE = (6, 8, 10, 12, 14)
MAX_LABELS = 12  # more boxes than this: no box labels and no legend entry per box (hover a dot instead)


def _positive_traces(a: ImageAssignment, on_level: np.ndarray, shown: Sequence[int], colors: Sequence[str],
                     names: Sequence[str], class_names: Sequence[str], *, legend: bool,
                     size_scale: float = 1.0) -> list[go.Scatter]:
    """One marker trace per shown box: its positive locations among ``on_level`` ``[P]``, ambiguous ones as
    diamonds; a black edge (a white one on ambiguous locations) keeps each dot visible on any colour."""
    import plotly.graph_objects as go

    sizes = np.array([LEVEL_MARKER_SIZE[min(i, len(LEVEL_MARKER_SIZE) - 1)] for i in range(len(a.objective.level_names))])
    if len(a.objective.level_names) == 1:
        sizes[:] = 8
    traces = []
    positive = on_level & (a.matched_gt >= 0)
    for m in shown:
        index = np.flatnonzero(positive & (a.matched_gt == m))
        if not len(index):
            continue
        ambiguous_here = a.num_candidates[index] > 1
        traces.append(go.Scatter(
            x=a.points[index, 0], y=a.points[index, 1], mode="markers", name=f"box {m} ({names[m]})",
            showlegend=legend, legendgroup=f"box {m}",
            marker={
                "size": (sizes[a.level_index[index]] + 3 * ambiguous_here) * size_scale,
                "color": colors[m],
                "symbol": np.where(ambiguous_here, "diamond", "circle"),
                "line": {"width": np.where(ambiguous_here, 2.5, 1.5), "color": np.where(ambiguous_here, "white", "black")},
            },
            hovertext=_location_hover(a, index, class_names), hoverinfo="text",
        ))
    return traces


def _shown_boxes(a: ImageAssignment, boxes: Sequence[int] | None) -> list[int]:
    return list(range(len(a.boxes))) if boxes is None else sorted(m for m in set(boxes) if 0 <= m < len(a.boxes))


def assignment_figure(
    image: Tensor | np.ndarray | str,
    assignment: ImageAssignment,
    level: int | None = None,
    class_names: Sequence[str] = (),
    *,
    show_negatives: bool = False,
    boxes: Sequence[int] | None = None,
    height: int = 640,
) -> go.Figure:
    """Positive locations of one level (``None``: all levels) coloured by the box they regress.

    Ambiguous locations (in more than one candidate box) are diamonds with a white outline, in the
    colour of the box the minimal-area rule chose; boxes that no location regresses are dashed red. The
    image is drawn in grey so that every colour stays visible. With more than ``MAX_LABELS`` boxes shown,
    the boxes carry no label and no legend entry (hovering a dot names its box).

    Args:
        image: the input image ``[3, H, W]`` (or its data URI from :func:`fcos_lab.viz.image_figures.image_uri`), in the frame
            of ``assignment``.
        assignment: :func:`fcos_lab.analysis.image_assignment.assign_image`.
        level: index into ``assignment.objective.level_names``, or None for every level.
        class_names: names of the class indices.
        show_negatives: also draw the negative locations of the level as grey dots.
        boxes: indices of the boxes to draw, with their locations (None: all); the assignment itself is
            always that of every box.
    """
    import plotly.graph_objects as go

    a = assignment
    figure = image_figure(image, a.image_size, height=height, gray=True)
    colors = box_colors(len(a.boxes))
    names = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in a.labels.tolist()]
    shown = _shown_boxes(a, boxes)
    labelled = len(shown) <= MAX_LABELS
    unreachable = set(a.unreachable.tolist())
    reachable = [m for m in shown if m not in unreachable]
    add_boxes(figure, a.boxes[reachable], [colors[m] for m in reachable],
              [f"{m} {names[m]}" for m in reachable] if labelled else [])
    lost = [m for m in shown if m in unreachable]
    if lost:
        add_boxes(figure, a.boxes[lost], ["red"] * len(lost), [f"{m} {names[m]}: unreachable" for m in lost] if labelled else [],
                  dash="dash", width=3, name="unreachable")

    on_level = np.ones_like(a.matched_gt, dtype=bool) if level is None else a.level_index == level
    if show_negatives:
        negative = np.flatnonzero(on_level & (a.matched_gt < 0))
        figure.add_trace(go.Scatter(
            x=a.points[negative, 0], y=a.points[negative, 1], mode="markers", name="negative",
            marker={"size": 3, "color": "rgba(255,255,255,0.45)"}, hoverinfo="skip",
        ))
    figure.add_traces(_positive_traces(a, on_level, shown, colors, names, class_names, legend=labelled))
    positive = on_level & (a.matched_gt >= 0) & np.isin(a.matched_gt, shown)
    ambiguous = np.flatnonzero(positive & (a.num_candidates > 1))
    if len(ambiguous):
        # A legend entry only: the diamonds themselves belong to the trace of the box they regress.
        figure.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=f"ambiguous ({len(ambiguous)}): colour of the minimal-area box",
            marker={"size": 11, "symbol": "diamond", "color": "grey", "line": {"width": 2.5, "color": "white"}},
        ))
    where = "all levels" if level is None else f"{a.objective.level_names[level]} (stride {a.objective.strides[level]})"
    of = "" if len(shown) == len(a.boxes) else f" ({len(shown)} of {len(a.boxes)} boxes shown)"
    figure.update_layout(
        title=f"{where}: {int(positive.sum())} positive, {len(ambiguous)} ambiguous locations; "
        f"{len(lost)} unreachable boxes{of}",
    )
    return figure


def assignment_levels_figure(
    image: Tensor | np.ndarray,
    assignment: ImageAssignment,
    class_names: Sequence[str] = (),
    *,
    boxes: Sequence[int] | None = None,
    columns: int = 3,
    panel_height: int = 330,
) -> go.Figure:
    """Small multiples: one panel per level, each with the shown boxes and the positive locations of that level.

    A box is outlined solid on the levels where some location regresses it and dotted elsewhere, so that the
    panels say at a glance which level takes which object (Section 3.2). No labels: hover a dot.

    Args:
        image: the input image ``[3, H, W]`` in the frame of ``assignment`` (drawn small and grey in each panel).
        assignment: :func:`fcos_lab.analysis.image_assignment.assign_image`.
        boxes: indices of the boxes to draw (None: all).
    """
    from plotly.subplots import make_subplots

    a = assignment
    count = len(a.objective.level_names)
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    shown = _shown_boxes(a, boxes)
    colors = box_colors(len(a.boxes))
    names = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in a.labels.tolist()]
    titles = []
    figure = make_subplots(rows=rows, cols=columns, horizontal_spacing=0.02, vertical_spacing=0.06,
                           subplot_titles=[" "] * count)
    img_h, img_w = a.image_size
    backdrop = image_trace(image, gray=True, max_side=480)  # one small picture per panel keeps the figure light
    for level, name in enumerate(a.objective.level_names):
        row, col = level // columns + 1, level % columns + 1
        figure.add_trace(backdrop, row=row, col=col)
        regressed = [m for m in shown if a.positives_per_box[m, level] > 0]
        others = [m for m in shown if a.positives_per_box[m, level] == 0]
        if others:
            figure.add_traces(box_outline_traces(a.boxes[others], "rgba(255,255,255,0.8)", width=1, dash="dot"),
                              rows=row, cols=col)
        for m in regressed:
            figure.add_traces(box_outline_traces(a.boxes[[m]], colors[m], width=2), rows=row, cols=col)
        for trace in _positive_traces(a, a.level_index == level, shown, colors, names, class_names, legend=False,
                                      size_scale=0.7):
            figure.add_trace(trace, row=row, col=col)
        on_level = (a.level_index == level) & np.isin(a.matched_gt, shown)
        titles.append(f"{name} (stride {a.objective.strides[level]}): {int(on_level.sum())} positive, "
                      f"{len(regressed)} boxes")
        axis = level + 1
        figure.update_xaxes(range=[0, img_w], showticklabels=False, showgrid=False, zeroline=False, row=row, col=col)
        figure.update_yaxes(range=[img_h, 0], showticklabels=False, showgrid=False, zeroline=False,
                            scaleanchor=f"x{axis if axis > 1 else ''}", row=row, col=col)
    for annotation, title in zip(figure.layout.annotations, titles):
        annotation.text = title
    figure.update_layout(height=panel_height * rows + 50, margin={"l": 10, "r": 10, "t": 50, "b": 10}, showlegend=False,
                         title=f"Level by level: {len(shown)} of {len(a.boxes)} boxes; solid where the level regresses "
                               "the box, dotted elsewhere")
    return figure
