"""Checks of notebooks 03 and 04: the center-ness target (3.1), IoU and GIoU losses (3.2, 3.3), focal loss (4.1).

Hand-made values first (worked out in the comments), then random distances and logits, then the l*, t*,
r*, b* and class labels of real scenes' positive locations (the predictions there are the targets moved by a
random factor, as a half-trained network's would be).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fcos_lab.workshop import solutions
from fcos_lab.workshop.checking import (
    Case,
    CheckResult,
    Difference,
    Failure,
    as_tensor,
    diagnose,
    first_difference,
    mismatch,
    number,
    numbers,
    run_check,
)
from fcos_lab.workshop.checks_assignment import reference_masks
from fcos_lab.workshop.scenes import Scene


def positive_ltrb(scenes: Sequence[Scene]) -> list[tuple[str, Tensor]]:
    """``(name, [N, 4])`` l*, t*, r*, b* of the positive locations of each scene that has some."""
    out = []
    for scene in scenes:
        masks = reference_masks(scene)
        matched = masks["matched"]
        positive = matched >= 0
        if positive.any():
            rows = masks["ltrb"][positive.nonzero().flatten(), matched[positive]]
            out.append((f"{scene.name}: {int(positive.sum())} positive locations", rows))
    return out


def _elementwise_failure(case: Case, expected: Tensor, got: object, what: str, explain: Callable[[Tensor, tuple], str],
                         mistakes: Callable[[], dict[str, Tensor]]) -> Failure | None:
    found = first_difference(expected, got, what, f"{what}: the input's shape without its last axis", rtol=1e-3)
    if not isinstance(found, Difference):
        return found
    return Failure(explain(found.got, found.index) + diagnose(found.got, mistakes(), atol=1e-4, rtol=1e-3))


# ------------------------------------------------------------------------ 3.1 center-ness


def check_centerness_target(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 3.1 against Eq. (3) (:func:`fcos_lab.boxes.centerness_from_ltrb`)."""
    generator = torch.Generator().manual_seed(0)
    cases = [
        # sqrt(min(10, 30)/max(10, 30) * min(20, 20)/max(20, 20)) = sqrt(1/3 * 1) = 0.577 (not 1/3 = 0.333).
        Case("hand-made", "one location, l* = 10, t* = 20, r* = 30, b* = 20", (torch.tensor([10.0, 20, 30, 20]),)),
        # The center of a box: every ratio 1, center-ness 1. Near the left side: sqrt(1/99 * 1) = 0.1005.
        Case("hand-made", "the center of a box and a location near its left side",
             (torch.tensor([[5.0, 5, 5, 5], [1, 50, 99, 50]]),)),
        # Any leading shape: [2, 3, 4] in, [2, 3] out; l* > r* must give the same as l* < r* (min / max).
        Case("hand-made", "a [2, 3, 4] batch, with l* > r* in some rows",
             (torch.tensor([[[30.0, 20, 10, 20], [4, 8, 2, 16], [7, 7, 7, 7]], [[1, 1, 3, 9], [9, 3, 1, 1], [2, 5, 2, 5]]]),)),
    ]
    for index in range(6):
        shape = (int(torch.randint(1, 40, (1,), generator=generator)), 4)
        cases.append(Case("random", f"{shape[0]} random positive distances",
                          (torch.rand(shape, generator=generator) * 100 + 0.5,)))
    for name, rows in positive_ltrb(real):
        cases.append(Case("real", name, (rows,)))

    def compare(case: Case, expected: Tensor, got: object) -> Failure | None:
        (ltrb,) = case.args

        def explain(got: Tensor, index: tuple) -> str:
            l, t, r, b = ltrb[index].tolist()
            horizontal, vertical = min(l, r) / max(l, r), min(t, b) / max(t, b)
            value = got[index]
            return (f"for (l*, t*, r*, b*) = {numbers(ltrb[index])}: sqrt(min(l*, r*)/max(l*, r*) x min(t*, b*)/max(t*, b*))"
                    f" = sqrt({number(horizontal)} x {number(vertical)}) = {number(math.sqrt(horizontal * vertical))}; "
                    f"yours is {number(float(value))}.")

        def mistakes() -> dict[str, Tensor]:
            l, t, r, b = ltrb.unbind(-1)
            return {"Your value is the square of Eq. (3): take the square root.": expected**2,
                    "Your ratios are max/min: Eq. (3) divides the smaller distance by the larger (values <= 1).":
                        torch.sqrt(torch.maximum(l, r) / torch.minimum(l, r) * torch.maximum(t, b) / torch.minimum(t, b)),
                    "You divided l*/r* and t*/b* directly: use min/max so the order of the sides does not matter.":
                        torch.sqrt((l / r) * (t / b))}

        return _elementwise_failure(case, expected, got, "a tensor [...] of center-ness values", explain, mistakes)

    return run_check("3.1", function, solutions.centerness_target, cases, compare)


# ------------------------------------------------------------------------ 3.2 and 3.3 box losses


def _loss_cases(real: Sequence[Scene], hand: list[Case]) -> list[Case]:
    generator = torch.Generator().manual_seed(1)
    cases = list(hand)
    for _ in range(6):
        count = int(torch.randint(1, 30, (1,), generator=generator))
        target = torch.rand((count, 4), generator=generator) * 100 + 1
        pred = target * torch.exp(torch.randn((count, 4), generator=generator) * 0.5)
        cases.append(Case("random", f"{count} random pairs", (pred, target)))
    for name, rows in positive_ltrb(real):
        pred = rows * torch.exp(torch.randn(rows.shape, generator=generator) * 0.3)
        cases.append(Case("real", f"{name}; predictions = targets x a random factor", (pred, rows)))
    return cases


def _areas(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Areas, intersection, union and enclosing box of ltrb pairs from the same location (for messages)."""
    area_p = (pred[..., 0] + pred[..., 2]) * (pred[..., 1] + pred[..., 3])
    area_t = (target[..., 0] + target[..., 2]) * (target[..., 1] + target[..., 3])
    inter = (torch.minimum(pred[..., 0], target[..., 0]) + torch.minimum(pred[..., 2], target[..., 2])) * (
        torch.minimum(pred[..., 1], target[..., 1]) + torch.minimum(pred[..., 3], target[..., 3]))
    enclosing = (torch.maximum(pred[..., 0], target[..., 0]) + torch.maximum(pred[..., 2], target[..., 2])) * (
        torch.maximum(pred[..., 1], target[..., 1]) + torch.maximum(pred[..., 3], target[..., 3]))
    return {"pred": area_p, "target": area_t, "inter": inter, "union": area_p + area_t - inter, "enclosing": enclosing}


# pred (10, 10, 10, 10) is a 20 x 20 box, target (10, 10, 20, 20) a 30 x 30 box, both around the location:
# intersection (10 + 10) x (10 + 10) = 400, union 400 + 900 - 400 = 900, IoU 4/9, -ln IoU = 0.811.
_BOX_PAIR = (torch.tensor([[10.0, 10, 10, 10]]), torch.tensor([[10.0, 10, 20, 20]]))
# pred (10, 10, 10, 10) and target (5, 20, 15, 10): intersection (5 + 10) x (10 + 10) = 300, areas 400 and
# 20 x 30 = 600, union 700, IoU 3/7; enclosing (10 + 15) x (20 + 10) = 750, GIoU = 3/7 - 50/750 = 0.362.
_SHIFTED_PAIR = (torch.tensor([[10.0, 10, 10, 10]]), torch.tensor([[5.0, 20, 15, 10]]))


def _box_loss_compare(kind: str) -> Callable[[Case, Tensor, object], Failure | None]:
    def compare(case: Case, expected: Tensor, got: object) -> Failure | None:
        pred, target = case.args
        a = _areas(pred, target)
        iou = a["inter"] / a["union"]

        def explain(got: Tensor, index: tuple) -> str:
            value = float(got[index])
            text = (f"for pred (l, t, r, b) = {numbers(pred[index])} and target {numbers(target[index])}: areas "
                    f"{number(a['pred'][index])} and {number(a['target'][index])}, intersection {number(a['inter'][index])}, "
                    f"union {number(a['union'][index])}, IoU {number(iou[index])}")
            if kind == "iou":
                return text + f", so -ln(IoU) = {number(expected[index])}; yours is {number(value)}."
            return (text + f"; enclosing box {number(a['enclosing'][index])}, GIoU = IoU - (C - U)/C = "
                    f"{number(1 - expected[index])}, so 1 - GIoU = {number(expected[index])}; yours is {number(value)}.")

        def mistakes() -> dict[str, Tensor]:
            plain_union = a["pred"] + a["target"]
            found = {"Your union is the sum of the two areas: subtract the intersection, which it counts twice.":
                     -torch.log(a["inter"] / plain_union) if kind == "iou" else
                     1 - (a["inter"] / plain_union - (a["enclosing"] - plain_union) / a["enclosing"])}
            if kind == "iou":
                found["You returned 1 - IoU; UnitBox's IoU loss is -ln(IoU)."] = 1 - iou
                found["You returned ln(IoU), which is negative: the loss is -ln(IoU)."] = torch.log(iou)
            else:
                found["Your GIoU has no enclosing-box term: GIoU = IoU - (C - U) / C."] = 1 - iou
                found["You returned GIoU itself; the loss is 1 - GIoU."] = 1 - expected
            return found

        return _elementwise_failure(case, expected, got, "a tensor [...] of losses", explain, mistakes)

    return compare


def check_iou_loss(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 3.2 against :func:`fcos_lab.losses.box_loss_per_location` (``"iou"``)."""
    hand = [
        Case("hand-made", "a 20 x 20 prediction inside a 30 x 30 target, both around the location", _BOX_PAIR),
        # Identical boxes: IoU 1, loss 0.
        Case("hand-made", "a perfect prediction", (torch.tensor([[3.0, 4, 5, 6]]), torch.tensor([[3.0, 4, 5, 6]]))),
        Case("hand-made", "a target shifted against the prediction", _SHIFTED_PAIR),
    ]
    return run_check("3.2", function, solutions.iou_loss, _loss_cases(real, hand), _box_loss_compare("iou"))


def check_giou_loss(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 3.3 against :func:`fcos_lab.losses.box_loss_per_location` (``"giou"``)."""
    hand = [
        Case("hand-made", "a target shifted against the prediction", _SHIFTED_PAIR),
        Case("hand-made", "a perfect prediction", (torch.tensor([[3.0, 4, 5, 6]]), torch.tensor([[3.0, 4, 5, 6]]))),
        # Nested boxes: the enclosing box is the target itself, C = U, so GIoU = IoU = 4/9: loss 5/9.
        Case("hand-made", "a 20 x 20 prediction inside a 30 x 30 target", _BOX_PAIR),
    ]
    return run_check("3.3", function, solutions.giou_loss, _loss_cases(real, hand), _box_loss_compare("giou"))


# ------------------------------------------------------------------------ 4.1 focal loss


def check_focal_loss(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 4.1 against torchvision's ``sigmoid_focal_loss`` (sum)."""
    generator = torch.Generator().manual_seed(2)
    cases = [
        # Logit 0: p = 0.5. The positive costs 0.25 x 0.5^2 x ln 2 = 0.0433, each negative 0.75 x 0.5^2 x ln 2 = 0.1300:
        # 0.3033 in all (the mean would be 0.1011; alpha on the negatives too, 3 x 0.0433 = 0.1300).
        Case("hand-made", "one location, logits (0, 0, 0), class 0", (torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]]))),
        # Confident and right: p = sigmoid(3) = 0.953 on the positive, 0.047 on the negative: both nearly free
        # ((1 - 0.953)^2 = 0.0023 scales them down): 2.7e-5 + 8.2e-5.
        Case("hand-made", "a confident right answer, logits (3, -3), class 0",
             (torch.tensor([[3.0, -3.0]]), torch.tensor([[1.0, 0.0]]))),
        # Background: all targets 0; confident wrong (logit 3 on a negative) costs 0.75 x 0.953^2 x 3.05 = 2.08.
        Case("hand-made", "a background location scored 3 for class 1",
             (torch.tensor([[-2.0, 3.0]]), torch.tensor([[0.0, 0.0]]))),
    ]
    for _ in range(5):
        count, classes = int(torch.randint(1, 50, (1,), generator=generator)), int(torch.randint(1, 6, (1,), generator=generator))
        labels = torch.randint(-1, classes, (count,), generator=generator)
        cases.append(Case("random", f"{count} locations, {classes} classes",
                          (torch.randn((count, classes), generator=generator) * 3, _one_hot(labels, classes))))
    for scene in real[:4]:
        matched = reference_masks(scene)["matched"]
        labels = torch.where(matched >= 0, scene.labels[matched.clamp(min=0)], -1)
        classes = int(scene.labels.max()) + 1
        logits = torch.randn((len(labels), classes), generator=generator) * 2 - 3
        cases.append(Case("real", f"{scene.name}: {len(labels)} locations, {int((labels >= 0).sum())} positive",
                          (logits, _one_hot(labels, classes))))

    def compare(case: Case, expected: Tensor, got: object) -> Failure | None:
        logits, targets = case.args
        got = as_tensor(got, "a scalar tensor (the sum)")
        if isinstance(got, Failure):
            return got
        if got.numel() != 1:
            return Failure(f"expected a scalar (the sum over all {logits.numel()} entries), got shape {list(got.shape)}")
        if mismatch(expected.reshape(()), got.reshape(()).float(), atol=1e-5, rtol=1e-4) is None:
            return None
        p = logits.sigmoid()
        positives, negatives = targets > 0.5, targets < 0.5
        pos_cost = -(0.25 * (1 - p) ** 2 * torch.log(p))[positives].sum()
        neg_cost = -(0.75 * p**2 * torch.log(1 - p))[negatives].sum()
        message = (f"the focal loss sums to {number(expected)}: {number(pos_cost)} from the {int(positives.sum())} "
                   f"positive entries and {number(neg_cost)} from the {int(negatives.sum())} negative ones; yours is "
                   f"{number(float(got))}.")
        if case.kind == "hand-made":
            message += f"\n(logits {logits.tolist()}, targets {targets.tolist()})"
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        message += diagnose(got.reshape(()), {
            "You averaged; Eq. (2)'s sum is divided by N_pos later, so return the sum.": expected / targets.numel(),
            "Your negatives are weighted by alpha too: negatives get (1 - alpha) = 0.75.":
                pos_cost - (0.25 * p**2 * torch.log(1 - p))[negatives].sum(),
            "Your positives are weighted by (1 - alpha) and negatives by alpha: swap them.":
                -(0.75 * (1 - p) ** 2 * torch.log(p))[positives].sum() - (0.25 * p**2 * torch.log(1 - p))[negatives].sum(),
            "That is the plain cross-entropy: multiply by the modulating factor (1 - p_t)^gamma and by alpha_t.": bce.sum(),
        }, atol=1e-5, rtol=1e-4)
        return Failure(message)

    return run_check("4.1", function, solutions.focal_loss, cases, compare)


def _one_hot(labels: Tensor, classes: int) -> Tensor:
    """``[N, C]`` 0/1 float targets, all zeros where the label is -1 (background)."""
    return F.one_hot(labels.clamp(min=0), classes).float() * (labels >= 0)[:, None]

