"""Best possible recall and ambiguity level by level, to try many size ranges quickly (Section 3.2, Tables 1-2).

Size ranges are separable by level. A location of the level of stride s is a candidate for a box when it
lies inside the box (and its center region) and ``max(l*, t*, r*, b*)`` is in *that level's* range
``[m_{i-1}, m_i]``; the box it regresses is the candidate of minimal area. So which locations of a level
are positive, which are ambiguous, and which boxes they regress depend on the level's stride and range
alone, whatever the other levels are. A whole pyramid's statistics follow from its levels':

- positive and ambiguous locations (Table 2) are sums over levels;
- a box is recalled (Table 1) when some level recalls it, and the locations that regress it add up.

:class:`LevelStatisticsCache` computes a level once per ``(stride, range)`` with the training assignment
itself (:func:`fcos_lab.analysis.recall_ambiguity.accumulate` under the config's
:class:`~fcos_lab.objective.Objective` narrowed to that one level; the locations of a level do not depend
on the others) and combines levels into any pyramid. Two exact shortcuts make a level cheap: a location
inside a box of longer side ``L`` has ``max(l*, t*, r*, b*)`` between ``L / 2`` and ``L``, so boxes whose
interval misses the range are never candidates there and are left out (:func:`candidate_boxes`), and
images left without boxes are skipped. ``fcos-lab tune`` (:mod:`fcos_lab.analysis.tune`) searches size
ranges with it; ``tests/analysis/test_level_statistics.py`` checks it equals
:func:`~fcos_lab.analysis.recall_ambiguity.recall_and_ambiguity` of the whole pyramid.

Glossary: N images, M padded boxes, A annotations of the file, K counted boxes (those of ``boxes``), L levels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from fcos_lab.analysis.dataset_boxes import PaddedBoxes
from fcos_lab.analysis.recall_ambiguity import accumulate, percent
from fcos_lab.objective import Objective

# A box regressed by fewer locations than this (after the minimal-area rule), or by none, is "poorly
# covered": a location or two is all the training signal it gets, and one missed score loses it.
FEW_LOCATIONS = 3
# Float32 slack of the L / 2 <= max(l*, t*, r*, b*) <= L bounds: keeping a box too many costs time only.
_SLACK_RELATIVE, _SLACK_PIXELS = 1e-3, 1e-2


def candidate_boxes(boxes: PaddedBoxes, size_range: tuple[float, float]) -> Tensor:
    """``[N, M]`` the boxes that some location of a level with ``size_range`` could regress.

    A location strictly inside a box of width w and height h has ``max(l*, r*)`` in ``[w/2, w)`` and
    ``max(t*, b*)`` in ``[h/2, h)``, so ``max(l*, t*, r*, b*)`` lies in ``[L/2, L)`` with ``L = max(w, h)``;
    a box is kept when that interval (widened by a float32 slack) meets ``[lo, hi]``. Exact: a box left
    out is no candidate of the level, and the minimal-area rule only ranks candidates.
    """
    lo, hi = size_range
    wh = boxes.boxes[..., 2:] - boxes.boxes[..., :2]
    longer = wh.max(dim=-1).values
    slack = longer * _SLACK_RELATIVE + _SLACK_PIXELS
    return boxes.valid & (longer + slack >= lo) & (longer / 2 - slack <= hi)


@dataclass(frozen=True)
class LevelStatistics:
    """One level's share of the statistics, for one stride and size range.

    Attributes:
        stride: the level's stride; ``size_range`` its ``(m_{i-1}, m_i)``.
        recalled: ``[K]`` some location of this level regresses the box.
        locations_per_box: ``[K]`` how many locations of this level regress the box.
        positive_locations, ambiguous_locations, ambiguous_diff_class_locations: Table 2's counts on the level.
        seconds: time spent assigning.
    """

    stride: int
    size_range: tuple[float, float]
    recalled: Tensor
    locations_per_box: Tensor
    positive_locations: int
    ambiguous_locations: int
    ambiguous_diff_class_locations: int
    seconds: float


@dataclass(frozen=True)
class SettingStatistics:
    """Best possible recall and ambiguous samples of a pyramid (strides and size ranges), from its levels.

    Attributes:
        strides, size_ranges, level_names: the pyramid.
        num_boxes: K; ``recalled_boxes`` those some location regresses.
        best_possible_recall: percent of boxes recalled (Table 1).
        ambiguous, ambiguous_diff_class: percent of positive locations inside several candidate boxes (of
            different classes), Table 2.
        positive_locations: over all levels.
        few_locations: recalled boxes regressed by fewer than :data:`FEW_LOCATIONS` locations.
        poorly_covered: ``few_locations`` plus the unrecalled boxes.
        per_level: per level: positive locations and the boxes it recalls.
    """

    strides: tuple[int, ...]
    size_ranges: tuple[tuple[float, float], ...]
    level_names: tuple[str, ...]
    num_boxes: int
    recalled_boxes: int
    best_possible_recall: float | None
    ambiguous: float | None
    ambiguous_diff_class: float | None
    positive_locations: int
    few_locations: int
    poorly_covered: int
    per_level: tuple[dict[str, Any], ...]

    @property
    def poorly_covered_percent(self) -> float | None:
        return percent(self.poorly_covered, self.num_boxes)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, ranges with ``"inf"`` for the open end."""
        return {
            "levels": list(self.level_names), "strides": list(self.strides),
            "size_ranges": [[lo, hi if math.isfinite(hi) else "inf"] for lo, hi in self.size_ranges],
            "num_boxes": self.num_boxes, "recalled_boxes": self.recalled_boxes,
            "best_possible_recall": self.best_possible_recall, "ambiguous": self.ambiguous,
            "ambiguous_diff_class": self.ambiguous_diff_class, "positive_locations": self.positive_locations,
            "few_locations": self.few_locations, "poorly_covered": self.poorly_covered,
            "poorly_covered_percent": self.poorly_covered_percent, "per_level": list(self.per_level),
        }


def combine(levels: Sequence[LevelStatistics], objective: Objective) -> SettingStatistics:
    """The statistics of the pyramid made of ``levels`` (finest first), named after ``objective``'s level rule."""
    strides = tuple(level.stride for level in levels)
    recalled = torch.stack([level.recalled for level in levels]).any(dim=0)
    locations = torch.stack([level.locations_per_box for level in levels]).sum(dim=0)
    positives = sum(level.positive_locations for level in levels)
    few = int((recalled & (locations < FEW_LOCATIONS)).sum())
    names = replace(objective, strides=strides).level_names
    return SettingStatistics(
        strides=strides,
        size_ranges=tuple(level.size_range for level in levels),
        level_names=names,
        num_boxes=len(recalled),
        recalled_boxes=int(recalled.sum()),
        best_possible_recall=percent(int(recalled.sum()), len(recalled)),
        ambiguous=percent(sum(level.ambiguous_locations for level in levels), positives),
        ambiguous_diff_class=percent(sum(level.ambiguous_diff_class_locations for level in levels), positives),
        positive_locations=positives,
        few_locations=few,
        poorly_covered=few + int((~recalled).sum()),
        per_level=tuple(
            {"level": name, "stride": level.stride, "size range": [level.size_range[0], level.size_range[1]],
             "positive locations": level.positive_locations, "boxes regressed": int(level.recalled.sum())}
            for name, level in zip(names, levels)
        ),
    )


class LevelStatisticsCache:
    """Per-level statistics of a file's boxes under a config's objective, each ``(stride, range)`` computed once.

    Args:
        boxes: the padded boxes (:func:`fcos_lab.analysis.dataset_boxes.boxes_for_config`); every valid box
            is counted.
        objective: the config's assignment (center sampling, strict ranges, location rule, ...); only its
            strides and size ranges are replaced, level by level.
        max_elements: batch size bound of :func:`~fcos_lab.analysis.recall_ambiguity.accumulate`.
    """

    def __init__(self, boxes: PaddedBoxes, objective: Objective, *, max_elements: int = 1 << 22) -> None:
        self.boxes = boxes
        self.objective = objective
        self.max_elements = max_elements
        self.counted = boxes.annotation_index[boxes.valid]  # [K] annotation index of each counted box
        self.num_annotations = int(self.counted.max()) + 1 if len(self.counted) else 0
        self.num_images = int((boxes.valid.sum(1) > 0).sum())
        self._levels: dict[tuple[int, float, float], LevelStatistics] = {}

    @property
    def num_boxes(self) -> int:
        return len(self.counted)

    @property
    def seconds(self) -> float:
        """Time spent assigning, over every level computed so far."""
        return sum(level.seconds for level in self._levels.values())

    def level(self, stride: int, size_range: tuple[float, float]) -> LevelStatistics:
        """The statistics of one level (computed on first use)."""
        lo, hi = float(size_range[0]), float(size_range[1])
        key = (int(stride), lo, hi)
        if key not in self._levels:
            start = time.perf_counter()
            single = replace(self.objective, strides=(int(stride),), size_ranges=((lo, hi),))
            kept = self.boxes.keep(candidate_boxes(self.boxes, (lo, hi)))
            result = accumulate(kept, {"level": single}, max_elements=self.max_elements,
                                num_annotations=self.num_annotations)["level"]
            counts = result.counts
            self._levels[key] = LevelStatistics(
                stride=int(stride), size_range=(lo, hi), recalled=result.recalled[self.counted],
                locations_per_box=result.locations_per_box[self.counted],
                positive_locations=int(counts["positive_locations"]),
                ambiguous_locations=int(counts["ambiguous_locations"]),
                ambiguous_diff_class_locations=int(counts["ambiguous_diff_class_locations"]),
                seconds=time.perf_counter() - start,
            )
        return self._levels[key]

    def setting(self, strides: Sequence[int], size_ranges: Sequence[tuple[float, float]]) -> SettingStatistics:
        """The statistics of the pyramid ``strides`` with ``size_ranges`` (one per stride, finest first)."""
        if len(strides) != len(size_ranges) or not strides:
            raise ValueError(f"{len(strides)} strides but {len(size_ranges)} size ranges")
        return combine([self.level(s, r) for s, r in zip(strides, size_ranges)], self.objective)
