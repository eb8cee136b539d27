"""Which locations regress which box, one image at a time (Sections 3.1 and 3.2, Table 3).

:func:`assign_image` runs the training assignment (:meth:`fcos_lab.objective.Objective.assign`) on one
image and keeps what a figure or a table needs as numpy arrays: the positive locations and the box each
regresses (Eq. 1 targets and the Eq. 3 center-ness target), the ambiguous locations and the box the
minimal-area rule chose, and the boxes no location regresses, with the reason. The levels, size ranges
and every assignment switch come from the :class:`~fcos_lab.objective.Objective`, so for a config the
result is exactly what training assigns to the same image. :func:`objective_variant` is the objective
of a config with the levels, size ranges and center-sampling radius that a page or a notebook tries.

Its figures are :mod:`fcos_lab.viz.assignments` and :mod:`fcos_lab.viz.heatmaps`; the same statistics
over a whole file are :mod:`fcos_lab.analysis.recall_ambiguity`.

Glossary: P locations over all levels, M boxes, L levels; boxes xyxy in input-image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fcos_lab.config import Config
from fcos_lab.errors import DataError
from fcos_lab.objective import Objective
from fcos_lab.targets import pad_ground_truth


def ranges_from_boundaries(boundaries: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """``m_3..m_6`` (e.g. 64, 128, 256, 512) to the five ranges ``(0, m_3), ..., (m_6, inf)`` (Section 3.2).

    Raises:
        DataError: boundaries that are not positive and strictly increasing.
    """
    values = [float(b) for b in boundaries]
    if any(not math.isfinite(v) or v <= 0 for v in values) or any(a >= b for a, b in zip(values, values[1:])):
        raise DataError(f"size range boundaries must be positive and increasing, got {values}")
    edges = [0.0, *values, math.inf]
    return tuple(zip(edges[:-1], edges[1:]))


def objective_variant(
    config: Config,
    *,
    fpn: bool = True,
    strides: Sequence[int] | None = None,
    size_ranges: Sequence[tuple[float, float]] | None = None,
    center_sampling_radius: float | None = None,
) -> Objective:
    """The objective of ``config`` with other levels, size ranges or center-sampling radius.

    Every other switch of the config (location offset, torchvision's image-size spacing and strict ranges,
    the center-sampling rule, "+1" areas, ...) is kept: only the fields named change.

    Args:
        config: the preset (with its overrides) whose objective is varied.
        fpn: False gives the paper's "w/o FPN" rows (P4 alone, no size limit), whatever the levels.
        strides, size_ranges: the levels tried (None keeps the config's); one range per stride.
        center_sampling_radius: Table 3's radius in strides; 0 turns center sampling off; None keeps it.

    Raises:
        DataError: strides and ranges of different lengths, a stride < 1, a range with lo >= hi, or a
            negative radius (the message names what the page typed).
    """
    objective = Objective.from_config(config)
    if center_sampling_radius is not None:
        if not center_sampling_radius >= 0:
            raise DataError(f"the center-sampling radius must be >= 0 strides, got {center_sampling_radius}")
        objective = replace(objective, center_sampling_radius=float(center_sampling_radius))
    if not fpn:
        return objective.without_fpn()
    strides = objective.strides if strides is None else tuple(int(s) for s in strides)
    ranges = objective.size_ranges if size_ranges is None else tuple((float(lo), float(hi)) for lo, hi in size_ranges)
    if len(strides) != len(ranges) or not strides:
        raise DataError(f"{len(strides)} strides but {len(ranges)} size ranges: give one range per level")
    if any(s < 1 for s in strides):
        raise DataError(f"strides must be positive integers, got {strides}")
    if any(not lo < hi for lo, hi in ranges):
        raise DataError(f"each size range needs lo < hi, got {ranges}")
    return replace(objective, strides=strides, size_ranges=ranges)


@dataclass(frozen=True)
class ImageAssignment:
    """The training assignment of one image, as numpy arrays for figures and tables.

    Attributes:
        objective: the levels, size ranges and switches it was assigned with.
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

    objective: Objective
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
        o = self.objective
        rows = []
        for level, (name, stride, (lo, hi)) in enumerate(zip(o.level_names, o.strides, o.size_ranges)):
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
            row.update({name: int(n) for name, n in zip(self.objective.level_names, self.positives_per_box[m])})
            row["status"] = self.box_status[m]
            rows.append(row)
        return rows


def assign_image(
    objective: Objective,
    image_size: tuple[int, int],
    boxes: Tensor,
    labels: Tensor,
    *,
    crowd: Tensor | None = None,
    size_divisible: int = 32,
) -> ImageAssignment:
    """Assign the locations of one input image (already in the training frame) to its boxes.

    The image is padded as the data loader pads a batch of one (to ``size_divisible``); the locations are
    those of that padded input (:meth:`Objective.image_locations`, the network's feature-map grids).

    Args:
        objective: :meth:`Objective.from_config` of the config, or :func:`objective_variant`.
        image_size: ``(h, w)`` of the input image.
        boxes: ``[M, 4]`` xyxy in input pixels; ``labels`` ``[M]``; ``crowd`` ``[M]`` (never assigned).
        size_divisible: ``config.input.size_divisible``.
    """
    height, width = (int(v) for v in image_size)
    padded = (-(-height // size_divisible) * size_divisible, -(-width // size_divisible) * size_divisible)
    locations = objective.image_locations(padded)
    crowd = torch.zeros(len(boxes), dtype=torch.bool) if crowd is None else crowd.bool()
    gt = pad_ground_truth([boxes.float()], [labels.long()], [crowd])
    result = objective.assign(locations, gt)
    matched = result.matched_gt[0].numpy()
    level_index = locations.level_index.numpy()
    num_boxes, num_levels = len(boxes), len(objective.strides)
    positives = np.zeros((num_boxes, num_levels), dtype=np.int64)
    keep = matched >= 0
    np.add.at(positives, (matched[keep], level_index[keep]), 1)

    # Why a box is missed: the first test of Sections 3.1-3.2 (and Table 3's center region) it fails.
    usable = (gt.valid & ~gt.crowd)[0].numpy()
    inside = result.inside_box[0].any(0).numpy()
    in_range = (result.inside_box[0] & result.in_size_range[0]).any(0).numpy()
    candidate = result.candidates[0].any(0).numpy()
    reasons = np.select(
        [~usable, positives.any(1), ~inside, ~in_range, ~candidate],
        ["crowd: never assigned", "regressed", "unreachable: no location falls inside it",
         "unreachable: outside every level's size range", "unreachable: outside the center-sampling region"],
        "unreachable: a smaller box wins every location (minimal area)",
    )
    return ImageAssignment(
        objective=objective,
        image_size=(height, width),
        padded_size=padded,
        shapes=locations.shapes,
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
        box_status=tuple(str(r) for r in reasons),
    )
