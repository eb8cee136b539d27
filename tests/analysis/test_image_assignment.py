"""One image's training assignment (fcos_lab.analysis.image_assignment): hand-computed tiny scenes, then every
preset on real COCO images against the training data loader and Objective.assign."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcos_lab.analysis.image_assignment import assign_image, objective_variant, ranges_from_boundaries
from fcos_lab.data.coco import collate
from fcos_lab.data.samples import dataset_sample, open_dataset, resize_sample
from fcos_lab.data.splits import coco_dataset
from fcos_lab.errors import DataError
from fcos_lab.objective import Objective
from fcos_lab.points import feature_shapes, grid_shapes, make_locations
from fcos_lab.presets import PRESETS, resolve
from fcos_lab.targets import assign, ground_truth_of

INF = float("inf")
CONFIG = resolve("fcos_r50_fpn_1x")
PAPER = Objective.from_config(CONFIG)  # P3-P7, strides 8..128, m = 0, 64, 128, 256, 512, inf; no center sampling


def scene(*boxes: list[float], labels: list[int] | None = None, objective: Objective = PAPER, **kwargs):
    """A 64 x 64 input (no padding) with the given xyxy boxes."""
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels_t = torch.tensor(labels if labels is not None else [0] * len(boxes_t), dtype=torch.int64)
    return assign_image(objective, (64, 64), boxes_t, labels_t, **kwargs)


def location_index(assignment, x: float, y: float, level: int = 0) -> int:
    hits = np.flatnonzero((assignment.points[:, 0] == x) & (assignment.points[:, 1] == y) & (assignment.level_index == level))
    assert len(hits) == 1
    return int(hits[0])


def test_objective_variants_and_ranges() -> None:
    assert PAPER.level_names == ("P3", "P4", "P5", "P6", "P7")
    assert PAPER.size_ranges == ((0, 64), (64, 128), (128, 256), (256, 512), (512, INF))
    p4 = objective_variant(CONFIG, fpn=False)
    assert (p4.level_names, p4.strides, p4.size_ranges) == (("P4",), (16,), ((0.0, INF),))
    assert ranges_from_boundaries([64, 128, 256, 512]) == PAPER.size_ranges
    assert objective_variant(CONFIG, strides=(8, 12), size_ranges=((0, 10), (10, 20))).level_names == ("P3", "s12")
    sampled = objective_variant(resolve("fcos_r50_fpn_torchvision"), center_sampling_radius=2.5)
    # Only what is varied changes: torchvision's quirks stay.
    assert sampled.center_sampling_radius == 2.5 and sampled.stride_from_image and sampled.center_sampling_rule == "distance"
    assert not sampled.size_range_inclusive and sampled.location_offset == "zero"
    assert objective_variant(CONFIG) == PAPER
    with pytest.raises(DataError, match="positive and increasing"):
        ranges_from_boundaries([64, 32])
    with pytest.raises(DataError, match="2 strides but 1 size ranges"):
        objective_variant(CONFIG, strides=(8, 16), size_ranges=((0, 64),))
    with pytest.raises(DataError, match="lo < hi"):
        objective_variant(CONFIG, strides=(8,), size_ranges=((64, 64),))
    with pytest.raises(DataError, match=">= 0 strides"):
        objective_variant(CONFIG, center_sampling_radius=-1.0)


def test_one_box_on_p3_with_hand_computed_targets() -> None:
    # Box [0, 0, 32, 32] on a 64 x 64 input. P3 locations sit at 4, 12, 20, 28, ... (floor(8/2) + 8x):
    # 4 x 4 = 16 of them lie strictly inside, with max(l*, t*, r*, b*) <= 28 <= 64, so all are positive
    # on P3. P4 locations (8, 24, ...) inside have max distance 24 < 64: outside P4's range [64, 128].
    a = scene([0, 0, 32, 32])
    assert a.positives_per_box.tolist() == [[16, 0, 0, 0, 0]]
    assert a.box_status == ("regressed",) and len(a.unreachable) == 0
    p = location_index(a, 12, 12)
    # l* = t* = 12, r* = b* = 20; center-ness* = sqrt(12/20 * 12/20) = 0.6 (Eq. 3).
    assert a.ltrb[p].tolist() == [12, 12, 20, 20]
    assert a.centerness[p] == pytest.approx(0.6)
    rows = a.level_rows()
    assert [r["positive locations"] for r in rows] == [16, 0, 0, 0, 0]
    assert rows[0]["grid"] == "8 x 8" and rows[0]["boxes regressed"] == "0" and rows[1]["boxes regressed"] == "-"
    assert rows[4]["size range"] == "[512, inf]"
    box = a.box_rows(["cat"])[0]
    assert box["class"] == "cat" and box["P3"] == 16 and box["max(l*,t*,r*,b*) at center"] == 16.0


def test_ambiguous_locations_regress_the_smaller_box() -> None:
    # A = [0, 0, 32, 32] (area 1024) and B = [8, 8, 24, 24] (area 256): the four P3 locations (12|20, 12|20)
    # are inside both, hence ambiguous, and the minimal-area rule gives them to B.
    a = scene([0, 0, 32, 32], [8, 8, 24, 24], labels=[0, 1])
    ambiguous = np.flatnonzero(a.num_candidates > 1)
    assert sorted(map(tuple, a.points[ambiguous].tolist())) == [(12, 12), (12, 20), (20, 12), (20, 20)]
    assert set(a.matched_gt[ambiguous].tolist()) == {1}
    assert a.positives_per_box[:, 0].tolist() == [12, 4]
    assert a.level_rows()[0]["ambiguous"] == 4 and a.num_ambiguous == 4 and a.num_positive == 16


@pytest.mark.parametrize(
    ("boxes", "objective", "status"),
    [
        # No P3..P7 location lies strictly inside a 2 x 2 box at (1, 1).
        ([[1, 1, 3, 3]], PAPER, "unreachable: no location falls inside it"),
        # A single level whose range stops at 8: inside locations are >= 16 from some side.
        ([[0, 0, 32, 32]], objective_variant(CONFIG, strides=(8,), size_ranges=((0, 8),)),
         "unreachable: outside every level's size range"),
        # Center sampling with 0.25 strides = 2 px around (32, 32): the nearest locations are 4 px away.
        ([[0, 0, 64, 64]], objective_variant(CONFIG, center_sampling_radius=0.25),
         "unreachable: outside the center-sampling region"),
    ],
)
def test_unreachable_boxes_and_why(boxes, objective: Objective, status: str) -> None:
    a = scene(*boxes, objective=objective)
    assert a.box_status[0] == status
    assert a.unreachable.tolist() == [0]


def test_a_box_that_loses_every_location_to_a_smaller_one() -> None:
    # B = [0, 0, 32, 31.9] holds every P3 location of A = [0, 0, 32, 32] (the last row is at y = 28) and is smaller.
    a = scene([0, 0, 32, 32], [0, 0, 32, 31.9])
    assert a.box_status[0] == "unreachable: a smaller box wins every location (minimal area)"
    assert a.positives_per_box[1, 0] == 16


def test_crowd_boxes_are_never_assigned_nor_counted_unreachable() -> None:
    a = scene([0, 0, 32, 32], crowd=torch.tensor([True]))
    assert a.box_status == ("crowd: never assigned",)
    assert (a.matched_gt < 0).all() and len(a.unreachable) == 0


def test_p4_only_and_center_sampling_change_the_positives() -> None:
    box = [0, 0, 48, 48]
    fpn = scene(box)
    p4 = scene(box, objective=objective_variant(CONFIG, fpn=False))
    # Stride-16 locations at 8, 24, 40 inside the box: 3 x 3 positives on the single level.
    assert p4.positives_per_box.tolist() == [[9]]
    assert fpn.positives_per_box[0].sum() == 36  # 6 x 6 P3 locations (4, ..., 44), max distance 44 <= 64
    sampled = scene(box, objective=objective_variant(CONFIG, center_sampling_radius=1.0))
    assert sampled.positives_per_box[0].sum() == 4  # |x - 24| < 8: locations 20 and 28 per axis


def test_padding_extends_the_grid() -> None:
    a = assign_image(PAPER, (50, 70), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert a.padded_size == (64, 96) and a.shapes[0] == (8, 12)
    assert a.boxes.shape == (0, 4) and (a.matched_gt < 0).all() and a.box_status == ()


def test_torchvision_locations_follow_the_padded_size() -> None:
    # fcos_r50_fpn_torchvision: locations at x * spacing (offset zero) with spacing padded_size // grid_size.
    # A 100 x 100 input pads to 128 x 128; P3 is 16 x 16 with spacing 128 // 16 = 8, and P7 (stride 128)
    # is 1 x 1 at (0, 0). Its P5 grid is ceil(128 / 32) = 4 cells of spacing 32: x = 0, 32, 64, 96.
    torchvision = Objective.from_config(resolve("fcos_r50_fpn_torchvision"))
    a = assign_image(torchvision, (100, 100), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert a.padded_size == (128, 128) and a.shapes == ((16, 16), (8, 8), (4, 4), (2, 2), (1, 1))
    assert a.points[a.level_index == 2][:4, 0].tolist() == [0, 32, 64, 96]
    assert a.points[a.level_index == 4].tolist() == [[0, 0]]


# ---------------------------------------------------------------------------------------------- real data

VAL_ANN = ("annotations", "instances_val2017_lightly128_bboxonly_DERIVED.json")
# 29 boxes (427 x 640), portrait 640 x 480, 351 x 640 (the two resize rules give 731 x 1332 and 731 x 1333),
# square 612 x 612.
IMAGE_IDS = (9590, 12576, 6040, 1584)


def training_assignment(config, dataset, image_id: int) -> tuple[torch.Tensor, dict, tuple[int, int]]:
    """What training assigns to one image: the data loader's item, collated as a batch of one, on the
    network's feature-map grids (:func:`fcos_lab.points.grid_shapes`), with the config's objective."""
    batch, targets = collate([dataset[dataset.image_ids.index(image_id)]], config.input.size_divisible)
    padded = tuple(batch.tensors.shape[-2:])
    objective = Objective.from_config(config)
    locations = objective.locations(grid_shapes(padded, objective.strides), padded)  # P3 or P2 first
    return objective.assign(locations, ground_truth_of(targets)).matched_gt[0], targets[0], padded


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_one_image_assignment_is_the_training_assignment(name: str, shared_coco) -> None:
    """For every preset, the app's path (dataset image -> config's frame -> assign_image) gives exactly the
    matched box of every location that training's path (data loader -> Objective.assign) gives."""
    config = resolve(name)
    ann, images = shared_coco.joinpath(*VAL_ANN), shared_coco / "images" / "val2017"
    training = coco_dataset(config, ann, images, train=False)
    pages = open_dataset(ann, images, config)
    objective = Objective.from_config(config)
    for image_id in IMAGE_IDS:
        expected, target, padded = training_assignment(config, training, image_id)
        frame = resize_sample(dataset_sample(pages, image_id), config)
        assert tuple(frame.image.shape[-2:]) == target["size"]
        assert torch.equal(frame.boxes, target["boxes"]) and torch.equal(frame.labels, target["labels"])
        got = assign_image(objective, tuple(frame.image.shape[-2:]), frame.boxes, frame.labels, crowd=frame.crowd,
                           size_divisible=config.input.size_divisible)
        assert got.padded_size == padded
        assert np.array_equal(got.matched_gt, expected.numpy()), f"{name}, image {image_id}"
        assert (expected >= 0).sum() > 0


@pytest.mark.shared_data
def test_the_page_switches_alone_placed_torchvision_locations_elsewhere(shared_coco) -> None:
    """The defect this module fixed: the Assignments page once called targets.assign with the preset's size
    ranges, inclusiveness and offset only. For fcos_r50_fpn_torchvision (image-size spacing on P6/P7,
    torchvision's center-sampling distance, float32 area tie-break) that differs from training."""
    config = resolve("fcos_r50_fpn_torchvision")
    ann, images = shared_coco.joinpath(*VAL_ANN), shared_coco / "images" / "val2017"
    training = coco_dataset(config, ann, images, train=False)
    a = config.assign
    differs = []
    for image_id in IMAGE_IDS:
        expected, target, padded = training_assignment(config, training, image_id)
        shapes = feature_shapes(padded, len(config.model.strides))
        old_locations = make_locations(shapes, config.model.strides, offset=a.location_offset)
        old = assign(old_locations, ground_truth_of([target]), a.size_ranges, size_range_inclusive=a.size_range_inclusive,
                     center_sampling_radius=a.center_sampling_radius)
        differs.append(not torch.equal(old.matched_gt[0], expected))
    assert any(differs), differs
