"""How an exercise is checked: the participant's function against the reference, case by case.

A check (:mod:`fcos_lab.workshop.checks`) lists :class:`Case` objects, hand-made first (each small enough to
work out on paper), then random, then real boxes, and a ``compare`` function that says in words what is
wrong with one answer. :func:`run_check` runs them in that order and stops at the first failing case with
an :class:`ExerciseError` that names it ("location (36, 20) on P3 is a candidate of boxes 0 and 2; ..."),
after drawing its figure in the notebook when the case has one. A stub (``NotImplementedError``) fails
with "not written yet".
"""

from __future__ import annotations

import copy
import math
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

KINDS = ("hand-made", "random", "real")


class ExerciseError(AssertionError):
    """A participant's function gave a wrong answer, or none: the message names the first failing case.

    Attributes:
        exercise: the exercise number (``"2.5"``).
        case: the failing case in words, or None when the function could not run at all.
        figure: a plotly figure of the case, when one helps.
    """

    def __init__(self, message: str, *, exercise: str, case: str | None = None, figure: Any = None) -> None:
        super().__init__(message)
        self.exercise, self.case, self.figure = exercise, case, figure

    def _render_traceback_(self) -> list[str]:
        """What IPython shows: the message, and the participant's own traceback when their code raised; not
        the frames of the check (``%tb`` shows everything)."""
        lines = [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]
        if self.__cause__ is not None:
            lines += ["", "where your code raised it:"]
            lines += "".join(traceback.format_exception(self.__cause__)).rstrip().splitlines()
        return lines


@dataclass(frozen=True)
class Case:
    """One input of an exercise.

    Attributes:
        kind: ``"hand-made"``, ``"random"`` or ``"real"``.
        name: the case in words ("a 2 x 3 map of stride 8").
        args: the positional arguments of the exercise function.
        context: what ``compare`` needs to describe a failure in words (locations' levels, box names...).
    """

    kind: str
    name: str
    args: tuple
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """What is wrong with one answer: a message in words and, where it helps, a figure."""

    message: str
    figure: Any = None


@dataclass(frozen=True)
class CheckResult:
    """A passed check: how many cases of each kind the function got right."""

    exercise: str
    counts: Mapping[str, int]

    def __str__(self) -> str:
        parts = [f"{self.counts[k]} {k}" for k in KINDS if self.counts.get(k)]
        listed = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] if parts else "no"
        return f"exercise {self.exercise} passed: {listed} cases agree with the reference"


Compare = Callable[[Case, Any, Any], "Failure | None"]


def run_check(exercise: str, function: Callable, reference: Callable, cases: Sequence[Case],
              compare: Compare) -> CheckResult:
    """Run ``function`` and ``reference`` on every case, hand-made first; raise at the first wrong answer.

    Raises:
        ExerciseError: ``function`` is a stub, raised an error, or ``compare`` found its answer wrong.
    """
    __tracebackhide__ = True
    name = getattr(function, "__name__", "your function")
    if not callable(function):
        raise ExerciseError(f"exercise {exercise}: expected a function, got {type(function).__name__}",
                            exercise=exercise)
    counts = dict.fromkeys(KINDS, 0)
    totals = {k: sum(c.kind == k for c in cases) for k in KINDS}
    for case in sorted(cases, key=lambda c: KINDS.index(c.kind)):
        where = f"the {case.kind} case {counts[case.kind] + 1} of {totals[case.kind]} ({case.name})"
        expected = reference(*copy.deepcopy(case.args))
        try:
            got = function(*copy.deepcopy(case.args))
        except NotImplementedError as error:
            raise ExerciseError(
                f"exercise {exercise}: {name} is not written yet ({error}). Replace the `raise "
                "NotImplementedError` line with your code, run that cell, then run this check again.",
                exercise=exercise) from None
        except Exception as error:
            raise ExerciseError(f"exercise {exercise}: your {name} raised {type(error).__name__}: {error}\n"
                                f"  on {where}", exercise=exercise, case=case.name) from error
        failure = compare(case, expected, got)
        if failure is not None:
            show_figure(failure.figure)
            raise ExerciseError(f"exercise {exercise}: {name} is wrong on {where}:\n{failure.message}",
                                exercise=exercise, case=case.name, figure=failure.figure)
        counts[case.kind] += 1
    return CheckResult(exercise, counts)


def show_figure(figure: Any) -> None:
    """Draw ``figure`` in the running notebook (nothing outside IPython: tests read ``ExerciseError.figure``)."""
    if figure is None:
        return
    try:
        from IPython import get_ipython
    except ImportError:
        return
    if get_ipython() is not None:
        from fcos_lab.workshop.display import show

        show(figure)


# ------------------------------------------------------------------------ comparing answers


def as_tensor(got: Any, what: str) -> Tensor | Failure:
    """The answer as a tensor, or a :class:`Failure` saying what came back instead."""
    if isinstance(got, Tensor):
        return got.detach().cpu()
    if isinstance(got, np.ndarray):
        return torch.from_numpy(got)
    if got is None:
        return Failure(f"it returned None: return {what} (did you forget `return`?)")
    return Failure(f"it returned a {type(got).__name__}; return {what}")


def shape_failure(expected: Tensor, got: Tensor, meaning: str) -> Failure | None:
    """A :class:`Failure` when the shapes differ; ``meaning`` names the axes ("[P, M]: location, box")."""
    if tuple(got.shape) == tuple(expected.shape):
        return None
    message = f"expected a tensor of shape {list(expected.shape)} ({meaning}), got shape {list(got.shape)}"
    if got.ndim == expected.ndim and tuple(got.shape[::-1][:2]) == tuple(expected.shape[:2]):
        message += "; are two axes swapped?"
    return Failure(message)


def mismatch(expected: Tensor, got: Tensor, *, atol: float = 1e-4, rtol: float = 1e-4) -> tuple[int, ...] | None:
    """Index of the first element where ``got`` differs from ``expected`` (same shapes), or None."""
    if expected.dtype == torch.bool or not expected.is_floating_point():
        differs = got.to(expected.dtype) != expected
    else:
        got = got.to(torch.float64)
        reference = expected.to(torch.float64)
        close = torch.isclose(got, reference, atol=atol, rtol=rtol) | (got.isnan() & reference.isnan())
        differs = ~close
    if not differs.any():
        return None
    return tuple(int(i) for i in differs.nonzero()[0])


class Difference(NamedTuple):
    """A wrong answer of the right type and shape: the answer as a tensor and its first wrong element."""

    got: Tensor
    index: tuple[int, ...]


def first_difference(expected: Tensor, got: Any, what: str, meaning: str, *, atol: float = 1e-4,
                     rtol: float = 1e-4) -> Difference | Failure | None:
    """Compare an answer with the reference: None when right, a :class:`Failure` for a wrong type or shape
    (``what`` names the expected value, ``meaning`` its axes), else the :class:`Difference` to name in words."""
    got = as_tensor(got, what)
    if isinstance(got, Failure):
        return got
    failure = shape_failure(expected, got, meaning)
    if failure:
        return failure
    got = got.to(expected.dtype) if not expected.is_floating_point() else got.float()
    index = mismatch(expected, got, atol=atol, rtol=rtol)
    return None if index is None else Difference(got, index)


def agrees(got: Any, value: Any, *, atol: float = 1e-4, rtol: float = 1e-4) -> bool:
    """Whether ``got`` equals ``value`` (tensors or numbers) everywhere: used to recognise a known mistake."""
    try:
        got_t = torch.as_tensor(got, dtype=torch.float64)
        value_t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return False
    return got_t.shape == value_t.shape and bool(torch.allclose(got_t, value_t, atol=atol, rtol=rtol, equal_nan=True))


def diagnose(got: Any, mistakes: Mapping[str, Any], **tolerance: float) -> str:
    """The hint of the first known mistake whose result ``got`` reproduces, as a sentence to append; or ""."""
    for hint, value in mistakes.items():
        if agrees(got, value, **tolerance):
            return "\n" + hint
    return ""


def number(value: float) -> str:
    """A number as a person writes it: integers without decimals, others with 4 significant digits."""
    value = float(value)
    if math.isfinite(value) and value == round(value) and abs(value) < 1e9:
        return str(round(value))
    return f"{value:.4g}"


def numbers(values: Sequence[float] | Tensor) -> str:
    """``(16, 10, 24, 20)``."""
    values = values.tolist() if isinstance(values, Tensor) else list(values)
    return "(" + ", ".join(number(v) for v in values) + ")"


def box_text(box: Sequence[float] | Tensor) -> str:
    """An xyxy box as ``[20, 10, 60, 40]``."""
    return "[" + numbers(box)[1:-1] + "]"
