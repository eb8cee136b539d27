"""Best possible recall and ambiguous samples of a dataset under an objective (Section 4.1.1, Tables 1 and 2).

The paper's Table 1 counts a ground-truth box as recalled when at least one location regresses it,
i.e. after the size ranges and the minimal-area rule; Table 2 counts the *ambiguous samples*: positive
locations that fall into more than one candidate box, and among them those whose candidate boxes are
of different classes ("Amb. samples (diff.)"). :func:`tally_assignment` reads both off the result of
:func:`fcos_lab.targets.assign`, the very assignment used in training, with no loop over images or
boxes. :func:`recall_and_ambiguity` accumulates them over a whole file's boxes
(:mod:`fcos_lab.analysis.dataset_boxes`) for an :class:`~fcos_lab.objective.Objective`: ``fcos-lab
stats`` (:mod:`fcos_lab.analysis.statistics`), the app's Dataset statistics page and ``fcos-lab tune``
all call it.

Glossary: B images, P locations over all levels, M ground-truth boxes (padded), K positive locations,
A ambiguous locations (``candidates`` below is ``[A, M]``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fcos_lab.analysis.dataset_boxes import PaddedBoxes
from fcos_lab.objective import Objective
from fcos_lab.points import Locations, grid_shapes
from fcos_lab.targets import Assignment, GroundTruth

AMBIGUITY_UNITS = ("locations", "pairs")


@dataclass(frozen=True)
class AssignmentTally:
    """Positive locations and ambiguous-sample counts of one assigned batch.

    Counted per location (the paper's "samples", after the minimal-area rule, one per location) and per
    (location, candidate box) pair (before it: a location in k candidate boxes counts k times).

    Attributes:
        image_index: ``[K]`` image of each positive location.
        point_index: ``[K]`` the location, an index into P.
        matched_gt: ``[K]`` index into M of the box it regresses (the minimal-area candidate).
        level_index: ``[K]`` its level (0 for the first level of the locations).
        positive_locations: K, locations with at least one candidate box.
        ambiguous_locations: positive locations with more than one candidate box.
        ambiguous_diff_class_locations: ambiguous locations whose candidate boxes are not all one class.
        positive_pairs: (location, candidate box) pairs.
        ambiguous_pairs: pairs of ambiguous locations.
        ambiguous_diff_class_pairs: pairs of ambiguous locations with different classes.
    """

    image_index: Tensor
    point_index: Tensor
    matched_gt: Tensor
    level_index: Tensor
    positive_locations: int
    ambiguous_locations: int
    ambiguous_diff_class_locations: int
    positive_pairs: int
    ambiguous_pairs: int
    ambiguous_diff_class_pairs: int

    def counts(self) -> dict[str, int]:
        """The six counts by name, locations first: the keys ``fcos-lab stats`` reports."""
        return {
            "positive_locations": self.positive_locations,
            "ambiguous_locations": self.ambiguous_locations,
            "ambiguous_diff_class_locations": self.ambiguous_diff_class_locations,
            "positive_pairs": self.positive_pairs,
            "ambiguous_pairs": self.ambiguous_pairs,
            "ambiguous_diff_class_pairs": self.ambiguous_diff_class_pairs,
        }


def tally_assignment(result: Assignment, locations: Locations, gt: GroundTruth) -> AssignmentTally:
    """The positive locations of a batch, and how many of them are ambiguous samples (Tables 1 and 2).

    Args:
        result: :func:`fcos_lab.targets.assign` of ``locations`` and ``gt``; a location with candidates
            is positive (true unless ``area_tiebreak_float32`` meets boxes of 1e8 pixels).
        locations: the P locations the batch was assigned on.
        gt: the batch's padded ground truth; ``gt.labels`` ``[B, M]`` gives each candidate's class.

    Returns:
        An :class:`AssignmentTally`; a box ``m`` of image ``b`` is recalled when some positive location
        has ``(image_index, matched_gt) == (b, m)``.
    """
    image_index, point_index = result.positive.nonzero(as_tuple=True)
    num_candidates = result.num_candidates
    ambiguous_image, ambiguous_point = (num_candidates > 1).nonzero(as_tuple=True)
    # Candidates of different classes: some candidate's class differs from that of the box the location
    # regresses (itself a candidate), i.e. the location's predicted class is wrong for some box it is in.
    candidates = result.candidates[ambiguous_image, ambiguous_point]
    assigned_label = result.labels[ambiguous_image, ambiguous_point]
    diff_class = (candidates & (gt.labels[ambiguous_image] != assigned_label[:, None])).any(dim=1)
    ambiguous_candidates = num_candidates[ambiguous_image, ambiguous_point]
    return AssignmentTally(
        image_index=image_index,
        point_index=point_index,
        matched_gt=result.matched_gt[image_index, point_index],
        level_index=locations.level_index[point_index],
        positive_locations=len(image_index),
        ambiguous_locations=len(ambiguous_image),
        ambiguous_diff_class_locations=int(diff_class.sum()),
        positive_pairs=int(num_candidates.sum()),
        ambiguous_pairs=int(ambiguous_candidates.sum()),
        ambiguous_diff_class_pairs=int(ambiguous_candidates[diff_class].sum()),
    )


def batches(
    boxes: PaddedBoxes, strides: tuple[int, ...], max_images: int = 32, max_elements: int = 1 << 22
) -> list[tuple[tuple[int, int], np.ndarray]]:
    """Images with boxes grouped by padded size, each group cut into batches of at most ``max_images``
    images and ``B * P * M`` (locations x padded boxes) of at most ``max_elements``."""
    num_boxes = boxes.valid.sum(1).numpy()
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in np.flatnonzero(num_boxes > 0):
        groups[tuple(int(v) for v in boxes.padded_sizes[i])].append(int(i))
    out = []
    for size, members in sorted(groups.items()):
        members_arr = np.array(sorted(members, key=lambda i: -num_boxes[i]))
        num_points = sum(h * w for h, w in grid_shapes(size, strides))
        start = 0
        while start < len(members_arr):
            per_image = num_points * int(num_boxes[members_arr[start]])  # the first image has the most boxes
            count = max(1, min(max_images, max_elements // max(per_image, 1)))
            out.append((size, members_arr[start : start + count]))
            start += count
    return out


@dataclass
class RecallAmbiguity:
    """Best possible recall and ambiguous samples of one objective over a file's boxes.

    Attributes:
        objective: the assignment's settings (levels, size ranges, center sampling, ...).
        recalled: ``[A]`` per annotation of the file: some location regresses it.
        has_inside: ``[A]`` some location lies strictly inside it (filled in for unrecalled boxes only).
        has_candidate: ``[A]`` ... and in its size range and center region (unrecalled boxes only).
        boxes_per_level: ``[A, L]`` the levels with a location regressing the box.
        positive_per_level: ``[L]`` positive locations per level.
        locations_per_box: ``[A]`` how many locations regress the box (after the minimal-area rule).
        counts: :meth:`AssignmentTally.counts` summed over batches.
        seconds: time spent assigning.
    """

    objective: Objective
    recalled: Tensor
    has_inside: Tensor
    has_candidate: Tensor
    boxes_per_level: Tensor
    positive_per_level: Tensor
    locations_per_box: Tensor
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: float = 0.0

    @classmethod
    def empty(cls, objective: Objective, num_annotations: int) -> RecallAmbiguity:
        num_levels = len(objective.strides)
        return cls(
            objective,
            recalled=torch.zeros(num_annotations, dtype=torch.bool),
            has_inside=torch.zeros(num_annotations, dtype=torch.bool),
            has_candidate=torch.zeros(num_annotations, dtype=torch.bool),
            boxes_per_level=torch.zeros((num_annotations, num_levels), dtype=torch.bool),
            positive_per_level=torch.zeros(num_levels, dtype=torch.int64),
            locations_per_box=torch.zeros(num_annotations, dtype=torch.int64),
        )

    def update(self, padded_size: tuple[int, int], gt: GroundTruth, annotation_index: Tensor) -> None:
        """Assign one batch of images of ``padded_size`` (``annotation_index`` ``[B, M]``, -1 for padding)."""
        start = time.perf_counter()
        locations = self.objective.image_locations(padded_size)
        result = self.objective.assign(locations, gt)
        tally = tally_assignment(result, locations, gt)
        for key, value in tally.counts().items():
            self.counts[key] += value
        # Recall: a box is recalled when some location regresses it after the minimal-area rule.
        image_index, matched, level = tally.image_index, tally.matched_gt, tally.level_index
        hit_index = annotation_index[image_index, matched]
        self.recalled[hit_index] = True
        self.boxes_per_level[hit_index, level] = True
        self.positive_per_level += torch.bincount(level, minlength=len(self.objective.strides))
        self.locations_per_box.index_add_(0, hit_index, torch.ones_like(hit_index))
        # Why a box is missed, looked up for the missed boxes only ([K, P] rather than [B, P, M]).
        missed = annotation_index >= 0
        missed[image_index, matched] = False
        missed_image, missed_box = missed.nonzero(as_tuple=True)
        missed_index = annotation_index[missed_image, missed_box]
        self.has_inside[missed_index[result.inside_box[missed_image, :, missed_box].any(dim=1)]] = True
        self.has_candidate[missed_index[result.candidates[missed_image, :, missed_box].any(dim=1)]] = True
        self.seconds += time.perf_counter() - start

    def summary(self, counted: Tensor, ambiguity_unit: str = "locations") -> dict[str, Any]:
        """Percentages and counts over the ``counted`` ``[A]`` annotations.

        Returns:
            ``best_possible_recall``, ``ambiguous``, ``ambiguous_diff_class`` (percent, None when nothing
            was counted), ``recalled_boxes``, the three reasons a box is missed, the tallies, and
            ``per_level`` rows.
        """
        recalled = self.recalled & counted
        missed = counted & ~self.recalled  # has_inside / has_candidate are only filled in for these
        positives = self.counts[f"positive_{ambiguity_unit}"]
        names = self.objective.level_names
        return {
            "best_possible_recall": percent(int(recalled.sum()), int(counted.sum())),
            "ambiguous": percent(self.counts[f"ambiguous_{ambiguity_unit}"], positives),
            "ambiguous_diff_class": percent(self.counts[f"ambiguous_diff_class_{ambiguity_unit}"], positives),
            "num_boxes": int(counted.sum()),
            "recalled_boxes": int(recalled.sum()),
            # Why the others are missed: no location strictly inside; locations inside but none in the
            # size range (or center region); or every candidate location went to a smaller box.
            "unrecalled_no_location_inside": int((missed & ~self.has_inside).sum()),
            "unrecalled_outside_size_ranges": int((missed & self.has_inside & ~self.has_candidate).sum()),
            "unrecalled_lost_to_smaller_boxes": int((missed & self.has_candidate).sum()),
            **{k: int(v) for k, v in self.counts.items()},
            "per_level": [
                {"level": name, "stride": stride, "size range": f"[{lo:g}, {hi:g}]",
                 "positive locations": int(self.positive_per_level[i]), "boxes regressed": int(self.boxes_per_level[:, i].sum())}
                for i, (name, stride, (lo, hi)) in enumerate(zip(names, self.objective.strides, self.objective.size_ranges))
            ],
            "seconds": self.seconds,
        }


def percent(numerator: float, denominator: float) -> float | None:
    """``100 * numerator / denominator``, or None (JSON null) when nothing was counted."""
    return 100.0 * numerator / denominator if denominator else None


def accumulate(
    boxes: PaddedBoxes, objectives: dict[str, Objective], *, max_images: int = 32, max_elements: int = 1 << 22,
    num_annotations: int | None = None, on_batch: Any = None,
) -> dict[str, RecallAmbiguity]:
    """Assign every image of ``boxes`` under each objective; one :class:`RecallAmbiguity` per name.

    ``on_batch(padded_size, index, gt, annotation_index)``, if given, is called for each batch too (the
    statistics module adds RetinaNet's anchors there). Batches are sized for the largest objective.
    """
    if num_annotations is None:
        num_annotations = int(boxes.annotation_index.max()) + 1 if boxes.annotation_index.numel() else 0
    results = {name: RecallAmbiguity.empty(objective, num_annotations) for name, objective in objectives.items()}
    finest = min((o.strides for o in objectives.values()), key=lambda s: s[0], default=(8,))
    for padded_size, members in batches(boxes, finest, max_images, max_elements):
        index = torch.from_numpy(members)
        num_boxes = int(boxes.valid[index].sum(1).max())
        valid = boxes.valid[index, :num_boxes]
        gt = GroundTruth(boxes.boxes[index, :num_boxes], boxes.labels[index, :num_boxes], valid,
                         boxes.crowd[index, :num_boxes])
        annotation_index = boxes.annotation_index[index, :num_boxes]
        for result in results.values():
            result.update(padded_size, gt, annotation_index)
        if on_batch is not None:
            on_batch(padded_size, index, gt, annotation_index)
    return results


def recall_and_ambiguity(
    boxes: PaddedBoxes, objective: Objective, *, ambiguity_unit: str = "locations", max_elements: int = 1 << 22
) -> dict[str, Any]:
    """Best possible recall and ambiguous samples of ``boxes`` under ``objective`` (the training assignment).

    A box is recalled when some location regresses it after the size ranges and the minimal-area rule;
    the ambiguity is the share of positive locations inside more than one candidate box (and inside
    boxes of different classes). See :meth:`RecallAmbiguity.summary` for the keys.
    """
    result = accumulate(boxes, {"": objective}, max_elements=max_elements)[""]
    counted = torch.zeros_like(result.recalled)
    counted[boxes.annotation_index[boxes.valid]] = True
    return {"num_images": int((boxes.valid.sum(1) > 0).sum()), **result.summary(counted, ambiguity_unit)}
