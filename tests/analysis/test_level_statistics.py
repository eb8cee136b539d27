"""Per-level statistics (fcos_lab.analysis.level_statistics): the box filter and a two-level scene by hand, then
equality with the whole-pyramid recall_and_ambiguity on real boxes under several presets.

The hand scene is one 32 x 32 image with P3 (stride 8: locations at 4, 12, 20, 28) and P4 (stride 16: at 8, 24).
"""

import math

import numpy as np
import pytest
import torch

from fcos_lab.analysis.dataset_boxes import PaddedBoxes, load_dataset_boxes
from fcos_lab.analysis.level_statistics import LevelStatisticsCache, candidate_boxes
from fcos_lab.analysis.recall_ambiguity import recall_and_ambiguity
from fcos_lab.objective import Objective
from fcos_lab.presets import resolve

INF = math.inf
TRAIN128 = "annotations/instances_train2017_coco128_bboxonly_DERIVED.json"


def padded(boxes_per_image, labels_per_image, size=(32, 32)) -> PaddedBoxes:
    """PaddedBoxes of hand-made xyxy boxes; annotation indices number the boxes in order."""
    num_images, max_boxes = len(boxes_per_image), max(len(b) for b in boxes_per_image)
    boxes = torch.zeros(num_images, max_boxes, 4)
    labels = torch.zeros(num_images, max_boxes, dtype=torch.int64)
    index = torch.full((num_images, max_boxes), -1)
    count = 0
    for i, (b, lab) in enumerate(zip(boxes_per_image, labels_per_image)):
        boxes[i, : len(b)] = torch.tensor(b, dtype=torch.float32)
        labels[i, : len(b)] = torch.tensor(lab)
        index[i, : len(b)] = torch.arange(count, count + len(b))
        count += len(b)
    sizes = np.array([size] * num_images)
    return PaddedBoxes(np.arange(num_images), boxes, boxes.clone(), labels, index >= 0,
                       torch.zeros_like(index, dtype=torch.bool), index, sizes, sizes, sizes)


def test_candidate_boxes_by_hand():
    # A 10 x 40 box (longer side L = 40): inside it max(l*, t*, r*, b*) lies in [20, 40). The float32 slack is
    # 40 * 1e-3 + 1e-2 = 0.05 px: kept for ranges meeting [19.95, 40.05].
    boxes = padded([[(0, 0, 10, 40)]], [[0]])
    kept = {r: bool(candidate_boxes(boxes, r)[0, 0]) for r in [(0, 19.9), (0, 20), (40, INF), (40.1, INF), (25, 30)]}
    assert kept == {(0, 19.9): False, (0, 20): True, (40, INF): True, (40.1, INF): False, (25, 30): True}


def test_keep_moves_kept_boxes_to_the_front_in_order():
    boxes = padded([[(0, 0, 4, 4), (0, 0, 8, 8), (0, 0, 2, 2)], [(1, 1, 3, 3)]], [[0, 1, 2], [3]])
    kept = boxes.keep(torch.tensor([[False, True, True], [False, False, False]]))
    assert kept.boxes.shape == (2, 2, 4)
    assert kept.annotation_index.tolist() == [[1, 2], [-1, -1]]
    assert kept.labels[0].tolist() == [1, 2] and kept.valid.tolist() == [[True, True], [False, False]]
    assert torch.equal(kept.boxes[0], torch.tensor([[0.0, 0, 8, 8], [0, 0, 2, 2]]))


def scene():
    # A = (0, 0, 16, 16) class 0, area 256; B = (2, 2, 10, 10) class 1, area 64; C = (0, 0, 32, 7) class 0, area 224.
    return padded([[(0, 0, 16, 16), (2, 2, 10, 10), (0, 0, 32, 7)]], [[0, 1, 0]])


def test_two_levels_by_hand():
    objective = Objective(strides=(8, 16), size_ranges=((0.0, 8.0), (8.0, INF)))
    cache = LevelStatisticsCache(scene(), objective)
    # Ranges P3 [0, 8], P4 [8, inf]:
    #   A: its P3 locations (4|12, 4|12) all reach 12 > 8; P4 (8, 8) reaches l = t = r = b = 8: one P4 location.
    #   B: P3 (4, 4) reaches max(2, 2, 6, 6) = 6: one P3 location; P4 (8, 8) reaches 6 < 8.
    #   C: P3 locations (x, 4) reach >= 20 > 8; no P4 location is strictly inside (y = 8 is not < 7).
    # No location has two candidates: 2 positives, no ambiguity, A and B recalled with one location each.
    p3, p4 = cache.level(8, (0.0, 8.0)), cache.level(16, (8.0, INF))
    assert p3.recalled.tolist() == [False, True, False] and p4.recalled.tolist() == [True, False, False]
    setting = cache.setting((8, 16), ((0.0, 8.0), (8.0, INF)))
    assert setting.recalled_boxes == 2 and setting.best_possible_recall == pytest.approx(200 / 3)
    assert (setting.positive_locations, setting.ambiguous) == (2, 0.0)
    assert (setting.few_locations, setting.poorly_covered) == (2, 3)
    assert setting.level_names == ("P3", "P4")

    # Ranges P3 [0, 32], P4 [32, inf]: every P3 location inside a box is a candidate; P4 gets nothing.
    #   (4, 4):  A, B, C -> B (area 64), ambiguous, B is class 1 and A class 0: different classes
    #   (12, 4): A, C    -> C (224 < 256), ambiguous, both class 0
    #   (20, 4), (28, 4): C;  (4, 12), (12, 12): A
    # 6 positives, 2 ambiguous (1 of different classes); A 2 locations, B 1, C 3: A and B have fewer than 3.
    setting = cache.setting((8, 16), ((0.0, 32.0), (32.0, INF)))
    assert setting.recalled_boxes == 3 and setting.positive_locations == 6
    assert setting.ambiguous == pytest.approx(100 * 2 / 6) and setting.ambiguous_diff_class == pytest.approx(100 / 6)
    assert (setting.few_locations, setting.poorly_covered) == (2, 2)
    assert [row["boxes regressed"] for row in setting.per_level] == [3, 0]
    # The same numbers as the whole-pyramid statistics.
    whole = recall_and_ambiguity(scene(), Objective(strides=(8, 16), size_ranges=((0.0, 32.0), (32.0, INF))))
    assert whole["best_possible_recall"] == setting.best_possible_recall
    assert (whole["positive_locations"], whole["ambiguous_locations"]) == (6, 2)


def test_levels_are_computed_once():
    cache = LevelStatisticsCache(scene(), Objective(strides=(8, 16), size_ranges=((0.0, 8.0), (8.0, INF))))
    first = cache.level(8, (0, 8))
    cache.setting((8, 16), ((0.0, 8.0), (8.0, INF)))
    assert cache.level(8, (0.0, 8.0)) is first


@pytest.mark.shared_data
@pytest.mark.parametrize("preset, overrides", [
    ("fcos_r50_fpn_1x", []),
    ("fcos_r50_fpn_1x", ["data.box_convention=legacy",
                         "assign.size_ranges=[[0,48],[48,160],[160,300],[300,700],[700,inf]]"]),
    ("fcos_imprv_r50_fpn_1x", []),  # center sampling
    ("fcos_r50_fpn_torchvision", []),  # strict ranges, locations from the image size, float32 areas
    ("fcos_r50_fpn_p2_1x", ["input.min_size=512", "input.max_size=853"]),
])
def test_equal_to_the_whole_pyramid_on_real_boxes(shared_coco, preset, overrides):
    config = resolve(preset, overrides)
    boxes = load_dataset_boxes(shared_coco / TRAIN128, config).boxes
    objective = Objective.from_config(config)
    whole = recall_and_ambiguity(boxes, objective)
    levels = LevelStatisticsCache(boxes, objective).setting(objective.strides, objective.size_ranges)
    assert levels.best_possible_recall == whole["best_possible_recall"]
    assert levels.ambiguous == whole["ambiguous"] and levels.ambiguous_diff_class == whole["ambiguous_diff_class"]
    assert (levels.positive_locations, levels.recalled_boxes) == (whole["positive_locations"], whole["recalled_boxes"])
    assert [r["boxes regressed"] for r in levels.per_level] == [r["boxes regressed"] for r in whole["per_level"]]
    assert [r["positive locations"] for r in levels.per_level] == [r["positive locations"] for r in whole["per_level"]]
