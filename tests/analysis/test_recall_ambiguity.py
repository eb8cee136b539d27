"""Positive locations and ambiguous samples (fcos_lab.analysis.recall_ambiguity): one batch by hand, then a
whole file under an objective and its variants (what the app's Dataset statistics page shows).

Unless a test says otherwise the grid is one 4x4 level of stride 8 with the paper's offset, so the
locations sit at x, y in {4, 12, 20, 28} (floor(8/2) + 8k), flattened row-major: index = 4 * row + col.
Grids in comments are written row by row (y = 4, 12, 20, 28), columns x = 4, 12, 20, 28.
"""

import math
from pathlib import Path

import pytest
import torch

from fcos_lab.analysis.dataset_boxes import load_dataset_boxes
from fcos_lab.analysis.image_assignment import objective_variant
from fcos_lab.analysis.recall_ambiguity import recall_and_ambiguity, tally_assignment
from fcos_lab.analysis.statistics import compute_statistics
from fcos_lab.data.synthetic import SyntheticDataset, make_synthetic_coco
from fcos_lab.objective import Objective
from fcos_lab.points import make_locations
from fcos_lab.presets import resolve
from fcos_lab.targets import assign, pad_ground_truth

INF = math.inf
GRID = make_locations(((4, 4),), (8,))


def _gt(boxes_per_image, labels_per_image):
    boxes = [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes_per_image]
    labels = [torch.tensor(lab, dtype=torch.int64) for lab in labels_per_image]
    return pad_ground_truth(boxes, labels)


def test_two_images_with_same_and_different_class_overlaps():
    # Image 0, one size range (0, inf), so every location strictly inside a box is a candidate:
    #   A = (0, 0, 16, 16) class 0, area 256: x, y in {4, 12}          -> points 0, 1, 4, 5
    #   B = (8, 8, 26, 26) class 0, area 324: x, y in {12, 20}         -> points 5, 6, 9, 10
    #   C = (0, 0, 30, 8)  class 1, area 240: y = 4, x in {4, ..., 28} -> points 0, 1, 2, 3
    # Candidates per location (minimal area regressed: C < A < B):
    #   C+A  C+A  C    C        ambiguous, diff. class at points 0 and 1 (A is class 0, C class 1)
    #   A    A+B  B    .        ambiguous, same class at point 5 (A and B both class 0)
    #   .    B    B    .
    #   .    .    .    .
    # 9 positive locations, 3 ambiguous, 2 of them of different classes. Pairs (location, candidate):
    # 4 + 4 + 4 = 12, of which the ambiguous locations hold 2 + 2 + 2 = 6, the different-class ones 4.
    # Image 1: E = (0, 0, 16, 16) class 2 alone (plus two padding slots): points 0, 1, 4, 5, no ambiguity.
    gt = _gt([[(0, 0, 16, 16), (8, 8, 26, 26), (0, 0, 30, 8)], [(0, 0, 16, 16)]], [[0, 0, 1], [2]])
    tally = tally_assignment(assign(GRID, gt, ((0, INF),)), GRID, gt)

    assert tally.image_index.tolist() == [0] * 9 + [1] * 4
    assert tally.point_index.tolist() == [0, 1, 2, 3, 4, 5, 6, 9, 10] + [0, 1, 4, 5]
    assert tally.matched_gt.tolist() == [2, 2, 2, 2, 0, 0, 1, 1, 1] + [0, 0, 0, 0]
    assert tally.level_index.tolist() == [0] * 13
    assert tally.counts() == {
        "positive_locations": 13,
        "ambiguous_locations": 3,
        "ambiguous_diff_class_locations": 2,
        "positive_pairs": 16,
        "ambiguous_pairs": 6,
        "ambiguous_diff_class_pairs": 4,
    }


def test_fpn_levels_separate_overlapping_boxes():
    # Table 2's point: a big box and a small box inside it, of different classes.
    #   big = (0, 0, 32, 32) class 0, small = (2, 2, 14, 14) class 1.
    # P4 alone (stride 16, locations (8, 8), (24, 8), (8, 24), (24, 24), range (0, inf)): all four are
    # in the big box, and (8, 8) is in the small one too -> 4 positive, 1 ambiguous of different classes,
    # regressing the small box (area 144 < 1024); pairs 5, ambiguous pairs 2.
    gt = _gt([[(0, 0, 32, 32), (2, 2, 14, 14)]], [[0, 1]])
    p4 = make_locations(((2, 2),), (16,))
    tally = tally_assignment(assign(p4, gt, ((0, INF),)), p4, gt)
    assert tally.matched_gt.tolist() == [1, 0, 0, 0]
    assert (tally.positive_locations, tally.ambiguous_locations, tally.ambiguous_diff_class_locations) == (4, 1, 1)
    assert (tally.positive_pairs, tally.ambiguous_pairs, tally.ambiguous_diff_class_pairs) == (5, 2, 2)

    # With two levels, stride 8 in (0, 12) and stride 16 in (12, inf): on stride 8 the big box reaches
    # max(l*, t*, r*, b*) >= 20 (at x = 12: l* = 12, r* = 20), out of range, while the small box's four
    # locations (4, 4), (12, 4), (4, 12), (12, 12) reach 10. On stride 16, the small box reaches 6 at
    # (8, 8), out of range, and the big box 24 at all four. No location is ambiguous any more.
    fpn = make_locations(((4, 4), (2, 2)), (8, 16))
    tally = tally_assignment(assign(fpn, gt, ((0, 12), (12, INF))), fpn, gt)
    assert tally.point_index.tolist() == [0, 1, 4, 5, 16, 17, 18, 19]
    assert tally.matched_gt.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert tally.level_index.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert (tally.positive_locations, tally.ambiguous_locations, tally.ambiguous_diff_class_locations) == (8, 0, 0)
    assert (tally.positive_pairs, tally.ambiguous_pairs, tally.ambiguous_diff_class_pairs) == (8, 0, 0)


def test_no_ground_truth_counts_nothing():
    gt = _gt([[]], [[]])
    tally = tally_assignment(assign(GRID, gt, ((0, INF),)), GRID, gt)
    assert tally.image_index.shape == tally.matched_gt.shape == tally.level_index.shape == (0,)
    assert set(tally.counts().values()) == {0}


# ---------------------------------------------------------------------------------------------- a whole file

CONFIG = resolve("fcos_r50_fpn_1x")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    """The synthetic shapes at the app's size (24 validation images of 320 pixels, overlapping shapes)."""
    return make_synthetic_coco(tmp_path_factory.mktemp("shapes"), num_train=4, num_val=24, image_size=320)


def test_recall_and_ambiguity_match_the_statistics_module(shapes: SyntheticDataset) -> None:
    ann_file = Path(shapes.val_ann)
    data = load_dataset_boxes(ann_file, CONFIG)
    objective = Objective.from_config(CONFIG)
    fpn = recall_and_ambiguity(data.boxes, objective)
    p4 = recall_and_ambiguity(data.boxes, objective.without_fpn())
    reference = compute_statistics(ann_file, CONFIG, include_retinanet=False, include_center_sampling=False)
    assert fpn["best_possible_recall"] == pytest.approx(reference["fcos_bpr_fpn"])
    assert fpn["ambiguous"] == pytest.approx(reference["ambiguous_fpn"])
    assert fpn["ambiguous_diff_class"] == pytest.approx(reference["ambiguous_diff_class_fpn"])
    assert p4["best_possible_recall"] == pytest.approx(reference["fcos_bpr_p4"])
    assert p4["ambiguous"] == pytest.approx(reference["ambiguous_p4"])
    # Multi-level prediction reduces ambiguity (Section 3.2, Table 2).
    assert fpn["ambiguous"] < p4["ambiguous"]
    assert sum(row["positive locations"] for row in fpn["per_level"]) == fpn["positive_locations"]


def test_recall_and_ambiguity_respond_to_ranges_strides_and_radius(shapes: SyntheticDataset) -> None:
    data = load_dataset_boxes(shapes.train_ann, CONFIG, max_images=3)
    assert len(data.boxes.image_ids) == 3 and len(data.widths) == int(data.boxes.valid.sum())
    base = recall_and_ambiguity(data.boxes, objective_variant(CONFIG))
    sampled = recall_and_ambiguity(data.boxes, objective_variant(CONFIG, center_sampling_radius=0.5))
    assert sampled["positive_locations"] < base["positive_locations"]
    # One tiny range on P3 alone: boxes larger than 2 x 4 pixels can no longer be regressed.
    tiny = recall_and_ambiguity(data.boxes, objective_variant(CONFIG, strides=(8,), size_ranges=((0, 4),)))
    assert tiny["best_possible_recall"] < base["best_possible_recall"]
    coarse = recall_and_ambiguity(data.boxes, objective_variant(CONFIG, strides=(16, 32, 64, 128, 256)))
    assert coarse["positive_locations"] < base["positive_locations"]
    assert [row["stride"] for row in coarse["per_level"]] == [16, 32, 64, 128, 256]
