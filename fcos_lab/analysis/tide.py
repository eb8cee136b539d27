"""TIDE: which kind of error costs how much AP (Bolya et al., ECCV 2020), for FCOS's detections (Section 4).

The definitions are those of TIDE's reference implementation, ``tidecv`` 1.0.1 (github.com/dbolya/tide),
written again here with array operations; ``tests/analysis/test_tide.py`` compares both on the same files.
``t_f`` is the foreground IoU (0.5), ``t_b`` the background IoU (0.1), IoU is pycocotools' box IoU.

Matching, per image: the detections, sorted by score (ties in file order) and cut to the image's best
100, take in turn the not yet matched non-crowd box of their class with the highest IoU, if it is >= t_f.
An unmatched detection whose intersection with a crowd box of its class covers more than t_f of its own
area is ignored: it is no point of the AP, but it is classified like the others. Each unmatched detection
gets the first type that applies:

1. ``loc``: its highest IoU with a box of its class is in [t_b, t_f];
2. ``cls``: IoU >= t_f with a box of another class;
3. ``dupe``: IoU >= t_f with a box of its class that another detection matched;
4. ``bkg``: IoU <= t_b with every box, or the image has no non-crowd box;
5. ``both``: anything else (tidecv's ``OtherError``, shown as "Both").

A non-crowd box left unmatched is a ``miss`` unless a Loc or Cls error points at it (``covered``).

AP (tidecv's, in percent): per class, points sorted by score, precision made monotone, averaged at the
101 recalls 0, 0.01, ..., 1 (COCO's interpolation); the mean over the classes with a box or a point (a
class with points but no box counts with AP 0). dAP of an error type = AP after the type's oracle fix -
AP, floored at 0 (tidecv's "main errors"):

- Cls, Loc: of the errors of that type pointing at the same unmatched box, the one that comes first (the
  highest score) becomes a true positive of the box's class, the others are removed; an error pointing at
  a matched box is removed. The first is chosen among the Cls *and* Loc errors on the box, as tidecv does;
- Both, Dupe, Bkg: the detections are removed;
- Miss: the missed boxes are removed from the ground truth.

Special errors (not floored): ``FalsePos`` = AP with every false positive ranked below every true positive
- AP; ``FalseNeg`` = AP with every unmatched box removed from the ground truth - AP.

Equal scores rank as in tidecv: in the original AP by image (file order), then file order within an image;
in every oracle-fixed AP (FalseNeg included) tidecv rebuilds the points from its error list first, so the
points of errors rank before the true positives of the same score. Ties alone can thus move a dAP (two tied
detections, TP first in the file: FalseNeg = -50 in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fcos_lab.analysis.tide_matching import (
    CLS,
    COVERED,
    DETECTION_TYPES,
    GT_TP,
    GT_TYPES,
    LOC,
    MISS,
    NOT_EVALUATED,
    TP,
    classify,
)
from fcos_lab.data.coco_annotations import is_finite_number
from fcos_lab.errors import ConfigError

if TYPE_CHECKING:
    from pycocotools.coco import COCO

FOREGROUND_IOU = 0.5  # TIDE's pos_threshold
BACKGROUND_IOU = 0.1  # TIDE's background_threshold
MAX_DETS = 100  # tidecv's max_dets for COCO: an image's detections after its 100 best are not looked at
RECALL_POINTS = np.arange(101) / 100  # exactly tidecv's [x / 100 for x in range(101)]

# tidecv's short names, in its order.
MAIN_ERRORS = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupe": "Dupe", "bkg": "Bkg", "miss": "Miss"}
SPECIAL_ERRORS = ("FalsePos", "FalseNeg")
_DETECTION_CODE = {name: code for code, name in enumerate(DETECTION_TYPES)}


@dataclass(frozen=True, eq=False)  # numpy arrays: compare fields, not objects
class TideErrors:
    """Each detection's and each box's TIDE type, and the AP with any set of errors fixed.

    K detections in the order given, M annotations in file order (crowd boxes included), C categories.

    Attributes:
        image_ids: ``[B]`` COCO image ids in the annotation file's order.
        category_ids: ``[C]`` sorted COCO category ids; ``*_class`` index into it.
        det_image, det_class: ``[K]`` indices into image_ids / category_ids. det_score: ``[K]``.
        det_type: ``[K]`` code into DETECTION_TYPES, NOT_EVALUATED after the image's ``max_dets`` best.
        det_ignored: ``[K]`` unmatched inside a crowd box of its class (no AP point, still classified).
        det_gt: ``[K]`` annotation index: the box matched (tp), pointed at (cls, loc) or duplicated (dupe); -1.
        det_fixable: ``[K]`` a Cls/Loc error that its oracle fix turns into a true positive.
        det_area: ``[K]`` box area ``w * h``.
        gt_ann_ids, gt_image, gt_class: ``[M]`` COCO id, image index, class index of each annotation.
        gt_area: ``[M]`` the annotation's ``area`` (COCO's size measure), ``w * h`` when absent.
        gt_type: ``[M]`` code into GT_TYPES (crowd boxes: ``ignore``).
        ap: tidecv's AP at ``foreground_iou``, in percent.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    det_image: np.ndarray
    det_class: np.ndarray
    det_score: np.ndarray
    det_type: np.ndarray
    det_ignored: np.ndarray
    det_gt: np.ndarray
    det_fixable: np.ndarray
    det_area: np.ndarray
    gt_ann_ids: np.ndarray
    gt_image: np.ndarray
    gt_class: np.ndarray
    gt_area: np.ndarray
    gt_type: np.ndarray
    foreground_iou: float
    background_iou: float
    max_dets: int
    ap: float
    _ranking: dict[str, np.ndarray] = field(repr=False)

    def fixed_ap(self, fixed: np.ndarray | None = None, missed_fixed: np.ndarray | None = None) -> float:
        """AP after the oracle fix of each flagged error (by its own type) and of each flagged missed box.

        Args:
            fixed: ``[K]`` bool, detections whose error is fixed (true positives are left as they are).
            missed_fixed: ``[M]`` bool, boxes whose Miss is fixed (others are left as they are).
        """
        r = self._ranking
        det = r["entry_det"]
        is_cls_fix = r["entry_cls_fix"]
        error = self.det_type[det]
        flagged = (np.zeros(len(self.det_type), bool) if fixed is None else fixed)[det] & (error > TP)
        fixable = self.det_fixable[det]
        original = ~is_cls_fix & ~self.det_ignored[det] & ~flagged
        active = np.where(is_cls_fix, flagged & (error == CLS) & fixable,
                          original | (flagged & (error == LOC) & fixable))
        true_positive = is_cls_fix | (error == TP) | (flagged & (error == LOC))
        num_gt = r["num_gt"]
        if missed_fixed is not None:
            removed = missed_fixed & (self.gt_type == MISS)
            num_gt = num_gt - np.bincount(self.gt_class[removed], minlength=len(num_gt))
        return mean_average_precision(r["entry_class"][active], true_positive[active], num_gt)

    def delta_ap(self, error: str, detections: np.ndarray | None = None, boxes: np.ndarray | None = None) -> float:
        """dAP of one error type (a key of MAIN_ERRORS), fixed only on the flagged detections / boxes.

        Args:
            error: ``cls``, ``loc``, ``both``, ``dupe``, ``bkg`` or ``miss``.
            detections: ``[K]`` bool, the detections eligible for the fix (all when None).
            boxes: ``[M]`` bool, for ``miss``: the boxes eligible (all when None).

        Returns:
            ``max(AP(fixed) - AP, 0)``, tidecv's main-error dAP when nothing is restricted.
        """
        if error == "miss":
            fixed_boxes = np.ones(len(self.gt_type), bool) if boxes is None else boxes
            return max(self.fixed_ap(missed_fixed=fixed_boxes) - self.ap, 0.0)
        if error not in _DETECTION_CODE or error == "tp":
            raise ConfigError(f"unknown TIDE error type {error!r}; valid: {list(MAIN_ERRORS)}")
        chosen = self.det_type == _DETECTION_CODE[error]
        if detections is not None:
            chosen &= detections
        return max(self.fixed_ap(fixed=chosen) - self.ap, 0.0)

    def main_errors(self) -> dict[str, float]:
        """tidecv's main errors: ``{"Cls": dAP, "Loc": ..., "Both", "Dupe", "Bkg", "Miss"}``."""
        return {name: self.delta_ap(error) for error, name in MAIN_ERRORS.items()}

    def special_errors(self) -> dict[str, float]:
        """tidecv's special errors: ``{"FalsePos": dAP, "FalseNeg": dAP}`` (not floored at 0)."""
        r = self._ranking
        order = np.lexsort((~r["original_tp"], r["original_class"]))  # true positives first in each class
        false_pos = mean_average_precision(r["original_class"][order], r["original_tp"][order], r["num_gt"])
        matched = np.bincount(self.gt_class[self.gt_type == GT_TP], minlength=len(self.category_ids))
        entry_kept = ~r["entry_cls_fix"] & ~self.det_ignored[r["entry_det"]]
        true_positive = self.det_type[r["entry_det"]] == TP
        false_neg = mean_average_precision(r["entry_class"][entry_kept], true_positive[entry_kept], matched)
        return {"FalsePos": false_pos - self.ap, "FalseNeg": false_neg - self.ap}

    def counts(self) -> dict[str, int]:
        """Detections of each type, boxes missed/covered, ignored and not evaluated detections."""
        evaluated = self.det_type != NOT_EVALUATED
        counts = {name: int(np.sum(self.det_type == code)) for code, name in enumerate(DETECTION_TYPES)}
        counts.update(miss=int(np.sum(self.gt_type == MISS)), covered=int(np.sum(self.gt_type == COVERED)),
                      ignored=int(np.sum(self.det_ignored & evaluated)), not_evaluated=int(np.sum(~evaluated)))
        return counts


def mean_average_precision(point_class: np.ndarray, true_positive: np.ndarray, num_gt: np.ndarray) -> float:
    """tidecv's mAP (percent) of ranked points.

    Args:
        point_class: ``[N]`` class index of each point; each class's points contiguous, best ranked first.
        true_positive: ``[N]`` bool.
        num_gt: ``[C]`` boxes of each class (the recall's denominator).

    Returns:
        The mean over classes with a point or a box of the 101-point interpolated AP (0 for a class
        without boxes); 0.0 when no class qualifies (tidecv would divide by zero).
    """
    num_classes = len(num_gt)
    sums = np.zeros(num_classes)
    n = len(point_class)
    if n:
        starts = np.ones(n, bool)
        starts[1:] = point_class[1:] != point_class[:-1]
        segment = np.cumsum(starts) - 1
        first = np.flatnonzero(starts)[segment]
        cumulative = np.cumsum(true_positive)
        true_pos = cumulative - (cumulative - true_positive)[first]
        precision = true_pos / (np.arange(n) - first + 1)
        gt = num_gt[point_class]
        recall = np.divide(true_pos, gt, out=np.zeros(n), where=gt > 0)
        # The monotone envelope (the maximum precision at this rank or later) within each class: offsets that
        # grow towards the first classes keep a running maximum from leaking across classes.
        offset = 2.0 * (segment[-1] - segment)
        envelope = np.maximum.accumulate((precision + offset)[::-1])[::-1] - offset
        # Recall point x_j takes the precision of the first point with recall >= x_j (np.searchsorted in tidecv):
        # the point covers the x_j in (previous recall, its recall].
        covered = np.searchsorted(RECALL_POINTS, recall, side="right")
        previous = np.concatenate(([0], covered[:-1]))
        previous[starts] = 0
        sums = np.bincount(point_class, weights=envelope * (covered - previous), minlength=num_classes)
    ap = np.where(num_gt > 0, sums / len(RECALL_POINTS) * 100, 0.0)
    # Unlike COCO's evaluation, tidecv averages in classes that have detections but no box (AP 0).
    present = (np.bincount(point_class, minlength=num_classes) > 0) | (num_gt != 0)
    # Deviation from tidecv: no class left (e.g. every box missed and removed by the Miss fix) gives AP 0
    # instead of tidecv's ZeroDivisionError.
    return float(ap[present].mean()) if present.any() else 0.0


def _det_arrays(detections: Sequence[dict[str, Any]], image_index: dict[int, int],
                class_index: dict[int, int]) -> dict[str, np.ndarray]:
    box = np.array([d["bbox"] for d in detections], dtype=np.float64).reshape(-1, 4)
    return {"image": np.array([image_index[d["image_id"]] for d in detections], dtype=np.int64),
            "class": np.array([class_index[d["category_id"]] for d in detections], dtype=np.int64),
            "score": np.array([d["score"] for d in detections], dtype=np.float64), "box": box}


def _gt_arrays(coco: COCO, image_index: dict[int, int], class_index: dict[int, int]) -> dict[str, np.ndarray]:
    anns = coco.dataset.get("annotations", [])
    box = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    area = np.array([a["area"] if is_finite_number(a.get("area")) else np.nan for a in anns], dtype=np.float64)
    return {"ann_id": np.array([a["id"] for a in anns], dtype=np.int64),
            "image": np.array([image_index[a["image_id"]] for a in anns], dtype=np.int64),
            "class": np.array([class_index[a["category_id"]] for a in anns], dtype=np.int64),
            "crowd": np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool), "box": box,
            "area": np.where(np.isnan(area), box[:, 2] * box[:, 3], area)}


def tide_errors(coco: COCO, detections: Sequence[dict[str, Any]], *, foreground_iou: float = FOREGROUND_IOU,
                background_iou: float = BACKGROUND_IOU, max_dets: int = MAX_DETS) -> TideErrors:
    """Classify every detection and box as tidecv does and prepare the oracle-fixed APs.

    Args:
        coco: the ground truth (:func:`fcos_lab.data.coco_annotations.load_coco_annotations`); its image
            order decides ties between equal scores, as in tidecv.
        detections: COCO result records (``image_id``, ``category_id``, ``bbox`` xywh absolute pixels,
            ``score``) of images and categories of ``coco``, validated
            (:func:`fcos_lab.detections_file.validate_detections`).
        foreground_iou, background_iou: TIDE's ``t_f`` and ``t_b``, with 0 < t_b <= t_f <= 1.
        max_dets: detections looked at per image (the best by score).

    Returns:
        The :class:`TideErrors`; ``.main_errors()`` and ``.special_errors()`` give tidecv's numbers.
    """
    if not (0 < background_iou <= foreground_iou <= 1) or max_dets < 1:
        raise ConfigError(f"TIDE needs 0 < background_iou <= foreground_iou <= 1 and max_dets >= 1, got "
                          f"{background_iou}, {foreground_iou}, {max_dets}")
    image_ids = np.array([image["id"] for image in coco.dataset["images"]], dtype=np.int64)
    image_index = {int(i): n for n, i in enumerate(image_ids)}
    category_ids = np.array(sorted(coco.getCatIds()), dtype=np.int64)
    class_index = {int(c): n for n, c in enumerate(category_ids)}
    det = _det_arrays(detections, image_index, class_index)
    gt = _gt_arrays(coco, image_index, class_index)
    classified = classify(det, gt, len(image_ids), foreground_iou, background_iou, max_dets)
    det_type, det_gt, det_ignored = classified["det_type"], classified["det_gt"], classified["det_ignored"]
    det_fixable, gt_type, position = classified["det_fixable"], classified["gt_type"], classified["position"]

    num_gt = np.bincount(gt["class"][~gt["crowd"]], minlength=len(category_ids))
    ranking = _rankings(det, det_type, det_ignored, det_gt, det_fixable, gt["class"], position, num_gt)
    ap = mean_average_precision(ranking["original_class"], ranking["original_tp"], num_gt)
    return TideErrors(
        image_ids=image_ids, category_ids=category_ids, det_image=det["image"], det_class=det["class"],
        det_score=det["score"], det_type=det_type, det_ignored=det_ignored, det_gt=det_gt, det_fixable=det_fixable,
        det_area=det["box"][:, 2] * det["box"][:, 3], gt_ann_ids=gt["ann_id"], gt_image=gt["image"],
        gt_class=gt["class"], gt_area=gt["area"], gt_type=gt_type, foreground_iou=float(foreground_iou),
        background_iou=float(background_iou), max_dets=int(max_dets), ap=ap, _ranking=ranking)


def _rankings(det: dict[str, np.ndarray], det_type: np.ndarray, det_ignored: np.ndarray, det_gt: np.ndarray,
              det_fixable: np.ndarray, gt_class: np.ndarray, position: np.ndarray,
              num_gt: np.ndarray) -> dict[str, np.ndarray]:
    """The two point orders tidecv ranks by, computed once.

    Original AP: per class, by score, ties in tidecv's order (images in file order, by score within). Every
    oracle-fixed AP: tidecv rebuilds the points from its error list and then adds the true positives, so on
    equal scores the points of errors (fixed or not) come before the true positives. A Cls fix moves a
    detection to its box's class: such detections get a second entry there.
    """
    evaluated = np.flatnonzero(det_type != NOT_EVALUATED)
    original = evaluated[~det_ignored[evaluated]]
    original = original[np.lexsort((position[original], -det["score"][original], det["class"][original]))]
    cls_fix = evaluated[det_fixable[evaluated] & (det_type[evaluated] == CLS)]
    entry_det = np.concatenate([evaluated, cls_fix])
    entry_cls_fix = np.concatenate([np.zeros(len(evaluated), bool), np.ones(len(cls_fix), bool)])
    entry_class = np.concatenate([det["class"][evaluated], gt_class[det_gt[cls_fix]]])
    true_positive_last = (det_type[entry_det] == TP) & ~entry_cls_fix
    entries = np.lexsort((position[entry_det], true_positive_last, -det["score"][entry_det], entry_class))
    return {"original_class": det["class"][original], "original_tp": det_type[original] == TP,
            "entry_det": entry_det[entries], "entry_cls_fix": entry_cls_fix[entries],
            "entry_class": entry_class[entries], "num_gt": num_gt}


def detection_error_types(errors: TideErrors) -> list[str | None]:
    """Each detection's TIDE type (``tp``, ``cls``, ``loc``, ``both``, ``dupe``, ``bkg``), in input order.

    None for a detection after its image's ``max_dets`` best (tidecv never looks at it). A detection
    ignored in a crowd box keeps its type (tidecv classifies it too); ``errors.det_ignored`` flags it.
    """
    return [DETECTION_TYPES[code] if code >= 0 else None for code in errors.det_type.tolist()]


def ground_truth_error_types(errors: TideErrors) -> dict[int, str]:
    """Each annotation id's type: ``tp`` (matched), ``miss``, ``covered`` (unmatched, but a Cls/Loc error
    points at it: tidecv counts it with that error, not as Miss) or ``ignore`` (crowd)."""
    return {ann_id: GT_TYPES[code] for ann_id, code in zip(errors.gt_ann_ids.tolist(), errors.gt_type.tolist())}
