"""A COCO file's boxes after the training resize, padded per image (fcos_lab.analysis.dataset_boxes)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fcos_lab.analysis.dataset_boxes import load_dataset_boxes, prepare_boxes
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.errors import ConfigError, DataError
from fcos_lab.presets import resolve

# min_size 100, max_size 1000 (the longer side never limits here):
# image 5, landscape 50 x 100 (h x w): scale 100 / 50 = 2, resized 100 x 200, padded to 32: 128 x 224.
# image 2, portrait 200 x 80: scale 100 / 80 = 1.25, resized 250 x 100, padded to 32: 256 x 128.
# Categories 3 and 1 are listed unsorted; by sorted id, category 1 is label 0 and category 3 label 1.
SIZES = {"min_size": 100, "max_size": 1000}
CONFIG = resolve("fcos_r50_fpn_1x", {f"input.{k}": v for k, v in SIZES.items()})
ANNOTATIONS = [
    (5, [10, 5, 20, 10], 3, 0),  # 0: inside the image
    (5, [90, 40, 20, 20], 1, 0),  # 1: leaves the image on the right and at the bottom
    (5, [0, 0, 50, 50], 1, 1),  # 2: crowd
    (2, [100, 10, 5, 5], 3, 0),  # 3: right of the 80-pixel-wide image: zero width once clipped
    (2, [-4, 20, 24, 40], 3, 0),  # 4: leaves the image on the left
]


def scene() -> dict:
    images = [{"id": 5, "file_name": "5.jpg", "height": 50, "width": 100},
              {"id": 2, "file_name": "2.jpg", "height": 200, "width": 80}]
    annotations = [{"id": 10 + i, "image_id": image_id, "category_id": category, "bbox": bbox, "iscrowd": crowd}
                   for i, (image_id, bbox, category, crowd) in enumerate(ANNOTATIONS)]
    categories = [{"id": 3, "name": "three"}, {"id": 1, "name": "one"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_scene(path: Path, data: dict | None = None) -> Path:
    path.write_text(json.dumps(scene() if data is None else data))
    return path


def test_continuous_boxes_by_hand(tmp_path):
    ann_file = write_scene(tmp_path / "scene.json")
    gt, info = prepare_boxes(load_coco_annotations(ann_file).dataset, ann_file, box_convention="continuous",
                             crowd="exclude", drop_degenerate=True, **SIZES)
    # Box 0: [10, 5, 30, 15] * 2. Box 1: [90, 40, 110, 60] clipped to [90, 40, 100, 50], * 2.
    # Box 4: [-4, 20, 20, 60] clipped to [0, 20, 20, 60], * 1.25. Rows follow the file's images.
    expected = torch.tensor([[[20.0, 10, 60, 30], [180, 80, 200, 100]],
                             [[0, 25, 25, 75], [0, 0, 0, 0]]])
    assert torch.equal(gt.boxes, expected) and torch.equal(gt.iou_boxes, expected)
    assert gt.image_ids.tolist() == [5, 2]
    assert gt.labels.tolist() == [[1, 0], [1, 0]]
    assert gt.valid.tolist() == [[True, True], [True, False]]
    assert gt.annotation_index.tolist() == [[0, 1], [4, -1]]
    assert gt.padded_sizes.tolist() == [[128, 224], [256, 128]]
    assert {k: info[k] for k in ("num_images", "num_images_with_boxes", "num_annotations", "num_boxes",
                                 "num_crowd", "num_degenerate")} == {
        "num_images": 2, "num_images_with_boxes": 2, "num_annotations": 5, "num_boxes": 3, "num_crowd": 1,
        "num_degenerate": 1}
    assert info["counted"].tolist() == [True, True, False, False, True]
    assert info["crowd"].tolist() == [False, False, True, False, False]
    assert info["degenerate"].tolist() == [False, False, False, True, False]
    assert info["annotation_ids"].tolist() == [10, 11, 12, 13, 14]

    # 100 x 200 and 250 x 100 rounded up to 64.
    coarse, _ = prepare_boxes(scene(), ann_file, box_convention="continuous", crowd="exclude",
                              drop_degenerate=True, size_divisible=64, **SIZES)
    assert coarse.padded_sizes.tolist() == [[128, 256], [256, 128]]


def test_legacy_boxes_by_hand(tmp_path):
    ann_file = tmp_path / "scene.json"
    gt, info = prepare_boxes(scene(), ann_file, box_convention="legacy", crowd="exclude", drop_degenerate=True,
                             **SIZES)
    # x1 = x + w - 1 clipped to W - 1. Box 0: [10, 5, 29, 14] * 2. Box 1: [90, 40, 109, 59] clipped to
    # [90, 40, 99, 49], * 2. Box 3: x0 = 100 and x1 = 104 both clip to 79. Box 4: [-4, 20, 19, 59]
    # clipped to [0, 20, 19, 59], * 1.25. IoU boxes add 1 to x1 and y1 (Detectron's "+1" areas).
    expected = torch.tensor([[[20.0, 10, 58, 28], [180, 80, 198, 98]],
                             [[0, 25, 23.75, 73.75], [0, 0, 0, 0]]])
    assert torch.equal(gt.boxes, expected)
    plus_one = torch.tensor([0.0, 0, 1, 1]) * gt.valid[..., None]
    assert torch.equal(gt.iou_boxes, expected + plus_one)
    assert gt.annotation_index.tolist() == [[0, 1], [4, -1]]
    assert (info["num_boxes"], info["num_crowd"], info["num_degenerate"]) == (3, 1, 1)


def test_crowd_included_and_degenerate_kept_in_the_denominator(tmp_path):
    gt, info = prepare_boxes(scene(), tmp_path / "scene.json", box_convention="continuous", crowd="include",
                             drop_degenerate=False, **SIZES)
    # The crowd box [0, 0, 50, 50] * 2 joins image 5 as its third box; box 3 is counted but never valid.
    assert gt.annotation_index.tolist() == [[0, 1, 2], [4, -1, -1]]
    assert gt.boxes[0, 2].tolist() == [0, 0, 100, 100] and gt.labels[0].tolist() == [1, 0, 0]
    assert info["counted"].tolist() == [True, True, True, True, True] and info["num_boxes"] == 5


def test_load_dataset_boxes_sorts_selects_and_trims(tmp_path):
    ann_file = write_scene(tmp_path / "scene.json")
    data = load_dataset_boxes(ann_file, CONFIG)
    assert data.boxes.image_ids.tolist() == [2, 5]  # by image id, not file order
    assert data.boxes.boxes.tolist() == [[[0, 25, 25, 75], [0, 0, 0, 0]], [[20, 10, 60, 30], [180, 80, 200, 100]]]
    assert data.boxes.padded_sizes.tolist() == [[256, 128], [128, 224]]
    assert data.class_names == ("one", "three")
    assert (data.num_images, data.num_crowd, data.num_degenerate) == (2, 1, 1)
    # The first image alone: M shrinks to its one box; crowd and degenerate counts stay whole-file.
    coarse = resolve(CONFIG, {"input.size_divisible": 64})
    first = load_dataset_boxes(ann_file, coarse, max_images=1)
    assert first.boxes.image_ids.tolist() == [2] and first.boxes.boxes.tolist() == [[[0, 25, 25, 75]]]
    assert first.boxes.valid.tolist() == [[True]] and first.boxes.labels.tolist() == [[1]]
    assert first.boxes.padded_sizes.tolist() == [[256, 128]]
    assert first.widths.tolist() == [25] and first.heights.tolist() == [50]
    assert (first.num_crowd, first.num_degenerate) == (1, 1)


def test_malformed_annotation_names_file_and_record(tmp_path):
    data = scene()
    data["annotations"][1]["bbox"] = [1, 2, 3]
    bad = write_scene(tmp_path / "bad.json", data)
    with pytest.raises(DataError, match=re.escape(f"{bad}: annotations[1]")):
        load_dataset_boxes(bad, CONFIG)
    # Without the loader's validation, prepare_boxes names the record itself.
    data["annotations"][1]["bbox"] = None
    with pytest.raises(DataError, match=re.escape(f"{bad}: annotations[1]")):
        prepare_boxes(data, bad, box_convention="continuous", crowd="exclude", drop_degenerate=True, **SIZES)
    with pytest.raises(ConfigError, match="box_convention"):
        prepare_boxes(scene(), bad, box_convention="xywh", crowd="exclude", drop_degenerate=True, **SIZES)


def test_empty_file(tmp_path):
    data = {"images": [], "annotations": [], "categories": []}
    gt, info = prepare_boxes(data, tmp_path / "empty.json", box_convention="continuous", crowd="exclude",
                             drop_degenerate=True, **SIZES)
    assert gt.boxes.shape == (0, 0, 4) and gt.padded_sizes.shape == (0, 2) and info["num_boxes"] == 0
    assert np.array_equal(gt.image_ids, np.zeros(0, dtype=np.int64))
