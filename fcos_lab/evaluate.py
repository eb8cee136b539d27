"""COCO evaluation of saved detections (FCOS paper Sec. 4; Tables 3, 4, 6, 7; Figures 4-6).

Every number in the paper's tables is COCO's box AP (`AP`, `AP50`, `AP75`, `APs`, `APm`, `APl`) or
average recall, computed by the official COCO protocol: 10 IoU thresholds 0.50:0.05:0.95, 101-point
interpolated precision, at most 100 detections per image. This module evaluates a list of detections
(COCO results format) against a COCO ground-truth file; it never runs a model.

Two interchangeable backends compute the same numbers: `faster_coco_eval` (C++, used when importable)
and the reference `pycocotools`. Summary metrics are read from the accumulated precision and recall
arrays here rather than from the libraries' `stats` vectors, whose positions assume the default
`maxDets=(1, 10, 100)` and whose length differs between the two libraries.

Detections are dicts in COCO's results format; :mod:`fcos_lab.detections_file` describes, saves,
loads and validates them.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcos_lab.detections_file import _read_json, validate_detections
from fcos_lab.errors import DataError

if TYPE_CHECKING:
    from pycocotools.coco import COCO

BACKENDS = ("auto", "faster_coco_eval", "pycocotools")
IOU_TYPES = ("bbox", "segm")
# The single category that class-agnostic evaluation (Table 7, proposals) maps every class to.
AGNOSTIC_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}
AREA_SUFFIXES = {"small": "s", "medium": "m", "large": "l"}


@dataclass(frozen=True, eq=False)
class EvalResult:
    """The outcome of one COCO evaluation.

    Attributes:
        metrics: `AP`, `AP50`, `AP75`, `AP90`, `APs`, `APm`, `APl`, one `AR{n}` per entry of
            `max_dets`, and `ARs`, `ARm`, `ARl`; fractions in [0, 1]. AP and the area-split
            metrics use the last (largest) max_dets, as COCO does. A metric with no ground truth
            to score (e.g. `APs` on a split without small objects) is NaN, not COCO's -1.
        per_class_ap: Category name -> AP; categories without ground truth are omitted.
        backend: The library that computed the numbers: "faster_coco_eval" or "pycocotools".
        precision: [T, R, K, A, M] interpolated precision (T IoU thresholds, R=101 recall
            thresholds, K categories, A=4 areas all/small/medium/large, M max_dets); -1 where a
            category has no ground truth.
        recall: [T, K, A, M] recall at the last detection; -1 where undefined.
        iou_thresholds: [T] IoU thresholds of the precision and recall arrays.
        recall_thresholds: [R] recall points of the precision array.
        category_ids: The K categories of the arrays, in order.
        max_dets: The M per-image detection limits, ascending.
        class_agnostic: Whether every category was merged into one before matching.
        summary: COCO's summary table as text, one metric a line.
    """

    metrics: dict[str, float]
    per_class_ap: dict[str, float]
    backend: str
    precision: np.ndarray
    recall: np.ndarray
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    category_ids: tuple[int, ...]
    max_dets: tuple[int, ...]
    class_agnostic: bool
    summary: str


def _gt_dataset(gt: str | Path | COCO) -> tuple[dict, str]:
    """Returns the ground-truth COCO dict (not copied) and a name for messages."""
    if hasattr(gt, "dataset"):
        dataset, source = gt.dataset, "<ground-truth COCO object>"
    else:
        source = str(gt)
        dataset = _read_json(gt, "ground-truth")
    if not isinstance(dataset, dict):
        raise DataError(f"{source}: ground truth must be a COCO JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataError(f"{source}: ground truth needs a list field '{key}'")
    return dataset, source


def _eval_inputs(
    dataset: dict, detections: list[dict], class_agnostic: bool, iou_type: str
) -> tuple[dict, list[dict]]:
    """Builds fresh GT and detection records so the caller's objects are never mutated.

    Both COCO libraries write into the records they evaluate (`ignore`, `area`, `id`, ...), so
    each record is shallow-copied; that is enough because they replace values, never edit them.
    """
    annotations = []
    for ann in dataset["annotations"]:
        ann = dict(ann)
        if "area" not in ann and "bbox" in ann:
            # COCO's area ranges read `area`; hand-made files often omit it, so use the box area.
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        ann.setdefault("iscrowd", 0)
        if class_agnostic:
            ann["category_id"] = AGNOSTIC_CATEGORY["id"]
        annotations.append(ann)
    categories = [dict(AGNOSTIC_CATEGORY)] if class_agnostic else list(dataset["categories"])
    gt_dict = {
        "info": dataset.get("info", {}),
        "images": list(dataset["images"]),
        "categories": categories,
        "annotations": annotations,
    }
    dt_list = []
    for det in detections:
        record = {
            "image_id": int(det["image_id"]),
            "category_id": AGNOSTIC_CATEGORY["id"] if class_agnostic else int(det["category_id"]),
            "score": float(det["score"]),
        }
        if iou_type == "segm":
            # Without `bbox`, loadRes takes the mask branch and derives area and box from the mask.
            record["segmentation"] = det["segmentation"]
        else:
            record["bbox"] = [float(v) for v in det["bbox"]]
        dt_list.append(record)
    return gt_dict, dt_list


def resolve_backend(backend: str = "auto") -> str:
    """Returns the concrete backend name for "auto", "faster_coco_eval" or "pycocotools"."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend != "auto":
        return backend
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return "pycocotools"
    return "faster_coco_eval"


def _run_coco_eval(
    backend: str, gt_dict: dict, dt_list: list[dict], iou_type: str, max_dets: tuple[int, ...]
) -> tuple[dict, Any]:
    """Runs evaluate() and accumulate() silently; returns the `eval` dict and the params."""
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO as CocoApi
        from faster_coco_eval import COCOeval_faster as CocoEval

        def make_eval(gt_api: Any, dt_api: Any) -> Any:
            return CocoEval(gt_api, dt_api, iouType=iou_type, print_function=lambda *_, **__: None)
    else:
        from pycocotools.coco import COCO as CocoApi
        from pycocotools.cocoeval import COCOeval as CocoEval

        def make_eval(gt_api: Any, dt_api: Any) -> Any:
            return CocoEval(gt_api, dt_api, iouType=iou_type)

    # Both libraries print progress on stdout; the table the user wants is rebuilt in `summary`.
    with contextlib.redirect_stdout(io.StringIO()):
        gt_api = CocoApi()
        gt_api.dataset = gt_dict
        gt_api.createIndex()
        if dt_list:
            dt_api = gt_api.loadRes(dt_list)
        else:
            # pycocotools' loadRes indexes anns[0] and so cannot load an empty result list.
            dt_api = CocoApi()
            dt_api.dataset = {"images": gt_dict["images"], "categories": gt_dict["categories"],
                              "annotations": []}
            dt_api.createIndex()
        coco_eval = make_eval(gt_api, dt_api)
        coco_eval.params.maxDets = list(max_dets)
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval.eval, coco_eval.params


def _mean_defined(values: np.ndarray) -> float:
    """COCO's average over the entries that are defined (-1 marks "no ground truth")."""
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else math.nan


def _iou_index(iou_thresholds: np.ndarray, iou: float) -> int:
    # linspace(.5, .95, 10)[8] is 0.8999999999999999, so an exact `==` (as in COCO's own
    # summarize) would never find IoU 0.9.
    matches = np.flatnonzero(np.isclose(iou_thresholds, iou))
    if matches.size == 0:
        raise ValueError(f"IoU {iou} was not evaluated; available: {np.round(iou_thresholds, 2).tolist()}")
    return int(matches[0])


def _summary_table(metrics: dict[str, float], max_dets: tuple[int, ...]) -> str:
    """Formats `metrics` as COCO's summarize() table, correct for any max_dets."""
    line = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>4d} ] = {:0.3f}"
    ap, ar, last = ("Average Precision", "(AP)"), ("Average Recall", "(AR)"), max_dets[-1]
    rows = [(ap, "0.50:0.95", "all", last, "AP"), (ap, "0.50", "all", last, "AP50"),
            (ap, "0.75", "all", last, "AP75"), (ap, "0.90", "all", last, "AP90")]
    rows += [(ap, "0.50:0.95", area, last, f"AP{s}") for area, s in AREA_SUFFIXES.items()]
    rows += [(ar, "0.50:0.95", "all", m, f"AR{m}") for m in max_dets]
    rows += [(ar, "0.50:0.95", area, last, f"AR{s}") for area, s in AREA_SUFFIXES.items()]
    # COCO prints -1 for undefined metrics; keep that convention in the text table.
    return "\n".join(
        line.format(*kind, iou, area, m, -1.0 if math.isnan(metrics[key]) else metrics[key])
        for kind, iou, area, m, key in rows
    )


def evaluate_detections(
    gt: str | Path | COCO,
    detections: list[dict] | str | Path,
    *,
    class_agnostic: bool = False,
    max_dets: tuple[int, ...] = (1, 10, 100),
    backend: str = "auto",
    iou_type: str = "bbox",
) -> EvalResult:
    """Scores detections with the COCO protocol.

    Args:
        gt: A COCO ground-truth JSON file, or a (pycocotools or faster-coco-eval) COCO object,
            which is read but never modified.
        detections: Detection dicts, or a results file written by
            `fcos_lab.detections_file.save_detections`.
        class_agnostic: Merge all categories into one before matching (paper Table 7 and
            proposal recall): a box of the wrong class then counts as a true positive.
        max_dets: Per-image detection limits, e.g. (100, 300, 1000) for proposals; AR is reported
            for each, and AP at the last one.
        backend: "auto" (faster_coco_eval when importable), "faster_coco_eval" or "pycocotools".
        iou_type: "bbox", or "segm" for detections carrying an RLE `segmentation`.

    Returns:
        Metrics, per-class AP and the raw precision/recall arrays; see `EvalResult`.

    Raises:
        DataError: An unreadable ground-truth or detections file, or a bad detection record.
        ValueError: Unknown backend or iou_type, or invalid max_dets.
    """
    backend = resolve_backend(backend)
    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown iou_type {iou_type!r}; choose one of {list(IOU_TYPES)}")
    max_dets = tuple(int(m) for m in max_dets)
    if not max_dets or min(max_dets) < 1 or list(max_dets) != sorted(set(max_dets)):
        raise ValueError(f"max_dets must be positive and strictly increasing, got {max_dets}")
    dataset, gt_source = _gt_dataset(gt)
    image_ids = [image["id"] for image in dataset["images"]]
    category_ids = [category["id"] for category in dataset["categories"]]
    if isinstance(detections, (str, Path)):
        source = str(detections)
        detections = _read_json(detections, "detections")
    else:
        source = "<detections list>"
    validate_detections(detections, f"{source} (against {gt_source})", image_ids, category_ids)
    if iou_type == "segm":
        for index, det in enumerate(detections):
            if "segmentation" not in det:
                raise DataError(f"{source}: detections[{index}]: missing field 'segmentation' for segm")

    gt_dict, dt_list = _eval_inputs(dataset, detections, class_agnostic, iou_type)
    coco_eval, params = _run_coco_eval(backend, gt_dict, dt_list, iou_type, max_dets)
    precision = np.asarray(coco_eval["precision"], dtype=np.float64)  # [T, R, K, A, M]
    recall = np.asarray(coco_eval["recall"], dtype=np.float64)  # [T, K, A, M]
    iou_thresholds = np.asarray(params.iouThrs, dtype=np.float64)
    areas = {label: index for index, label in enumerate(params.areaRngLbl)}
    all_area = areas["all"]

    metrics = {"AP": _mean_defined(precision[:, :, :, all_area, -1])}
    for iou in (0.5, 0.75, 0.9):
        t = _iou_index(iou_thresholds, iou)
        metrics[f"AP{round(iou * 100)}"] = _mean_defined(precision[t, :, :, all_area, -1])
    for area, suffix in AREA_SUFFIXES.items():
        metrics[f"AP{suffix}"] = _mean_defined(precision[:, :, :, areas[area], -1])
    for m, max_det in enumerate(max_dets):
        metrics[f"AR{max_det}"] = _mean_defined(recall[:, :, all_area, m])
    for area, suffix in AREA_SUFFIXES.items():
        metrics[f"AR{suffix}"] = _mean_defined(recall[:, :, areas[area], -1])

    names = {c["id"]: c.get("name", str(c["id"])) for c in gt_dict["categories"]}
    per_class_ap = {}
    for k, category_id in enumerate(params.catIds):
        ap = _mean_defined(precision[:, :, k, all_area, -1])
        if not math.isnan(ap):
            per_class_ap[names[category_id]] = ap

    return EvalResult(
        metrics=metrics,
        per_class_ap=per_class_ap,
        backend=backend,
        precision=precision,
        recall=recall,
        iou_thresholds=iou_thresholds,
        recall_thresholds=np.asarray(params.recThrs, dtype=np.float64),
        category_ids=tuple(int(c) for c in params.catIds),
        max_dets=max_dets,
        class_agnostic=class_agnostic,
        summary=_summary_table(metrics, max_dets),
    )


def _as_result(
    source: EvalResult | str | Path | COCO, detections: list[dict] | str | Path | None, backend: str
) -> EvalResult:
    if isinstance(source, EvalResult):
        return source
    if detections is None:
        raise ValueError("pass an EvalResult, or ground truth together with detections")
    return evaluate_detections(source, detections, class_agnostic=True, backend=backend)


def precision_recall_curves(
    source: EvalResult | str | Path | COCO,
    detections: list[dict] | str | Path | None = None,
    *,
    iou_thresholds: Sequence[float] = (0.5, 0.75, 0.9),
    backend: str = "auto",
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """Recall-precision curves at several IoU thresholds (paper Figures 4-6).

    Curves use area "all" and the last max_dets (100 by default). Given ground truth and
    detections, the evaluation is class-agnostic, as in the paper's figures. Given an
    `EvalResult` with several categories, the curve is the mean over categories with ground truth,
    so that its mean equals the AP at that IoU.

    Args:
        source: An `EvalResult`, or a ground truth accepted by `evaluate_detections`.
        detections: The detections to evaluate when `source` is ground truth.
        iou_thresholds: IoU thresholds to extract; each must be one COCO evaluated.
        backend: Backend for the class-agnostic evaluation when one is run.

    Returns:
        IoU threshold -> (recall [R=101], precision [R]); precision is COCO's interpolated
        (non-increasing) envelope, 0 beyond the highest recall reached.
    """
    result = _as_result(source, detections, backend)
    all_area = 0  # COCO's area order is all, small, medium, large.
    curves = {}
    for iou in iou_thresholds:
        per_class = result.precision[_iou_index(result.iou_thresholds, iou), :, :, all_area, -1]
        defined = per_class[:, (per_class > -1).all(axis=0)]  # [R, K with ground truth]
        mean = defined.mean(axis=1) if defined.shape[1] else np.full(per_class.shape[0], math.nan)
        curves[float(iou)] = (result.recall_thresholds.copy(), mean)
    return curves


def ap_at_iou(
    source: EvalResult | str | Path | COCO,
    detections: list[dict] | str | Path | None = None,
    *,
    iou_thresholds: Sequence[float] = (0.5, 0.75, 0.9),
    backend: str = "auto",
) -> dict[str, float]:
    """AP at single IoU thresholds, keyed `AP50`, `AP75`, `AP90` (paper Table 7's columns).

    Args:
        source: An `EvalResult`, or a ground truth accepted by `evaluate_detections`.
        detections: The detections to evaluate (class-agnostic) when `source` is ground truth.
        iou_thresholds: IoU thresholds; each must be one COCO evaluated.
        backend: Backend for the class-agnostic evaluation when one is run.

    Returns:
        `AP{round(100 * iou)}` -> AP at area "all" and the last max_dets; NaN without ground truth.
    """
    result = _as_result(source, detections, backend)
    return {
        f"AP{round(iou * 100)}": _mean_defined(
            result.precision[_iou_index(result.iou_thresholds, iou), :, :, 0, -1]
        )
        for iou in iou_thresholds
    }
