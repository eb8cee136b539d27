"""YOLO labels to COCO: hand-computed folders first, every bad line through the CLI, then the shared COCO labels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcos_lab.cli import main
from fcos_lab.data.coco import load_image
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.data.yolo import (
    COCO80_CATEGORY_IDS,
    convert_yolo_to_coco,
    image_size,
    parse_yolo_labels,
    read_class_names,
    yolo_to_coco_boxes,
)
from fcos_lab.errors import ConfigError, DataError


def _image(path: Path, width: int, height: int, orientation: int | None = None) -> Path:
    """A (width x height) stored image; with an EXIF orientation tag when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.new("RGB", (width, height), (90, 120, 150)).save(path, exif=exif)
    return path


def _text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """images/{a.jpg, b.png, c.jpg (EXIF 6), d.jpg, sub/e.jpg}, their labels, an orphan, names.txt."""
    root = tmp_path / "tiny"
    _image(root / "images/a.jpg", 200, 100)
    _image(root / "images/b.png", 64, 32)  # no label file: no boxes
    _image(root / "images/c.jpg", 200, 100, orientation=6)  # stored 200x100, displayed 100x200
    _image(root / "images/d.jpg", 50, 40)  # empty label file: no boxes
    _image(root / "images/sub/e.jpg", 80, 60)
    _text(root / "images/notes.txt", "not an image, ignored")
    _text(root / "labels/a.txt", "0 0.5 0.5 0.2 0.4\n\n1 0.25 0.75 0.5 0.5\n")
    _text(root / "labels/c.txt", "1 0.5 0.5 1 1\n")
    _text(root / "labels/d.txt", "")
    _text(root / "labels/sub/e.txt", "0 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.5 0.5\n")  # a duplicate line, kept
    _text(root / "labels/orphan.txt", "0 0.5 0.5 0.1 0.1\n")
    _text(root / "names.txt", "cat\ndog\n\n")
    return root


def test_parse_one_file_by_hand():
    # Line 1: class 2, centre (0.5, 0.25), size 0.2 x 0.5. Line 2 is blank, line 3 "0 ..." in exponent form.
    classes, boxes = parse_yolo_labels("2 0.5 0.25 0.2 0.5\n   \n0 1e-1 0.5 2E-1 1\n", 3)
    assert classes.tolist() == [2, 0] and classes.dtype == np.int64
    np.testing.assert_array_equal(boxes, [[0.5, 0.25, 0.2, 0.5], [0.1, 0.5, 0.2, 1.0]])
    classes, boxes = parse_yolo_labels("\n \n", 3)
    assert classes.shape == (0,) and boxes.shape == (0, 4)


def test_boxes_to_pixels_by_hand():
    # W=200, H=100: cx=0.5 -> 100 px, w=0.2 -> 40 px so x = 100 - 20 = 80; cy=0.5 -> 50, h=0.4 -> 40, y = 30.
    # W=10, H=20: the whole image is [0, 0, 10, 20].
    xywh = yolo_to_coco_boxes(np.array([[0.5, 0.5, 0.2, 0.4], [0.5, 0.5, 1.0, 1.0]]), np.array([200, 10]),
                              np.array([100, 20]))
    np.testing.assert_allclose(xywh, [[80, 30, 40, 40], [0, 0, 10, 20]])


@pytest.mark.parametrize("orientation, expected", [(None, (30, 20)), (1, (30, 20)), (2, (30, 20)), (3, (30, 20)),
                                                   (4, (30, 20)), (5, (20, 30)), (6, (20, 30)), (7, (20, 30)),
                                                   (8, (20, 30))])
def test_image_size_is_the_displayed_size_the_loader_sees(tmp_path, orientation, expected):
    path = _image(tmp_path / "x.jpg", 30, 20, orientation)
    assert image_size(path) == expected
    assert tuple(load_image(path).shape[-1:-3:-1]) == expected  # (W, H) after fcos_lab's EXIF transpose


def test_convert_tiny_folder_by_hand(tiny, tmp_path, capsys):
    out = tmp_path / "out" / "ann.json"
    assert main(["convert", "--from", "yolo", "--images", str(tiny / "images"), "--labels", str(tiny / "labels"),
                 "--names", str(tiny / "names.txt"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    coco = json.loads(out.read_text())
    # Images sorted by relative path, ids 1..N; c.jpg has EXIF orientation 6, so it is 100 wide, 200 high.
    assert coco["images"] == [
        {"id": 1, "file_name": "a.jpg", "width": 200, "height": 100},
        {"id": 2, "file_name": "b.png", "width": 64, "height": 32},
        {"id": 3, "file_name": "c.jpg", "width": 100, "height": 200},
        {"id": 4, "file_name": "d.jpg", "width": 50, "height": 40},
        {"id": 5, "file_name": "sub/e.jpg", "width": 80, "height": 60},
    ]
    assert coco["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    # a.jpg (200x100), "0 0.5 0.5 0.2 0.4": [80, 30, 40, 40], area 1600, category 1 (class 0 + 1).
    # a.jpg, "1 0.25 0.75 0.5 0.5": w = 100, h = 50, x = 50 - 50 = 0, y = 75 - 25 = 50; area 5000.
    # c.jpg (100x200 displayed), "1 0.5 0.5 1 1": the whole image [0, 0, 100, 200].
    # sub/e.jpg (80x60), "0 0.5 0.5 0.5 0.5" twice: w = 40, h = 30, x = 40 - 20 = 20, y = 30 - 15 = 15.
    expected = [(1, 1, [80, 30, 40, 40]), (1, 2, [0, 50, 100, 50]), (3, 2, [0, 0, 100, 200]),
                (5, 1, [20, 15, 40, 30]), (5, 1, [20, 15, 40, 30])]
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3, 4, 5]
    for ann, (image_id, category_id, bbox) in zip(coco["annotations"], expected, strict=True):
        assert (ann["image_id"], ann["category_id"], ann["iscrowd"]) == (image_id, category_id, 0)
        np.testing.assert_allclose(ann["bbox"], bbox, atol=1e-9)
        assert ann["area"] == pytest.approx(bbox[2] * bbox[3])
    index = load_coco_annotations(out)
    assert len(index.imgs) == 5 and len(index.anns) == 5
    assert "5 images, 5 boxes in 2 of 2 classes" in printed
    assert "images without a label file (no boxes): 1 (b.png)" in printed
    assert "empty label files (no boxes): 1 (d.txt)" in printed
    assert "label files without an image (ignored): 1 (orphan.txt)" in printed
    assert "duplicate box lines (kept): 1" in printed
    assert re.search(r"^ +cat +3$", printed, re.MULTILINE) and re.search(r"^ +dog +2$", printed, re.MULTILINE)


def test_converted_file_loads_in_the_dataset_with_matching_sizes(tiny):
    from fcos_lab.data.coco import CocoDetection

    coco, summary = convert_yolo_to_coco(tiny / "images", tiny / "labels", ["cat", "dog"])
    assert summary.boxes_per_class == {"cat": 3, "dog": 2} and summary.orphan_label_files == ["orphan.txt"]
    path = tiny / "ann.json"
    path.write_text(json.dumps(coco))
    dataset = CocoDetection(path, tiny / "images", train=False, min_size=64, max_size=128)
    for index in range(len(dataset)):
        dataset[index]  # raises if a recorded size differs from the loaded (EXIF-oriented) image


def test_image_ids_from_integer_stems(tmp_path):
    _image(tmp_path / "images/000000000042.jpg", 10, 10)
    _image(tmp_path / "images/7.jpg", 10, 10)
    (tmp_path / "labels").mkdir()
    coco, _ = convert_yolo_to_coco(tmp_path / "images", tmp_path / "labels", ["x"], image_ids="stem")
    assert [(i["id"], i["file_name"]) for i in coco["images"]] == [(42, "000000000042.jpg"), (7, "7.jpg")]
    _image(tmp_path / "images/sub/42.jpg", 10, 10)
    with pytest.raises(DataError, match="image id 42 repeats"):
        convert_yolo_to_coco(tmp_path / "images", tmp_path / "labels", ["x"], image_ids="stem")


def test_coco80_category_ids_are_the_derived_files_ids(shared_coco):
    categories = json.loads((shared_coco / "annotations/instances_val2017_lightly128_bboxonly_DERIVED.json")
                            .read_text())["categories"]
    assert list(COCO80_CATEGORY_IDS) == sorted(c["id"] for c in categories)


def test_class_names_from_text_and_yaml(tmp_path):
    assert read_class_names(_text(tmp_path / "names.txt", "person\n bicycle \ncar\n\n")) == ["person", "bicycle", "car"]
    assert read_class_names(_text(tmp_path / "a.yaml", "path: x\nnames:\n  - cat\n  - dog\n")) == ["cat", "dog"]
    assert read_class_names(_text(tmp_path / "b.yml", "nc: 2\nnames: {1: dog, 0: cat}\n")) == ["cat", "dog"]
    for name, text, problem in [
        ("empty.txt", "\n\n", "no class names"),
        ("gap.txt", "cat\n\ndog\n", "line 2: empty class name"),
        ("twice.txt", "cat\ndog\ncat\n", "line 3: class name 'cat' repeats line 1"),
        ("nc.yaml", "nc: 3\nnames: [cat, dog]\n", "nc is 3 but names lists 2"),
        ("keys.yaml", "names: {0: cat, 2: dog}\n", "0..C-1"),
        ("mixed.yaml", "names: {0: cat, x: dog}\n", "0..C-1"),
        ("nonames.yaml", "nc: 2\n", "'names' key"),
        ("bad.yaml", "names: [cat\n", "not valid YAML"),
    ]:
        with pytest.raises(DataError, match=problem):
            read_class_names(_text(tmp_path / name, text))
    with pytest.raises(DataError, match="not found"):
        read_class_names(tmp_path / "missing.txt")


@pytest.mark.parametrize("line, problem", [
    ("0 0.5 0.5 0.2", "expected 5 fields 'class cx cy w h', got 4"),
    ("0 0.5 0.5 0.2 0.2 0.3 0.3", "got 7 (polygon/segment labels are not supported)"),
    ("0 0.5 abc 0.2 0.2", "not a number: 'abc'"),
    ("0 0,5 0.5 0.2 0.2", "not a number: '0,5'"),
    ("0 nan 0.5 0.2 0.2", "not a finite number"),
    ("0 0.5 0.5 inf 0.2", "not a finite number"),
    ("2 0.5 0.5 0.2 0.2", "class '2' is not an integer in 0..1 (2 class names)"),
    ("-1 0.5 0.5 0.2 0.2", "class '-1' is not an integer in 0..1"),
    ("0.5 0.5 0.5 0.2 0.2", "class '0.5' is not an integer"),
    ("0 0.5 0.5 0 0.2", "width and height must be positive, got w=0, h=0.2"),
    ("1 0.5 0.5 0.2 -0.1", "width and height must be positive, got w=0.2, h=-0.1"),
    ("0 1.2 0.5 0.1 0.1", "box x from 1.15 to 1.25 (cx -+ w/2) leaves [0, 1]"),
    ("0 0.5 0.95 0.2 0.2", "box y from 0.85 to 1.05 (cy -+ h/2) leaves [0, 1]"),
    ("0 0.05 0.5 0.2 0.2", "box x from -0.05 to 0.15"),
])
def test_bad_line_is_a_one_line_error_naming_file_and_line(tmp_path, capsys, line, problem):
    # Line 1 is good, line 2 blank, line 3 bad: line numbers count blank lines, as an editor does.
    _image(tmp_path / "images/p.jpg", 20, 20)
    label = _text(tmp_path / "labels/p.txt", f"1 0.5 0.5 0.5 0.5\n\n{line}\n0 0.5 0.5 0.2 0.2\n")
    _text(tmp_path / "names.txt", "cat\ndog\n")
    out = tmp_path / "ann.json"
    argv = ["convert", "--from", "yolo", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
            "--names", str(tmp_path / "names.txt"), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fcos-lab convert: error: {label}, line 3: ") and problem in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".ann.json.*"))  # nothing half-written


def test_edge_tolerance(tmp_path):
    # 6 significant digits overshoot [0, 1] by up to 5e-7 (accepted); 0.05 needs a larger tolerance.
    assert parse_yolo_labels("0 0.9999995 0.5 0.000002 0.1", 1)[0].tolist() == [0]
    with pytest.raises(DataError, match="tolerance 1e-06"):
        parse_yolo_labels("0 0.95 0.5 0.2 0.2", 1)
    assert parse_yolo_labels("0 0.95 0.5 0.2 0.2", 1, tolerance=0.05)[1].shape == (1, 4)
    _image(tmp_path / "images/p.jpg", 20, 20)
    _text(tmp_path / "labels/p.txt", "0 0.95 0.5 0.2 0.2\n")
    _text(tmp_path / "names.txt", "cat\n")
    argv = ["convert", "--from", "yolo", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
            "--names", str(tmp_path / "names.txt"), "--out", str(tmp_path / "ann.json")]
    assert main(argv) == 2
    assert main(argv + ["--tolerance", "0.05"]) == 0
    with pytest.raises(ConfigError, match="tolerance"):
        convert_yolo_to_coco(tmp_path / "images", tmp_path / "labels", ["cat"], tolerance=-1)


def test_folder_level_errors(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    with pytest.raises(DataError, match="image folder not found"):
        convert_yolo_to_coco(images, labels, ["x"])
    images.mkdir()
    with pytest.raises(DataError, match="label folder not found"):
        convert_yolo_to_coco(images, labels, ["x"])
    labels.mkdir()
    with pytest.raises(DataError, match="no images"):
        convert_yolo_to_coco(images, labels, ["x"])
    _image(images / "a.jpg", 10, 10)
    _image(images / "a.png", 10, 10)
    with pytest.raises(DataError, match=r"a.txt: label file of two images, a.jpg and a.png"):
        convert_yolo_to_coco(images, labels, ["x"])
    (images / "a.png").unlink()
    (images / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"b.jpg: cannot read image header"):
        convert_yolo_to_coco(images, labels, ["x"])
    (images / "b.jpg").unlink()
    with pytest.raises(DataError, match="image_ids='stem' needs integer file stems, got 'a'"):
        convert_yolo_to_coco(images, labels, ["x"], image_ids="stem")
    with pytest.raises(DataError, match="'coco80' need the 80 COCO class names, got 1"):
        convert_yolo_to_coco(images, labels, ["x"], category_ids="coco80")
    (labels / "a.txt").write_bytes(b"\xff\xfe0 0.5")
    with pytest.raises(DataError, match="a.txt: cannot read label file"):
        convert_yolo_to_coco(images, labels, ["x"])


def _convert_shared(shared_coco: Path, split: str, derived: dict, tmp_path: Path, capsys) -> tuple[dict, str]:
    """Convert ``split`` of the shared labels with the coco80 ids and names; ``(coco dict, printed summary)``."""
    names = _text(tmp_path / "coco80.txt", "\n".join(c["name"] for c in sorted(derived["categories"],
                                                                               key=lambda c: c["id"])))
    out = tmp_path / "ann.json"
    assert main(["convert", "--from", "yolo", "--images", str(shared_coco / "images" / split),
                 "--labels", str(shared_coco / "labels" / split), "--names", str(names), "--out", str(out),
                 "--category-ids", "coco80", "--image-ids", "stem"]) == 0
    load_coco_annotations(out)
    return json.loads(out.read_text()), capsys.readouterr().out


def _boxes_per_image(coco: dict) -> dict[int, np.ndarray]:
    """``{image id: [M, 5] (category id, x, y, w, h)}`` in annotation-id order."""
    rows: dict[int, list] = {image["id"]: [] for image in coco["images"]}
    for ann in sorted(coco["annotations"], key=lambda a: a["id"]):
        rows[ann["image_id"]].append([ann["category_id"], *ann["bbox"]])
    return {image_id: np.array(r, dtype=np.float64).reshape(-1, 5) for image_id, r in rows.items()}


@pytest.mark.shared_data
@pytest.mark.parametrize("split, reference", [("val2017", "instances_val2017_lightly128_bboxonly_DERIVED.json"),
                                              ("train2017", "instances_train2017_coco128_bboxonly_DERIVED.json")])
def test_shared_coco_labels_reproduce_the_derived_json(shared_coco, tmp_path, capsys, split, reference):
    derived = json.loads((shared_coco / "annotations" / reference).read_text())
    coco, printed = _convert_shared(shared_coco, split, derived, tmp_path, capsys)
    assert {(i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]} == {
        (i["id"], i["file_name"], i["width"], i["height"]) for i in derived["images"]}
    ours, theirs = _boxes_per_image(coco), _boxes_per_image(derived)
    assert {k: len(v) for k, v in ours.items()} == {k: len(v) for k, v in theirs.items()}
    for image_id in ours:
        np.testing.assert_array_equal(ours[image_id][:, 0], theirs[image_id][:, 0])  # coco80 category ids
        # The derived file rounds to 2 decimals (<= 0.005 px); labels carry 6 significant digits.
        np.testing.assert_allclose(ours[image_id][:, 1:], theirs[image_id][:, 1:], rtol=0, atol=0.01)
    assert coco["categories"] == [{"id": c["id"], "name": c["name"]} for c in derived["categories"]]
    if split == "train2017":
        assert len(ours[250]) == len(ours[508]) == 0
        assert "images without a label file (no boxes): 2 (000000000250.jpg, 000000000508.jpg)" in printed
        assert "label files without an image (ignored): 2 (000000000656.txt, 000000000659.txt)" in printed
    assert f"128 images, {len(derived['annotations'])} boxes" in printed


@pytest.mark.shared_data
def test_converted_shared_labels_feed_fcos_lab_stats(shared_coco, tmp_path, capsys):
    derived = json.loads((shared_coco / "annotations/instances_train2017_coco128_bboxonly_DERIVED.json").read_text())
    _convert_shared(shared_coco, "train2017", derived, tmp_path, capsys)
    assert main(["stats", "--ann", str(tmp_path / "ann.json"), "--no-retinanet", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["counts"]["num_images"] == 128 and stats["counts"]["num_boxes"] == len(derived["annotations"])
    assert stats["counts"]["num_images_with_boxes"] == 126
    assert 90.0 < stats["fcos_bpr_fpn"] <= 100.0
