"""Checks of notebook 02, assignment (Sections 3.1-3.2, Table 3): exercises 2.1-2.6.

Every case is a :class:`~fcos_lab.workshop.scenes.Scene` (locations, levels, ranges, radius, boxes), so a
failure is named as the assignment names things: "location (36, 20) on P3 is a candidate of boxes 0 and 2;
the smaller box (area 400) should win, your code chose box 2". The hand-made scenes (:data:`HAND_SCENES`)
each hold one trap: a location on a box side, a box whose farthest side decides its level, a distance on a
range boundary, the center region in strides, two nested boxes, equal areas. Then random and real scenes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from fcos_lab.viz.exercise_cases import Mark, case_figure
from fcos_lab.workshop import solutions
from fcos_lab.workshop.checking import (
    Case,
    CheckResult,
    Difference,
    Failure,
    diagnose,
    first_difference,
    mismatch,
    numbers,
    run_check,
)
from fcos_lab.workshop.scenes import Scene, make_scene, random_scenes

# Two levels on a 64 x 64 image: P3 (stride 8) locations at x, y in {4, 12, ..., 60}, P4 (stride 16) at
# {8, 24, 40, 56}; P3 takes max(l*, t*, r*, b*) in [0, 32], P4 in [32, inf].
_LEVELS = {"image_size": (64, 64), "strides": (8, 16), "size_ranges": ((0, 32), (32, float("inf")))}
HAND_SCENES = (
    # Box 0's left side x0 = 20 passes through the P3 locations of column x = 20: l* = 0 there, which is on
    # the side, not inside. Box 1 [4, 4, 28, 28] has P3 locations at x = 12, 20 inside, 4 and 28 on its sides.
    make_scene("a box whose left side passes through a column of locations", boxes=[[20, 10, 60, 40], [4, 4, 28, 28]],
               **_LEVELS),
    # A wide, flat box [2, 26, 62, 38]: from (36, 28), l* = 34, t* = 2, r* = 26, b* = 10, so max = 34 > 32 puts it
    # out of P3's range although min = 2 is tiny. No P4 location (y in {8, 24, 40, 56}) falls inside it, and every
    # P3 location inside has max(l*, r*) >= 34 (x = 28 or 36): the box is unreachable (a best-possible-recall miss).
    make_scene("a wide flat box: its farthest side decides the level", boxes=[[2, 26, 62, 38]], **_LEVELS),
    # Box [4, 4, 36, 60]: from the P3 location (12, 28), l* = 8, t* = 24, r* = 24, b* = 32, so max = 32, exactly m_i
    # of P3: the inclusive ranges keep it on P3 (a strict < would drop it).
    make_scene("a box at exactly 32 px from a location: on the boundary of the ranges", boxes=[[4, 4, 36, 60]],
               **_LEVELS),
    # Center sampling, radius 1.5: on P3 the region is 1.5 x 8 = 12 px around the center (32, 32) of
    # [0, 0, 64, 64]: (36, 36), (28, 28) and (40, 40) are in; (44, 28) has |x - cx| = 12, not < 12, so out.
    # On P4 it is 24 px: (24, 24), (40, 40), (24, 40), (40, 24) are in, (8, 8) is out (|x - cx| = 24).
    make_scene("center sampling with radius 1.5 strides", boxes=[[0, 0, 64, 64]], radius=1.5, **_LEVELS),
    # A 12 x 12 box [42, 42, 54, 54] centered at (48, 48): on P3 (12 px) its region holds (44, 44), (44, 52), ...
    # (4 px from the center, inside the box); on P4 (24 px) also (40, 40), (40, 56), (56, 40), (56, 56), 8 px from
    # the center but outside the box: the region is no inside test (exercise 2.2 is). A radius of 1.5 *pixels*
    # would hold no location at all.
    make_scene("center sampling around a small box: on P4 the region is wider than the box", boxes=[[42, 42, 54, 54]],
               radius=1.5, **_LEVELS),
    # Nested boxes 0 [26, 10, 46, 30] (area 400) and 2 [0, 0, 40, 40] (area 1600); box 1 lies elsewhere. From the P3
    # location (28, 12): box 0 gives (2, 2, 18, 18), max 18; box 2 gives (28, 12, 12, 28), max 28; both <= 32, so
    # both are candidates and box 0, the smaller, wins. From (36, 20) box 2's max is 36 > 32: box 0 alone.
    make_scene("nested boxes: the smaller one wins", boxes=[[26, 10, 46, 30], [48, 48, 60, 62], [0, 0, 40, 40]],
               **_LEVELS),
    # Equal areas: boxes 0 [8, 8, 28, 28] and 1 [10, 10, 30, 30] are both 20 x 20; the locations inside both
    # take box 0, the first of equal areas.
    make_scene("two boxes of equal area: the first wins", boxes=[[8, 8, 28, 28], [10, 10, 30, 30]], **_LEVELS),
)
RANDOM_SCENE_COUNT = 16


def reference_masks(scene: Scene) -> dict[str, Tensor]:
    """The reference's intermediate results on a scene: ltrb, inside, in_range, in_center, candidates, matched."""
    points, boxes = scene.locations.points, scene.boxes
    ltrb = solutions.ltrb_targets(points, boxes)
    inside = solutions.inside_boxes(ltrb)
    in_range = solutions.in_size_range(ltrb, scene.ranges_per_location)
    if scene.radius > 0:
        in_center = solutions.in_center_region(points, boxes, scene.locations.strides, scene.radius)
    else:
        in_center = torch.ones_like(inside)
    candidates = inside & in_range & in_center
    return {"ltrb": ltrb, "inside": inside, "in_range": in_range, "in_center": in_center, "candidates": candidates,
            "matched": solutions.minimal_area_box(candidates, boxes)}


def _scenes(real: Sequence[Scene], *, radius_only: bool = False) -> list[tuple[str, Scene]]:
    hand = [s for s in HAND_SCENES if s.radius > 0 or not radius_only]
    randoms = random_scenes(RANDOM_SCENE_COUNT)
    if radius_only:  # center sampling needs a radius: the random scenes without one get 1.5
        randoms = [s if s.radius > 0 else Scene(s.name, s.image_size, s.locations, s.level_names, s.size_ranges, 1.5,
                                                s.boxes, s.labels) for s in randoms]
    reals = [s if s.radius > 0 or not radius_only else Scene(s.name, s.image_size, s.locations, s.level_names,
                                                             s.size_ranges, 1.5, s.boxes, s.labels) for s in real]
    return [("hand-made", s) for s in hand] + [("random", s) for s in randoms] + [("real", s) for s in reals]


def _figure(scene: Scene, p: int, highlight: dict[int, str], title: str):
    """The scene's boxes (those in ``highlight`` coloured and named) and location ``p`` marked."""
    colors = [highlight.get(m, "rgba(200,200,200,0.5)") for m in range(len(scene.boxes))]
    texts = [f"{m}" for m in range(len(scene.boxes))]
    point = scene.locations.points[p].numpy()[None]
    return case_figure(scene.image_size, scene.boxes.numpy(), box_texts=texts, colors=colors,
                       marks=[Mark(scene.where(p), point, "yellow", "star", 16)], title=title)


def _pair_failure(scene: Scene, expected: Tensor, got: object, what: str, explain: Callable[[int, int, bool], str],
                  mistakes: Callable[[], dict[str, Tensor]], first_look: Tensor | None = None) -> Failure | None:
    """Compare ``[P, M]`` masks; name the first (location, box) pair that differs with ``explain(p, m, expected)``.

    ``first_look`` ``[P, M]``: pairs to name first when they differ (a location inside the box says more than
    one outside it).
    """
    found = first_difference(expected, got, f"a [P, M] bool tensor ({what})",
                             "[P, M]: one row per location, one column per box")
    if not isinstance(found, Difference):
        return found
    got, first = found
    if first_look is not None:
        first = mismatch(expected & first_look, got & first_look) or first
    p, m = first
    message = explain(p, m, bool(expected[p, m])) + diagnose(got, mistakes())
    figure = _figure(scene, p, {m: "orange"}, f"{scene.where(p)} and box {m}")
    return Failure(message, figure)


def _said(value: bool) -> str:
    return "yes" if value else "no"


# ------------------------------------------------------------------------ 2.1 Eq. (1)


def _ltrb_cases(real: Sequence[Scene]) -> list[Case]:
    return [Case(kind, scene.name, (scene.locations.points, scene.boxes), {"scene": scene})
            for kind, scene in _scenes(real)]


def _compare_ltrb(case: Case, expected: Tensor, got: object) -> Failure | None:
    scene: Scene = case.context["scene"]
    found = first_difference(expected, got, "a [P, M, 4] tensor of (l*, t*, r*, b*)",
                             "[P, M, 4]: location, box, (l*, t*, r*, b*)")
    if not isinstance(found, Difference):
        return found
    got, (p, m, _) = found
    message = (f"for {scene.where(p)} and {scene.box(m)}, (l*, t*, r*, b*) = (x - x0, y - y0, x1 - x, y1 - y) = "
               f"{numbers(expected[p, m])}; yours is {numbers(got[p, m])}.")
    message += diagnose(got, {
        "Your four values are in the order (l*, r*, t*, b*); return (l*, t*, r*, b*).": expected[..., [0, 2, 1, 3]],
        "Your distances have the wrong sign: l* = x - x0 is positive when the location is right of the left side.":
            -expected,
    })
    return Failure(message, _figure(scene, p, {m: "orange"}, f"{scene.where(p)} and box {m}"))


def check_ltrb_targets(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 2.1 against Eq. (1) (:func:`fcos_lab.boxes.encode_ltrb`)."""
    return run_check("2.1", function, solutions.ltrb_targets, _ltrb_cases(real), _compare_ltrb)


# ------------------------------------------------------------------------ 2.2 inside


def _mask_cases(real: Sequence[Scene], radius_only: bool = False) -> list[tuple[str, Scene, dict[str, Tensor]]]:
    return [(kind, scene, reference_masks(scene)) for kind, scene in _scenes(real, radius_only=radius_only)]


def check_inside_boxes(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 2.2 against ``assign_dense``'s inside-box test."""
    cases = [Case(kind, scene.name, (masks["ltrb"],), {"scene": scene, "masks": masks})
             for kind, scene, masks in _mask_cases(real)]

    def compare(case: Case, expected: Tensor, got: object) -> Failure | None:
        scene, ltrb = case.context["scene"], case.context["masks"]["ltrb"]

        def explain(p: int, m: int, inside: bool) -> str:
            distances = ltrb[p, m]
            text = (f"{scene.where(p)} and {scene.box(m)}: (l*, t*, r*, b*) = {numbers(distances)}, so the location is "
                    f"{'inside' if inside else 'not inside'} (all four must be > 0); your code said {_said(not inside)}.")
            if (distances == 0).any():
                side = ["left", "top", "right", "bottom"][int((distances == 0).nonzero()[0])]
                text += f"\nA distance of 0 puts the location on the box's {side} side, which is not inside: use > 0."
            return text

        return _pair_failure(scene, expected, got, "inside", explain, dict)

    return run_check("2.2", function, solutions.inside_boxes, cases, compare)


# ------------------------------------------------------------------------ 2.3 size ranges


def check_in_size_range(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 2.3 against ``assign_dense``'s inclusive size-range test."""
    cases = [Case(kind, scene.name, (masks["ltrb"], scene.ranges_per_location), {"scene": scene, "masks": masks})
             for kind, scene, masks in _mask_cases(real)]

    def compare(case: Case, expected: Tensor, got: object) -> Failure | None:
        scene, ltrb = case.context["scene"], case.context["masks"]["ltrb"]
        ranges = scene.ranges_per_location

        def explain(p: int, m: int, in_range: bool) -> str:
            reach, low, high = float(ltrb[p, m].max()), float(ranges[p, 0]), float(ranges[p, 1])
            verdict = "in the range" if in_range else ("above the range" if reach > high else "below the range")
            text = (f"{scene.where(p)}, {scene.level_of(p)}, and {scene.box(m)}: (l*, t*, r*, b*) = {numbers(ltrb[p, m])}, "
                    f"max = {reach:g}, which is {verdict} [{low:g}, {high:g}]; your code said {_said(not in_range)}.")
            if reach in (low, high):
                text += "\nThe bounds belong to the range: m_{i-1} <= max <= m_i (use >= and <=)."
            return text

        def mistakes() -> dict[str, Tensor]:
            low, high = ranges[:, None, 0], ranges[:, None, 1]
            smallest = ltrb.min(dim=-1).values
            return {"You tested min(l*, t*, r*, b*); Section 3.2 tests the largest distance, max(l*, t*, r*, b*).":
                    (smallest >= low) & (smallest <= high)}

        return _pair_failure(scene, expected, got, "in the size range", explain, mistakes,
                             first_look=case.context["masks"]["inside"])

    return run_check("2.3", function, solutions.in_size_range, cases, compare)


# ------------------------------------------------------------------------ 2.4 center sampling


def check_in_center_region(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 2.4 against ``assign_dense``'s center region (scenes without a radius get 1.5)."""
    cases = [Case(kind, f"{scene.name}, radius {scene.radius:g}",
                  (scene.locations.points, scene.boxes, scene.locations.strides, scene.radius), {"scene": scene})
             for kind, scene in _scenes(real, radius_only=True)]

    def compare(case: Case, expected: Tensor, got: object) -> Failure | None:
        scene: Scene = case.context["scene"]
        points, boxes, strides = scene.locations.points, scene.boxes, scene.locations.strides

        def explain(p: int, m: int, near: bool) -> str:
            x, y = points[p].tolist()
            cx, cy = float(boxes[m, 0] + boxes[m, 2]) / 2, float(boxes[m, 1] + boxes[m, 3]) / 2
            reach = scene.radius * float(strides[p])
            return (f"{scene.where(p)} (stride {int(strides[p])}) and {scene.box(m)}, centered at ({cx:g}, {cy:g}): "
                    f"|x - cx| = {abs(x - cx):g} and |y - cy| = {abs(y - cy):g}, against radius x stride = "
                    f"{scene.radius:g} x {int(strides[p])} = {reach:g}: the location is "
                    f"{'in' if near else 'not in'} the center region (both must be < {reach:g}); your code said "
                    f"{_said(not near)}.")

        def mistakes() -> dict[str, Tensor]:
            pixels = solutions.in_center_region(points, boxes, torch.ones_like(strides), scene.radius)
            masks = reference_masks(scene)
            return {
                "Your radius is in pixels: it is in strides, so multiply it by each location's stride.": pixels,
                "Your region also requires the location to be inside the box: that is exercise 2.2's test, "
                "keep the two apart (2.6 combines them).": expected & masks["inside"],
            }

        return _pair_failure(scene, expected, got, "in the center region", explain, mistakes,
                             first_look=reference_masks(scene)["inside"])

    return run_check("2.4", function, solutions.in_center_region, cases, compare)


# ------------------------------------------------------------------------ 2.5 minimal area and 2.6 the assignment


def _choice_failure(scene: Scene, masks: dict[str, Tensor], expected: Tensor, got: object,
                    mistakes: Callable[[], dict[str, Tensor]], explain_why: bool) -> Failure | None:
    found = first_difference(expected, got, "a [P] int64 tensor of box indices (-1: background)",
                             "[P]: one box index per location")
    if not isinstance(found, Difference):
        return found
    got, (p,) = found
    want, chose = int(expected[p]), int(got[p])
    candidates = masks["candidates"][p].nonzero().flatten().tolist()
    areas = (scene.boxes[:, 2] - scene.boxes[:, 0]) * (scene.boxes[:, 3] - scene.boxes[:, 1])
    named = " and ".join(f"{m}" for m in candidates)
    if not candidates:
        message = f"{scene.where(p)} is a candidate of no box, so it is background (-1)"
    elif len(candidates) == 1:
        message = f"{scene.where(p)} is a candidate of box {candidates[0]} only, so it regresses box {want}"
    else:
        message = (f"{scene.where(p)} is a candidate of boxes {named}; the smaller box (box {want}, area "
                   f"{float(areas[want]):g}) should win")
        if len({float(areas[m]) for m in candidates}) < len(candidates):
            message += " (of equal areas, the first box)"
    chosen = "background (-1)" if chose < 0 else f"box {chose}" + (
        f" (area {float(areas[chose]):g})" if 0 <= chose < len(areas) else " (no such box)")
    message += f"; your code chose {chosen}."
    if explain_why:
        message += "\n" + _why(scene, masks, p)
    message += diagnose(got, mistakes())
    highlight = {m: "orange" for m in candidates}
    if want >= 0:
        highlight[want] = "lime"
    if 0 <= chose < len(scene.boxes):
        highlight[chose] = "red"
    figure = _figure(scene, p, highlight, f"{scene.where(p)}: expected box in green, yours in red, other candidates orange")
    return Failure(message, figure)


def _why(scene: Scene, masks: dict[str, Tensor], p: int) -> str:
    """Each box's tests at location ``p``, in words."""
    lines = [f"At {scene.where(p)}, {scene.level_of(p)}:"]
    for m in range(len(scene.boxes)):
        tests = [f"inside {_said(bool(masks['inside'][p, m]))}",
                 f"max(l*, t*, r*, b*) = {float(masks['ltrb'][p, m].max()):g}, in range {_said(bool(masks['in_range'][p, m]))}"]
        if scene.radius > 0:
            tests.append(f"in the center region {_said(bool(masks['in_center'][p, m]))}")
        lines.append(f"  {scene.box(m)}: " + "; ".join(tests))
    return "\n".join(lines)


def check_minimal_area_box(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 2.5 against ``assign_dense``'s minimal-area rule, plus a location without candidates."""
    cases = [Case(kind, scene.name, (masks["candidates"], scene.boxes), {"scene": scene, "masks": masks})
             for kind, scene, masks in _mask_cases(real)]

    def compare(case: Case, expected: Tensor, got: object) -> Failure | None:
        scene, masks = case.context["scene"], case.context["masks"]
        candidates, boxes = masks["candidates"], scene.boxes

        def mistakes() -> dict[str, Tensor]:
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            largest = torch.where(candidates, area[None], -1.0).argmax(dim=1)
            first = candidates.float().argmax(dim=1)
            found = candidates.any(dim=1)
            return {
                "You chose the largest candidate; Section 3.1 takes the box of minimal area.":
                    torch.where(found, largest, -1),
                "You took the first candidate; take the one of smallest area.": torch.where(found, first, -1),
                "Locations without any candidate must get -1 (background), not box 0.": torch.where(found, expected, 0),
            }

        return _choice_failure(scene, masks, expected, got, mistakes, explain_why=False)

    return run_check("2.5", function, solutions.minimal_area_box, cases, compare)


def check_assign_locations(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 2.6 against :func:`fcos_lab.targets.assign_dense` (the training assignment on real scenes)."""
    cases = [Case(kind, f"{scene.name}, radius {scene.radius:g}",
                  (scene.locations, scene.boxes, list(scene.size_ranges), scene.radius), {"scene": scene, "masks": masks})
             for kind, scene, masks in _mask_cases(real)]

    def compare(case: Case, expected: Tensor, got: object) -> Failure | None:
        scene, masks = case.context["scene"], case.context["masks"]

        def mistakes() -> dict[str, Tensor]:
            no_center = solutions.minimal_area_box(masks["inside"] & masks["in_range"], scene.boxes)
            no_range = solutions.minimal_area_box(masks["inside"] & masks["in_center"], scene.boxes)
            return {"You left out center sampling (radius > 0 here).": no_center,
                    "You left out the size ranges.": no_range}

        return _choice_failure(scene, masks, expected, got, mistakes, explain_why=True)

    return run_check("2.6", function, solutions.assign_locations, cases, compare)
