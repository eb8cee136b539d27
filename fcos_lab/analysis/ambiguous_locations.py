"""Ambiguous locations and recallable boxes of real images and real predictions (Sections 3.1, 3.2, 4.1.1).

The FCOS assignment (:class:`fcos_lab.objective.Objective`, the code used in training) of each image's
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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from fcos_lab.analysis.dataset_boxes import boxes_for_config
from fcos_lab.analysis.recall_ambiguity import batches
from fcos_lab.config import Config
from fcos_lab.objective import Objective
from fcos_lab.points import Locations
from fcos_lab.targets import Assignment, GroundTruth

if TYPE_CHECKING:
    from pycocotools.coco import COCO

logger = logging.getLogger("fcos_lab.analysis.ambiguous_locations")

# A prediction's location must lie this close (resized-image pixels) to a location of its level's grid;
# files round locations to 0.01 px of the original image, far below this.
LOCATION_TOLERANCE = 1.0
# Upper bound of B * P * M elements per assignment call, as in fcos_lab.analysis.statistics.
MAX_BATCH_ELEMENTS = 1 << 22

_NO_LOCATION = {"num_candidates": None, "ambiguous": None, "ambiguous_diff_class": None, "target_ann_id": None}


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


def _locate(detections: Sequence[dict[str, Any]], indices: list[int], locations: Locations, ratio: Tensor,
            level_of: dict[int, int]) -> tuple[Tensor, Tensor]:
    """Index into P and on-grid flag of detections ``indices``, their locations scaled by ``ratio`` (w, h)
    from original-image to resized pixels (``[2]`` or ``[K, 2]``, float64)."""
    xy = torch.tensor([detections[d]["location"] for d in indices], dtype=torch.float64)
    level = torch.tensor([level_of[detections[d]["level"]] for d in indices])
    return _grid_index(locations, level, (xy * ratio).to(torch.float32))


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
    objective = Objective.from_config(config)
    level_numbers = [int(round(math.log2(s))) for s in objective.strides]  # 3 for P3 (stride 8)
    level_of = {number: i for i, number in enumerate(level_numbers)}
    prediction_attributes: list[dict[str, Any]] = [dict(_NO_LOCATION) for _ in detections]
    by_image: dict[int, list[int]] = defaultdict(list)
    for index, det in enumerate(detections):
        location = det.get("location")
        if det.get("level") in level_of and isinstance(location, (list, tuple)) and len(location) == 2:
            by_image[det["image_id"]].append(index)
    off_grid = len(detections) - sum(len(v) for v in by_image.values())

    # Each image's boxes at the training resize, exactly as the data loader makes them; crowd boxes are
    # kept but never assigned; degenerate boxes (no area once clipped) cannot be.
    padded, info = boxes_for_config(coco.dataset, "ground truth", config, crowd="ignore", drop_degenerate=False)
    annotation_ids = info["annotation_ids"]
    box_attributes: dict[int, dict[str, Any]] = {
        int(annotation_ids[a]): _box_attributes((), 0, recallable=False, ambiguous=False, diff=False)
        for a in np.flatnonzero(info["degenerate"])
    }
    row_of_image = {int(image_id): row for row, image_id in enumerate(padded.image_ids)}
    for padded_size, members in batches(padded, objective.strides, max_elements=MAX_BATCH_ELEMENTS):
        index = torch.from_numpy(members)
        num_boxes = int(padded.valid[index].sum(1).max())
        annotation_index = padded.annotation_index[index, :num_boxes]
        gt = GroundTruth(padded.boxes[index, :num_boxes], padded.labels[index, :num_boxes],
                         padded.valid[index, :num_boxes], padded.crowd[index, :num_boxes])
        locations = objective.image_locations(padded_size)
        result = objective.assign(locations, gt)
        num_images, num_points, _ = result.candidates.shape
        num_levels = len(objective.strides)

        # Positive locations per (image, level, box) after the minimal-area rule; column 0 = background.
        key = (torch.arange(num_images)[:, None] * num_levels + locations.level_index[None]) * (num_boxes + 1)
        key = key + result.matched_gt + 1
        positives = torch.bincount(key.reshape(-1), minlength=num_images * num_levels * (num_boxes + 1))
        positives = positives.reshape(num_images, num_levels, num_boxes + 1)[..., 1:]
        diff_class, box_ambiguous, box_diff = _ambiguity(result, gt.labels)
        totals = positives.sum(dim=1).tolist()  # [B][M]
        on_level = (positives > 0).permute(0, 2, 1).tolist()  # [B][M][L]
        box_ambiguous, box_diff, crowd = box_ambiguous.tolist(), box_diff.tolist(), gt.crowd.tolist()
        for b, m in zip(*[t.tolist() for t in gt.valid.nonzero(as_tuple=True)]):
            levels = [number for number, hit in zip(level_numbers, on_level[b][m]) if hit]
            ann_id = int(annotation_ids[int(annotation_index[b, m])])
            box_attributes[ann_id] = _box_attributes(
                levels, totals[b][m], recallable=None if crowd[b][m] else totals[b][m] > 0,
                ambiguous=box_ambiguous[b][m], diff=box_diff[b][m])

        # Each prediction's location, mapped into the resized frame and onto its level's grid.
        image_ids = padded.image_ids[members].tolist()
        rows = [(b, det) for b, image_id in enumerate(image_ids) for det in by_image.pop(image_id, [])]
        if not rows:
            continue
        image_index = torch.tensor([b for b, _ in rows])
        ratio = torch.from_numpy(padded.resized_sizes[members] / padded.sizes[members])[:, [1, 0]]  # (w, h) float64
        point, on_grid = _locate(detections, [det for _, det in rows], locations, ratio[image_index], level_of)
        num_candidates = result.num_candidates[image_index, point].tolist()
        target = result.matched_gt[image_index, point].tolist()
        diff = diff_class[image_index, point].tolist()
        on_grid = on_grid.tolist()
        for k, (b, det) in enumerate(rows):
            if not on_grid[k]:
                off_grid += 1
                continue
            ann = int(annotation_index[b, target[k]]) if target[k] >= 0 else -1
            prediction_attributes[det] = {
                "num_candidates": num_candidates[k],
                "ambiguous": num_candidates[k] > 1,
                "ambiguous_diff_class": diff[k],
                "target_ann_id": int(annotation_ids[ann]) if ann >= 0 else None,
            }
    # Detections on images without any box: their locations, when on the grid, are background, never ambiguous.
    for image_id, indices in by_image.items():
        row = row_of_image.get(image_id)
        if row is None:
            off_grid += len(indices)
            continue
        locations = objective.image_locations(tuple(int(v) for v in padded.padded_sizes[row]))
        ratio = torch.from_numpy(padded.resized_sizes[row] / padded.sizes[row])[[1, 0]]
        _, on_grid = _locate(detections, indices, locations, ratio, level_of)
        for det, placed in zip(indices, on_grid.tolist()):
            if placed:
                prediction_attributes[det] = {"num_candidates": 0, "ambiguous": False,
                                              "ambiguous_diff_class": False, "target_ann_id": None}
            else:
                off_grid += 1
    if off_grid:
        logger.warning(
            "%d of %d detections have no level/location on the %s grid (made with another preset or input "
            "size?); their ambiguity fields are None", off_grid, len(detections), config.name)
    return box_attributes, prediction_attributes
