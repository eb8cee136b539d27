"""Timing on a CPU or a GPU: timed rounds within a time budget, peak GPU memory, cuDNN and TF32 settings.

Used by :mod:`benchmarks.gpu_check`; the rounds themselves are
:func:`benchmarks.bench_assignment.timed_round_robin` (CUDA synchronised around each call, the order
alternating by round).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import torch

from benchmarks.bench_assignment import timed_round_robin


class Budget:
    """Seconds left of the run's time budget, and how many timed rounds still fit in a share of them."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def rounds(self, wanted: int, seconds_per_round: float, share: float) -> int:
        """At most ``wanted`` rounds of ``seconds_per_round`` within ``share`` of the seconds left (0 or more)."""
        fit = math.floor(share * max(0.0, self.left()) / max(seconds_per_round, 1e-6))
        return max(0, min(wanted, fit))


@contextlib.contextmanager
def cuda_settings(*, tf32: bool | None, benchmark: bool) -> Iterator[None]:
    """cuDNN's autotuner and, unless ``tf32`` is None, TF32 in matrix products and convolutions; restored on exit."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        if tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = benchmark
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def timed_rounds(functions: dict[str, Callable[[], object]], device: torch.device, warmup: int, wanted: int,
                 budget: Budget, share: float) -> dict[str, list[float]]:
    """:func:`timed_round_robin` for up to ``wanted`` rounds: the first round (after the warm-up) measures one
    round's cost, and the rest are as many as fit in ``share`` of the budget left, the order still alternating."""
    first = timed_round_robin(functions, device, warmup, 1)
    more = budget.rounds(wanted - 1, sum(times[0] for times in first.values()), share)
    rest = timed_round_robin(dict(reversed(functions.items())), device, 0, more) if more else {}
    return {name: first[name] + rest.get(name, []) for name in functions}


def peak_memory(functions: dict[str, Callable[[], object]], device: torch.device) -> dict[str, tuple[float, float]]:
    """GiB allocated before each call and at its peak (the counter reset between calls); empty off CUDA."""
    if device.type != "cuda":
        return {}
    peaks = {}
    for name, fn in functions.items():
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peaks[name] = (before / 2**30, torch.cuda.max_memory_allocated(device) / 2**30)
    return peaks
