"""The reference solutions that restate package code are equal to it.

- 2.2-2.6 (inside, size range, center region, minimal area, the whole assignment) against
  :func:`fcos_lab.targets.assign_dense`'s masks on the hand-made, random and real scenes, and 2.6 against the
  training assignment (:meth:`fcos_lab.objective.Objective.assign`, the fast path) on the real ones;
- 6.1 (greedy matching) and 6.2 (error types) against :func:`fcos_lab.analysis.tide.tide_errors`, tidecv's
  definitions, on jittered detections of the real scenes.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from pycocotools.coco import COCO

from fcos_lab.analysis.image_assignment import assign_image
from fcos_lab.analysis.tide import detection_error_types, tide_errors
from fcos_lab.boxes import xyxy_to_xywh
from fcos_lab.objective import Objective
from fcos_lab.targets import assign_dense, pad_ground_truth
from fcos_lab.workshop import solutions
from fcos_lab.workshop.checks_assignment import HAND_SCENES, reference_masks
from fcos_lab.workshop.checks_errors import false_positive_ious
from fcos_lab.workshop.scenes import jittered_copies, random_scenes


def _all_scenes(real_scenes):
    return [*HAND_SCENES, *random_scenes(16), *real_scenes]


def test_assignment_steps_equal_assign_dense(real_scenes):
    for scene in _all_scenes(real_scenes):
        gt = pad_ground_truth([scene.boxes], [scene.labels])
        dense = assign_dense(scene.locations, gt, scene.size_ranges, center_sampling_radius=scene.radius)
        masks = reference_masks(scene)
        assert torch.equal(masks["inside"], dense.inside_box[0]), scene.name
        assert torch.equal(masks["in_range"], dense.in_size_range[0]), scene.name
        assert torch.equal(masks["in_center"], dense.in_center_region[0]), scene.name
        assert torch.equal(masks["candidates"], dense.candidates[0]), scene.name
        assert torch.equal(masks["matched"], dense.matched_gt[0]), scene.name
        assert torch.equal(masks["ltrb"][torch.arange(len(masks["matched"])), masks["matched"].clamp(min=0)][dense.positive[0]],
                           dense.box_targets[0][dense.positive[0]]), scene.name


def test_center_region_on_whole_pixels_is_the_distance_rule(real_scenes):
    """On whole-pixel boxes the authors' region arithmetic and |x - cx| < r s (the exercise's words) agree."""
    for scene in _all_scenes(real_scenes):
        points, boxes, strides = scene.locations.points, scene.boxes, scene.locations.strides
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        reach = 1.5 * strides[:, None]
        distance = ((points[:, None, 0] - cx).abs() < reach) & ((points[:, None, 1] - cy).abs() < reach)
        assert torch.equal(solutions.in_center_region(points, boxes, strides, 1.5), distance), scene.name


def test_the_whole_assignment_equals_training_on_real_images(small_workshop, real_scenes):
    _, config, _ = small_workshop
    objective = Objective.from_config(config)
    for scene in real_scenes:
        image = assign_image(objective, scene.image_size, scene.boxes, scene.labels)
        mine = solutions.assign_locations(scene.locations, scene.boxes, list(scene.size_ranges), scene.radius)
        assert torch.equal(mine, torch.from_numpy(image.matched_gt)), scene.name
        assert image.num_positive > 0


def _one_image_coco(boxes: torch.Tensor, labels: torch.Tensor) -> COCO:
    data = {
        "images": [{"id": 1, "width": 256, "height": 256, "file_name": "x.png"}],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(6)],
        "annotations": [{"id": m + 1, "image_id": 1, "category_id": int(c) + 1, "bbox": xyxy_to_xywh(b).tolist(),
                         "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0}
                        for m, (b, c) in enumerate(zip(boxes.double(), labels))],
    }
    coco = COCO()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.dataset = data
        coco.createIndex()
    return coco


@pytest.mark.parametrize("seed", range(3))
def test_matching_and_error_types_equal_tide(seed, real_scenes):
    generator = torch.Generator().manual_seed(seed)
    for scene in real_scenes:
        det_boxes = jittered_copies(generator, scene.boxes, 3, spread=0.5)
        det_labels = torch.where(torch.rand(len(det_boxes), generator=generator) < 0.3,
                                 torch.randint(0, 6, (len(det_boxes),), generator=generator), scene.labels.repeat(3))
        order = torch.randperm(len(det_boxes), generator=generator)  # rank = score order
        det_boxes, det_labels = det_boxes[order], det_labels[order]
        scores = torch.linspace(1.0, 0.1, len(det_boxes))
        records = [{"image_id": 1, "category_id": int(c) + 1, "bbox": xyxy_to_xywh(b.double()).tolist(), "score": float(s)}
                   for b, c, s in zip(det_boxes, det_labels, scores)]
        errors = tide_errors(_one_image_coco(scene.boxes, scene.labels), records)
        types = detection_error_types(errors)

        matched = torch.full((len(det_boxes),), -1)
        for label in det_labels.unique().tolist():
            dets, gts = (det_labels == label).nonzero().flatten(), (scene.labels == label).nonzero().flatten()
            found = solutions.match_detections(det_boxes[dets], scene.boxes[gts])
            matched[dets] = torch.where(found >= 0, gts[found.clamp(min=0)] if len(gts) else found, -1)
        tide_tp = torch.tensor([t == "tp" for t in types])
        assert torch.equal(matched >= 0, tide_tp), scene.name
        assert torch.equal(matched[tide_tp], torch.from_numpy(errors.det_gt)[tide_tp]), scene.name

        own, other, taken = false_positive_ious(det_boxes, det_labels, scene.boxes, scene.labels)
        assert solutions.error_types(own, other, taken) == [t for t in types if t != "tp"], scene.name
