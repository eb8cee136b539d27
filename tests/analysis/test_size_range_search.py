"""The size-range search (fcos_lab.analysis.size_range_search): its rule on hand-made statistics, then on real boxes."""

import math

import pytest

from fcos_lab.analysis.dataset_boxes import load_dataset_boxes
from fcos_lab.analysis.level_statistics import LevelStatisticsCache, SettingStatistics
from fcos_lab.analysis.size_range_search import Candidate, boundaries_of, rank, search_size_ranges
from fcos_lab.objective import Objective
from fcos_lab.paper import SIZE_RANGES, STRIDES
from fcos_lab.presets import resolve

INF = math.inf


def stats(bpr: float, ambiguous: float) -> SettingStatistics:
    return SettingStatistics(strides=STRIDES, size_ranges=SIZE_RANGES, level_names=("P3",) * 5, num_boxes=1000,
                             recalled_boxes=round(10 * bpr), best_possible_recall=bpr, ambiguous=ambiguous,
                             ambiguous_diff_class=0.0, positive_locations=1, few_locations=0, poorly_covered=0,
                             per_level=())


def test_boundaries_round_trip_and_errors():
    assert boundaries_of(SIZE_RANGES) == (64.0, 128.0, 256.0, 512.0)
    for bad in [((1, 64), (64, INF)), ((0, 64), (64, 128)), ((0, 64), (70, INF))]:
        with pytest.raises(ValueError, match="from 0 to inf"):
            boundaries_of(bad)


def test_rank_by_hand():
    # Limit 7.0 % ambiguity; tolerance 0.05 points of recall.
    reference = Candidate((64.0,), stats(99.00, 7.0), 0.0)
    too_ambiguous = Candidate((32.0,), stats(99.90, 7.5), 1.0)  # best recall but over the limit
    best = Candidate((128.0,), stats(99.30, 6.9), 1.0)
    tied_closer = Candidate((90.0,), stats(99.27, 6.95), 0.49)  # within 0.05 of 99.30 and closer: wins
    tied_far = Candidate((181.0,), stats(99.28, 6.0), 1.5)  # tied, farther: after tied_closer and best
    worse = Candidate((100.0,), stats(99.10, 5.0), 0.64)
    ranked = rank([reference, too_ambiguous, best, tied_closer, tied_far, worse], 7.0, 0.05)
    assert [c.boundaries for c in ranked] == [(90.0,), (128.0,), (181.0,), (100.0,), (64.0,)]
    # With no tolerance the best recall wins outright; with a wide one the reference (distance 0).
    assert rank([reference, best, tied_closer], 7.0, 0.0)[0] is best
    assert rank([reference, best, tied_closer], 7.0, 1.0)[0] is reference
    assert rank([too_ambiguous], 7.0, 0.05) == []


class FormulaCache:
    """A stand-in for LevelStatisticsCache whose statistics follow a formula of the boundaries."""

    def __init__(self, formula):
        self.formula, self.calls = formula, []

    def setting(self, strides, size_ranges):
        bounds = tuple(hi for _, hi in size_ranges[:-1])
        self.calls.append(bounds)
        return stats(*self.formula(bounds))


def test_search_finds_the_planted_optimum():
    # Recall grows as m3 grows towards 100 and m6 stays above 400; ambiguity rises once m3 passes 100.
    def formula(m):
        return 99.0 + 0.01 * min(m[0], 100) / 10 + (0.2 if m[3] > 400 else 0.0), 7.0 + (0.5 if m[0] > 100 else 0.0)

    cache = FormulaCache(formula)
    result = search_size_ranges(cache, STRIDES, SIZE_RANGES, bpr_tolerance=0.0)
    # Coarse m3 in {32, 45, 64, 91, 128}: 91 is the largest within the limit (7.0, the reference's); the fine
    # grid tries 77, 91, 108 and 108 breaks the limit. m6 > 400 with m4, m5 as the reference (distance).
    assert result.best.boundaries == (91.0, 128.0, 256.0, 512.0)
    assert result.reference.boundaries == (64.0, 128.0, 256.0, 512.0) and result.max_ambiguity == 7.0
    assert all(all(a < b for a, b in zip(c.boundaries, c.boundaries[1:])) for c in result.candidates)
    assert len(set(cache.calls)) == len(cache.calls) == len(result.candidates)  # each setting scored once
    # A limit of 8 % lets m3 pass 100, where recall stops growing: coarse m3 = 128 (then m4 > 128: 181, the
    # closer of 181 and 256); the fine grid around (128, 181, 256, 512) finds the same recall closer to the
    # reference at m3 = round(128 / 2^0.25) = 108 and m4 = round(181 / 2^0.25) = 152.
    relaxed = search_size_ranges(cache, STRIDES, SIZE_RANGES, max_ambiguity=8.0, bpr_tolerance=0.0)
    assert relaxed.best.boundaries == (108.0, 152.0, 256.0, 512.0) and relaxed.max_ambiguity == 8.0


@pytest.mark.shared_data
def test_search_on_real_boxes(shared_coco):
    config = resolve("fcos_r50_fpn_1x")
    ann = shared_coco / "annotations/instances_train2017_coco128_bboxonly_DERIVED.json"
    boxes = load_dataset_boxes(ann, config).boxes
    objective = Objective.from_config(config)
    cache = LevelStatisticsCache(boxes, objective)
    result = search_size_ranges(cache, objective.strides, objective.size_ranges)
    best, reference = result.best.statistics, result.reference.statistics
    assert best.ambiguous <= reference.ambiguous and best.best_possible_recall >= reference.best_possible_recall
    # Every candidate's numbers are those of the cache for its ranges, i.e. of the training assignment.
    again = cache.setting(objective.strides, result.best.size_ranges)
    assert again.best_possible_recall == best.best_possible_recall and again.ambiguous == best.ambiguous
