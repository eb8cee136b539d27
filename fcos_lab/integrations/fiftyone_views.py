"""Saved FiftyOne views for the paper's questions (Section 3.3, Section 4.1.1, Appendix 10).

On a dataset built by :func:`fcos_lab.integrations.fiftyone.build_dataset` and evaluated under
``eval_key``:

- ``fp-ambiguous``, ``fp-ambiguous-diff-class``: false positives predicted at ambiguous locations (inside
  several candidate boxes; of different classes). Appendix 10: "a location in the overlap might predict
  A's class but regress B's bounding-box, which is a mistake".
- ``unrecallable-boxes``: boxes that no location is assigned to, the misses the best possible recall
  (Table 1) counts.
- ``high-cls-low-centerness``: predictions with a high classification score and a low center-ness, the
  low-quality boxes center-ness is meant to push down (Section 3.3).
- ``tide-cls``, ``tide-loc``, ``tide-both``, ``tide-dupe``, ``tide-bkg``: predictions of each TIDE error type
  (:mod:`fcos_lab.analysis.tide`); ``tide-miss``: the boxes TIDE counts as missed.
- ``fp-p3`` ... ``fp-p7``: false positives by the level that predicted them; ``fn-p3`` ... ``fn-p7``:
  missed boxes by the levels they are assigned to (a box can be on two levels; unrecallable boxes are on
  none).

Each view keeps the samples with at least one such object and shows only those objects in the filtered
field; the other field is left whole for context.
"""

from __future__ import annotations

from typing import Any

import fiftyone as fo
from fiftyone import ViewField as F

from fcos_lab.analysis.tide import MAIN_ERRORS
from fcos_lab.integrations.fiftyone_fields import GT_FIELD, PRED_FIELD

HIGH_CLS_SCORE = 0.5  # "high": at least this classification score
LOW_CENTERNESS = 0.3  # "low": at most this center-ness


def _levels(dataset: fo.Dataset) -> list[int]:
    return list(dataset.info.get("fcos_lab", {}).get("levels", [3, 4, 5, 6, 7]))


def paper_views(
    dataset: fo.Dataset,
    eval_key: str = "eval",
    *,
    high_cls_score: float = HIGH_CLS_SCORE,
    low_centerness: float = LOW_CENTERNESS,
) -> dict[str, tuple[fo.DatasetView, str]]:
    """The views of the module docstring, by name, each with a one-line description."""
    false_positive = F(eval_key) == "fp"
    views = {
        "fp-ambiguous": (
            dataset.filter_labels(PRED_FIELD, false_positive & (F("ambiguous") == True)),
            "false positives predicted at locations inside several candidate boxes",
        ),
        "fp-ambiguous-diff-class": (
            dataset.filter_labels(PRED_FIELD, false_positive & (F("ambiguous_diff_class") == True)),
            "false positives predicted at locations inside candidate boxes of different classes",
        ),
        "unrecallable-boxes": (
            dataset.filter_labels(GT_FIELD, F("recallable") == False),
            "boxes no location is assigned to (best possible recall misses them)",
        ),
        "high-cls-low-centerness": (
            dataset.filter_labels(
                PRED_FIELD, (F("cls_score") >= high_cls_score) & (F("centerness") <= low_centerness)
            ),
            f"predictions with classification score >= {high_cls_score} and center-ness <= {low_centerness}",
        ),
    }
    for error, name in MAIN_ERRORS.items():
        field = GT_FIELD if error == "miss" else PRED_FIELD
        views[f"tide-{error}"] = (dataset.filter_labels(field, F("error_type") == error),
                                  f"{'boxes' if error == 'miss' else 'predictions'} TIDE counts as {name} errors")
    for level in _levels(dataset):
        views[f"fp-p{level}"] = (
            dataset.filter_labels(PRED_FIELD, false_positive & (F("level") == level)),
            f"false positives predicted on P{level}",
        )
    for level in _levels(dataset):
        views[f"fn-p{level}"] = (
            dataset.filter_labels(GT_FIELD, (F(eval_key) == "fn") & F("levels").contains(level)),
            f"missed boxes assigned to P{level}",
        )
    return views


def save_paper_views(dataset: fo.Dataset, eval_key: str = "eval", **thresholds: float) -> list[str]:
    """Save :func:`paper_views` into ``dataset`` (replacing views of the same names); returns their names."""
    views = paper_views(dataset, eval_key, **thresholds)
    for name, (view, description) in views.items():
        dataset.save_view(name, view, description=description, overwrite=True)
    return list(views)


def errors_per_level(dataset: fo.Dataset, eval_key: str = "eval") -> dict[int, dict[str, int]]:
    """``{level: {"tp": n, "fp": n, "fn": n}}``: predictions by the level that made them, missed boxes by
    each level they are assigned to (so a box on two levels counts twice)."""
    predictions = dataset.filter_labels(PRED_FIELD, F(eval_key).is_in(["tp", "fp"]))
    rows: dict[int, dict[str, int]] = {level: {"tp": 0, "fp": 0, "fn": 0} for level in _levels(dataset)}
    for level, outcome in zip(*predictions.values([f"{PRED_FIELD}.detections.level",
                                                   f"{PRED_FIELD}.detections.{eval_key}"], unwind=True)):
        if level in rows:
            rows[level][outcome] += 1
    misses = dataset.filter_labels(GT_FIELD, F(eval_key) == "fn")
    for level in misses.values(f"{GT_FIELD}.detections.levels", unwind=True):  # unwinds the lists too
        if level in rows:
            rows[level]["fn"] += 1
    return rows


def ambiguous_share(dataset: fo.Dataset, *, min_score: float = 0.0) -> dict[str, Any]:
    """Share of predictions made at ambiguous locations (Section 4.1.1: 2.3 %, and 1.5 % for different classes).

    Args:
        min_score: count only predictions with at least this score.

    Returns:
        ``predictions`` (with a known location), ``ambiguous``, ``ambiguous_diff_class`` (counts) and
        ``ambiguous_percent``, ``ambiguous_diff_class_percent``.
    """
    located = dataset.filter_labels(PRED_FIELD, (F("confidence") >= min_score) & (F("ambiguous") != None))
    objects = f"{PRED_FIELD}.detections"
    total = located.count(objects)
    ambiguous = located.filter_labels(PRED_FIELD, F("ambiguous") == True).count(objects)
    diff = located.filter_labels(PRED_FIELD, F("ambiguous_diff_class") == True).count(objects)

    def percent(count: int) -> float:
        return 100.0 * count / total if total else float("nan")

    return {"predictions": total, "ambiguous": ambiguous, "ambiguous_diff_class": diff,
            "ambiguous_percent": percent(ambiguous), "ambiguous_diff_class_percent": percent(diff)}


def summary(dataset: fo.Dataset, eval_key: str = "eval") -> str:
    """A few lines: TP/FP/FN counts and each saved view with its number of images."""
    predicted = dataset.count_values(f"{PRED_FIELD}.detections.{eval_key}")
    missed = dataset.count_values(f"{GT_FIELD}.detections.{eval_key}").get("fn", 0)
    tp, fp = predicted.get("tp", 0), predicted.get("fp", 0)
    lines = [f"dataset {dataset.name!r}: {len(dataset)} images, {tp + fp} predictions ({tp} TP, {fp} FP), "
             f"{missed} missed boxes (eval key {eval_key!r})"]
    if "mAP" in dataset.info.get("fcos_lab", {}):
        mean_ap = dataset.info["fcos_lab"]["mAP"]
        lines.append(f"  FiftyOne COCO-style mAP {mean_ap:.3f} (fcos-lab eval gives the COCO AP)")
    for name in dataset.list_saved_views():
        lines.append(f"  saved view {name:26s} {len(dataset.load_saved_view(name))} images")
    return "\n".join(lines)
