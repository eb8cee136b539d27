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

from fcos_lab.viz.image_figures import add_boxes, box_colors, image_figure

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


def assignment_figure(
    image: Tensor | np.ndarray | str,
    assignment: ImageAssignment,
    level: int | None = None,
    class_names: Sequence[str] = (),
    *,
    show_negatives: bool = False,
    height: int = 640,
) -> go.Figure:
    """Positive locations of one level (``None``: all levels) coloured by the box they regress.

    Ambiguous locations (in more than one candidate box) are diamonds with a white outline, in the
    colour of the box the minimal-area rule chose; boxes that no location regresses are dashed red.

    Args:
        image: the input image ``[3, H, W]`` (or its data URI from :func:`fcos_lab.viz.image_figures.image_uri`), in the frame
            of ``assignment``.
        assignment: :func:`fcos_lab.analysis.image_assignment.assign_image`.
        level: index into ``assignment.objective.level_names``, or None for every level.
        class_names: names of the class indices.
        show_negatives: also draw the negative locations of the level as grey dots.
    """
    import plotly.graph_objects as go

    a = assignment
    figure = image_figure(image, a.image_size, height=height)
    colors = box_colors(len(a.boxes))
    names = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in a.labels.tolist()]
    unreachable = set(a.unreachable.tolist())
    reachable = [m for m in range(len(a.boxes)) if m not in unreachable]
    add_boxes(figure, a.boxes[reachable], [colors[m] for m in reachable], [f"{m} {names[m]}" for m in reachable])
    if unreachable:
        lost = sorted(unreachable)
        add_boxes(figure, a.boxes[lost], ["red"] * len(lost), [f"{m} {names[m]}: unreachable" for m in lost],
                  dash="dash", width=3, name="unreachable")

    on_level = np.ones_like(a.matched_gt, dtype=bool) if level is None else a.level_index == level
    if show_negatives:
        negative = np.flatnonzero(on_level & (a.matched_gt < 0))
        figure.add_trace(go.Scatter(
            x=a.points[negative, 0], y=a.points[negative, 1], mode="markers", name="negative",
            marker={"size": 3, "color": "rgba(255,255,255,0.45)"}, hoverinfo="skip",
        ))
    sizes = np.array([LEVEL_MARKER_SIZE[min(i, len(LEVEL_MARKER_SIZE) - 1)] for i in range(len(a.objective.level_names))])
    if len(a.objective.level_names) == 1:
        sizes[:] = 8
    positive = on_level & (a.matched_gt >= 0)
    for m in range(len(a.boxes)):
        index = np.flatnonzero(positive & (a.matched_gt == m))
        if not len(index):
            continue
        ambiguous_here = a.num_candidates[index] > 1
        figure.add_trace(go.Scatter(
            x=a.points[index, 0], y=a.points[index, 1], mode="markers", name=f"box {m} ({names[m]})",
            marker={
                "size": sizes[a.level_index[index]] + 3 * ambiguous_here,
                "color": colors[m],
                "symbol": np.where(ambiguous_here, "diamond", "circle"),
                "line": {"width": np.where(ambiguous_here, 2.5, 1.5), "color": np.where(ambiguous_here, "white", "black")},
            },
            hovertext=_location_hover(a, index, class_names), hoverinfo="text",
        ))
    ambiguous = np.flatnonzero(positive & (a.num_candidates > 1))
    if len(ambiguous):
        # A legend entry only: the diamonds themselves belong to the trace of the box they regress.
        figure.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=f"ambiguous ({len(ambiguous)}): colour of the minimal-area box",
            marker={"size": 11, "symbol": "diamond", "color": "grey", "line": {"width": 2.5, "color": "white"}},
        ))
    where = "all levels" if level is None else f"{a.objective.level_names[level]} (stride {a.objective.strides[level]})"
    figure.update_layout(
        title=f"{where}: {int(positive.sum())} positive, {len(ambiguous)} ambiguous locations; "
        f"{len(unreachable)} unreachable boxes",
    )
    return figure
