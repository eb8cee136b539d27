"""Best possible recall and ambiguous samples of a dataset, for any levels (Section 4.1.1, Tables 1 and 2).

:func:`load_dataset_boxes` reads a COCO-format file's boxes (no image is opened) and resizes them as
training does; :func:`recall_and_ambiguity` assigns them with :func:`fcos_lab.targets.assign` (the
training code) for any levels, size ranges and center-sampling radius the app's Dataset statistics page
tries; :func:`box_size_histogram_figure` places their sizes against the levels' size ranges (Section
3.2). ``fcos-lab stats`` computes the same numbers for the paper's settings in
:mod:`fcos_lab.analysis.statistics`.

Glossary: P locations over all levels, M ground-truth boxes, L levels. Boxes are xyxy in absolute
pixels of the resized image.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from fcos_lab.analysis.dataset_boxes import prepare_boxes
from fcos_lab.analysis.recall_ambiguity import tally_assignment
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.points import make_locations
from fcos_lab.targets import GroundTruth, assign
from fcos_lab.viz.assignments import LevelSetup, grid_shapes

if TYPE_CHECKING:
    import plotly.graph_objects as go


@dataclass(frozen=True)
class DatasetBoxes:
    """The boxes of a COCO-format file after the training resize, padded per image.

    Attributes:
        ann_file: the file.
        image_ids: ``[N]`` the images used (those with at least one usable box, by increasing id, at
            most ``max_images``).
        padded_sizes: ``[N, 2]`` (H, W) of each resized image padded to ``size_divisible``.
        boxes: ``[N, M, 4]`` xyxy in resized pixels, M the most usable boxes of these N images;
            ``labels``, ``valid`` ``[N, M]``.
        widths, heights: ``[K]`` sizes of the K usable boxes, resized pixels.
        num_images: images in the file; ``num_crowd`` crowd boxes left out (as Detectron does);
            ``num_degenerate`` non-crowd boxes with no area once clipped. Both count the whole file,
            also when ``max_images`` keeps only some of its images.
        class_names: names of the class indices.
    """

    ann_file: str
    image_ids: np.ndarray
    padded_sizes: np.ndarray
    boxes: Tensor
    labels: Tensor
    valid: Tensor
    widths: np.ndarray
    heights: np.ndarray
    num_images: int
    num_crowd: int
    num_degenerate: int
    class_names: tuple[str, ...]


def load_dataset_boxes(
    ann_file: str | Path, *, min_size: float = 800, max_size: float = 1333, size_divisible: int = 32,
    max_images: int | None = None,
) -> DatasetBoxes:
    """Read a COCO-format annotation file (no image is opened) and resize its boxes as training does.

    The boxes of :func:`fcos_lab.analysis.dataset_boxes.prepare_boxes` in fcos_lab's training
    convention: ``[x, x + w]`` clipped to the image, crowd boxes and boxes with no area left out.

    Args:
        ann_file: the COCO-format JSON.
        min_size, max_size: the training resize (Section 4).
        size_divisible: padded sizes are rounded up to a multiple of this.
        max_images: keep only the first this many images with boxes, by image id (None: all).

    Raises:
        DataError: the file is missing or malformed (the message names the record).
    """
    coco = load_coco_annotations(Path(ann_file).expanduser())
    padded, info = prepare_boxes(coco.dataset, ann_file, min_size=min_size, max_size=max_size,
                                 box_convention="continuous", crowd="exclude", drop_degenerate=True,
                                 size_divisible=size_divisible)
    boxes_per_image = padded.valid.sum(1).numpy()
    rows = np.flatnonzero(boxes_per_image > 0)
    rows = rows[np.argsort(padded.image_ids[rows], kind="stable")]
    if max_images is not None:
        rows = rows[: max(max_images, 0)]
    max_boxes = int(boxes_per_image[rows].max()) if len(rows) else 0
    index = torch.from_numpy(rows)
    boxes, valid = padded.boxes[index, :max_boxes], padded.valid[index, :max_boxes]
    flat = boxes[valid]
    return DatasetBoxes(
        ann_file=str(ann_file),
        image_ids=padded.image_ids[rows],
        padded_sizes=padded.padded_sizes[rows],
        boxes=boxes, labels=padded.labels[index, :max_boxes], valid=valid,
        widths=(flat[:, 2] - flat[:, 0]).numpy(), heights=(flat[:, 3] - flat[:, 1]).numpy(),
        num_images=info["num_images"], num_crowd=info["num_crowd"],
        num_degenerate=int((info["degenerate"] & ~info["crowd"]).sum()),
        class_names=tuple(coco.cats[c]["name"] for c in sorted(coco.cats)),
    )


def recall_and_ambiguity(
    data: DatasetBoxes,
    setup: LevelSetup,
    *,
    center_sampling_radius: float = 0.0,
    size_range_inclusive: bool = True,
    location_offset: str = "half_stride",
    max_elements: int = 1 << 22,
) -> dict[str, Any]:
    """Best possible recall and ambiguous samples with :func:`fcos_lab.targets.assign` (training's code).

    Definitions as :func:`fcos_lab.analysis.statistics.compute_statistics`: a box is recalled when some
    location regresses it after the size ranges and the minimal-area rule; the ambiguity is the share
    of positive locations inside more than one candidate box (and inside boxes of different classes).

    Args:
        data: :func:`load_dataset_boxes`.
        setup: :class:`fcos_lab.viz.assignments.LevelSetup` (levels, strides, size ranges).
        center_sampling_radius, size_range_inclusive, location_offset: the assignment switches.
        max_elements: images per :func:`assign` call are limited to ``B * P * M <= max_elements``.

    Returns:
        Percentages ``best_possible_recall``, ``ambiguous``, ``ambiguous_diff_class``; counts; and
        ``per_level`` rows (positive locations and boxes regressed on each level).
    """
    start = time.perf_counter()
    num_images, max_boxes = data.valid.shape
    num_levels = len(setup.strides)
    recalled = torch.zeros((num_images, max_boxes), dtype=torch.bool)
    per_level_boxes = torch.zeros((num_images, max_boxes, num_levels), dtype=torch.bool)
    positives_per_level = torch.zeros(num_levels, dtype=torch.int64)
    counts = defaultdict(int)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, size in enumerate(data.padded_sizes.tolist()):
        groups[tuple(size)].append(i)
    for padded, members in groups.items():
        shapes = grid_shapes(padded, setup.strides)
        locations = make_locations(shapes, setup.strides, offset=location_offset)
        num_points = locations.points.shape[0]
        members_t = torch.tensor(members)
        step = max(1, max_elements // max(num_points * max(max_boxes, 1), 1))
        for chunk in members_t.split(step):
            valid = data.valid[chunk]
            m = int(valid.sum(1).max())
            valid = valid[:, :m]
            gt = GroundTruth(data.boxes[chunk, :m], data.labels[chunk, :m], valid, torch.zeros_like(valid))
            result = assign(locations, gt, setup.size_ranges, size_range_inclusive=size_range_inclusive,
                            center_sampling_radius=center_sampling_radius)
            tally = tally_assignment(result, locations, gt)
            image, matched, level = chunk[tally.image_index], tally.matched_gt, tally.level_index
            recalled[image, matched] = True
            per_level_boxes[image, matched, level] = True
            positives_per_level += torch.bincount(level, minlength=num_levels)
            counts["positive_locations"] += tally.positive_locations
            counts["ambiguous_locations"] += tally.ambiguous_locations
            counts["ambiguous_diff_class_locations"] += tally.ambiguous_diff_class_locations
    num_boxes = int(data.valid.sum())
    num_recalled = int((recalled & data.valid).sum())

    def percent(a: int, b: int) -> float:
        return 100.0 * a / b if b else float("nan")

    return {
        "best_possible_recall": percent(num_recalled, num_boxes),
        "ambiguous": percent(counts["ambiguous_locations"], counts["positive_locations"]),
        "ambiguous_diff_class": percent(counts["ambiguous_diff_class_locations"], counts["positive_locations"]),
        "num_images": num_images,
        "num_boxes": num_boxes,
        "recalled_boxes": num_recalled,
        **{k: int(v) for k, v in counts.items()},
        "per_level": [
            {"level": name, "stride": stride, "size range": f"[{lo:g}, {hi:g}]",
             "positive locations": int(positives_per_level[i]), "boxes regressed": int(per_level_boxes[..., i].sum())}
            for i, (name, stride, (lo, hi)) in enumerate(zip(setup.names, setup.strides, setup.size_ranges))
        ],
        "seconds": time.perf_counter() - start,
    }


def box_size_histogram_figure(
    widths: np.ndarray, heights: np.ndarray, setup: LevelSetup, *, bins_per_octave: int = 4
) -> go.Figure:
    """Box sizes against the levels' size ranges (Section 3.2), on a log2 axis.

    A box of longer side ``s`` is seen by locations with ``max(l*, t*, r*, b*)`` from ``s/2`` (its
    center) to about ``s`` (its corners), so both are drawn: a level can regress the box when its
    range meets that interval.

    Args:
        widths, heights: ``[N]`` box sizes in input pixels (after the training resize).
        setup: the levels and their ranges.
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
    for i, (name, (lo, hi)) in enumerate(zip(setup.names, setup.size_ranges)):
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
