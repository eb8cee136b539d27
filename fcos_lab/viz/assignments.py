"""Which locations regress which box, one image at a time (Sections 3.1 and 3.2, Table 3), as figures.

:func:`assign_image` runs :func:`fcos_lab.targets.assign` (the training code) on one image with the
switches of the app's Assignments page and keeps what a figure needs as numpy arrays: the positive
locations and the box each regresses (Eq. 1 targets and the Eq. 3 center-ness target), the ambiguous
locations and the box the minimal-area rule chose, and the boxes no location regresses, with the
reason. :func:`assignment_figure` draws one level (or all) over the image; hovering a location shows
its level, l*, t*, r*, b*, center-ness target and box. A dataset's box sizes against the levels' size
ranges are in :mod:`fcos_lab.viz.dataset_statistics`; the image and box drawing in
:mod:`fcos_lab.viz.image_figures`.

Arrays in, plotly figures out; plotly is imported inside the figure functions.
Glossary: P locations over all levels, M boxes, L levels; boxes xyxy in input-image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from fcos_lab.errors import DataError
from fcos_lab.points import make_locations
from fcos_lab.targets import assign, pad_ground_truth
from fcos_lab.viz.image_figures import add_boxes, box_colors, image_figure

if TYPE_CHECKING:
    import plotly.graph_objects as go

INF = math.inf



@dataclass(frozen=True)
class LevelSetup:
    """The levels a page assigns to: names, strides and ``(m_{i-1}, m_i)`` size ranges."""

    names: tuple[str, ...]
    strides: tuple[int, ...]
    size_ranges: tuple[tuple[float, float], ...]


def level_setup(
    strides: Sequence[int] = (8, 16, 32, 64, 128),
    size_ranges: Sequence[tuple[float, float]] = ((0, 64), (64, 128), (128, 256), (256, 512), (512, INF)),
    fpn: bool = True,
) -> LevelSetup:
    """Levels with FPN, or P4 alone (stride 16, no size limit) as in the paper's "w/o FPN" rows.

    Raises:
        DataError: strides and ranges of different lengths, a stride < 1, or a range with lo >= hi.
    """
    if not fpn:
        return LevelSetup(("P4",), (16,), ((0.0, INF),))
    strides = tuple(int(s) for s in strides)
    size_ranges = tuple((float(lo), float(hi)) for lo, hi in size_ranges)
    if len(strides) != len(size_ranges) or not strides:
        raise DataError(f"{len(strides)} strides but {len(size_ranges)} size ranges: give one range per level")
    if any(s < 1 for s in strides):
        raise DataError(f"strides must be positive integers, got {strides}")
    if any(not lo < hi for lo, hi in size_ranges):
        raise DataError(f"each size range needs lo < hi, got {size_ranges}")
    names = tuple(f"P{round(math.log2(s))}" if s & (s - 1) == 0 else f"s{s}" for s in strides)
    return LevelSetup(names, strides, size_ranges)


def ranges_from_boundaries(boundaries: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """``m_3..m_6`` (e.g. 64, 128, 256, 512) to the five ranges ``(0, m_3), ..., (m_6, inf)``.

    Raises:
        DataError: boundaries that are not positive and strictly increasing.
    """
    values = [float(b) for b in boundaries]
    if any(not math.isfinite(v) or v <= 0 for v in values) or any(a >= b for a, b in zip(values, values[1:])):
        raise DataError(f"size range boundaries must be positive and increasing, got {values}")
    edges = [0.0, *values, INF]
    return tuple(zip(edges[:-1], edges[1:]))


def grid_shapes(padded_size: tuple[int, int], strides: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``(ceil(H/s), ceil(W/s))`` per stride: for powers of two this equals repeated ceil-halving,
    i.e. :func:`fcos_lab.points.feature_shapes`, and it extends to any stride a page tries."""
    height, width = padded_size
    return tuple((-(-height // s), -(-width // s)) for s in strides)


@dataclass(frozen=True)
class ImageAssignment:
    """:func:`fcos_lab.targets.assign` for one image, as numpy arrays for figures and tables.

    Attributes:
        setup: levels, strides and size ranges.
        image_size, padded_size: ``(h, w)`` of the input and of its padding to ``size_divisible``.
        shapes: ``(H_l, W_l)`` per level.
        points: ``[P, 2]`` location (x, y); ``level_index`` ``[P]``.
        matched_gt: ``[P]`` box each location regresses (-1: background).
        ltrb: ``[P, 4]`` l*, t*, r*, b* (Eq. 1), zero on background.
        centerness: ``[P]`` Eq. (3) target, zero on background.
        num_candidates: ``[P]`` boxes a location could regress; > 1 is ambiguous.
        candidates: ``[P, M]``.
        boxes: ``[M, 4]``; ``labels``, ``crowd`` ``[M]``.
        positives_per_box: ``[M, L]`` locations regressing each box on each level.
        box_status: why each box is or is not regressed by some location.
    """

    setup: LevelSetup
    image_size: tuple[int, int]
    padded_size: tuple[int, int]
    shapes: tuple[tuple[int, int], ...]
    points: np.ndarray
    level_index: np.ndarray
    matched_gt: np.ndarray
    ltrb: np.ndarray
    centerness: np.ndarray
    num_candidates: np.ndarray
    candidates: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    crowd: np.ndarray
    positives_per_box: np.ndarray
    box_status: tuple[str, ...]

    @property
    def num_positive(self) -> int:
        """Locations that regress some box."""
        return int((self.matched_gt >= 0).sum())

    @property
    def num_ambiguous(self) -> int:
        """Positive locations inside more than one candidate box (Section 3.1)."""
        return int((self.num_candidates > 1).sum())

    @property
    def unreachable(self) -> np.ndarray:
        """Indices of the non-crowd boxes that no location regresses (misses of the best possible recall)."""
        return np.flatnonzero((self.positives_per_box.sum(1) == 0) & ~self.crowd)

    def level_rows(self) -> list[dict[str, Any]]:
        """One row per level: stride, range, grid, positive and ambiguous locations, boxes regressed."""
        rows = []
        for level, (name, stride, (lo, hi)) in enumerate(zip(self.setup.names, self.setup.strides, self.setup.size_ranges)):
            on_level = self.level_index == level
            positive = on_level & (self.matched_gt >= 0)
            rows.append({
                "level": name,
                "stride": stride,
                "size range": f"[{lo:g}, {hi:g}]",
                "grid": f"{self.shapes[level][0]} x {self.shapes[level][1]}",
                "positive locations": int(positive.sum()),
                "ambiguous": int((positive & (self.num_candidates > 1)).sum()),
                "boxes regressed": ", ".join(str(m) for m in np.flatnonzero(self.positives_per_box[:, level])) or "-",
            })
        return rows

    def box_rows(self, class_names: Sequence[str] = ()) -> list[dict[str, Any]]:
        """One row per box: class, size, max(l*,t*,r*,b*) at its center, locations per level, status."""
        rows = []
        for m, (box, label) in enumerate(zip(self.boxes, self.labels)):
            width, height = float(box[2] - box[0]), float(box[3] - box[1])
            row = {
                "box": m,
                "class": class_names[label] if 0 <= label < len(class_names) else str(int(label)),
                "x0, y0, x1, y1": ", ".join(f"{v:.0f}" for v in box),
                "w x h": f"{width:.0f} x {height:.0f}",
                "max(l*,t*,r*,b*) at center": round(max(width, height) / 2, 1),
            }
            row.update({name: int(n) for name, n in zip(self.setup.names, self.positives_per_box[m])})
            row["status"] = self.box_status[m]
            rows.append(row)
        return rows


def assign_image(
    image_size: tuple[int, int],
    boxes: Tensor,
    labels: Tensor,
    setup: LevelSetup,
    *,
    crowd: Tensor | None = None,
    center_sampling_radius: float = 0.0,
    size_range_inclusive: bool = True,
    location_offset: str = "half_stride",
    size_divisible: int = 32,
) -> ImageAssignment:
    """Assign the locations of one input image (already in the training frame) to its boxes.

    Args:
        image_size: ``(h, w)`` of the input image; the grid covers its padding to ``size_divisible``.
        boxes: ``[M, 4]`` xyxy in input pixels; ``labels`` ``[M]``; ``crowd`` ``[M]`` (never assigned).
        setup: :func:`level_setup`.
        center_sampling_radius: Table 3 "ctr. sampling" in strides; 0 turns it off.
        size_range_inclusive, location_offset: as :class:`fcos_lab.config.AssignConfig`.
    """
    height, width = image_size
    padded = (-(-height // size_divisible) * size_divisible, -(-width // size_divisible) * size_divisible)
    shapes = grid_shapes(padded, setup.strides)
    locations = make_locations(shapes, setup.strides, offset=location_offset)
    crowd = torch.zeros(len(boxes), dtype=torch.bool) if crowd is None else crowd
    gt = pad_ground_truth([boxes.float()], [labels.long()], [crowd])
    result = assign(
        locations, gt, setup.size_ranges, size_range_inclusive=size_range_inclusive,
        center_sampling_radius=center_sampling_radius,
    )
    matched = result.matched_gt[0].numpy()
    level_index = locations.level_index.numpy()
    num_boxes, num_levels = len(boxes), len(setup.strides)
    positives = np.zeros((num_boxes, num_levels), dtype=np.int64)
    keep = matched >= 0
    np.add.at(positives, (matched[keep], level_index[keep]), 1)

    usable = (gt.valid & ~gt.crowd)[0]
    inside = result.inside_box[0].any(0)
    in_range = (result.inside_box[0] & result.in_size_range[0]).any(0)
    candidate = result.candidates[0].any(0)
    status = []
    for m in range(num_boxes):
        if not bool(usable[m]):
            status.append("crowd: never assigned")
        elif positives[m].any():
            status.append("regressed")
        elif not bool(inside[m]):
            status.append("unreachable: no location falls inside it")
        elif not bool(in_range[m]):
            status.append("unreachable: outside every level's size range")
        elif not bool(candidate[m]):
            status.append("unreachable: outside the center-sampling region")
        else:
            status.append("unreachable: a smaller box wins every location (minimal area)")
    return ImageAssignment(
        setup=setup,
        image_size=(int(height), int(width)),
        padded_size=padded,
        shapes=shapes,
        points=locations.points.numpy(),
        level_index=level_index,
        matched_gt=matched,
        ltrb=result.box_targets[0].numpy(),
        centerness=result.centerness_targets[0].numpy(),
        num_candidates=result.num_candidates[0].numpy(),
        candidates=result.candidates[0].numpy(),
        boxes=boxes.numpy().reshape(-1, 4),
        labels=labels.numpy(),
        crowd=crowd.numpy(),
        positives_per_box=positives,
        box_status=tuple(status),
    )


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
            f"<b>{a.setup.names[level]}</b> (stride {a.setup.strides[level]}) at ({a.points[p, 0]:.0f}, {a.points[p, 1]:.0f})"
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
        image: the input image ``[3, H, W]`` (or its data URI from :func:`image_uri`), in the frame
            of ``assignment``.
        assignment: :func:`assign_image`.
        level: index into ``assignment.setup.names``, or None for every level.
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
    sizes = np.array([LEVEL_MARKER_SIZE[min(i, len(LEVEL_MARKER_SIZE) - 1)] for i in range(len(a.setup.names))])
    if len(a.setup.names) == 1:
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
    where = "all levels" if level is None else f"{a.setup.names[level]} (stride {a.setup.strides[level]})"
    figure.update_layout(
        title=f"{where}: {int(positive.sum())} positive, {len(ambiguous)} ambiguous locations; "
        f"{len(unreachable)} unreachable boxes",
    )
    return figure
