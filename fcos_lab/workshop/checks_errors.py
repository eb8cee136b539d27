"""Checks of notebook 06, error analysis (TIDE, Bolya et al. 2020): exercises 6.1 (matching) and 6.2 (error types).

6.1 is COCO's greedy matching of one image and one class, checked on hand-made traps (a box already taken,
a better fit that comes later, an IoU of exactly 0.5, an image without boxes), random and real boxes with
jittered detections. 6.2 is TIDE's rules for false positives, checked on one hand-made row per rule and per
rule order, then on the IoUs of jittered detections of real scenes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

from fcos_lab.viz.exercise_cases import case_figure
from fcos_lab.workshop import solutions
from fcos_lab.workshop.checking import Case, CheckResult, Failure, as_tensor, box_text, diagnose, number, run_check
from fcos_lab.workshop.scenes import Scene, jittered_copies, random_boxes

# ------------------------------------------------------------------------ 6.1 matching


def _match_cases(real: Sequence[Scene]) -> list[Case]:
    gt = torch.tensor([[0.0, 0, 10, 10], [4, 0, 14, 10]])
    cases = [
        # Detection 0 = box 0 (IoU 1). Detection 1 [1, 0, 11, 10] fits box 0 best (9/11 = 0.82) but box 0 is taken,
        # so it takes box 1 (IoU 7/13 = 0.54 >= 0.5).
        Case("hand-made", "the second detection finds its best box taken and takes the next one",
             (torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10]]), gt, 0.5)),
        # Detection 0 [0, 0, 10, 16] (IoU 100/160 = 0.625) comes first and takes box 0; detection 1, a perfect fit
        # with a lower score, finds it taken: a false positive (greedy by score, not best pairs).
        Case("hand-made", "a better fit with a lower score comes too late",
             (torch.tensor([[0.0, 0, 10, 16], [0, 0, 10, 10]]), gt[:1], 0.5)),
        # [0, 0, 10, 10] against [0, 0, 10, 20]: IoU 100/200 = 0.5 exactly, which matches (>= 0.5).
        Case("hand-made", "an IoU of exactly 0.5", (torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[0.0, 0, 10, 20]]), 0.5)),
        Case("hand-made", "an image without boxes: every detection is a false positive",
             (torch.tensor([[0.0, 0, 10, 10], [5, 5, 9, 9]]), torch.zeros((0, 4)), 0.5)),
    ]
    generator = torch.Generator().manual_seed(6)
    for _ in range(6):
        gt_boxes = random_boxes(generator, int(torch.randint(1, 6, (1,), generator=generator)), 128, 128, 8)
        dets = jittered_copies(generator, gt_boxes, 3, spread=0.3)
        dets = dets[torch.randperm(len(dets), generator=generator)]
        cases.append(Case("random", f"{len(dets)} detections of {len(gt_boxes)} random boxes", (dets, gt_boxes, 0.5)))
    for scene in real[:4]:
        dets = jittered_copies(generator, scene.boxes, 2, spread=0.3)
        dets = dets[torch.randperm(len(dets), generator=generator)]
        cases.append(Case("real", f"{scene.name}: 2 jittered detections per box", (dets, scene.boxes, 0.5)))
    return cases


def _compare_match(case: Case, expected: Tensor, got: object) -> Failure | None:
    det_boxes, gt_boxes, threshold = case.args
    got = as_tensor(got, "a [K] int64 tensor (box index or -1)")
    if isinstance(got, Failure):
        return got
    got = got.flatten().long()
    if got.shape != expected.shape:
        return Failure(f"expected one entry per detection ({len(expected)}), got shape {list(got.shape)}")
    wrong = (got != expected).nonzero().flatten()
    if not len(wrong):
        return None
    k = int(wrong[0])
    iou = box_iou(det_boxes.double(), gt_boxes.double()) if len(gt_boxes) else torch.zeros((len(det_boxes), 0))
    taken = sorted({int(m) for m in expected[:k].tolist() if m >= 0})
    ious = ", ".join(f"box {m}: {number(iou[k, m])}" for m in range(len(gt_boxes))) or "no boxes"
    want, chose = int(expected[k]), int(got[k])
    verdict = f"matches box {want}" if want >= 0 else "matches nothing (a false positive)"
    message = (f"detection {k} {box_text(det_boxes[k])} (rank {k + 1} by score) {verdict}: its IoUs are {ious}; "
               f"boxes taken by earlier detections: {taken or 'none'}; it takes the best box still free if its IoU is "
               f">= {number(threshold)}. Your code gave {'nothing (-1)' if chose < 0 else f'box {chose}'}.")
    best_any = torch.where(iou.max(dim=1).values >= threshold, iou.argmax(dim=1), -1) if len(gt_boxes) else expected
    message += diagnose(got, {"Each detection must take a box no earlier detection took: a box matches once.": best_any})
    if 0 <= chose < len(gt_boxes) and chose in taken:
        message += f"\nBox {chose} was already taken by a detection with a higher score."
    if want >= 0 and chose < 0 and float(iou[k, want]) == threshold:
        message += f"\nAn IoU equal to {number(threshold)} matches (>=)."
    texts = [f"gt {m}" for m in range(len(gt_boxes))] + [f"det {k}"]
    colors = ["lime"] * len(gt_boxes) + ["red"]
    boxes = torch.cat([gt_boxes, det_boxes[k : k + 1]])
    size = (int(boxes[:, 3].max()) + 10, int(boxes[:, 2].max()) + 10)
    figure = case_figure(size, boxes.numpy(), box_texts=texts, colors=colors, title=f"detection {k} (red) and the boxes")
    return Failure(message, figure)


def check_match_detections(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 6.1 against the greedy matching of :mod:`fcos_lab.analysis.tide_matching`."""
    return run_check("6.1", function, solutions.match_detections, _match_cases(real), _compare_match)


# ------------------------------------------------------------------------ 6.2 error types


def false_positive_ious(det_boxes: Tensor, det_labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> tuple[Tensor, ...]:
    """``(own, other, taken_own)`` ``[K']`` IoUs of the detections the greedy matching leaves unmatched.

    Detections are in decreasing score order; each class is matched on its own (6.1's reference).
    """
    # A zero column stands for "no box": every maximum below is then defined, also in an image without boxes.
    iou = torch.cat([box_iou(det_boxes.double(), gt_boxes.double()).float(), torch.zeros(len(det_boxes), 1)], dim=1)
    same = torch.cat([det_labels[:, None] == gt_labels[None, :], torch.zeros(len(det_boxes), 1, dtype=torch.bool)], 1)
    matched = torch.full((len(det_boxes),), -1, dtype=torch.int64)
    for label in det_labels.unique().tolist():
        dets, gts = (det_labels == label).nonzero().flatten(), (gt_labels == label).nonzero().flatten()
        found = solutions.match_detections(det_boxes[dets], gt_boxes[gts])
        matched[dets] = torch.where(found >= 0, gts[found.clamp(min=0)] if len(gts) else found, -1)
    taken = torch.zeros(len(gt_boxes) + 1, dtype=torch.bool)
    taken[matched[matched >= 0]] = True
    unmatched = matched < 0
    own = (iou * same).amax(dim=1)
    other = (iou * ~same).amax(dim=1)
    taken_own = (iou * (same & taken[None, :])).amax(dim=1)
    return own[unmatched], other[unmatched], taken_own[unmatched]


def _type_cases(real: Sequence[Scene]) -> list[Case]:
    # One row per rule, in order: (own, other, taken own)
    #   loc: 0.1 <= 0.3 <= 0.5; cls: 0.7 >= 0.5 with another class; dupe: 0.7 with a box already taken;
    #   bkg: 0.05 and 0.08 both <= 0.1; both: another class at 0.3, not cls, not bkg.
    rows = torch.tensor([[0.3, 0.0, 0.0], [0.05, 0.7, 0.0], [0.7, 0.0, 0.7], [0.05, 0.08, 0.0], [0.05, 0.3, 0.0]])
    # Rule order: own 0.3 is loc although other 0.7 would make it cls; the bounds: own exactly 0.1 is loc
    # ([t_b, t_f] includes t_b), and exactly 0.1 everywhere else is bkg (<= t_b).
    order = torch.tensor([[0.3, 0.7, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.5, 0.0]])
    cases = [Case("hand-made", "one detection per type: loc, cls, dupe, bkg, both", tuple(rows.T.clone())),
             Case("hand-made", "rule order (loc before cls) and the bounds 0.1 and 0.5", tuple(order.T.clone()))]
    generator = torch.Generator().manual_seed(8)
    for _ in range(5):
        count = int(torch.randint(1, 40, (1,), generator=generator))
        values = torch.rand((3, count), generator=generator) ** 2  # many small IoUs, some large
        values[2] = torch.where(torch.rand(count, generator=generator) < 0.5, values[0], 0.0)
        cases.append(Case("random", f"{count} random false positives", tuple(values)))
    for scene in real[:4]:
        det_boxes = jittered_copies(generator, scene.boxes, 3, spread=0.6)
        det_labels = torch.randint(0, int(scene.labels.max()) + 2, (len(det_boxes),), generator=generator)
        order_by_score = torch.randperm(len(det_boxes), generator=generator)
        own, other, taken = false_positive_ious(det_boxes[order_by_score], det_labels[order_by_score], scene.boxes, scene.labels)
        if len(own):
            cases.append(Case("real", f"{scene.name}: the {len(own)} false positives of jittered detections",
                              (own, other, taken)))
    return cases


def _compare_types(case: Case, expected: list[str], got: object) -> Failure | None:
    own, other, taken = case.args
    if isinstance(got, Tensor) or not isinstance(got, (list, tuple)):
        return Failure(f"expected a list of {len(expected)} strings (loc, cls, dupe, bkg, both); got {type(got).__name__}")
    got = [str(g) for g in got]
    if len(got) != len(expected):
        return Failure(f"expected {len(expected)} types, one per detection; got {len(got)}")
    for k, (want, said) in enumerate(zip(expected, got)):
        if want != said:
            reasons = {"loc": "rule 1: 0.1 <= own <= 0.5", "cls": "rule 2: other >= 0.5 (and rule 1 does not apply)",
                       "dupe": "rule 3: taken own >= 0.5 (rules 1-2 do not apply)",
                       "bkg": "rule 4: own and other <= 0.1", "both": "rule 5: none of rules 1-4 applies"}
            message = (f"detection {k} with IoUs own {number(own[k])}, other {number(other[k])}, taken own "
                       f"{number(taken[k])} is {want!r} ({reasons[want]}); your code said {said!r}.")
            if any(abs(float(v) - bound) < 1e-6 for v in (own[k], other[k], taken[k]) for bound in (0.1, 0.5)):
                message += "\nMind the bounds: loc is 0.1 <= own <= 0.5 (both ends in), cls is >= 0.5, bkg is <= 0.1."
            elif said in reasons and said != "both" and want != "both":
                message += "\nThe rules apply in their order: the first that holds decides."
            return Failure(message)
    return None


def check_error_types(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 6.2 against TIDE's rules as :mod:`fcos_lab.analysis.tide_matching` applies them."""
    return run_check("6.2", function, solutions.error_types, _type_cases(real), _compare_types)
