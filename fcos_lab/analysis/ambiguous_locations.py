"""Ambiguous locations and recallable boxes of real images and real predictions (Sections 3.1, 3.2, 4.1.1).

The FCOS assignment (:func:`fcos_lab.targets.assign`, the code used in training) of each image's
ground truth at the training resize, seen from its boxes and from the locations detections were made
at: which FPN levels give a box positive locations and whether it has any (the "Best Possible
Recalls" criterion of Section 4.1.1), which locations have several candidate boxes (the "Ambiguous
Samples" of Section 3.1 and Table 2), and which box a detection's location regresses in training.

:func:`assignment_attributes` needs no FiftyOne; :mod:`fcos_lab.integrations.fiftyone` stores its
results on FiftyOne objects, and :func:`fcos_lab.analysis.qualitative.detections_from_ambiguous_locations`
counts detections made at ambiguous locations.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from fcos_lab.config import Config
from fcos_lab.data.transforms import resize_boxes, resize_scale
from fcos_lab.points import Locations, feature_shapes, make_locations
from fcos_lab.targets import Assignment, assign, pad_ground_truth

if TYPE_CHECKING:
    from pycocotools.coco import COCO

logger = logging.getLogger("fcos_lab.analysis.ambiguous_locations")

# A prediction's location must lie this close (resized-image pixels) to a location of its level's grid;
# files round locations to 0.01 px of the original image, far below this.
LOCATION_TOLERANCE = 1.0
# Upper bound of B * P * M elements per assign() call, as in fcos_lab.analysis.statistics.
MAX_BATCH_ELEMENTS = 1 << 22

_NO_LOCATION = {"num_candidates": None, "ambiguous": None, "ambiguous_diff_class": None, "target_ann_id": None}


@dataclass(frozen=True)
class _Image:
    """One image's ground truth in the resized frame the assignment sees (Section 4, training resize).

    Attributes:
        image_id: COCO image id.
        size: original ``(H, W)``; resized: ``(h, w)`` after the resize; padded: rounded up to the divisor.
        boxes: ``[M, 4]`` xyxy, resized-image pixels (clipped to the image, degenerate boxes left out).
        labels: ``[M]`` contiguous class indices. crowd: ``[M]`` iscrowd. ann_ids: COCO id of each box.
    """

    image_id: int
    size: tuple[int, int]
    resized: tuple[int, int]
    padded: tuple[int, int]
    boxes: Tensor
    labels: Tensor
    crowd: Tensor
    ann_ids: tuple[int, ...]


def _images(coco: COCO, config: Config, box_attributes: dict[int, dict[str, Any]]) -> list[_Image]:
    """Each image's boxes at the resize of ``config.input``; degenerate boxes go straight to ``box_attributes``.

    Clipping and the degenerate-box rule are those of :class:`fcos_lab.data.coco.CocoDetection`.
    """
    label_of = {category: i for i, category in enumerate(sorted(coco.cats))}
    divisor = config.input.size_divisible
    images = []
    for image_id in sorted(coco.imgs):
        record = coco.imgs[image_id]
        height, width = int(record["height"]), int(record["width"])
        scale = resize_scale(height, width, config.input.min_size, config.input.max_size)
        # torch.nn.functional.interpolate(scale_factor=s, recompute_scale_factor=True) gives floor(size * s).
        resized = (math.floor(height * scale), math.floor(width * scale))
        padded = (-(-resized[0] // divisor) * divisor, -(-resized[1] // divisor) * divisor)
        rows, labels, crowd, ann_ids = [], [], [], []
        for ann in sorted(coco.imgToAnns.get(image_id, []), key=lambda a: a["id"]):
            x, y, w, h = ann["bbox"]
            x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if x2 <= x1 or y2 <= y1:  # no location can fall strictly inside it
                box_attributes[ann["id"]] = _box_attributes((), 0, recallable=False, ambiguous=False, diff=False)
                continue
            rows.append((x1, y1, x2, y2))
            labels.append(label_of[ann["category_id"]])
            crowd.append(bool(ann.get("iscrowd", 0)))
            ann_ids.append(int(ann["id"]))
        boxes = resize_boxes(torch.tensor(rows, dtype=torch.float32).reshape(-1, 4), (height, width), resized)
        images.append(_Image(image_id, (height, width), resized, padded, boxes,
                             torch.tensor(labels, dtype=torch.int64), torch.tensor(crowd, dtype=torch.bool),
                             tuple(ann_ids)))
    return images


def _batches(images: list[_Image], config: Config) -> list[list[_Image]]:
    """Images grouped by padded size, cut so that each ``assign`` call has at most MAX_BATCH_ELEMENTS."""
    groups: dict[tuple[int, int], list[_Image]] = defaultdict(list)
    for image in images:
        groups[image.padded].append(image)
    batches = []
    for padded, members in sorted(groups.items()):
        members.sort(key=lambda image: -len(image.ann_ids))
        num_points = sum(h * w for h, w in feature_shapes(padded, len(config.model.strides)))
        start = 0
        while start < len(members):
            per_image = num_points * max(len(members[start].ann_ids), 1)  # the first has the most boxes
            count = max(1, MAX_BATCH_ELEMENTS // per_image)
            batches.append(members[start : start + count])
            start += count
    return batches


def _box_attributes(levels: Sequence[int], count: int, *, recallable: bool | None, ambiguous: bool,
                    diff: bool) -> dict[str, Any]:
    return {"levels": list(levels), "num_positive_locations": int(count), "recallable": recallable,
            "ambiguous": bool(ambiguous), "ambiguous_diff_class": bool(diff)}


def _ambiguity(result: Assignment, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ambiguous locations and the boxes that take part in them (Section 3.1, Table 2).

    Args:
        result: an assignment of B images with M boxes; labels: ``[B, M]`` class of each box.

    Returns:
        ``[B, P]`` the location's candidate boxes (more than one) have at least two classes; ``[B, M]`` the
        box is a candidate of an ambiguous location; ``[B, M]`` of one whose candidates differ in class.
    """
    ambiguous = result.num_candidates > 1
    diff_class = torch.zeros_like(ambiguous)
    box_ambiguous = torch.zeros(labels.shape, dtype=torch.int64)
    box_diff = torch.zeros(labels.shape, dtype=torch.int64)
    image_index, point_index = ambiguous.nonzero(as_tuple=True)  # only these K locations matter: [K, M] below
    if len(image_index):
        candidates = result.candidates[image_index, point_index]
        box_labels = labels[image_index]
        lowest = torch.where(candidates, box_labels, torch.iinfo(torch.int64).max).amin(dim=1)
        highest = torch.where(candidates, box_labels, -1).amax(dim=1)
        different = lowest != highest
        diff_class[image_index, point_index] = different
        box_ambiguous.index_put_((image_index,), candidates.long(), accumulate=True)
        box_diff.index_put_((image_index[different],), candidates[different].long(), accumulate=True)
    return diff_class, box_ambiguous > 0, box_diff > 0


def _grid_index(locations: Locations, level: Tensor, xy: Tensor) -> tuple[Tensor, Tensor]:
    """Index into P of the grid location nearest to ``xy`` ``[K, 2]`` on level ``level`` ``[K]`` (0 = first).

    The grid's origin and spacing are read from ``locations`` (so the half-stride offset and
    torchvision's spacing quirk are handled where they are defined, in :mod:`fcos_lab.points`).
    Returns the index ``[K]`` and whether the location is on the grid within LOCATION_TOLERANCE ``[K]``.
    """
    points = locations.points
    starts, origins, steps, shapes = [], [], [], []
    start = 0
    for (height, width), count in zip(locations.shapes, locations.num_per_level):
        stride = float(locations.strides[start])
        origin = points[start]
        step_x = float(points[start + 1, 0] - origin[0]) if width > 1 else stride
        step_y = float(points[start + width, 1] - origin[1]) if height > 1 else stride
        starts.append(start)
        origins.append(origin)
        steps.append((step_x, step_y))
        shapes.append((height, width))
        start += count
    starts_t = torch.tensor(starts)[level]
    heights, widths = torch.tensor(shapes)[level].unbind(1)
    origin = torch.stack(origins)[level]  # [K, 2]
    step = torch.tensor(steps)[level]
    cell = torch.round((xy - origin) / step).long()
    col, row = cell[:, 0], cell[:, 1]
    inside = (col >= 0) & (col < widths) & (row >= 0) & (row < heights)
    col = torch.minimum(col.clamp(min=0), widths - 1)
    row = torch.minimum(row.clamp(min=0), heights - 1)
    index = starts_t + row * widths + col
    close = (points[index] - xy).abs().amax(dim=1) <= LOCATION_TOLERANCE
    return index, inside & close


def assignment_attributes(
    coco: COCO, detections: Sequence[dict[str, Any]], config: Config
) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """What the FCOS assignment of each image's ground truth says about its boxes and its predictions.

    Each image is resized as in training (``config.input``: shorter side ``min_size``, longer at most
    ``max_size``; padded to ``size_divisible``) and assigned with ``config.assign`` and
    ``config.model.strides`` by :func:`fcos_lab.targets.assign`, the code used in training. Crowd boxes
    are never assigned; degenerate boxes (no area once clipped) cannot be.

    Args:
        coco: the ground truth (:func:`fcos_lab.data.coco_annotations.load_coco_annotations`).
        detections: COCO result records; ``level`` (3 for P3) and ``location`` (``[x, y]``,
            original-image pixels) place each on its level's grid. Records without them, or whose
            location is not on that grid (predictions made at another input size), get None values.
        config: the configuration the predictions were made with.

    Returns:
        ``(boxes, predictions)``: ``boxes`` maps each annotation id to ``levels`` (sorted level numbers
        with at least one positive location for it), ``num_positive_locations``, ``recallable`` (None for
        crowd boxes), ``ambiguous`` and ``ambiguous_diff_class`` (the box is a candidate of a location with
        several candidates, of several classes); ``predictions`` lists, for each detection in order,
        ``num_candidates``, ``ambiguous``, ``ambiguous_diff_class`` and ``target_ann_id`` (the box of
        minimal area its location regresses, None for background).
    """
    strides = tuple(config.model.strides)
    level_numbers = [int(round(math.log2(s))) for s in strides]  # 3 for P3 (stride 8)
    level_of = {number: i for i, number in enumerate(level_numbers)}
    box_attributes: dict[int, dict[str, Any]] = {}
    prediction_attributes: list[dict[str, Any]] = [dict(_NO_LOCATION) for _ in detections]
    by_image: dict[int, list[int]] = defaultdict(list)
    for index, det in enumerate(detections):
        location = det.get("location")
        if det.get("level") in level_of and isinstance(location, (list, tuple)) and len(location) == 2:
            by_image[det["image_id"]].append(index)
    off_grid = len(detections) - sum(len(v) for v in by_image.values())

    for batch in _batches(_images(coco, config, box_attributes), config):
        padded = batch[0].padded
        locations = make_locations(feature_shapes(padded, len(strides)), strides, offset=config.assign.location_offset,
                                   image_size=padded if config.assign.stride_from_image else None)
        gt = pad_ground_truth([i.boxes for i in batch], [i.labels for i in batch], [i.crowd for i in batch])
        settings = config.assign
        result = assign(locations, gt, settings.size_ranges, size_range_inclusive=settings.size_range_inclusive,
                        center_sampling_radius=settings.center_sampling_radius,
                        area_tiebreak_float32=settings.area_tiebreak_float32)
        num_images, num_points, num_boxes = result.candidates.shape
        num_levels = len(strides)

        # Positive locations per (image, level, box) after the minimal-area rule; column 0 = background.
        key = (torch.arange(num_images)[:, None] * num_levels + locations.level_index[None]) * (num_boxes + 1)
        key = key + result.matched_gt + 1
        positives = torch.bincount(key.reshape(-1), minlength=num_images * num_levels * (num_boxes + 1))
        positives = positives.reshape(num_images, num_levels, num_boxes + 1)[..., 1:]
        diff_class, box_ambiguous, box_diff = _ambiguity(result, gt.labels)
        totals = positives.sum(dim=1).tolist()  # [B][M]
        on_level = (positives > 0).permute(0, 2, 1).tolist()  # [B][M][L]
        box_ambiguous, box_diff = box_ambiguous.tolist(), box_diff.tolist()
        for b, image in enumerate(batch):
            crowd = image.crowd.tolist()
            for m, ann_id in enumerate(image.ann_ids):
                levels = [number for number, hit in zip(level_numbers, on_level[b][m]) if hit]
                box_attributes[ann_id] = _box_attributes(
                    levels, totals[b][m], recallable=None if crowd[m] else totals[b][m] > 0,
                    ambiguous=box_ambiguous[b][m], diff=box_diff[b][m])

        # Each prediction's location, mapped into the resized frame and onto its level's grid.
        rows = [(b, index) for b, image in enumerate(batch) for index in by_image.get(image.image_id, [])]
        if not rows:
            continue
        image_index = torch.tensor([b for b, _ in rows])
        ratio = torch.tensor([[i.resized[1] / i.size[1], i.resized[0] / i.size[0]] for i in batch], dtype=torch.float64)
        xy = torch.tensor([detections[index]["location"] for _, index in rows], dtype=torch.float64)
        xy = (xy * ratio[image_index]).to(torch.float32)
        level = torch.tensor([level_of[detections[index]["level"]] for _, index in rows])
        point, on_grid = _grid_index(locations, level, xy)
        num_candidates = result.num_candidates[image_index, point].tolist()
        target = result.matched_gt[image_index, point].tolist()
        diff = diff_class[image_index, point].tolist()
        on_grid = on_grid.tolist()
        for k, (b, index) in enumerate(rows):
            if not on_grid[k]:
                off_grid += 1
                continue
            prediction_attributes[index] = {
                "num_candidates": num_candidates[k],
                "ambiguous": num_candidates[k] > 1,
                "ambiguous_diff_class": diff[k],
                "target_ann_id": batch[b].ann_ids[target[k]] if target[k] >= 0 else None,
            }
    if off_grid:
        logger.warning(
            "%d of %d detections have no level/location on the %s grid (made with another preset or input "
            "size?); their ambiguity fields are None", off_grid, len(detections), config.name)
    return box_attributes, prediction_attributes
