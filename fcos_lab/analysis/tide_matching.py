"""TIDE's matching and error classification (Bolya et al., ECCV 2020), tidecv's per-image pass on all images at once.

:mod:`fcos_lab.analysis.tide` states the definitions and computes the APs; this module decides, as tidecv 1.0.1
does, which box each detection matches and which error type each unmatched detection and box is. An image's
detections and boxes are laid out as ``[images, rank, box]`` arrays (padded), so that the greedy matching
takes the detections of every image of a chunk at once, rank by rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Detection types (codes in TideErrors.det_type); NOT_EVALUATED: after the image's MAX_DETS best.
DETECTION_TYPES = ("tp", "cls", "loc", "both", "dupe", "bkg")
TP, CLS, LOC, BOTH, DUPE, BKG = range(6)
NOT_EVALUATED = -1
# Ground-truth types (codes in TideErrors.gt_type): covered = unmatched, but a Cls/Loc error points at it.
GT_TYPES = ("tp", "miss", "covered", "ignore")
GT_TP, MISS, COVERED, IGNORE = range(4)
# Elements of the [images, detections, boxes] IoU arrays of one matching pass.
MAX_CHUNK_ELEMENTS = 1 << 21


def box_iou_xywh(boxes: np.ndarray, others: np.ndarray, *, crowd: bool = False) -> np.ndarray:
    """Pairwise IoU of ``[..., K, 4]`` and ``[..., M, 4]`` xywh boxes (absolute pixels) -> ``[..., K, M]``.

    pycocotools' box IoU operation for operation (float64), so that a pair exactly at a threshold falls on
    the same side as in tidecv; torchvision's ``box_iou`` goes through xyxy corners and can differ in the
    last bit. ``crowd``: the intersection over the first box's area (COCO's rule for crowd boxes).
    """
    x, y, w, h = (v[..., :, None] for v in np.moveaxis(boxes, -1, 0))
    gx, gy, gw, gh = (v[..., None, :] for v in np.moveaxis(others, -1, 0))
    inter_w = np.minimum(x + w, gx + gw) - np.maximum(x, gx)
    inter_h = np.minimum(y + h, gy + gh) - np.maximum(y, gy)
    overlap = (inter_w > 0) & (inter_h > 0)
    inter = np.where(overlap, inter_w * inter_h, 0.0)
    union = w * h if crowd else w * h + gw * gh - inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=overlap)


def _within(groups: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal values of the sorted ``groups`` ``[N]``."""
    starts = np.ones(len(groups), bool)
    starts[1:] = groups[1:] != groups[:-1]
    first = np.flatnonzero(starts)[np.cumsum(starts) - 1]
    return np.arange(len(groups)) - first


def _padded(image: np.ndarray, slot: np.ndarray, shape: tuple[int, int], values: np.ndarray, fill: Any) -> np.ndarray:
    out = np.full(shape + values.shape[1:], fill, dtype=values.dtype)
    out[image, slot] = values
    return out


def _chunks(num_boxes: np.ndarray, num_dets: np.ndarray) -> list[np.ndarray]:
    """Images (indices) in groups of similar box counts whose padded IoU arrays stay near MAX_CHUNK_ELEMENTS."""
    order = np.argsort(num_boxes, kind="stable")
    boxes, dets = np.maximum(num_boxes[order], 1), np.maximum.accumulate(num_dets[order][::-1])[::-1]
    chunks, start = [], 0
    while start < len(order):
        # Padded size of images start..end: (count) x max dets x max boxes, boxes sorted ascending.
        count = np.arange(1, len(order) - start + 1)
        size = count * boxes[start:] * max(int(dets[start]), 1)
        end = start + max(1, int(np.searchsorted(size, MAX_CHUNK_ELEMENTS, side="right")))
        chunks.append(order[start:end])
        start = end
    return chunks


def _classify_chunk(images: np.ndarray, num_images: int, det: dict[str, np.ndarray], gt: dict[str, np.ndarray],
                    foreground: float, background: float) -> dict[str, np.ndarray]:
    """Matching, crowd regions and error types of the kept detections of some images (tidecv's per-image pass).

    ``det`` (kept detections, sorted by image then rank) and ``gt`` (annotations) hold flat arrays; the
    images' detections and boxes are laid out as ``[b, k]`` and ``[b, m]`` with padding.
    """
    local = np.full(num_images, -1)
    local[images] = np.arange(len(images))
    d = np.flatnonzero(local[det["image"]] >= 0) if len(det["image"]) else np.zeros(0, int)
    d_img, d_rank = local[det["image"][d]], det["rank"][d]
    num_k = int(d_rank.max()) + 1 if len(d) else 0
    shape_k = (len(images), num_k)
    boxes_k = _padded(d_img, d_rank, shape_k, det["box"][d], 0.0)
    class_k = _padded(d_img, d_rank, shape_k, det["class"][d], -1)
    out = {"det": det["index"][d], "type": np.full(len(d), BKG), "gt": np.full(len(d), -1),
           "ignored": np.zeros(len(d), bool)}
    matched = np.full(shape_k, -1)

    def laid_out(crowd: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = np.flatnonzero((local[gt["image"]] >= 0) & (gt["crowd"] == crowd))
        g = g[np.argsort(local[gt["image"][g]], kind="stable")]  # by image, file order within
        g_img = local[gt["image"][g]]
        g_slot = _within(g_img)
        shape = (len(images), int(g_slot.max()) + 1 if len(g) else 0)
        return (_padded(g_img, g_slot, shape, gt["box"][g], 0.0), _padded(g_img, g_slot, shape, gt["class"][g], -2),
                _padded(g_img, g_slot, shape, g, -1))

    boxes_m, class_m, index_m = laid_out(crowd=False)
    valid_m = index_m >= 0
    if num_k and valid_m.shape[1]:
        iou = box_iou_xywh(boxes_k, boxes_m) * valid_m[:, None, :]  # [b, k, m]
        same = class_k[:, :, None] == class_m[:, None, :]
        iou_same = iou * same
        available = valid_m.copy()
        rows = np.arange(len(images))
        for rank in range(num_k):  # greedy in score order: rank r of every image at once
            candidates = iou_same[:, rank, :] * available
            best = candidates.argmax(axis=1)
            hit = candidates[rows, best] >= foreground
            matched[hit, rank] = best[hit]
            available[rows[hit], best[hit]] = False
        used = valid_m & ~available
        loc_iou, loc_box = iou_same.max(axis=2), iou_same.argmax(axis=2)
        other = iou * ~same
        cls_iou, cls_box = other.max(axis=2), other.argmax(axis=2)
        used_same = iou_same * used[:, None, :]
        dupe_iou, dupe_box = used_same.max(axis=2), used_same.argmax(axis=2)
        is_loc = (background <= loc_iou) & (loc_iou <= foreground)
        is_cls = ~is_loc & (cls_iou >= foreground)
        is_dupe = ~is_loc & ~is_cls & (dupe_iou >= foreground)
        is_bkg = ~is_loc & ~is_cls & ~is_dupe & (iou.max(axis=2) <= background)
        kind = np.select([matched >= 0, is_loc, is_cls, is_dupe, is_bkg], [TP, LOC, CLS, DUPE, BKG], BOTH)
        kind = np.where(valid_m.any(axis=1)[:, None], kind, BKG)  # no non-crowd box in the image: background
        slot = np.select([matched >= 0, kind == LOC, kind == CLS, kind == DUPE],
                         [matched, loc_box, cls_box, dupe_box], -1)
        target = np.where(slot >= 0, np.take_along_axis(index_m, np.maximum(slot, 0), axis=1), -1)
        out["type"], out["gt"] = kind[d_img, d_rank], target[d_img, d_rank]
    crowd_boxes, crowd_class, _ = laid_out(crowd=True)
    if num_k and crowd_boxes.shape[1]:
        inside = box_iou_xywh(boxes_k, crowd_boxes, crowd=True) > foreground
        in_crowd = (inside & (class_k[:, :, None] == crowd_class[:, None, :])).any(axis=2)
        out["ignored"] = (in_crowd & (matched < 0))[d_img, d_rank]
    return out


def classify(det: dict[str, np.ndarray], gt: dict[str, np.ndarray], num_images: int, foreground: float,
             background: float, max_dets: int) -> dict[str, np.ndarray]:
    """Each detection's and box's TIDE type.

    Args:
        det: K detections: ``image`` (index into the annotation file's images), ``class``, ``score``, ``box``
            ``[K, 4]`` xywh absolute pixels.
        gt: M annotations: ``image``, ``class``, ``crowd``, ``box`` ``[M, 4]``.
        num_images: B. foreground, background: TIDE's IoU thresholds. max_dets: detections kept per image.

    Returns:
        ``det_type`` ``[K]`` (code, NOT_EVALUATED after the image's ``max_dets`` best), ``det_gt`` ``[K]`` (box
        matched, pointed at or duplicated; -1), ``det_ignored`` ``[K]`` (in a crowd box), ``det_fixable``
        ``[K]`` (the Cls/Loc error a box's oracle fix turns into a TP), ``gt_type`` ``[M]`` and ``position``
        ``[K]`` (tidecv's processing order: images in file order, by score within).
    """
    num_dets, num_anns = len(det["score"]), len(gt["class"])
    # tidecv's order: images in file order, each image's detections by score (stable: file order on ties).
    order = np.lexsort((np.arange(num_dets), -det["score"], det["image"]))
    rank = np.empty(num_dets, np.int64)
    rank[order] = _within(det["image"][order])
    position = np.empty(num_dets, np.int64)
    position[order] = np.arange(num_dets)
    kept = order[rank[order] < max_dets]
    flat = {"index": kept, "image": det["image"][kept], "rank": rank[kept], "box": det["box"][kept],
            "class": det["class"][kept]}

    det_type = np.full(num_dets, NOT_EVALUATED, dtype=np.int64)
    det_gt = np.full(num_dets, -1, dtype=np.int64)
    det_ignored = np.zeros(num_dets, bool)
    images = np.unique(flat["image"])
    if len(images):
        num_boxes = np.bincount(gt["image"][~gt["crowd"]], minlength=num_images)[images]
        per_image = np.bincount(flat["image"], minlength=num_images)[images]
        for chunk in _chunks(num_boxes, per_image):
            out = _classify_chunk(images[chunk], num_images, flat, gt, foreground, background)
            det_type[out["det"]], det_gt[out["det"]], det_ignored[out["det"]] = out["type"], out["gt"], out["ignored"]

    # tidecv's BestGTMatch: of the Cls/Loc errors pointing at an unmatched box, the first in its image's order.
    gt_matched = np.zeros(num_anns, bool)
    gt_matched[det_gt[det_type == TP]] = True
    pointing = np.flatnonzero(((det_type == CLS) | (det_type == LOC)) & (det_gt >= 0))
    pointing = pointing[~gt_matched[det_gt[pointing]]]
    pointing = pointing[np.argsort(position[pointing], kind="stable")]
    det_fixable = np.zeros(num_dets, bool)
    covered, first = np.unique(det_gt[pointing], return_index=True)
    det_fixable[pointing[first]] = True
    gt_type = np.full(num_anns, MISS, dtype=np.int64)
    gt_type[covered] = COVERED
    gt_type[gt_matched] = GT_TP
    gt_type[gt["crowd"]] = IGNORE

    return {"det_type": det_type, "det_gt": det_gt, "det_ignored": det_ignored, "det_fixable": det_fixable,
            "gt_type": gt_type, "position": position}
