"""A search for the size ranges m_i of a dataset (Section 3.2): best possible recall with ambiguity kept low.

Level P_i regresses the boxes whose ``max(l*, t*, r*, b*)`` lies in ``[m_{i-1}, m_i]``; the paper sets
``m_2..m_7 = 0, 64, 128, 256, 512, inf`` for COCO at 800 px. :func:`search_size_ranges` moves the inner
boundaries (``m_3..m_6`` for P3-P7) and scores each setting with the training assignment's statistics
(:class:`~fcos_lab.analysis.level_statistics.LevelStatisticsCache`):

**What it optimises.** Among the settings whose ambiguity (Table 2: share of positive locations inside
several candidate boxes) is at most ``max_ambiguity`` (by default the reference's, i.e. no more ambiguous
than the paper's ranges on the same boxes), the highest best possible recall (Table 1). Recalls within
``bpr_tolerance`` points of the highest count as equal; among those the one closest to the reference's
geometric doubling wins (smallest ``sum_i |log2(m_i / m_i^ref)|``), then the least ambiguous. The reference
itself is always a candidate, so the paper's ranges stay unless moving pays in recall.

**Where it looks.** Each boundary in ``m_i^ref * 2^(k/2)``, ``k = -2..2`` (half an octave apart, one
octave either side), every increasing combination; then around the best, each boundary
``* 2^(k/4)``, ``k = -1..1``. Boundaries are rounded to whole pixels. Every level range is assigned once
and shared by all settings that use it, so the whole search costs about a hundred single-level passes.

Glossary: L levels, L - 1 inner boundaries.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fcos_lab.analysis.image_assignment import ranges_from_boundaries
from fcos_lab.analysis.level_statistics import LevelStatisticsCache, SettingStatistics

COARSE_STEPS = tuple(k / 2 for k in range(-2, 3))  # octaves: 1/2x, 0.71x, 1x, 1.41x, 2x the reference
FINE_STEPS = (-0.25, 0.0, 0.25)  # octaves around the best coarse setting


def boundaries_of(size_ranges: Sequence[tuple[float, float]]) -> tuple[float, ...]:
    """The inner boundaries of contiguous ranges from 0 to inf (the inverse of
    :func:`~fcos_lab.analysis.image_assignment.ranges_from_boundaries`).

    Raises:
        ValueError: the ranges do not start at 0, end at inf, or touch end to end.
    """
    ranges = [(float(lo), float(hi)) for lo, hi in size_ranges]
    if not ranges or ranges[0][0] != 0 or not math.isinf(ranges[-1][1]) or any(
            a[1] != b[0] for a, b in itertools.pairwise(ranges)):
        raise ValueError(f"size ranges must run from 0 to inf end to end, got {ranges}")
    return tuple(hi for _, hi in ranges[:-1])


@dataclass(frozen=True)
class Candidate:
    """One setting tried: its inner boundaries, statistics and distance from the reference (octaves)."""

    boundaries: tuple[float, ...]
    statistics: SettingStatistics
    distance: float

    @property
    def size_ranges(self) -> tuple[tuple[float, float], ...]:
        return ranges_from_boundaries(self.boundaries)


@dataclass(frozen=True)
class SearchResult:
    """What :func:`search_size_ranges` tried and chose.

    Attributes:
        reference: the reference ranges' candidate (distance 0).
        ranked: the settings within the ambiguity limit, best first (the search's order).
        candidates: every setting tried, in the order tried.
        max_ambiguity: the limit used (percent).
        bpr_tolerance: recalls this close (points) to the best count as equal.
        seconds: time spent.
    """

    reference: Candidate
    ranked: tuple[Candidate, ...]
    candidates: tuple[Candidate, ...]
    max_ambiguity: float
    bpr_tolerance: float
    seconds: float

    @property
    def best(self) -> Candidate:
        return self.ranked[0]


def _value(x: float | None) -> float:
    return -math.inf if x is None else x


def rank(candidates: Sequence[Candidate], max_ambiguity: float, bpr_tolerance: float) -> list[Candidate]:
    """The candidates within ``max_ambiguity``, best first (see the module docstring for the order)."""
    feasible = [c for c in candidates if _value(c.statistics.ambiguous) <= max_ambiguity + 1e-9]
    if not feasible:
        return []
    best = max(_value(c.statistics.best_possible_recall) for c in feasible)

    def key(c: Candidate) -> tuple:
        recall = _value(c.statistics.best_possible_recall)
        tied = recall >= best - bpr_tolerance - 1e-9
        return (not tied, 0.0 if tied else -recall, c.distance, _value(c.statistics.ambiguous), c.boundaries)

    return sorted(feasible, key=key)


def _grid(center: Sequence[float], steps: Sequence[float]) -> list[tuple[float, ...]]:
    """Every increasing combination of ``round(center_i * 2^step)``, ``step`` in ``steps``."""
    values = [sorted({max(1.0, float(round(c * 2.0**s))) for s in steps}) for c in center]
    return [combo for combo in itertools.product(*values) if all(a < b for a, b in itertools.pairwise(combo))]


def search_size_ranges(
    cache: LevelStatisticsCache,
    strides: Sequence[int],
    reference_ranges: Sequence[tuple[float, float]],
    *,
    max_ambiguity: float | None = None,
    bpr_tolerance: float = 0.02,
    coarse_steps: Sequence[float] = COARSE_STEPS,
    fine_steps: Sequence[float] = FINE_STEPS,
) -> SearchResult:
    """Search the inner boundaries of ``reference_ranges`` on the boxes of ``cache``.

    Args:
        cache: per-level statistics of the boxes searched on.
        strides: the levels (finest first); one range each.
        reference_ranges: the ranges searched around (the preset's; the paper's for P3-P7).
        max_ambiguity: the ambiguity limit in percent; None: the reference's own ambiguity on these boxes.
        bpr_tolerance: recalls within this many points of the best count as equal (then closest wins).
        coarse_steps, fine_steps: the grids of the module docstring, in octaves.

    Raises:
        ValueError: strides and ranges of different lengths, or ranges that do not run from 0 to inf.
    """
    start = time.perf_counter()
    strides = tuple(int(s) for s in strides)
    if len(strides) != len(reference_ranges):
        raise ValueError(f"{len(strides)} strides but {len(reference_ranges)} size ranges")
    reference_bounds = boundaries_of(reference_ranges)
    tried: dict[tuple[float, ...], Candidate] = {}

    def evaluate(bounds: tuple[float, ...]) -> Candidate:
        if bounds not in tried:
            distance = sum(abs(math.log2(b / r)) for b, r in zip(bounds, reference_bounds))
            tried[bounds] = Candidate(bounds, cache.setting(strides, ranges_from_boundaries(bounds)), distance)
        return tried[bounds]

    reference = evaluate(reference_bounds)
    limit = _value(reference.statistics.ambiguous) if max_ambiguity is None else float(max_ambiguity)
    for bounds in _grid(reference_bounds, coarse_steps):
        evaluate(bounds)
    ranked = rank(list(tried.values()), limit, bpr_tolerance)
    if ranked:
        for bounds in _grid(ranked[0].boundaries, fine_steps):
            evaluate(bounds)
        ranked = rank(list(tried.values()), limit, bpr_tolerance)
    return SearchResult(reference=reference, ranked=tuple(ranked), candidates=tuple(tried.values()),
                        max_ambiguity=limit, bpr_tolerance=bpr_tolerance, seconds=time.perf_counter() - start)
