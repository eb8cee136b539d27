"""``fcos-lab tune``: size ranges and input size for a dataset, and whether it needs a P2 level (Section 3.2).

:func:`tune` reads a COCO-format file (no image is opened) and, with the assignment of a preset
(center sampling, strict ranges, ... are the preset's):

1. recommends ``input.min_size`` / ``input.max_size`` from the image and box sizes
   (:func:`fcos_lab.analysis.input_size.recommend_input_size`);
2. resizes the boxes to that size and searches the size ranges on a random sample of images
   (:func:`fcos_lab.analysis.size_range_search.search_size_ranges`: the highest best possible recall with
   ambiguity no higher than the reference ranges', ties going to the paper's geometric doubling);
3. measures the reference ranges (the paper's for P3-P7) and the search's best few on all images, and
   chooses among them by the search's rule on all images (the sample only narrows the search down);
4. compares, on the sample, the recommendation with and without a P2 level (stride 4; P2 takes the
   lower half of P3's range, as the preset ``fcos_r50_fpn_p2_1x`` does) and says whether P2 would help:
   when at least :data:`P2_POORLY_COVERED_PERCENT` % of the boxes are poorly covered without it (no
   location, or fewer than :data:`~fcos_lab.analysis.level_statistics.FEW_LOCATIONS`, regresses them)
   and P2 at least halves that share, or when P2 adds :data:`P2_RECALL_GAIN` point of best possible recall.

The recommendation comes as dotted overrides (``assign.size_ranges=[[0,64],...,[512,inf]]``, checked to
parse through :func:`fcos_lab.presets.resolve`). The report, files and command line are in
:mod:`fcos_lab.analysis.tune_report`.

Glossary: N images, K boxes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fcos_lab import paper
from fcos_lab.analysis.dataset_boxes import PaddedBoxes, boxes_for_config
from fcos_lab.analysis.input_size import InputSizeAdvice, recommend_input_size
from fcos_lab.analysis.level_statistics import FEW_LOCATIONS, LevelStatisticsCache, SettingStatistics
from fcos_lab.analysis.size_range_search import Candidate, SearchResult, boundaries_of, rank, search_size_ranges
from fcos_lab.config import Config
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.errors import ConfigError, DataError, InputError
from fcos_lab.objective import Objective
from fcos_lab.presets import P2_SIZE_RANGES, P2_STRIDES, resolve

LEVEL_CHOICES = ("p3", "p2")  # P3-P7 (the paper) or P2-P7
P2_POORLY_COVERED_PERCENT = 5.0  # P2 is advised from this share of poorly covered boxes (and if it halves it),
P2_RECALL_GAIN = 1.0  # or if it adds this many points of best possible recall
Ranges = tuple[tuple[float, float], ...]
VERIFIED_CANDIDATES = 5  # the search's best few, measured on all images for the final choice


def with_p2(size_ranges: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    """P3-P7 ranges to P2-P7: P2 takes ``(0, m_3 / 2)``, P3 keeps ``(m_3 / 2, m_3)`` (the doubling one level down)."""
    (lo, m3), *rest = size_ranges
    return ((lo, m3 / 2), (m3 / 2, m3), *rest)


def without_p2(size_ranges: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    """P2-P7 ranges to P3-P7: P3 takes P2's and its own, ``(0, m_3)``."""
    (lo, _), (_, m3), *rest = size_ranges
    return ((lo, m3), *rest)


def ranges_text(size_ranges: tuple[tuple[float, float], ...]) -> str:
    """``[[0,64],[64,128],...,[512,inf]]``: the value of ``assign.size_ranges=``."""
    def number(v: float) -> str:
        return "inf" if math.isinf(v) else f"{v:g}"
    return "[" + ",".join(f"[{number(lo)},{number(hi)}]" for lo, hi in size_ranges) + "]"


@dataclass(frozen=True)
class Row:
    """One setting of the report's table: a name, its statistics and the boxes it was measured on."""

    name: str
    statistics: SettingStatistics
    measured_on: str  # "all images" or "sample"

    def as_dict(self) -> dict[str, Any]:
        return {"setting": self.name, "measured_on": self.measured_on, **self.statistics.as_dict()}


@dataclass(frozen=True)
class TuneResult:
    """Everything ``fcos-lab tune`` found; :meth:`summary` is its JSON.

    Attributes:
        ann_file, preset: the inputs.
        input_size: the input-size advice.
        strides: the levels searched; ``reference_ranges`` the ranges searched around.
        recommended_ranges: the recommendation; ``overrides`` the dotted overrides that set it.
        rows: the table: reference and recommended on all images, then with and without P2 on the sample.
        search: the search on the sample.
        verified: the reference and the search's best few measured on all images, best first.
        p2: whether a P2 level would help, with the numbers behind the answer.
        counts: images and boxes of the file and of the sample.
        recommended_objective: the assignment of the recommendation (for figures).
        box_widths, box_heights: ``[K]`` box sizes at the recommended input size (pixels).
        given_overrides: the overrides of the preset that the recommendation keeps (not those it replaces).
        notes: what the reader should know (fallbacks, ...).
        seconds: time per step.
    """

    ann_file: str
    preset: str
    input_size: InputSizeAdvice
    strides: tuple[int, ...]
    reference_ranges: tuple[tuple[float, float], ...]
    recommended_ranges: tuple[tuple[float, float], ...]
    overrides: tuple[str, ...]
    rows: tuple[Row, ...]
    search: SearchResult
    verified: tuple[Candidate, ...]
    p2: dict[str, Any]
    counts: dict[str, int]
    recommended_objective: Objective
    box_widths: np.ndarray
    box_heights: np.ndarray
    given_overrides: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (what ``--json`` prints and ``tune.json`` holds)."""
        a = self.input_size
        search = self.search
        return {
            "ann_file": self.ann_file, "preset": self.preset, "counts": self.counts,
            "input_size": {"min_size": a.min_size, "max_size": a.max_size, "train_min_size": list(a.train_min_size),
                           "preset_min_size": a.preset_min_size, "preset_max_size": a.preset_max_size,
                           "box_short_side_p5": a.box_short_side, "image_short_side_median": a.image_short_side,
                           "small_box_factor": a.small_box_factor, "upscale_cap": a.upscale_cap,
                           "small_boxes_remain": a.small_boxes_remain, "reasons": list(a.reasons)},
            "levels": [f"P{round(math.log2(s))}" for s in self.strides], "strides": list(self.strides),
            "reference_size_ranges": ranges_text(self.reference_ranges),
            "recommended_size_ranges": ranges_text(self.recommended_ranges),
            "overrides": list(self.overrides), "given_overrides": list(self.given_overrides),
            "rows": [row.as_dict() for row in self.rows],
            "p2": self.p2,
            "search": {
                "objective": "max best possible recall subject to ambiguity <= max_ambiguity; recalls within "
                             "bpr_tolerance points are equal, then closest to the reference (octaves), then least "
                             "ambiguous",
                "reference": list(search.reference.boundaries),
                "recommended": list(boundaries_of(self.recommended_ranges)),
                "max_ambiguity": search.max_ambiguity, "bpr_tolerance": search.bpr_tolerance,
                "seconds": search.seconds,
                "candidates": [{"boundaries": list(c.boundaries), "distance_octaves": c.distance,
                                "best_possible_recall": c.statistics.best_possible_recall,
                                "ambiguous": c.statistics.ambiguous,
                                "poorly_covered_percent": c.statistics.poorly_covered_percent}
                               for c in search.candidates],
                "ranked": [list(c.boundaries) for c in search.ranked[:10]],
                "verified_on_all_images": [
                    {"boundaries": list(c.boundaries), "best_possible_recall": c.statistics.best_possible_recall,
                     "ambiguous": c.statistics.ambiguous, "distance_octaves": c.distance} for c in self.verified],
            },
            "few_locations": FEW_LOCATIONS, "p2_poorly_covered_percent": P2_POORLY_COVERED_PERCENT,
            "p2_recall_gain": P2_RECALL_GAIN,
            "notes": list(self.notes), "seconds": self.seconds,
        }


def _load(data: dict[str, Any], ann_file: str, config: Config) -> PaddedBoxes:
    """The file's images with usable boxes, resized as ``config`` trains."""
    padded, _ = boxes_for_config(data, ann_file, config)
    rows = np.flatnonzero(padded.valid.sum(1).numpy() > 0)
    return padded.select(rows)


def _sample(boxes: PaddedBoxes, num_images: int, seed: int) -> PaddedBoxes:
    if len(boxes.image_ids) <= num_images:
        return boxes
    rows = np.sort(np.random.default_rng(seed).choice(len(boxes.image_ids), num_images, replace=False))
    return boxes.select(rows)


def _p2_advice(without: SettingStatistics, with_p2_level: SettingStatistics,
               small_boxes_remain: bool) -> dict[str, Any]:
    """Whether a P2 level would help, from the same boxes with and without it."""
    before, after = without.poorly_covered_percent or 0.0, with_p2_level.poorly_covered_percent or 0.0
    gain = (with_p2_level.best_possible_recall or 0.0) - (without.best_possible_recall or 0.0)
    helps = (before >= P2_POORLY_COVERED_PERCENT and after <= before / 2) or gain >= P2_RECALL_GAIN
    if helps:
        verdict = (f"a P2 level would help: {before:.1f} % of the boxes are poorly covered without it, {after:.1f} % "
                   f"with it (best possible recall {gain:+.2f} points)")
    else:
        verdict = (f"P2 is not needed: {before:.1f} % of the boxes are poorly covered without it, {after:.1f} % with "
                   f"it, and best possible recall {gain:+.2f} points (P2 is advised from "
                   f"{P2_POORLY_COVERED_PERCENT:g} % poorly covered that it halves, or from {P2_RECALL_GAIN:g} point "
                   "of recall)")
    if small_boxes_remain:
        verdict += "; and the input size could not grow enough for its smallest boxes to reach the finest stride"
    return {"helps": helps, "verdict": verdict, "poorly_covered_without": before, "poorly_covered_with": after,
            "unrecalled_without": without.num_boxes - without.recalled_boxes,
            "unrecalled_with": with_p2_level.num_boxes - with_p2_level.recalled_boxes,
            "few_locations_without": without.few_locations, "few_locations_with": with_p2_level.few_locations,
            "best_possible_recall_gain": gain, "small_boxes_remain": small_boxes_remain}


def _searched_levels(config: Config, levels: str | None) -> tuple[str, tuple[int, ...], Ranges]:
    """``(levels, strides, reference ranges)`` searched: the preset's, or its ranges with P2 added or merged."""
    own = "p2" if config.model.strides[0] == 4 else "p3"
    levels = levels or own
    if levels not in LEVEL_CHOICES:
        raise InputError(f"levels must be one of {LEVEL_CHOICES}, got {levels!r}")
    try:
        boundaries_of(config.assign.size_ranges)
    except ValueError as error:
        raise ConfigError(f"preset {config.name!r}: {error}") from None
    ranges = tuple(config.assign.size_ranges)
    if levels == own:
        return levels, tuple(config.model.strides), ranges
    return (levels, P2_STRIDES, with_p2(ranges)) if levels == "p2" else (levels, paper.STRIDES, without_p2(ranges))


def _verify(search: SearchResult, full: LevelStatisticsCache, strides: tuple[int, ...], max_ambiguity: float | None,
            bpr_tolerance: float) -> tuple[list[Candidate], list[str]]:
    """The reference and the search's best few measured on all images, best first by the search's rule.

    The sample narrows the search down; the choice is made on all images. The list starts with the choice
    (the reference when nothing is within the limit, with a note saying so).
    """
    finalists = {c.boundaries: c for c in (search.reference, *search.ranked[:VERIFIED_CANDIDATES])}
    verified = [Candidate(c.boundaries, full.setting(strides, c.size_ranges), c.distance) for c in finalists.values()]
    limit = verified[0].statistics.ambiguous if max_ambiguity is None else max_ambiguity
    final = rank(verified, limit if limit is not None else math.inf, bpr_tolerance)
    notes = [] if search.ranked else [
        f"no setting of the search has ambiguity <= {search.max_ambiguity:.2f} % on the sample"]
    if not final:
        notes.append(f"no setting measured on all images has ambiguity <= {limit:.2f} %: the reference is recommended")
    return final + [c for c in verified if c not in final], notes


def tune(
    ann_file: str | Path,
    config: Config,
    *,
    levels: str | None = None,
    max_ambiguity: float | None = None,
    search_images: int = 500,
    bpr_tolerance: float = 0.02,
    seed: int = 0,
    given_overrides: Sequence[str] = (),
) -> TuneResult:
    """Recommend the input size and size ranges of ``config`` for the boxes of ``ann_file``.

    Args:
        ann_file: COCO-format annotation JSON.
        config: the preset (with overrides) whose assignment and input size are the starting point.
        levels: ``"p3"`` (P3-P7) or ``"p2"`` (P2-P7); None: the preset's own levels.
        max_ambiguity: the ambiguity limit in percent; None: the reference ranges' ambiguity.
        search_images: images in the search's random sample (all of them for a smaller file).
        bpr_tolerance: recalls within this many points count as equal in the search.
        seed: the sample's random seed.
        given_overrides: the overrides that made ``config`` from its preset, only recorded: the report's
            example command repeats those the recommendation does not replace.

    Raises:
        DataError: the file is missing, malformed, or has no usable box.
        ConfigError: an anchor-based preset, or levels the preset cannot take.
        InputError: a bad ``levels``, ``max_ambiguity``, ``search_images`` or ``bpr_tolerance``.
    """
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    if config.model.detector != "fcos":
        raise ConfigError(f"tune searches FCOS size ranges; preset {config.name!r} is an anchor-based baseline")
    if max_ambiguity is not None and not 0 <= max_ambiguity <= 100:
        raise InputError(f"max_ambiguity is a percentage in [0, 100], got {max_ambiguity}")
    if search_images < 1 or not bpr_tolerance >= 0:
        raise InputError(f"search_images must be >= 1 and bpr_tolerance >= 0, got {search_images}, {bpr_tolerance}")
    levels, strides, reference = _searched_levels(config, levels)

    ann_file = str(ann_file)
    data = load_coco_annotations(Path(ann_file).expanduser()).dataset
    at_preset = _load(data, ann_file, config)
    if not at_preset.valid.any():
        raise DataError(f"{ann_file}: no usable box (every box is crowd, degenerate, or the file has none)")
    flat = at_preset.boxes[at_preset.valid]
    short_sides = (flat[:, 2:] - flat[:, :2]).min(dim=1).values.numpy()
    image_sizes = np.array([(int(i["height"]), int(i["width"])) for i in data["images"]], dtype=float)
    advice = recommend_input_size(image_sizes, short_sides, config, strides[0])
    input_overrides = advice.overrides() if advice.changed else []
    searched_config = resolve(config, input_overrides)
    boxes = _load(data, ann_file, searched_config) if advice.changed else at_preset
    flat = boxes.boxes[boxes.valid]
    seconds["load"] = time.perf_counter() - start

    objective = Objective.from_config(searched_config)
    full = LevelStatisticsCache(boxes, objective)
    sample_boxes = _sample(boxes, search_images, seed)
    sample = full if sample_boxes is boxes else LevelStatisticsCache(sample_boxes, objective)
    search = search_size_ranges(sample, strides, reference, max_ambiguity=max_ambiguity, bpr_tolerance=bpr_tolerance)
    seconds["search"] = search.seconds

    tick = time.perf_counter()
    verified, notes = _verify(search, full, strides, max_ambiguity, bpr_tolerance)
    reference_full = next(c for c in verified if c.boundaries == search.reference.boundaries)
    recommended, recommended_full = verified[0].size_ranges, verified[0].statistics
    seconds["all images"] = time.perf_counter() - tick

    tick = time.perf_counter()
    five = recommended if levels == "p3" else without_p2(recommended)
    six = with_p2(recommended) if levels == "p3" else recommended
    without_sample, with_sample = sample.setting(paper.STRIDES, five), sample.setting(P2_STRIDES, six)
    seconds["p2 check"] = time.perf_counter() - tick

    on_sample = "all images" if sample is full else "sample"
    reference_name = {paper.SIZE_RANGES: "paper", P2_SIZE_RANGES: "paper + P2 (0, 32)"}.get(reference, "preset")
    rows = [Row(reference_name, reference_full.statistics, "all images"),
            Row("recommended", recommended_full, "all images")]
    if sample is not full:  # the recommendation again on the sample, beside its P2 counterpart
        rows.append(Row("recommended", without_sample if levels == "p3" else with_sample, on_sample))
    rows.append(Row("recommended + P2", with_sample, on_sample) if levels == "p3"
                else Row("recommended without P2", without_sample, on_sample))
    if advice.changed:
        tick = time.perf_counter()
        as_is = LevelStatisticsCache(at_preset, Objective.from_config(config))
        rows.insert(0, Row(f"preset as is ({config.input.min_size} px)",
                           as_is.setting(tuple(config.model.strides), tuple(config.assign.size_ranges)), "all images"))
        seconds["preset as is"] = time.perf_counter() - tick

    overrides = [*input_overrides, f"assign.size_ranges={ranges_text(recommended)}"]
    if strides != tuple(config.model.strides):
        overrides.insert(0, "model.strides=[" + ",".join(map(str, strides)) + "]")
    replaced = {o.split("=", 1)[0] for o in overrides}
    check = resolve(config, overrides)  # the recommendation must drop straight into a config
    if tuple(check.assign.size_ranges) != tuple(recommended) or tuple(check.model.strides) != strides:
        raise ConfigError(f"internal error: {overrides} does not give the recommended ranges")
    seconds["total"] = time.perf_counter() - start
    return TuneResult(
        ann_file=ann_file, preset=config.name, input_size=advice, strides=strides, reference_ranges=reference,
        recommended_ranges=tuple(recommended), overrides=tuple(overrides), rows=tuple(rows), search=search,
        verified=tuple(verified),
        p2=_p2_advice(without_sample, with_sample, advice.small_boxes_remain),
        counts={"images": len(data["images"]), "images_with_boxes": len(boxes.image_ids), "boxes": full.num_boxes,
                "sample_images": len(sample_boxes.image_ids), "sample_boxes": sample.num_boxes},
        recommended_objective=replace(objective, strides=strides, size_ranges=tuple(recommended)),
        box_widths=(flat[:, 2] - flat[:, 0]).numpy(), box_heights=(flat[:, 3] - flat[:, 1]).numpy(),
        given_overrides=tuple(o for o in given_overrides if o.split("=", 1)[0] not in replaced),
        notes=tuple(notes), seconds=seconds,
    )
