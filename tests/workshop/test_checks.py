"""Every workshop check: the reference passes, the stub fails as "not written yet", and each anticipated wrong
answer fails with a message that names the failing case (and, where the check knows it, the mistake).

The wrong answers are what participants write (the EECS 498 FCOS assignment's and our own list): the
location offset without floor(s/2), >= for inside, the size range on min, the radius in pixels, the
largest box instead of the smallest, center-ness without the square root, the union without subtracting
the intersection, decoding with flipped signs, NMS across classes, and more.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, nms

from fcos_lab.boxes import box_area, encode_ltrb
from fcos_lab.workshop import exercises, solutions
from fcos_lab.workshop.checking import ExerciseError
from fcos_lab.workshop.checks import CHECKS
from fcos_lab.workshop.scenes import random_scenes

# Real scenes come from the synthetic dataset (tests/workshop/conftest.py); here random ones stand in where a
# test does not need them, and test_real_cases_run covers the real ones.
SCENES = random_scenes(3, seed=11)


def test_every_exercise_has_a_stub_a_solution_and_a_check():
    stubs = {name for name in dir(exercises) if callable(getattr(exercises, name)) and not name.startswith("_")} - {"Tensor", "Locations"}
    assert {f.__name__ for f in solutions.SOLUTIONS.values()} == stubs
    assert set(CHECKS) == set(solutions.SOLUTIONS)


@pytest.mark.parametrize("exercise", sorted(CHECKS))
def test_the_reference_passes(exercise, real_scenes):
    result = CHECKS[exercise](solutions.SOLUTIONS[exercise], real_scenes)
    assert result.counts["hand-made"] >= 1 and result.counts["random"] >= 1 and result.counts["real"] >= 1, result
    assert str(result).startswith(f"exercise {exercise} passed")


@pytest.mark.parametrize("exercise", sorted(CHECKS))
def test_the_stub_fails_as_not_written(exercise):
    stub = getattr(exercises, solutions.SOLUTIONS[exercise].__name__)
    with pytest.raises(ExerciseError, match=rf"exercise {exercise}: \w+ is not written yet") as info:
        CHECKS[exercise](stub, SCENES)
    assert info.value.exercise == exercise and info.value.case is None


# ------------------------------------------------------------------------ wrong answers


def locations_without_offset(height, width, stride):
    ys, xs = torch.meshgrid(torch.arange(height) * stride, torch.arange(width) * stride, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).float()


def locations_half_stride_float(height, width, stride):
    return solutions.level_locations(height, width, stride) - stride // 2 + stride / 2


def locations_swapped(height, width, stride):
    return solutions.level_locations(height, width, stride).flip(1)


def locations_column_major(height, width, stride):
    return solutions.level_locations(height, width, stride).reshape(height, width, 2).transpose(0, 1).reshape(-1, 2)


def shapes_floor(image_height, image_width, strides):
    return [(image_height // s, image_width // s) for s in strides]


def ltrb_wrong_order(points, boxes):
    return solutions.ltrb_targets(points, boxes)[..., [0, 2, 1, 3]]


def inside_with_ge(ltrb):
    return ltrb.min(dim=-1).values >= 0


def size_range_on_min(ltrb, size_ranges):
    smallest = ltrb.min(dim=-1).values
    return (smallest >= size_ranges[:, None, 0]) & (smallest <= size_ranges[:, None, 1])


def size_range_strict(ltrb, size_ranges):
    reach = ltrb.max(dim=-1).values
    return (reach > size_ranges[:, None, 0]) & (reach < size_ranges[:, None, 1])


def center_radius_in_pixels(points, boxes, strides, radius):
    return solutions.in_center_region(points, boxes, torch.ones_like(strides), radius)


def center_region_also_inside(points, boxes, strides, radius):
    inside = encode_ltrb(points[:, None], boxes[None]).min(-1).values > 0
    return solutions.in_center_region(points, boxes, strides, radius) & inside


def maximal_area_box(candidates, boxes):
    area = torch.where(candidates, box_area(boxes)[None], -1.0)
    return torch.where(candidates.any(1), area.argmax(1), -1)


def minimal_area_no_background(candidates, boxes):
    area = torch.where(candidates, box_area(boxes)[None], math.inf)
    return area.argmin(1)


def assign_without_center_sampling(locations, boxes, size_ranges, radius):
    return solutions.assign_locations(locations, boxes, size_ranges, 0.0)


def centerness_without_sqrt(ltrb):
    return solutions.centerness_target(ltrb) ** 2


def iou_loss_union_with_intersection(pred, target):
    area_p = (pred[..., 0] + pred[..., 2]) * (pred[..., 1] + pred[..., 3])
    area_t = (target[..., 0] + target[..., 2]) * (target[..., 1] + target[..., 3])
    inter = (torch.minimum(pred[..., 0], target[..., 0]) + torch.minimum(pred[..., 2], target[..., 2])) * (
        torch.minimum(pred[..., 1], target[..., 1]) + torch.minimum(pred[..., 3], target[..., 3]))
    return -torch.log(inter / (area_p + area_t))


def iou_loss_linear(pred, target):
    return 1 - torch.exp(-solutions.iou_loss(pred, target))


def giou_loss_without_enclosing(pred, target):
    return 1 - torch.exp(-solutions.iou_loss(pred, target))


def focal_loss_alpha_everywhere(logits, targets, alpha=0.25, gamma=2.0):
    p = logits.sigmoid()
    p_t = torch.where(targets > 0.5, p, 1 - p)
    return -(alpha * (1 - p_t) ** gamma * torch.log(p_t)).sum()


def focal_loss_mean(logits, targets, alpha=0.25, gamma=2.0):
    return solutions.focal_loss(logits, targets, alpha, gamma) / targets.numel()


def decode_flipped_signs(points, ltrb):
    x, y = points.unbind(-1)
    l, t, r, b = ltrb.unbind(-1)
    return torch.stack([x + l, y + t, x - r, y - b], -1)


def scores_ctr_logit(cls_logits, centerness_logits):
    return cls_logits.sigmoid() * centerness_logits[:, None]


def nms_across_classes(boxes, scores, labels, iou_threshold):
    return nms(boxes, scores, iou_threshold)


def nms_index_order(boxes, scores, labels, iou_threshold):
    return solutions.class_aware_nms(boxes, scores, labels, iou_threshold).sort().values


def match_best_box_even_if_taken(det_boxes, gt_boxes, iou_threshold=0.5):
    if not len(gt_boxes):
        return torch.full((len(det_boxes),), -1)
    iou = box_iou(det_boxes, gt_boxes)
    return torch.where(iou.max(1).values >= iou_threshold, iou.argmax(1), -1)


def match_strict_threshold(det_boxes, gt_boxes, iou_threshold=0.5):
    return solutions.match_detections(det_boxes, gt_boxes, iou_threshold + 1e-9)


def error_types_cls_first(own_class_iou, other_class_iou, taken_own_class_iou):
    types = solutions.error_types(own_class_iou, other_class_iou, taken_own_class_iou)
    return ["cls" if o >= 0.5 else t for t, o in zip(types, other_class_iou.tolist())]


def error_types_strict_background(own_class_iou, other_class_iou, taken_own_class_iou):
    types = solutions.error_types(own_class_iou, other_class_iou, taken_own_class_iou)
    top = torch.maximum(own_class_iou, other_class_iou)
    return ["both" if t == "bkg" and not bool(m < 0.1) else t for t, m in zip(types, top)]


# (exercise, wrong answer, words the message must hold: the case, and the mistake where the check names it)
WRONG_ANSWERS = [
    ("1.1", locations_without_offset, ["row 0, column 0 of a 2 x 3 map of stride 8", "(4, 4)", "offset floor(s/2) is missing"]),
    ("1.1", locations_half_stride_float, ["stride 5", "floor(s/2) = 2"]),
    ("1.1", locations_swapped, ["row 0, column 1", "x and y are swapped"]),
    ("1.1", locations_column_major, ["row 0, column 1", "column by column"]),
    ("1.2", shapes_floor, ["100 x 150 input", "ceil(100/8) = 13", "floor division"]),
    ("2.1", ltrb_wrong_order, ["location (", "box 0", "order (l*, r*, t*, b*)"]),
    ("2.2", inside_with_ge, ["location (4, 4) on P3", "box 1 [4, 4, 28, 28]", "(0, 0, 24, 24)", "use > 0"]),
    ("2.3", size_range_on_min, ["location (24, 24) on P4", "range [32, inf]", "max = 36", "You tested min(l*, t*, r*, b*)"]),
    ("2.3", size_range_strict, ["max = 32", "The bounds belong to the range"]),
    ("2.4", center_radius_in_pixels, ["radius x stride", "center region", "radius is in pixels"]),
    ("2.4", center_region_also_inside, ["location (40, 40) on P4", "box 0 [42, 42, 54, 54]", "exercise 2.2's test"]),
    ("2.5", maximal_area_box, ["is a candidate of boxes", "the smaller box (box 0, area 400) should win", "chose box 2 (area 1600)",
                               "chose the largest candidate"]),
    ("2.5", minimal_area_no_background, ["is a candidate of no box, so it is background (-1)", "must get -1"]),
    ("2.6", assign_without_center_sampling, ["radius 1.5", "in the center region no", "left out center sampling"]),
    ("3.1", centerness_without_sqrt, ["(10, 20, 30, 20)", "= 0.5774", "yours is 0.3333", "take the square root"]),
    ("3.2", iou_loss_union_with_intersection, ["(10, 10, 10, 10)", "intersection 400, union 900", "0.8109",
                                               "subtract the intersection"]),
    ("3.2", iou_loss_linear, ["-ln(IoU) = 0.8109", "1 - IoU"]),
    ("3.3", giou_loss_without_enclosing, ["enclosing box 750", "no enclosing-box term"]),
    ("4.1", focal_loss_alpha_everywhere, ["logits (0, 0, 0)", "0.04332 from the 1 positive", "negatives get (1 - alpha) = 0.75"]),
    ("4.1", focal_loss_mean, ["sums to 0.3033", "return the sum"]),
    ("5.1", decode_flipped_signs, ["location (36, 20)", "(20, 10, 60, 40)", "signs are flipped"]),
    ("5.2", scores_ctr_logit, ["class 0", "center-ness logit", "is a logit too"]),
    ("5.3", nms_across_classes, ["box 1 [1, 0, 11, 10] (score 0.8, class 1) should be kept", "across classes"]),
    ("5.3", nms_index_order, ["in another order", "by decreasing score"]),
    ("6.1", match_best_box_even_if_taken, ["detection 1 [1, 0, 11, 10]", "matches box 1", "taken by earlier detections: [0]",
                                            "a box matches once"]),
    ("6.1", match_strict_threshold, ["exactly 0.5", "matches box 0", "IoU equal to 0.5 matches (>=)"]),
    ("6.2", error_types_cls_first, ["detection 0", "is 'loc'", "your code said 'cls'", "rules apply in their order"]),
    ("6.2", error_types_strict_background, ["other 0.1", "'bkg'", "Mind the bounds"]),
]


@pytest.mark.parametrize("exercise, wrong, words", WRONG_ANSWERS, ids=[w.__name__ for _, w, _ in WRONG_ANSWERS])
def test_a_wrong_answer_fails_with_the_case_in_words(exercise, wrong, words, real_scenes):
    with pytest.raises(ExerciseError) as info:
        CHECKS[exercise](wrong, real_scenes)
    message = str(info.value)
    assert message.startswith(f"exercise {exercise}: {wrong.__name__} is wrong on the hand-made case"), message
    assert info.value.case, message
    for word in words:
        assert word in message, f"{word!r} not in:\n{message}"


def test_a_function_that_raises_is_named_with_its_case():
    def broken(height, width, stride):
        return torch.zeros(height * width, 2)[height * width]

    with pytest.raises(ExerciseError, match=r"your broken raised IndexError.*\n  on the hand-made case 1 of 4") as info:
        CHECKS["1.1"](broken, SCENES)
    assert isinstance(info.value.__cause__, IndexError)
    rendered = "\n".join(info.value._render_traceback_())
    assert "where your code raised it" in rendered and "IndexError" in rendered


def test_wrong_shapes_and_types_are_said_plainly():
    with pytest.raises(ExerciseError, match=r"shape \[6, 2\].*got shape \[2, 3, 2\]"):
        CHECKS["1.1"](lambda h, w, s: solutions.level_locations(h, w, s).reshape(h, w, 2), SCENES)
    with pytest.raises(ExerciseError, match="returned None"):
        CHECKS["3.1"](lambda ltrb: None, SCENES)
    with pytest.raises(ExerciseError, match="returned a list"):
        CHECKS["2.2"](lambda ltrb: [True], SCENES)


def test_failures_come_with_a_figure_where_one_helps(real_scenes):
    for exercise, wrong in (("1.1", locations_without_offset), ("2.5", maximal_area_box), ("5.3", nms_across_classes),
                            ("6.1", match_best_box_even_if_taken)):
        with pytest.raises(ExerciseError) as info:
            CHECKS[exercise](wrong, real_scenes)
        figure = info.value.figure
        assert figure is not None and len(figure.data) >= 2, exercise


def test_hand_made_cases_come_before_random_and_real(real_scenes):
    """A wrong answer that only differs on random or real data fails there, after every hand-made case passed."""
    def only_big_images(height, width, stride):
        result = solutions.level_locations(height, width, stride)
        return result + 1 if height * width > 100 else result

    with pytest.raises(ExerciseError, match=r"on the (random|real) case"):
        CHECKS["1.1"](only_big_images, real_scenes)


def test_a_correct_answer_written_differently_passes(real_scenes):
    """Participants' own correct code (loops, other operations) passes: the checks compare values, not code."""
    def focal(logits, targets, alpha=0.25, gamma=2.0):
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = torch.where(targets > 0.5, logits.sigmoid(), 1 - logits.sigmoid())
        return (torch.where(targets > 0.5, alpha, 1 - alpha) * (1 - p_t) ** gamma * bce).sum()

    def center(points, boxes, strides, radius):
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        reach = radius * strides[:, None]
        return ((points[:, None, 0] - cx).abs() < reach) & ((points[:, None, 1] - cy).abs() < reach)

    def shapes(image_height, image_width, strides):
        return [(math.ceil(image_height / s), math.ceil(image_width / s)) for s in strides]

    assert CHECKS["4.1"](focal, real_scenes)
    assert CHECKS["2.4"](center, real_scenes)
    assert CHECKS["1.2"](shapes, real_scenes)
