"""Tests of fcos_lab.data.coco on hand-written COCO files in tmp_path."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fcos_lab.data.coco import CocoDetection, collate, load_image
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.data.transforms import normalize
from fcos_lab.errors import DataError


def _save_image(path: Path, width: int, height: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).save(path)


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def _ann(ann_id: int, image_id: int, category_id: int, bbox: list[float], iscrowd: int = 0) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": iscrowd}


@pytest.fixture()
def scene(tmp_path: Path) -> dict[str, Any]:
    """Three 64x48 images; category ids 8, 3, 1 (non-contiguous, unsorted); image 3 has no boxes."""
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for i in (1, 2, 3):
        _save_image(image_dir / f"{i}.png", 64, 48, seed=i)
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 48} for i in (1, 2, 3)],
        "categories": [{"id": 8, "name": "eight"}, {"id": 3, "name": "three"}, {"id": 1, "name": "one"}],
        "annotations": [
            _ann(10, 1, 8, [1, 2, 10, 20]),
            _ann(11, 1, 1, [5, 5, 30, 10]),
            _ann(12, 2, 3, [0, 0, 64, 48], iscrowd=1),
        ],
    }
    return {"dir": image_dir, "data": data, "ann": _write(tmp_path / "instances.json", data), "tmp": tmp_path}


def test_category_ids_map_to_contiguous_labels_and_back(scene: dict) -> None:
    ds = CocoDetection(scene["ann"], scene["dir"], train=False, min_size=48)
    assert ds.category_ids == [1, 3, 8]
    assert ds.class_names == ["one", "three", "eight"]
    assert ds.num_classes == 3
    _, target = ds[0]
    assert target["ann_ids"].tolist() == [10, 11]
    assert target["labels"].tolist() == [2, 0]  # category 8 is the third sorted id, category 1 the first
    assert target["labels"].dtype == torch.int64
    assert ds.label_to_category_id(target["labels"]).tolist() == [8, 1]


def test_crowd_is_passed_on_and_crowd_only_images_leave_training(scene: dict) -> None:
    ds = CocoDetection(scene["ann"], scene["dir"], train=False, min_size=48)
    assert ds.image_ids == [1, 2, 3]
    _, target = ds[1]
    assert target["iscrowd"].tolist() == [True] and target["iscrowd"].dtype == torch.bool
    assert target["boxes"].tolist() == [[0.0, 0.0, 64.0, 48.0]]
    # In training an image whose only box is crowd has no positive, and is dropped like an empty one.
    assert CocoDetection(scene["ann"], scene["dir"], train=True, min_size=48).image_ids == [1]


def test_empty_images_kept_for_eval_dropped_for_train(scene: dict) -> None:
    eval_ds = CocoDetection(scene["ann"], scene["dir"], train=False, min_size=48)
    _, target = eval_ds[2]
    assert target["image_id"] == 3
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert 3 not in CocoDetection(scene["ann"], scene["dir"], train=True, min_size=48).image_ids


def test_image_ids_restricts_and_unknown_ids_fail(scene: dict) -> None:
    ds = CocoDetection(scene["ann"], scene["dir"], train=False, min_size=48, image_ids=[3, 1])
    assert ds.image_ids == [1, 3]
    with pytest.raises(DataError, match="99"):
        CocoDetection(scene["ann"], scene["dir"], train=False, image_ids=[99])


def test_degenerate_boxes_are_clipped_dropped_and_counted(scene: dict, caplog: pytest.LogCaptureFixture) -> None:
    data = scene["data"]
    data["annotations"] += [
        _ann(20, 2, 1, [10, 10, 0, 5]),  # zero width
        _ann(21, 2, 1, [10, 10, 5, -3]),  # negative height: not an error at load time
        _ann(22, 3, 1, [70, 10, 5, 5]),  # entirely right of the 64-pixel-wide image
        _ann(23, 3, 1, [-10, 40, 30, 20]),  # partly outside: clipped to [0, 40, 20, 48], kept
    ]
    ann = _write(scene["tmp"] / "instances_val.json", data)
    load_coco_annotations(ann)  # loads without error
    with caplog.at_level(logging.INFO, logger="fcos_lab.data"):
        ds = CocoDetection(ann, scene["dir"], train=False, min_size=48)
    assert ds.num_degenerate == 3
    messages = [r.getMessage() for r in caplog.records if "degenerate" in r.getMessage()]
    assert messages == ["instances_val.json: dropped 3 degenerate boxes (images 2, 3)"]
    _, target = ds[2]
    assert target["ann_ids"].tolist() == [23]
    assert target["boxes"].tolist() == [[0.0, 40.0, 20.0, 48.0]]


def test_resize_scales_boxes_exactly(tmp_path: Path) -> None:
    # A 100 wide x 200 tall image with min_size 200: the shorter side 100 -> 200, scale 2, so the box
    # [10, 20, 30, 40] (xywh [10, 20, 20, 20]) becomes [20, 40, 60, 80] and the image 400 x 200.
    _save_image(tmp_path / "a.png", 100, 200)
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 200}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [_ann(1, 1, 1, [10, 20, 20, 20])],
    }
    ds = CocoDetection(_write(tmp_path / "a.json", data), tmp_path, train=False, min_size=200, max_size=1333)
    image, target = ds[0]
    assert image.shape == (3, 400, 200)
    assert target["orig_size"] == (200, 100) and target["size"] == (400, 200)
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[20.0, 40.0, 60.0, 80.0]]
    assert target["flipped"] is False


def test_hflip_mirrors_image_and_boxes_exactly(tmp_path: Path) -> None:
    _save_image(tmp_path / "a.png", 100, 50)
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 50}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [_ann(1, 1, 1, [10, 20, 20, 20])],
    }
    ann = _write(tmp_path / "a.json", data)
    flip = CocoDetection(ann, tmp_path, train=True, min_size=50, max_size=1000, flip_prob=1.0)
    image, target = flip[0]
    # Width 100: x1' = 100 - x2 = 70, x2' = 100 - x1 = 90; y unchanged. min_size 50 = the shorter side.
    assert target["flipped"] is True and target["size"] == (50, 100)
    assert target["boxes"].tolist() == [[70.0, 20.0, 90.0, 40.0]]
    expected = normalize(load_image(tmp_path / "a.png")).flip(-1)
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)
    no_flip = CocoDetection(ann, tmp_path, train=True, min_size=50, max_size=1000, flip_prob=0.0)
    assert no_flip[0][1]["flipped"] is False


def _multiscale_dataset(tmp_path: Path, seed: int) -> CocoDetection:
    for i in range(6):
        _save_image(tmp_path / f"{i}.png", 40, 30, seed=i)
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 40, "height": 30} for i in range(6)],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [_ann(i + 1, i, 1, [2, 3, 10, 10]) for i in range(6)],
    }
    return CocoDetection(_write(tmp_path / "a.json", data), tmp_path, train=True, min_size=(16, 24), seed=seed)


def test_multiscale_sampling_in_range_and_reproducible(tmp_path: Path) -> None:
    ds = _multiscale_dataset(tmp_path, seed=3)
    draws = {}
    for epoch in range(4):
        ds.set_epoch(epoch)
        for index in reversed(range(len(ds))):  # access order must not matter
            _, target = ds[index]
            draws[epoch, index] = (target["size"], target["flipped"])
    shorter = {min(size) for size, _ in draws.values()}
    assert shorter <= set(range(16, 25)) and len(shorter) > 3
    assert {flipped for _, flipped in draws.values()} == {True, False}
    again = _multiscale_dataset(tmp_path, seed=3)
    for (epoch, index), draw in draws.items():
        again.set_epoch(epoch)
        _, target = again[index]
        assert (target["size"], target["flipped"]) == draw
    other = _multiscale_dataset(tmp_path, seed=4)
    assert [other[i][1]["size"] for i in range(6)] != [draws[0, i][0] for i in range(6)]
    # Evaluation with a range uses its upper end, as torchvision does.
    eval_ds = CocoDetection(ds.ann_file, tmp_path, train=False, min_size=(16, 24))
    assert eval_ds[0][1]["size"] == (24, 32)


def test_dataloader_workers_do_not_change_items(tmp_path: Path) -> None:
    ds = _multiscale_dataset(tmp_path, seed=0)
    ds.set_epoch(2)
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate)
        batches.append([(batch.tensors, [t["boxes"] for t in targets]) for batch, targets in loader])
    for (images_a, boxes_a), (images_b, boxes_b) in zip(*batches):
        assert torch.equal(images_a, images_b)
        assert all(torch.equal(a, b) for a, b in zip(boxes_a, boxes_b))


def test_collate_pads_to_a_multiple_and_records_sizes(scene: dict) -> None:
    ds = CocoDetection(scene["ann"], scene["dir"], train=False, min_size=48)
    batch, targets = collate([ds[0], ds[2]], size_divisible=32)
    assert batch.tensors.shape == (2, 3, 64, 64)  # 48 x 64 rounded up to 64 x 64
    assert batch.image_sizes == ((48, 64), (48, 64)) and batch.original_sizes == ((48, 64), (48, 64))
    assert [t["image_id"] for t in targets] == [1, 3]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a 60 wide x 40 tall file displays 40 wide x 60 tall
    Image.new("RGB", (60, 40), (200, 10, 10)).save(path, exif=exif)
    assert load_image(path).shape == (3, 60, 40)
    data = {
        "images": [{"id": 1, "file_name": "rotated.jpg", "width": 40, "height": 60}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [_ann(1, 1, 1, [1, 1, 5, 5])],
    }
    ds = CocoDetection(_write(tmp_path / "a.json", data), tmp_path, train=False, min_size=60, max_size=100)
    assert ds[0][1]["orig_size"] == (60, 40)


def _mode_image(mode: str) -> tuple[Image.Image, str, tuple[float, float, float]]:
    """An 8x6 image in ``mode``, the format to save it in, and its expected RGB in [0, 1]."""
    if mode == "I;16":
        return Image.fromarray(np.full((6, 8), 128 * 257, dtype=np.uint16)), "png", (128 / 255,) * 3
    if mode == "I":
        return Image.new("I", (8, 6), 65535), "tiff", (1.0, 1.0, 1.0)
    if mode == "CMYK":
        return Image.new("CMYK", (8, 6), (0, 255, 255, 0)), "tiff", (1.0, 0.0, 0.0)
    if mode == "P":
        image = Image.new("RGB", (8, 6), (0, 0, 255)).convert("P")
        image.info["transparency"] = 3
        return image, "png", (0.0, 0.0, 1.0)
    colour = {"L": 255, "1": 1, "RGBA": (0, 255, 0, 10), "LA": (255, 100)}[mode]
    expected = {"L": (1.0,) * 3, "1": (1.0,) * 3, "RGBA": (0.0, 1.0, 0.0), "LA": (1.0,) * 3}[mode]
    return Image.new(mode, (8, 6), colour), "png", expected


@pytest.mark.parametrize("mode", ["L", "1", "RGBA", "LA", "P", "CMYK", "I;16", "I"])
def test_any_mode_loads_as_rgb(tmp_path: Path, mode: str) -> None:
    image, fmt, expected = _mode_image(mode)
    path = tmp_path / f"image.{fmt}"
    image.save(path)
    loaded = load_image(path)
    assert loaded.shape == (3, 6, 8) and loaded.dtype == torch.float32
    # 16-bit 128 * 257 must become 128/255 (scaled), not 255 (clipped by PIL's convert("RGB")).
    torch.testing.assert_close(loaded[:, 0, 0], torch.tensor(expected), rtol=0, atol=1 / 255)


def _drop(key: str) -> Callable[[dict], None]:
    return lambda d: d.pop(key)


def _set(section: str, index: int, key: str, value: Any) -> Callable[[dict], None]:
    return lambda d: d[section][index].__setitem__(key, value)


def _del(section: str, index: int, key: str) -> Callable[[dict], None]:
    return lambda d: d[section][index].pop(key)


MALFORMED: list[tuple[str, Callable[[dict], None], str]] = [
    ("no images", _drop("images"), "missing key 'images'"),
    ("no categories", _drop("categories"), "missing key 'categories'"),
    ("no annotations", _drop("annotations"), "missing key 'annotations'"),
    ("images not a list", lambda d: d.__setitem__("images", {}), "images: expected a list"),
    ("image not an object", lambda d: d["images"].__setitem__(1, 5), "images[1]: expected an object"),
    ("image without height", _del("images", 1, "height"), "images[1] (id 2): missing key 'height'"),
    ("image without file_name", _del("images", 0, "file_name"), "images[0] (id 1): missing key 'file_name'"),
    ("image id a string", _set("images", 0, "id", "1"), "images[0] (id '1'): id must be an integer"),
    ("zero width", _set("images", 2, "width", 0), "images[2] (id 3): width must be positive"),
    ("negative height", _set("images", 2, "height", -4), "images[2] (id 3): height must be positive"),
    ("width a string", _set("images", 2, "width", "64"), "images[2] (id 3): width must be an integer"),
    ("duplicate image id", _set("images", 1, "id", 1), "images[1] (id 1): duplicate image id 1"),
    ("duplicate annotation id", _set("annotations", 1, "id", 10), "annotations[1] (id 10): duplicate annotation"),
    ("duplicate category id", _set("categories", 2, "id", 8), "categories[2] (id 8): duplicate category id 8"),
    ("category without name", _del("categories", 0, "name"), "categories[0] (id 8): missing key 'name'"),
    ("unknown image", _set("annotations", 2, "image_id", 7), "annotations[2] (id 12): image_id 7 is not in images"),
    ("unknown category", _set("annotations", 0, "category_id", 2), "annotations[0] (id 10): category_id 2 is not"),
    ("annotation without bbox", _del("annotations", 1, "bbox"), "annotations[1] (id 11): missing key 'bbox'"),
    ("bbox NaN", _set("annotations", 1, "bbox", [1, float("nan"), 3, 4]), "annotations[1] (id 11): bbox must be"),
    ("bbox inf", _set("annotations", 1, "bbox", [1, 2, float("inf"), 4]), "annotations[1] (id 11): bbox must be"),
    ("bbox string", _set("annotations", 1, "bbox", [1, 2, "3", 4]), "annotations[1] (id 11): bbox must be"),
    ("bbox of 3", _set("annotations", 1, "bbox", [1, 2, 3]), "annotations[1] (id 11): bbox must be"),
    ("bbox not a list", _set("annotations", 1, "bbox", "1 2 3 4"), "annotations[1] (id 11): bbox must be"),
    ("bbox bool", _set("annotations", 1, "bbox", [1, 2, True, 4]), "annotations[1] (id 11): bbox must be"),
    ("iscrowd 2", _set("annotations", 1, "iscrowd", 2), "annotations[1] (id 11): iscrowd must be 0 or 1"),
]


@pytest.mark.parametrize("name, mutate, expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_annotation_file_names_file_and_record(
    scene: dict, name: str, mutate: Callable[[dict], None], expected: str
) -> None:
    data = copy.deepcopy(scene["data"])
    mutate(data)
    path = _write(scene["tmp"] / "broken_file.json", data)
    with pytest.raises(DataError) as info:
        load_coco_annotations(path)
    assert "broken_file.json" in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "not found"),
        ("", "empty"),
        ("  \n", "empty"),
        ('{"images": [', "not valid JSON"),
        ("[1, 2]", "top level"),
    ],
    ids=["missing", "empty", "whitespace", "truncated JSON", "top-level list"],
)
def test_unreadable_annotation_file(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "broken_file.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=expected) as info:
        load_coco_annotations(path)
    assert "broken_file.json" in str(info.value)


def test_test_set_without_annotations(scene: dict) -> None:
    data = copy.deepcopy(scene["data"])
    del data["annotations"]
    path = _write(scene["tmp"] / "test.json", data)
    coco = load_coco_annotations(path, require_annotations=False)
    assert len(coco.imgs) == 3 and coco.dataset["annotations"] == []
    ds = CocoDetection(path, scene["dir"], train=False, min_size=48, require_annotations=False)
    assert len(ds) == 3 and ds[0][1]["boxes"].shape == (0, 4)


def _break_image(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "corrupt":
        path.write_bytes(b"this is not an image" * 10)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("how", ["missing", "empty", "corrupt", "truncated"])
def test_bad_image_raises_under_error_and_is_skipped_under_skip(
    scene: dict, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad = scene["dir"] / "1.png"
    _save_image(bad, 64, 48)
    _break_image(bad, how)
    ds = CocoDetection(scene["ann"], scene["dir"], train=False, min_size=48)
    with pytest.raises(DataError) as info:
        ds[0]
    assert str(bad) in str(info.value) and "image id 1" in str(info.value)

    skipping = CocoDetection(scene["ann"], scene["dir"], train=False, min_size=48, on_bad_image="skip")
    with caplog.at_level(logging.WARNING, logger="fcos_lab.data"):
        _, target = skipping[0]
        assert target["image_id"] == 2  # the next good image, deterministically
        assert skipping[0][1]["image_id"] == 2
    assert skipping.skipped_images == [1] and skipping.num_skipped == 2
    assert sum("1.png" in r.getMessage() for r in caplog.records) == 1  # warned once


def test_decompression_bomb_is_a_bad_image(scene: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 x 48 = 3072 pixels: over the limit (warning, made an error) and over twice it (PIL's error).
    for limit in (2000, 1000):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(DataError, match="DecompressionBomb"):
            load_image(scene["dir"] / "1.png", image_id=1)


def test_image_size_must_match_its_record(scene: dict) -> None:
    _save_image(scene["dir"] / "2.png", 48, 64)  # transposed with respect to its record
    ds = CocoDetection(scene["ann"], scene["dir"], train=False, min_size=48)
    with pytest.raises(DataError, match="2.png.*48x64.*records 64x48"):
        ds[1]


def test_invalid_arguments(scene: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_bad_image"):
        CocoDetection(scene["ann"], scene["dir"], train=True, on_bad_image="ignore")
    with pytest.raises(ValueError, match="min_size"):
        CocoDetection(scene["ann"], scene["dir"], train=True, min_size=(800, 640))
    with pytest.raises(DataError, match="image folder not found"):
        CocoDetection(scene["ann"], tmp_path / "nowhere", train=True)
