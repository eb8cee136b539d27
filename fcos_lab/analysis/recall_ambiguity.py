"""Tally of one batch's assignment for best possible recall and ambiguous samples (Section 4.1.1).

The paper's Table 1 counts a ground-truth box as recalled when at least one location regresses it,
i.e. after the size ranges and the minimal-area rule; Table 2 counts the *ambiguous samples*: positive
locations that fall into more than one candidate box, and among them those whose candidate boxes are
of different classes ("Amb. samples (diff.)"). :func:`tally_assignment` reads both off the result of
:func:`fcos_lab.targets.assign`, the very assignment used in training, with no loop over images or
boxes. ``fcos-lab stats`` (:mod:`fcos_lab.analysis.statistics`) and the app's Dataset statistics page
(:mod:`fcos_lab.viz.dataset_statistics`) accumulate these tallies over batches.

Glossary: B images, P locations over all levels, M ground-truth boxes (padded), K positive locations,
A ambiguous locations (``candidates`` below is ``[A, M]``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from fcos_lab.points import Locations
from fcos_lab.targets import Assignment, GroundTruth


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
