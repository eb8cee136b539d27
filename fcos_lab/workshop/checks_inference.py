"""Checks of notebook 05, inference (Section 3.1 "Inference", Section 3.3): exercises 5.1-5.3.

Decoding is checked as Eq. (1)'s inverse: on real scenes, decoding each positive location's l*, t*, r*, b*
must give back its ground-truth box. Scores are checked on hand-made and random logits; NMS on hand-made
overlaps (same class, other class, a box suppressed by a box that is itself suppressed), on random boxes,
and on jittered copies of real boxes (the many overlapping candidates a detector produces).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou, nms

from fcos_lab.viz.exercise_cases import case_figure
from fcos_lab.workshop import solutions
from fcos_lab.workshop.checking import (
    Case,
    CheckResult,
    Difference,
    Failure,
    as_tensor,
    box_text,
    diagnose,
    first_difference,
    number,
    numbers,
    run_check,
)
from fcos_lab.workshop.checks_assignment import reference_masks
from fcos_lab.workshop.scenes import Scene, jittered_copies, random_boxes

# ------------------------------------------------------------------------ 5.1 decoding


def check_decode_boxes(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 5.1 against :func:`fcos_lab.boxes.decode_ltrb`; on real scenes the result is the ground truth."""
    generator = torch.Generator().manual_seed(3)
    cases = [
        # Exercise 2.1's pair backwards: (36, 20) with (16, 10, 24, 20) -> (36 - 16, 20 - 10, 36 + 24, 20 + 20).
        Case("hand-made", "location (36, 20) with (l, t, r, b) = (16, 10, 24, 20)",
             (torch.tensor([[36.0, 20]]), torch.tensor([[16.0, 10, 24, 20]]))),
        # (4, 4) with (1, 2, 3, 4) -> (3, 2, 7, 8); (100, 50) with (50, 25, 10, 5) -> (50, 25, 110, 55).
        Case("hand-made", "two locations with unequal distances",
             (torch.tensor([[4.0, 4], [100, 50]]), torch.tensor([[1.0, 2, 3, 4], [50, 25, 10, 5]]))),
    ]
    for _ in range(5):
        count = int(torch.randint(1, 40, (1,), generator=generator))
        cases.append(Case("random", f"{count} random locations and distances",
                          (torch.rand((count, 2), generator=generator) * 200, torch.rand((count, 4), generator=generator) * 80)))
    for scene in real:
        masks = reference_masks(scene)
        positive = (masks["matched"] >= 0).nonzero().flatten()
        if len(positive):
            ltrb = masks["ltrb"][positive, masks["matched"][positive]]
            cases.append(Case("real", f"{scene.name}: the targets of its {len(positive)} positive locations",
                              (scene.locations.points[positive], ltrb)))

    def compare(case: Case, expected: Tensor, got: object) -> Failure | None:
        points, ltrb = case.args
        found = first_difference(expected, got, "a [P, 4] tensor of xyxy boxes", "[P, 4]: one xyxy box per location")
        if not isinstance(found, Difference):
            return found
        got, (p, _) = found
        x, y = points[p].tolist()
        message = (f"location ({x:g}, {y:g}) with (l, t, r, b) = {numbers(ltrb[p])} gives the box (x - l, y - t, x + r, "
                   f"y + b) = {numbers(expected[p])}; yours is {numbers(got[p])}.")
        x_, y_ = points[:, 0], points[:, 1]
        l_, t_, r_, b_ = ltrb.unbind(-1)
        message += diagnose(got, {
            "Your signs are flipped: the left side is at x - l (left of the location), the right side at x + r.":
                torch.stack([x_ + l_, y_ + t_, x_ - r_, y_ - b_], -1),
            "Your box is (x - l, x + r, y - t, y + b): xyxy is (x0, y0, x1, y1).": torch.stack([x_ - l_, x_ + r_, y_ - t_, y_ + b_], -1),
            "You subtracted r and b: they are distances to the right and bottom sides, so add them.":
                torch.stack([x_ - l_, y_ - t_, x_ - r_, y_ - b_], -1),
        })
        return Failure(message)

    return run_check("5.1", function, solutions.decode_boxes, cases, compare)


# ------------------------------------------------------------------------ 5.2 scores


def check_ranking_scores(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 5.2 against :func:`fcos_lab.postprocess.location_scores` (learned center-ness)."""
    generator = torch.Generator().manual_seed(4)
    cases = [
        # sigmoid(0) = 0.5 on both: 0.25; class 1: sigmoid(2) = 0.881, times 0.5 = 0.440.
        Case("hand-made", "one location, class logits (0, 2), center-ness logit 0",
             (torch.tensor([[0.0, 2.0]]), torch.tensor([0.0]))),
        # Center-ness logit -2: sigmoid = 0.119, so a location far from the center scores 0.881 x 0.119 = 0.105.
        Case("hand-made", "two locations, one near a box side (center-ness logit -2)",
             (torch.tensor([[2.0, -1.0], [2.0, -1.0]]), torch.tensor([3.0, -2.0]))),
    ]
    for _ in range(5):
        count, classes = int(torch.randint(1, 60, (1,), generator=generator)), int(torch.randint(1, 8, (1,), generator=generator))
        cases.append(Case("random", f"{count} locations, {classes} classes",
                          (torch.randn((count, classes), generator=generator) * 3, torch.randn(count, generator=generator) * 2)))
    for scene in real[:3]:
        count = len(scene.locations.points)
        cases.append(Case("real", f"{scene.name}: logits at its {count} locations",
                          (torch.randn((count, 5), generator=generator) * 2 - 4, torch.randn(count, generator=generator))))

    def compare(case: Case, expected: Tensor, got: object) -> Failure | None:
        cls_logits, ctr_logits = case.args
        found = first_difference(expected, got, "a [P, C] tensor of scores", "[P, C]: one score per location and class",
                                 atol=1e-5, rtol=1e-4)
        if not isinstance(found, Difference):
            return found
        got, (p, c) = found
        cls_p, ctr_p = float(cls_logits[p, c].sigmoid()), float(ctr_logits[p].sigmoid())
        message = (f"location {p}, class {c}: classification logit {number(cls_logits[p, c])} -> p = {number(cls_p)}, "
                   f"center-ness logit {number(ctr_logits[p])} -> {number(ctr_p)}; the score is {number(cls_p)} x "
                   f"{number(ctr_p)} = {number(expected[p, c])}; yours is {number(got[p, c])}.")
        message += diagnose(got, {
            "The center-ness is a logit too: apply the sigmoid before multiplying.": cls_logits.sigmoid() * ctr_logits[:, None],
            "You multiplied the logits: multiply the probabilities (sigmoids).": cls_logits * ctr_logits[:, None],
            "That is the square root of the product, what the official code reports; the paper ranks by the product.":
                expected.sqrt(),
            "You added the two probabilities; Section 3.3 multiplies them.": cls_logits.sigmoid() + ctr_logits.sigmoid()[:, None],
            "Your scores ignore the center-ness.": cls_logits.sigmoid(),
        }, atol=1e-5, rtol=1e-4)
        return Failure(message)

    return run_check("5.2", function, solutions.ranking_scores, cases, compare)


# ------------------------------------------------------------------------ 5.3 NMS


def _nms_cases(real: Sequence[Scene]) -> list[Case]:
    threshold = 0.6
    a, b = [0.0, 0, 10, 10], [1.0, 0, 11, 10]  # IoU = 9 x 10 / (200 - 90) = 0.818 > 0.6
    cases = [
        Case("hand-made", "two boxes of one class with IoU 0.82 > 0.6: the lower score goes",
             (torch.tensor([a, b]), torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), threshold)),
        Case("hand-made", "the same two boxes, of two classes: NMS keeps both",
             (torch.tensor([a, b]), torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), threshold)),
        # [0, 0, 10, 10] and [5, 0, 15, 10]: IoU = 50 / 150 = 0.33 < 0.6, both stay.
        Case("hand-made", "two boxes of one class with IoU 0.33 < 0.6: both stay",
             (torch.tensor([a, [5.0, 0, 15, 10]]), torch.tensor([0.8, 0.9]), torch.tensor([2, 2]), threshold)),
        # A (score 0.9) suppresses B [2, 0, 12, 10] (IoU 80 / 120 = 0.67); C [4, 0, 14, 10] overlaps B by 0.67 but A
        # by 60 / 140 = 0.43 only: a suppressed box suppresses nothing, so C stays. Given in score order C, A, B.
        Case("hand-made", "a chain: the box a suppressed box overlaps must stay",
             (torch.tensor([[4.0, 0, 14, 10], a, [2.0, 0, 12, 10]]), torch.tensor([0.7, 0.9, 0.8]),
              torch.tensor([0, 0, 0]), threshold)),
    ]
    generator = torch.Generator().manual_seed(5)
    for _ in range(6):
        count = int(torch.randint(2, 30, (1,), generator=generator))
        boxes = jittered_copies(generator, random_boxes(generator, -(-count // 3), 160, 160, 8), 3)[:count]
        cases.append(Case("random", f"{len(boxes)} overlapping random boxes of 3 classes",
                          (boxes, torch.rand(len(boxes), generator=generator), torch.randint(0, 3, (len(boxes),), generator=generator),
                           float(torch.rand(1, generator=generator)) * 0.6 + 0.2)))
    for scene in real[:4]:
        boxes = jittered_copies(generator, scene.boxes, 4)
        labels = scene.labels.repeat(4)
        labels = torch.where(torch.rand(len(labels), generator=generator) < 0.2, (labels + 1) % 5, labels)
        cases.append(Case("real", f"{scene.name}: 4 jittered copies of each box, some of another class",
                          (boxes, torch.rand(len(boxes), generator=generator), labels, threshold)))
    return cases


def _compare_nms(case: Case, expected: Tensor, got: object) -> Failure | None:
    boxes, scores, labels, threshold = case.args
    got = as_tensor(got, "a [N] int64 tensor of kept indices")
    if isinstance(got, Failure):
        return got
    got = got.flatten().long()
    if got.tolist() == expected.tolist():
        return None
    kept, kept_got = set(expected.tolist()), set(got.tolist())
    if kept == kept_got:
        return Failure(f"you kept the right boxes {sorted(kept)}, in another order: return them by decreasing score "
                       f"({expected.tolist()}).")
    iou = box_iou(boxes.double(), boxes.double())
    higher = scores[None, :] > scores[:, None]  # [k, j]: j scores higher than k
    for k in scores.argsort(descending=True, stable=True).tolist():
        if (k in kept) == (k in kept_got):
            continue
        describe = f"box {k} {box_text(boxes[k])} (score {number(scores[k])}, class {int(labels[k])})"
        same = (labels == labels[k]) & higher[k] & torch.tensor([j in kept for j in range(len(boxes))])
        overlaps = iou[k] * same
        j = int(overlaps.argmax())
        if k in kept:
            reason = (f"its largest IoU with a kept, higher-scored box of class {int(labels[k])} is {number(overlaps[j])}, "
                      f"not above {number(threshold)}") if same.any() else \
                f"no box of class {int(labels[k])} with a higher score is kept"
            message = f"{describe} should be kept: {reason}; your code dropped it."
        else:
            message = (f"{describe} should be suppressed: the kept box {j} {box_text(boxes[j])} of the same class has a "
                       f"higher score ({number(scores[j])}) and IoU {number(overlaps[j])} > {number(threshold)} with it; "
                       "your code kept it.")
        agnostic = nms(boxes.double(), scores.double(), threshold)
        message += diagnose(sorted(got.tolist()), {
            "You suppressed across classes: NMS compares only boxes of the same class.": sorted(agnostic.tolist())})
        texts = [f"{i}: {number(scores[i])} c{int(labels[i])}" for i in range(len(boxes))]
        colors = ["lime" if i in kept else "rgba(200,200,200,0.6)" for i in range(len(boxes))]
        colors[k] = "red"
        size = (int(boxes[:, 3].max()) + 10, int(boxes[:, 2].max()) + 10)
        figure = case_figure(size, boxes.numpy(), box_texts=texts, colors=colors,
                             title=f"box {k} (red); the boxes NMS keeps in green")
        return Failure(message, figure)
    return Failure(f"expected the kept indices {expected.tolist()}, got {got.tolist()}")


def check_class_aware_nms(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 5.3 against :func:`fcos_lab.postprocess.batched_nms_groups` (torchvision's batched NMS)."""
    return run_check("5.3", function, solutions.class_aware_nms, _nms_cases(real), _compare_nms)
