"""TIDE errors broken down by what FCOS knows of each detection (Sections 3.2, 3.3 and 4.1.1).

:mod:`fcos_lab.analysis.tide` says which error each detection is and what fixing a set of errors is worth.
Here the detections are split into groups by one attribute:

- ``size``: COCO's small / medium / large, by the area of the box the detection is matched to, points at
  (Cls, Loc) or duplicates, and by its own box area otherwise (Both, Bkg); missed boxes by their area;
- ``level``: the FPN level that predicted it (P3-P7, Section 3.2); a missed box counts on every level the
  training assignment gives it positive locations on;
- ``centerness``: its predicted center-ness (Section 3.3) in equal bins over [0, 1];
- ``ambiguous``: whether its location is ambiguous under the training assignment (Section 3.1), i.e. inside
  several candidate boxes, of the same or of different classes; missed boxes by whether they are a
  candidate of such a location.

A breakdown row holds, for one group: the number of detections (and missed boxes) of each TIDE type, and for
each error type the dAP of fixing *only that group's* errors of the type (tidecv's oracle fix, floored at
0). The groups of a breakdown partition the detections, so their counts add up to the overall counts;
their dAPs need not add up to the overall dAP (AP is not additive), but they say where the AP is lost.
``level``, ``centerness`` and ``ambiguous`` need fcos_lab's ``level``, ``location`` and ``centerness``
fields (:func:`fcos_lab.predict.detections_to_coco`); records without them are in no group of those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcos_lab.analysis.tide import (
    DETECTION_TYPES,
    MAIN_ERRORS,
    MISS,
    NOT_EVALUATED,
    TP,
    TideErrors,
    tide_errors,
)
from fcos_lab.config import Config
from fcos_lab.errors import ConfigError

if TYPE_CHECKING:
    from pycocotools.coco import COCO

# COCO's object sizes (pycocotools' areaRng): small < 32^2 <= medium < 96^2 <= large, in pixels^2.
SIZE_LIMITS = {"small": 32.0**2, "medium": 96.0**2, "large": float("inf")}
CENTERNESS_BINS = 5
AMBIGUITY_GROUPS = ("unambiguous", "ambiguous, same class", "ambiguous, different classes")
ERROR_TYPES = tuple(MAIN_ERRORS)  # cls, loc, both, dupe, bkg, miss


@dataclass(frozen=True, eq=False)  # numpy arrays: compare fields, not objects
class Grouping:
    """One breakdown's groups: ``detections[label]`` ``[K]`` bool; ``boxes[label]`` ``[M]`` bool, or None when
    the attribute says nothing of boxes (center-ness)."""

    name: str
    detections: dict[str, np.ndarray]
    boxes: dict[str, np.ndarray] | None


@dataclass(frozen=True, eq=False)  # numpy arrays: compare fields, not objects
class ErrorAnalysis:
    """The result of :func:`analyze_errors`.

    Attributes:
        summary: JSON-ready dict: the eight dAPs at the top level (``Cls Loc Both Dupe Bkg Miss FalsePos
            FalseNeg``), ``AP50`` (tidecv's AP, percent; the key follows the foreground IoU), ``counts``,
            ``breakdowns`` (grouping -> rows), ``ambiguous_locations``, ``settings``, ``inputs``, ``notes``.
        errors: the per-detection and per-box classification (:class:`~fcos_lab.analysis.tide.TideErrors`).
        groupings: the groups of each breakdown, for :func:`example_image_ids`.
    """

    summary: dict[str, Any]
    errors: TideErrors
    groupings: dict[str, Grouping]


def _field(detections: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """``[K]`` float values of an optional field, NaN where a record lacks it."""
    return np.array([float(d[key]) if d.get(key) is not None else np.nan for d in detections], dtype=np.float64)


def size_grouping(errors: TideErrors) -> Grouping:
    """COCO small / medium / large: the detection's box of reference, or its own box; boxes by area."""
    target = errors.det_gt
    area = np.where(target >= 0, errors.gt_area[np.maximum(target, 0)], errors.det_area)
    edges = np.array(list(SIZE_LIMITS.values())[:-1])
    det_bin, box_bin = np.searchsorted(edges, area, side="right"), np.searchsorted(edges, errors.gt_area, side="right")
    return Grouping("size", {name: det_bin == i for i, name in enumerate(SIZE_LIMITS)},
                    {name: box_bin == i for i, name in enumerate(SIZE_LIMITS)})


def level_grouping(errors: TideErrors, levels: np.ndarray,
                   box_levels: Mapping[int, Sequence[int]] | None) -> Grouping:
    """By FPN level ``levels`` ``[K]`` (NaN: unknown); boxes on every level in ``box_levels`` (annotation id ->
    levels with positive locations for it, from the assignment)."""
    names = sorted({int(v) for v in levels[~np.isnan(levels)]} | {int(v) for vs in (box_levels or {}).values()
                                                                   for v in vs})
    boxes = None
    if box_levels is not None:
        pairs = np.array([(position, number) for position, ann_id in enumerate(errors.gt_ann_ids.tolist())
                          for number in box_levels.get(ann_id, ())], dtype=np.int64).reshape(-1, 2)
        on = np.zeros((len(names), len(errors.gt_ann_ids)), bool)
        on[np.searchsorted(names, pairs[:, 1]), pairs[:, 0]] = True
        boxes = {f"P{n}": on[row] for row, n in enumerate(names)}
    return Grouping("level", {f"P{n}": levels == n for n in names}, boxes)


def centerness_grouping(centerness: np.ndarray, bins: int = CENTERNESS_BINS) -> Grouping:
    """``bins`` equal bins over [0, 1] of the predicted center-ness ``[K]`` (NaN: unknown; outside [0, 1]: the end bins)."""
    index = np.clip(np.floor(np.nan_to_num(centerness, nan=-1.0) * bins), 0, bins - 1)
    labels = [f"[{i / bins:.1f}, {(i + 1) / bins:.1f}{']' if i == bins - 1 else ')'}" for i in range(bins)]
    known = ~np.isnan(centerness)
    return Grouping("centerness", {label: known & (index == i) for i, label in enumerate(labels)}, None)


def ambiguity_grouping(errors: TideErrors, predictions: Sequence[Mapping[str, Any]],
                       boxes: Mapping[int, Mapping[str, Any]]) -> Grouping:
    """Unambiguous / ambiguous of one class / of different classes (Section 3.1), from
    :func:`fcos_lab.analysis.ambiguous_locations.assignment_attributes`."""
    state = np.array([{None: -1, False: 0, True: 1}[p["ambiguous"]] + bool(p["ambiguous_diff_class"])
                      for p in predictions], dtype=np.int64).reshape(-1)
    box_state = np.array([int(boxes.get(a, {}).get("ambiguous", False)) + int(boxes.get(a, {}).get("ambiguous_diff_class",
                          False)) for a in errors.gt_ann_ids.tolist()], dtype=np.int64).reshape(-1)
    return Grouping("ambiguous", {name: state == i for i, name in enumerate(AMBIGUITY_GROUPS)},
                    {name: box_state == i for i, name in enumerate(AMBIGUITY_GROUPS)})


def breakdown(errors: TideErrors, grouping: Grouping) -> list[dict[str, Any]]:
    """One row per group: ``group``, ``detections`` (evaluated), ``counts`` (per type, ``miss`` None when the
    grouping has no boxes) and ``dAP`` (per error type, tidecv's name; 0 when the group has none of them)."""
    evaluated = errors.det_type != NOT_EVALUATED
    rows = []
    for label, members in grouping.detections.items():
        counts: dict[str, int | None] = {name: int(np.sum(members & (errors.det_type == code)))
                                         for code, name in enumerate(DETECTION_TYPES)}
        dap: dict[str, float | None] = {MAIN_ERRORS[t]: errors.delta_ap(t, members) if counts[t] else 0.0
                                        for t in ERROR_TYPES if t != "miss"}
        box = None if grouping.boxes is None else grouping.boxes[label]
        counts["miss"] = None if box is None else int(np.sum(box & (errors.gt_type == MISS)))
        dap["Miss"] = None if box is None else (errors.delta_ap("miss", boxes=box) if counts["miss"] else 0.0)
        rows.append({"group": label, "detections": int(np.sum(members & evaluated)), "counts": counts, "dAP": dap})
    return rows


def ambiguous_share(errors: TideErrors, predictions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Section 4.1.1's question: how many detections, and how many false positives, come from ambiguous locations.

    Counted over the evaluated detections whose location is on the preset's grid. Returns ``detections``,
    ``false_positives`` and ``by_type`` (TIDE type -> the same), each ``{"total", "ambiguous",
    "ambiguous_diff_class", "ambiguous_percent", "ambiguous_diff_class_percent"}`` (percent None when empty),
    and ``unplaced`` (evaluated detections without a location on the grid).
    """
    known = np.array([p["ambiguous"] is not None for p in predictions], bool).reshape(-1)
    ambiguous = np.array([bool(p["ambiguous"]) for p in predictions], bool).reshape(-1)
    different = np.array([bool(p["ambiguous_diff_class"]) for p in predictions], bool).reshape(-1)
    evaluated = errors.det_type != NOT_EVALUATED

    def share(members: np.ndarray) -> dict[str, Any]:
        total, amb, diff = int(np.sum(members)), int(np.sum(members & ambiguous)), int(np.sum(members & different))
        percent = (lambda n: 100.0 * n / total if total else None)
        return {"total": total, "ambiguous": amb, "ambiguous_diff_class": diff, "ambiguous_percent": percent(amb),
                "ambiguous_diff_class_percent": percent(diff)}

    counted = known & evaluated
    return {"detections": share(counted), "false_positives": share(counted & (errors.det_type > TP)),
            "by_type": {name: share(counted & (errors.det_type == code)) for code, name in enumerate(DETECTION_TYPES)},
            "unplaced": int(np.sum(evaluated & ~known))}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def analyze_errors(coco: COCO, detections: Sequence[dict[str, Any]], config: Config | None = None, *,
                   sources: Mapping[str, str] | None = None, centerness_bins: int = CENTERNESS_BINS,
                   **tide_options: Any) -> ErrorAnalysis:
    """TIDE's error breakdown of validated detections, and the FCOS breakdowns their fields allow.

    Args:
        coco: the ground truth (:func:`fcos_lab.data.coco_annotations.load_coco_annotations`).
        detections: COCO result records checked against ``coco``
            (:func:`fcos_lab.detections_file.load_detections`).
        config: the configuration the detections were made with; without it (or without ``level`` and
            ``location`` in the records) there is no ``ambiguous`` breakdown and no share of ambiguous locations.
        sources: file names to record in ``summary["inputs"]``.
        centerness_bins: equal bins over [0, 1] for the ``centerness`` breakdown.
        tide_options: ``foreground_iou``, ``background_iou``, ``max_dets`` of :func:`~fcos_lab.analysis.tide.tide_errors`.
    """
    errors = tide_errors(coco, detections, **tide_options)
    notes = []
    located = np.array([d.get("level") is not None and d.get("location") is not None for d in detections], bool)
    levels = np.where(located, _field(detections, "level"), np.nan)  # FCOS breakdowns: fcos_lab records only
    centerness = np.where(located, _field(detections, "centerness"), np.nan)
    groupings = {"size": size_grouping(errors)}
    share = None
    box_levels = None
    if located.any() and config is not None:
        from fcos_lab.analysis.ambiguous_locations import assignment_attributes

        boxes, predictions = assignment_attributes(coco, detections, config)
        box_levels = {ann_id: attributes["levels"] for ann_id, attributes in boxes.items()}
        groupings["ambiguous"] = ambiguity_grouping(errors, predictions, boxes)
        share = ambiguous_share(errors, predictions)
    elif located.any():
        notes.append("no preset given: no ambiguity breakdown")
    if not np.isnan(levels).all():
        groupings["level"] = level_grouping(errors, levels, box_levels)
    if not np.isnan(centerness).all():
        groupings["centerness"] = centerness_grouping(centerness, centerness_bins)
    missing = int(np.sum(~located))
    if missing:
        notes.append(f"{missing} of {len(detections)} detection records have no level/location (not fcos_lab "
                     "detections?): they are in no level, center-ness or ambiguity group")
    if errors.counts()["not_evaluated"]:
        notes.append(f"{errors.counts()['not_evaluated']} detections after the {errors.max_dets} best of their image "
                     "are not evaluated (as in tidecv)")
    ap_key = f"AP{round(errors.foreground_iou * 100)}"
    summary = {
        **errors.main_errors(), **errors.special_errors(), ap_key: errors.ap, "counts": errors.counts(),
        "breakdowns": {name: breakdown(errors, grouping) for name, grouping in groupings.items()},
        "ambiguous_locations": share,
        "settings": {"foreground_iou": errors.foreground_iou, "background_iou": errors.background_iou,
                     "max_dets": errors.max_dets, "centerness_bins": centerness_bins,
                     "preset": None if config is None else config.name},
        "inputs": {**(sources or {}), "detections_count": len(detections), "images": len(errors.image_ids),
                   "boxes": len(errors.gt_ann_ids), "categories": len(errors.category_ids)},
        "notes": notes,
    }
    return ErrorAnalysis(summary=_rounded(summary), errors=errors, groupings=groupings)


def error_members(analysis: ErrorAnalysis, error_type: str, *, grouping: str | None = None,
                  group: str | None = None) -> np.ndarray:
    """Which detections ``[K]`` (boxes ``[M]`` for ``miss``) are errors of one type, in one group if given.

    Args:
        analysis: from :func:`analyze_errors`.
        error_type: ``cls``, ``loc``, ``both``, ``dupe``, ``bkg``, ``miss`` (or ``tp``).
        grouping, group: restrict to one group of one breakdown (e.g. ``"level"``, ``"P3"``).

    Raises:
        ConfigError: an unknown type, breakdown or group (the message lists the valid ones).
    """
    errors = analysis.errors
    if error_type not in (*DETECTION_TYPES, "miss"):
        raise ConfigError(f"unknown error type {error_type!r}; valid: {[*DETECTION_TYPES, 'miss']}")
    chosen = None
    if grouping is not None:
        chosen = analysis.groupings.get(grouping)
        if chosen is None or group not in chosen.detections:
            valid = {name: list(g.detections) for name, g in analysis.groupings.items()}
            raise ConfigError(f"no group {group!r} in breakdown {grouping!r}; valid: {valid}")
    if error_type == "miss":
        members = errors.gt_type == MISS
        if chosen is not None:
            members &= chosen.boxes[group] if chosen.boxes is not None else False
        return members
    members = errors.det_type == DETECTION_TYPES.index(error_type)
    if chosen is not None:
        members &= chosen.detections[group]
    return members


def example_image_ids(analysis: ErrorAnalysis, error_type: str, *, grouping: str | None = None,
                      group: str | None = None, limit: int = 12) -> list[int]:
    """COCO ids of the images with the most errors of one type (in a group): what a click on a bar shows.

    Args:
        analysis: from :func:`analyze_errors`.
        error_type: ``cls``, ``loc``, ``both``, ``dupe``, ``bkg``, ``miss`` (or ``tp``).
        grouping, group: restrict to one group of one breakdown (e.g. ``"level"``, ``"P3"``).
        limit: at most this many ids, most errors first (ties in the annotation file's image order).
    """
    errors = analysis.errors
    members = error_members(analysis, error_type, grouping=grouping, group=group)
    image = (errors.gt_image if error_type == "miss" else errors.det_image)[members]
    count = np.bincount(image, minlength=len(errors.image_ids))
    order = np.lexsort((np.arange(len(count)), -count))
    return [int(errors.image_ids[i]) for i in order[:limit] if count[i] > 0]


def _xyxy(xywh: Sequence[Sequence[float]]) -> np.ndarray:
    boxes = np.asarray(xywh, dtype=float).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def example_boxes(analysis: ErrorAnalysis, coco: COCO, detections: Sequence[Mapping[str, Any]], image_id: int,
                  error_type: str, *, grouping: str | None = None, group: str | None = None) -> dict[str, Any]:
    """What to draw on one example image: its ground truth and its errors of one type (in one group).

    Returns:
        ``gt_boxes`` ``[M, 4]`` xyxy (the image's non-crowd boxes), ``boxes`` ``[K, 4]`` xyxy (the error
        detections by decreasing score, or the missed boxes for ``miss``), ``texts`` (class and score of
        each), ``targets`` ``[K, 4]`` xyxy: the box each Cls, Loc or Dupe error points at (NaN where none).
    """
    errors = analysis.errors
    members = error_members(analysis, error_type, grouping=grouping, group=group)
    image_index = int(np.flatnonzero(errors.image_ids == image_id)[0])
    annotations = [a for a in coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
    name = {cid: cat.get("name", str(cid)) for cid, cat in coco.cats.items()}
    ann_boxes = {a["id"]: a["bbox"] for a in coco.imgToAnns.get(image_id, [])}
    if error_type == "miss":
        chosen = np.flatnonzero(members & (errors.gt_image == image_index))
        anns = [coco.anns[int(errors.gt_ann_ids[m])] for m in chosen]
        boxes = _xyxy([a["bbox"] for a in anns])
        texts = [f"miss: {name.get(a['category_id'], a['category_id'])}" for a in anns]
        targets = np.full_like(boxes, np.nan)
    else:
        chosen = np.flatnonzero(members & (errors.det_image == image_index))
        chosen = chosen[np.argsort(-errors.det_score[chosen], kind="stable")]
        boxes = _xyxy([detections[k]["bbox"] for k in chosen])
        texts = [f"{error_type}: {name.get(detections[k]['category_id'], detections[k]['category_id'])} "
                 f"{detections[k]['score']:.2f}" for k in chosen]
        pointed = [int(errors.gt_ann_ids[errors.det_gt[k]]) if errors.det_gt[k] >= 0 else None for k in chosen]
        targets = np.stack([_xyxy([ann_boxes[a]])[0] if a in ann_boxes else np.full(4, np.nan) for a in pointed]) \
            if pointed else np.zeros((0, 4))
    return {"gt_boxes": _xyxy([a["bbox"] for a in annotations]), "boxes": boxes, "texts": texts, "targets": targets}


def load_inputs(ann_file: str | Path, detections_file: str | Path) -> tuple[COCO, list[dict[str, Any]]]:
    """The ground truth and the detections checked against it (DataError naming the file and record)."""
    from fcos_lab.data.coco_annotations import load_coco_annotations
    from fcos_lab.detections_file import load_detections

    coco = load_coco_annotations(ann_file)
    return coco, load_detections(detections_file, gt=coco)
