"""The check of every exercise, by number: ``CHECKS["2.5"](function, real_scenes)``.

Each check compares the participant's function with the reference (:mod:`fcos_lab.workshop.solutions`) on
hand-made cases, then random ones, then real boxes, and raises an
:class:`~fcos_lab.workshop.checking.ExerciseError` naming the first wrong answer in words. They live by
notebook: :mod:`~fcos_lab.workshop.checks_pyramid` (01), :mod:`~fcos_lab.workshop.checks_assignment` (02),
:mod:`~fcos_lab.workshop.checks_losses` (03, 04), :mod:`~fcos_lab.workshop.checks_inference` (05),
:mod:`~fcos_lab.workshop.checks_errors` (06).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fcos_lab.workshop.checking import CheckResult
from fcos_lab.workshop.checks_assignment import (
    check_assign_locations,
    check_in_center_region,
    check_in_size_range,
    check_inside_boxes,
    check_ltrb_targets,
    check_minimal_area_box,
)
from fcos_lab.workshop.checks_errors import check_error_types, check_match_detections
from fcos_lab.workshop.checks_inference import check_class_aware_nms, check_decode_boxes, check_ranking_scores
from fcos_lab.workshop.checks_losses import check_centerness_target, check_focal_loss, check_giou_loss, check_iou_loss
from fcos_lab.workshop.checks_pyramid import check_feature_shapes, check_level_locations
from fcos_lab.workshop.scenes import Scene

Check = Callable[[Callable, Sequence[Scene]], CheckResult]

CHECKS: dict[str, Check] = {
    "1.1": check_level_locations, "1.2": check_feature_shapes,
    "2.1": check_ltrb_targets, "2.2": check_inside_boxes, "2.3": check_in_size_range, "2.4": check_in_center_region,
    "2.5": check_minimal_area_box, "2.6": check_assign_locations,
    "3.1": check_centerness_target, "3.2": check_iou_loss, "3.3": check_giou_loss,
    "4.1": check_focal_loss,
    "5.1": check_decode_boxes, "5.2": check_ranking_scores, "5.3": check_class_aware_nms,
    "6.1": check_match_detections, "6.2": check_error_types,
}
