"""Tests of fcos_lab.data.synthetic: determinism, COCO validity and the properties FCOS needs."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcos_lab.data.coco import CocoDetection
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.data.synthetic import CATEGORIES, SyntheticDataset, _shape_mask, make_synthetic_coco
from fcos_lab.errors import DataError

SIZE = 320


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    return make_synthetic_coco(tmp_path_factory.mktemp("synthetic"), num_train=60, num_val=10, seed=0)


def test_same_seed_gives_identical_files(dataset: SyntheticDataset, tmp_path: Path) -> None:
    again = make_synthetic_coco(tmp_path / "again", num_train=60, num_val=10, seed=0)
    assert again.train_ann.read_bytes() == dataset.train_ann.read_bytes()
    assert again.val_ann.read_bytes() == dataset.val_ann.read_bytes()
    for name in ("000001.jpg", "000060.jpg"):
        assert (again.train_images / name).read_bytes() == (dataset.train_images / name).read_bytes()
    other = make_synthetic_coco(tmp_path / "other", num_train=5, num_val=0, seed=1)
    assert (other.train_images / "000001.jpg").read_bytes() != (dataset.train_images / "000001.jpg").read_bytes()


def test_valid_coco_with_non_contiguous_category_ids(dataset: SyntheticDataset) -> None:
    splits = [(dataset.train_ann, dataset.train_images, 60), (dataset.val_ann, dataset.val_images, 10)]
    for ann_file, folder, count in splits:
        coco = load_coco_annotations(ann_file)
        assert len(coco.imgs) == count and len(coco.getAnnIds()) >= count
        assert sorted(coco.cats) == [1, 2, 3, 5, 8]
        assert [coco.cats[c]["name"] for c in sorted(coco.cats)] == list(dataset.class_names)
        for record in coco.imgs.values():
            assert Image.open(folder / record["file_name"]).size == (record["width"], record["height"])
    ds = CocoDetection(dataset.train_ann, dataset.train_images, train=True, min_size=SIZE, max_size=SIZE)
    assert ds.num_degenerate == 0 and len(ds) == 60
    assert ds.category_ids == [1, 2, 3, 5, 8]


def _boxes(ann_file: Path) -> tuple[dict, np.ndarray]:
    data = json.loads(ann_file.read_text())
    return data, np.array([a["bbox"] for a in data["annotations"]], dtype=np.float64)


def test_boxes_inside_image_and_tight(dataset: SyntheticDataset) -> None:
    data, xywh = _boxes(dataset.train_ann)
    assert (xywh[:, :2] >= 0).all() and (xywh[:, 2:] > 0).all()
    assert (xywh[:, 0] + xywh[:, 2] <= SIZE).all() and (xywh[:, 1] + xywh[:, 3] <= SIZE).all()
    assert all(a["iscrowd"] == 0 and 0 < a["area"] <= a["bbox"][2] * a["bbox"][3] for a in data["annotations"])


@pytest.mark.parametrize("name", [name for _, name, _ in CATEGORIES])
def test_every_shape_touches_all_four_sides_of_its_box(name: str) -> None:
    # Boxes are measured on each shape's own mask; the shape must also fill its nominal box, at every
    # size including the 10-pixel minimum, or objects would be smaller than their sampled size.
    for width, height in [(10, 10), (10, 14), (17, 11), (64, 50), (288, 200)]:
        mask = _shape_mask(name, width, height)
        assert mask.getbbox() == (0, 0, width, height), (width, height)


def test_sizes_span_all_fpn_levels(dataset: SyntheticDataset) -> None:
    _, xywh = _boxes(dataset.train_ann)
    longest = xywh[:, 2:].max(axis=1)
    assert longest.min() < 32 and longest.max() > 200
    # The paper's size ranges scaled from 800 to 320 pixels: 0, 25.6, 51.2, 102.4, 204.8, inf on the
    # largest regression target, which for a box is between half and all of its longest side.
    counts, _ = np.histogram(longest / 2, bins=[0, 25.6, 51.2, 102.4, 204.8, np.inf])
    assert (counts[:4] > 0).all(), counts


def test_overlapping_pairs_of_different_classes_exist(dataset: SyntheticDataset) -> None:
    data, _ = _boxes(dataset.train_ann)
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    overlapping = 0
    for anns in by_image.values():
        for a, b in itertools.combinations(anns, 2):
            ax, ay, aw, ah = a["bbox"]
            bx, by, bw, bh = b["bbox"]
            if a["category_id"] != b["category_id"] and min(ax + aw, bx + bw) > max(ax, bx) and min(
                ay + ah, by + bh
            ) > max(ay, by):
                overlapping += 1
    assert overlapping >= 10


def test_reuse_overwrite_and_foreign_folders(dataset: SyntheticDataset, tmp_path: Path) -> None:
    root = tmp_path / "reuse"
    first = make_synthetic_coco(root, num_train=3, num_val=1)
    stamp = first.train_ann.stat().st_mtime_ns
    assert make_synthetic_coco(root, num_train=3, num_val=1).train_ann.stat().st_mtime_ns == stamp
    # Other arguments regenerate; stale images from the earlier run do not survive.
    make_synthetic_coco(root, num_train=2, num_val=1)
    assert sorted(p.name for p in first.train_images.iterdir()) == ["000001.jpg", "000002.jpg"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="notes.txt"):
        make_synthetic_coco(foreign, num_train=1, num_val=1)
    make_synthetic_coco(foreign, num_train=1, num_val=1, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_generation_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    make_synthetic_coco(tmp_path / "timed", num_train=100, num_val=0)
    # 400 images should take well under ~10 s on a 2-core CPU (~1 s per 100 here); 5 s allows a busy box.
    assert time.perf_counter() - start < 5.0
