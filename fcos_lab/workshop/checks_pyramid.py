"""Checks of notebook 01, the feature pyramid: exercise 1.1 (locations of a level) and 1.2 (level sizes).

Hand-made cases first (derivations in the comments), then random feature maps, then the levels of real
input images. Each ``check_*`` takes the participant's function and the real scenes, and returns a
:class:`~fcos_lab.workshop.checking.CheckResult` or raises an
:class:`~fcos_lab.workshop.checking.ExerciseError` naming the first failing case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from fcos_lab.viz.exercise_cases import Mark, case_figure
from fcos_lab.workshop import solutions
from fcos_lab.workshop.checking import Case, CheckResult, Failure, as_tensor, diagnose, run_check, shape_failure
from fcos_lab.workshop.scenes import Scene, level_name

PAPER_STRIDES = [8, 16, 32, 64, 128]


def _map_cases(real: Sequence[Scene], seed: int = 0) -> list[Case]:
    cases = [
        # Stride 8: floor(8/2) = 4, so x = 4, 12, 20 (columns 0-2) and y = 4, 12 (rows 0-1).
        Case("hand-made", "a 2 x 3 map of stride 8 (P3)", (2, 3, 8)),
        # One location on P7: floor(128/2) = 64, the center of a 128 x 128 input.
        Case("hand-made", "a 1 x 1 map of stride 128 (P7)", (1, 1, 128)),
        # Three rows, one column: y = 8, 24, 40 and x = 8 always (rows give y).
        Case("hand-made", "a 3 x 1 map of stride 16 (P4)", (3, 1, 16)),
        # An odd stride shows floor: floor(5/2) = 2, so x, y in {2, 7}; s/2 = 2.5 would be wrong.
        Case("hand-made", "a 2 x 2 map of stride 5 (odd, so floor(5/2) = 2 matters)", (2, 2, 5)),
    ]
    generator = torch.Generator().manual_seed(seed)
    for _ in range(12):
        height, width = (int(v) for v in torch.randint(1, 13, (2,), generator=generator))
        stride = PAPER_STRIDES[int(torch.randint(0, 5, (1,), generator=generator))]
        cases.append(Case("random", f"a {height} x {width} map of stride {stride}", (height, width, stride)))
    seen = set()
    for scene in real:
        for (height, width), stride in zip(scene.locations.shapes, sorted(set(scene.locations.strides.int().tolist()))):
            if (height, width, stride) not in seen:
                seen.add((height, width, stride))
                cases.append(Case("real", f"{level_name(stride)} of a {scene.image_size[0]} x {scene.image_size[1]} "
                                          f"input: a {height} x {width} map of stride {stride}", (height, width, stride)))
    return cases


def _compare_locations(case: Case, expected: Tensor, got: object) -> Failure | None:
    height, width, stride = case.args
    got = as_tensor(got, "a tensor [H*W, 2] of (x, y)")
    if isinstance(got, Failure):
        return got
    failure = shape_failure(expected, got, f"[H*W, 2] = [{height * width}, 2]: one (x, y) row per location")
    if failure:
        return failure
    got = got.float()
    wrong = (got - expected).abs().amax(dim=1) > 1e-4
    if not wrong.any():
        return None
    p = int(wrong.nonzero()[0])
    row, column = divmod(p, width)
    ex, ey = expected[p].tolist()
    gx, gy = got[p].tolist()
    message = (f"the location in row {row}, column {column} of a {height} x {width} map of stride {stride} should be at "
               f"(x, y) = ({ex:g}, {ey:g}): x = floor({stride}/2) + {column} x {stride}, y = floor({stride}/2) + {row} x "
               f"{stride}; yours is at ({gx:g}, {gy:g}).")
    column_major = expected.reshape(height, width, 2).transpose(0, 1).reshape(-1, 2)
    message += diagnose(got, {
        "Your locations are at (j*s, i*s): the offset floor(s/2) is missing (that is torchvision's convention; "
        "the paper puts a location near the center of its receptive field).": expected - stride // 2,
        f"You used s/2 = {stride / 2:g}; the offset is floor(s/2) = {stride // 2}.": expected + (stride / 2 - stride // 2),
        "x and y are swapped: column j gives x, row i gives y.": expected.flip(1),
        "Your locations are listed column by column; list them row by row (row 0 first, as reshape(H*W) does).":
            column_major,
    })
    figure = case_figure(
        (height * stride, width * stride), np.zeros((0, 4)),
        marks=[Mark("expected", expected.numpy(), "lime", "circle-open", 14), Mark("yours", got.numpy(), "red", "x", 9)],
        title=f"{height} x {width} map of stride {stride}: expected (green circles) and your locations (red crosses)",
    )
    return Failure(message, figure)


def check_level_locations(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 1.1 against :func:`fcos_lab.points.level_points`."""
    return run_check("1.1", function, solutions.level_locations, _map_cases(real), _compare_locations)


def _size_cases(real: Sequence[Scene], seed: int = 0) -> list[Case]:
    cases = [
        # 100 / 8 = 12.5 -> 13 rows, 150 / 8 = 18.75 -> 19 columns; then 7 x 10 (6.25, 9.375), 4 x 5,
        # 2 x 3 (1.5625, 2.34), 1 x 2 (0.78, 1.17).
        Case("hand-made", "a 100 x 150 input, P3-P7", (100, 150, PAPER_STRIDES)),
        # Exact divisions: 64 / 8 = 8, ..., 64 / 64 = 1, and 64 / 128 = 0.5 -> 1 (P7 keeps one location).
        Case("hand-made", "a 64 x 64 input, P3-P7", (64, 64, PAPER_STRIDES)),
        # A COCO-sized padded input: 800 / 8 = 100 rows, 1216 / 8 = 152 columns, ..., ceil(800/128) = 7.
        Case("hand-made", "an 800 x 1216 input (COCO, padded to 32), P3-P7", (800, 1216, PAPER_STRIDES)),
    ]
    generator = torch.Generator().manual_seed(seed)
    for _ in range(10):
        height, width = (int(v) for v in torch.randint(16, 1334, (2,), generator=generator))
        cases.append(Case("random", f"a {height} x {width} input, P3-P7", (height, width, PAPER_STRIDES)))
    for scene in real[:4]:
        strides = sorted(set(scene.locations.strides.int().tolist()))
        cases.append(Case("real", f"{scene.name}: a {scene.image_size[0]} x {scene.image_size[1]} padded input",
                          (scene.image_size[0], scene.image_size[1], strides)))
    return cases


def _compare_sizes(case: Case, expected: list[tuple[int, int]], got: object) -> Failure | None:
    height, width, strides = case.args
    try:
        pairs = [(int(h), int(w)) for h, w in got]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return Failure(f"expected a list of (rows, columns) pairs, one per stride; got {got!r:.200}")
    if len(pairs) != len(expected):
        return Failure(f"expected {len(expected)} (rows, columns) pairs, one per stride {strides}; got {len(pairs)}")
    for (eh, ew), (gh, gw), stride in zip(expected, pairs, strides):
        if (eh, ew) != (gh, gw):
            message = (f"for a {height} x {width} input, the map of stride {stride} has ceil({height}/{stride}) = {eh} "
                       f"rows and ceil({width}/{stride}) = {ew} columns; yours says ({gh}, {gw}).")
            if (gh, gw) == (height // stride, width // stride):
                message += ("\nThat is floor division: each stride-2 convolution pads its input, so sizes round up "
                            "(use -(-H // s) or math.ceil).")
            elif (gh, gw) == (ew, eh):
                message += "\nRows and columns are swapped: rows come from the height."
            return Failure(message)
    return None


def check_feature_shapes(function: Callable, real: Sequence[Scene] = ()) -> CheckResult:
    """Exercise 1.2 against :func:`fcos_lab.points.grid_shapes`."""
    return run_check("1.2", function, solutions.feature_shapes, _size_cases(real), _compare_sizes)
