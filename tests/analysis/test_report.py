"""fcos_lab.analysis.report: the mean and spread over seeds and the verdict of each row, on hand cases."""

from __future__ import annotations

import math

import pytest

from fcos_lab.analysis import report
from fcos_lab.analysis.report import NO_PAPER_EFFECT, OPPOSITE, SAME, TOO_SMALL, Results


def test_seed_summary_by_hand():
    # Mean of 30, 32, 34 is 32; deviations -2, 0, 2: sample variance (4 + 0 + 4) / (3 - 1) = 4, spread 2.
    assert report.seed_summary([30.0, 32.0, 34.0]) == (32.0, 2.0)
    assert report.seed_summary([5.0]) == (5.0, None)  # one seed: no spread
    assert report.seed_summary([5.0, None]) == (None, None)  # a seed without the number: unknown
    assert report.seed_summary([5.0, math.nan]) == (None, None)
    assert report.seed_summary([]) == (None, None)


def test_difference_spread_adds_the_two_rows_spreads():
    assert report.difference_spread(1.0, 0.5) == 1.5
    assert report.difference_spread(0.0, 0.0) == 0.0  # two deterministic numbers
    assert report.difference_spread(None, 0.5) is None and report.difference_spread(0.5, None) is None


def test_paired_spread_by_hand():
    # Per-seed differences 24 - 19 = 5, 28 - 23.5 = 4.5, 32 - 27 = 5: mean 29/6; deviations 1/6, -1/3, 1/6;
    # variance (1/36 + 1/9 + 1/36) / 2 = 1/12, spread sqrt(1/12) ~ 0.289. Each row alone spreads by 4.
    assert report.paired_spread([24.0, 28.0, 32.0], [19.0, 23.5, 27.0]) == pytest.approx(math.sqrt(1 / 12))
    assert report.paired_spread([1.0, 2.0], [1.0]) is None  # not the same seeds
    assert report.paired_spread([1.0], [1.0]) is None and report.paired_spread(None, [1.0, 2.0]) is None


@pytest.mark.parametrize(("paper", "measured", "spread", "expected"), [
    (3.6, 2.0, 1.5, SAME),  # Table 4 learned vs None: +3.6 in the paper, +2.0 measured, beyond 1.5
    (3.6, -2.0, 1.5, OPPOSITE),
    (3.6, 1.0, 1.5, TOO_SMALL),  # inside the spread
    (3.6, 1.5, 1.5, TOO_SMALL),  # on its edge: still within
    (3.6, -1.4, 1.5, TOO_SMALL),  # the other way, but within: no claim either way
    (3.6, 2.0, None, TOO_SMALL),  # one seed: the spread is unknown, nothing is claimed
    (-16.02, -15.6, 0.0, SAME),  # Table 2 ambiguity, FPN vs P4 only: statistics, no randomness
    (0.7, 0.0, 0.0, TOO_SMALL),  # deterministic but no change at all
    (0.0, 5.0, 0.1, NO_PAPER_EFFECT),  # Table 4 None vs center-ness from the box: 33.5 both
    (0.04, 5.0, 0.1, NO_PAPER_EFFECT),  # under the paper's printed resolution
    (None, 1.0, 0.1, ""),
    (1.0, None, 0.1, ""),
])
def test_verdict_by_hand(paper, measured, spread, expected):
    assert report.verdict(paper, measured, spread) == expected


def test_seeds_are_recorded_as_mean_and_spread_and_compared_with_the_reference_row():
    results = Results(notebook="t", scale="workshop", hardware={})
    # None: AP 0.20, 0.21, 0.22 -> 21 ± 1; learned: 0.24, 0.245, 0.25 -> 24.5 ± 0.5 (percent).
    results.add_metrics("Table 4", "None", {}, {"AP": 33.5}, per_seed=[{"AP": 0.20}, {"AP": 0.21}, {"AP": 0.22}])
    results.add_metrics("Table 4", "learned", {}, {"AP": 37.1}, reference="None",
                        per_seed=[{"AP": 0.24}, {"AP": 0.245}, {"AP": 0.25}])
    results.add_metrics("Table 4", "oracle", {}, {}, reference="None", per_seed=[{"AP": 0.5}, {"AP": 0.5}, {"AP": 0.5}])
    none, learned, oracle = results.measurements
    assert none.measured == pytest.approx(21.0) and none.spread == pytest.approx(1.0)
    assert none.samples == pytest.approx([20.0, 21.0, 22.0])
    assert learned.measured == pytest.approx(24.5) and learned.spread == pytest.approx(0.5)
    first, second, third = report.compare_rows(results.measurements)
    assert first is None  # the table's baseline
    # Paper +3.6; measured 24.5 - 21 = +3.5; seed by seed 4, 3.5, 3: spread 0.5.
    assert second.paper_difference == pytest.approx(3.6) and second.measured_difference == pytest.approx(3.5)
    assert second.spread == pytest.approx(0.5) and second.verdict == SAME
    assert third.paper_difference is None and third.verdict == ""  # no paper value: no verdict
    assert report.format_measured(learned) == "24.50 ± 0.50 (3 seeds)"
    assert report.format_change(second) == "vs None: +3.60 / +3.50 ± 0.50"
    table = results.table()
    assert "| Table 4 | learned | AP | 37.10 | 24.50 ± 0.50 (3 seeds) | -12.60 | vs None: +3.60 / +3.50 ± 0.50 | " \
           f"{SAME} | workshop |" in table
    # Not the same seeds (two against three): the rows' spreads add up, 0 + 1.0, still below +3.5.
    results.add_metrics("Table 4", "two seeds", {}, {"AP": 37.1}, reference="None",
                        per_seed=[{"AP": 0.245}, {"AP": 0.245}])
    unpaired = report.compare_rows(results.measurements)[-1]
    assert unpaired.spread == pytest.approx(1.0 + 0.0) and unpaired.verdict == SAME


def test_test_time_variants_of_the_same_models_are_compared_seed_by_seed():
    results = Results(notebook="t", scale="workshop", hardware={})
    # Three models: 19, 23.5, 27 AP without center-ness, 24, 28, 32 with it. Across seeds each row spreads
    # by 4 (their sum, 8, would swallow the +4.83 change); seed by seed the change is 5, 4.5, 5.
    results.add_metrics("Table 4", "None", {}, {"AP": 33.5}, per_seed=[{"AP": v} for v in (0.19, 0.235, 0.27)])
    results.add_metrics("Table 4", "learned", {}, {"AP": 37.1}, reference="None",
                        per_seed=[{"AP": v} for v in (0.24, 0.28, 0.32)])
    comparison = report.compare_rows(results.measurements)[1]
    assert comparison.measured_difference == pytest.approx(29 / 6)
    assert comparison.spread == pytest.approx(math.sqrt(1 / 12)) and comparison.verdict == SAME


def test_single_seed_and_deterministic_numbers():
    results = Results(notebook="t", scale="smoke", hardware={})
    results.add_metrics("Table 3", "a", {}, {"AP": 37.4}, per_seed=[{"AP": 0.1}])
    results.add_metrics("Table 3", "b", {}, {"AP": 38.1}, reference="a", per_seed=[{"AP": 0.3}])
    results.add_metrics("Table 4", "None", {"AP": 0.1}, {"AP": 33.5}, deterministic=True)
    results.add_metrics("Table 4", "learned", {"AP": 0.3}, {"AP": 37.1}, deterministic=True, reference="None",
                        weights="w.pth (sha256 ab, imported from torchvision)")
    a, b, none, learned = results.measurements
    assert a.spread is None and a.samples == pytest.approx([10.0]) and report.format_measured(a) == "10.00"
    assert none.spread == 0.0 and none.samples is None
    verdicts = [c.verdict if c else None for c in report.compare_rows(results.measurements)]
    # One seed: +20 points measured, but nothing to measure it against. Given weights: exact, so +20 stands.
    assert verdicts == [None, TOO_SMALL, None, SAME]
    markdown, _ = report.reproduction_report([results])
    assert "- w.pth (sha256 ab, imported from torchvision): Table 4: learned" in markdown
    assert "| learned | AP | 37.10 | 30.00 | -7.10 | vs None: +3.60 / +20.00 ± 0.00 | " \
           f"{SAME} | smoke, given weights |" in markdown
