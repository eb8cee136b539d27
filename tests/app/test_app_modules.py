"""What the app's pages call, without Streamlit: the app's folder (app/app_data.py), uploads and typed
inputs (app/inputs.py), dataset images (fcos_lab.data.samples), run folders and checkpoints (fcos_lab.runs),
dense predictions (fcos_lab.predict) and their figures; inputs, bad inputs and the time of one interaction."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import app_data
import inputs
import numpy as np
import pytest
import torch
from PIL import Image

from fcos_lab import predict, runs
from fcos_lab.analysis.dataset_boxes import load_dataset_boxes
from fcos_lab.analysis.image_assignment import assign_image
from fcos_lab.data import samples
from fcos_lab.errors import CheckpointError, DataError
from fcos_lab.objective import Objective
from fcos_lab.presets import resolve
from fcos_lab.viz.assignments import assignment_figure
from fcos_lab.viz.detections import detection_rows, detections_figure

PAPER = resolve("fcos_r50_fpn_1x")  # 800 / 1333, the paper's levels and ranges


def png_bytes(width: int = 40, height: int = 30, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color=(200, 30, 30) if mode == "RGB" else 1).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- paths


def test_app_data_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(app_data.APP_DATA_ENV, raising=False)
    assert app_data.app_data_dir() == Path("runs/app")
    monkeypatch.setenv(app_data.APP_DATA_ENV, str(tmp_path))
    assert app_data.app_data_dir() == tmp_path
    assert app_data.default_run_dir() == tmp_path / "demo" / "run"
    assert app_data.demo_command() == f"fcos-lab demo --quick --out {tmp_path / 'demo'}"


# ---------------------------------------------------------------------------------------------- uploads


def test_read_image_bytes_decodes_like_load_image() -> None:
    image = inputs.read_image_bytes(png_bytes(40, 30), "red.png")
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert torch.allclose(image[:, 0, 0], torch.tensor([200, 30, 30]) / 255.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 this is not an image at all", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
    ],
)
def test_read_image_bytes_refuses_non_images(data: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        inputs.read_image_bytes(data, "upload.png")
    assert "upload.png" in str(info.value)


def test_read_image_bytes_refuses_a_truncated_image() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    with pytest.raises(DataError, match="cannot read image") as info:
        inputs.read_image_bytes(truncated, "half.jpg")
    assert "half.jpg" in str(info.value) and "fcos_lab_upload_" not in str(info.value)


def test_read_image_bytes_refuses_a_huge_image_before_decoding() -> None:
    # 8000 x 6000 bilevel pixels compress to a few kilobytes but are 48 megapixels.
    huge = png_bytes(8000, 6000, mode="1")
    assert len(huge) < 200_000
    with pytest.raises(DataError, match="48.0 megapixels"):
        inputs.read_image_bytes(huge, "huge.png")
    with pytest.raises(DataError, match="at most 0 megapixels"):
        inputs.read_image_bytes(png_bytes(), "small.png", max_pixels=100)


# ---------------------------------------------------------------------------------------------- typed boxes


def test_parse_typed_boxes_names_numbers_comments_and_clipping() -> None:
    text = "10 20 50 60 cat\n# a comment\n\n5, 5, 30, 30, dog  # trailing\n0 0 8 8 0\n-10 -5 500 40 dog\n1 1 4 4\n"
    boxes, labels, names = inputs.parse_typed_boxes(text, image_size=(100, 200))
    assert names == ("cat", "dog", "object")
    assert labels.tolist() == [0, 1, 0, 1, 2]  # "0" indexes the first class
    assert boxes.tolist()[3] == [0.0, 0.0, 200.0, 40.0]  # clipped to the 200 x 100 image
    _, labels, names = inputs.parse_typed_boxes("0 0 5 5 square", class_names=("circle", "square"))
    assert labels.tolist() == [1] and names == ("circle", "square")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 2 3", "line 1: expected 'x0 y0 x1 y1 class'"),
        ("0 0 10 10 a\n1 2 three 4 b", "line 2: coordinates must be numbers"),
        ("10 10 5 20 a", "line 1: need x0 < x1"),
        ("0 0 nan 5 a", "line 1: coordinates must be finite"),
        ("300 300 400 400 a", "inside the image"),
    ],
)
def test_parse_typed_boxes_names_the_bad_line(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        inputs.parse_typed_boxes(text, image_size=(100, 200))


def test_parse_numbers() -> None:
    assert inputs.parse_numbers("8, 16 32,64", "strides", integers=True) == [8, 16, 32, 64]
    assert inputs.parse_numbers("64, 128.5", "boundaries") == [64.0, 128.5]
    assert inputs.parse_numbers("", "strides") == []
    with pytest.raises(DataError, match="strides must be integers separated by commas, got '8, 1.5'"):
        inputs.parse_numbers("8, 1.5", "strides", integers=True)


# ---------------------------------------------------------------------------------------------- datasets


def test_dataset_sample_and_resize(coco_tiny: Path) -> None:
    dataset = samples.open_dataset(coco_tiny / "annotations" / "instances_val.json", coco_tiny / "val", PAPER)
    image_id = dataset.image_ids[0]
    sample = samples.dataset_sample(dataset, image_id)
    annotations = dataset.coco.imgToAnns[image_id]
    assert sample.image.shape == (3, 256, 256)
    assert len(sample.boxes) == len(annotations) and sample.class_names == tuple(dataset.class_names)
    x, y, w, h = annotations[0]["bbox"]
    assert sample.boxes[0].tolist() == pytest.approx([x, y, min(x + w, 256), min(y + h, 256)])
    resized = samples.resize_sample(sample, PAPER)
    assert resized.image.shape == (3, 800, 800)
    assert torch.allclose(resized.boxes, sample.boxes * 800 / 256)


def test_open_dataset_reports_malformed_files(tmp_path: Path, coco_tiny: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [{"id": 1}], "categories": [], "annotations": []}')
    with pytest.raises(DataError, match=r"images\[0\].*missing key 'width'"):
        samples.open_dataset(bad, coco_tiny / "val", PAPER)
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_dataset_boxes(bad, PAPER)
    with pytest.raises(DataError, match="annotation JSON"):
        samples.open_dataset(tmp_path, coco_tiny / "val", PAPER)


# ---------------------------------------------------------------------------------------------- runs


def test_read_run_and_find_runs(demo_run: Path, tmp_path: Path, app_data: Path) -> None:
    run = runs.read_run(demo_run)
    assert run.config_name == "fcos_demo_r18"
    assert [p.name for p in run.checkpoints] == ["model_final.pt", "model_0000002.pt"]
    assert any("loss" in row for row in run.rows) and "AP" in run.metrics
    assert demo_run in runs.find_runs(app_data)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.jsonl").write_text('{"iter": 1, "loss": 2.0}\n{oops\n[1, 2]\n')
    run = runs.read_run(broken)
    assert run.rows == [{"iter": 1, "loss": 2.0}]
    assert [p.split(":")[0] for p in run.problems] == ["metrics.jsonl line 2", "metrics.jsonl line 3"]
    with pytest.raises(DataError, match="run folder not found"):
        runs.read_run(tmp_path / "missing")
    with pytest.raises(DataError, match="not a run folder"):
        runs.read_run(tmp_path)


# ---------------------------------------------------------------------------------------------- models


def test_load_detector_and_predictions(demo_run: Path, coco_tiny: Path) -> None:
    loaded = runs.load_detector(demo_run)
    assert loaded.trained_preset == "fcos_demo_r18" and loaded.path.name == "model_final.pt"
    assert loaded.class_names == ("circle", "square", "triangle", "cross", "ring")
    dataset = samples.open_dataset(coco_tiny / "annotations" / "instances_val.json", coco_tiny / "val", loaded.config)
    image = samples.dataset_sample(dataset, dataset.image_ids[0]).image
    dense = predict.predict_dense(loaded, image, 192)
    assert dense.batch.image_sizes == ((192, 192),) and dense.config.input.min_size == 192
    everything = predict.detections_from(dense, score_thresh=0.0, nms_thresh=0.6)
    assert 0 < len(everything.boxes) <= 100
    assert float(everything.boxes.max()) <= 256  # in the original image's pixels
    fewer = predict.detections_from(dense, score_thresh=float(everything.cls_scores.median()), nms_thresh=0.6)
    assert len(fewer.boxes) < len(everything.boxes)
    no_ctr = predict.detections_from(dense, score_thresh=0.0, nms_thresh=0.6, use_centerness=False)
    assert torch.all(no_ctr.centerness == 1)
    rows = detection_rows(everything, loaded.class_names)
    assert rows[0]["class"] in loaded.class_names and rows[0]["level"].startswith("P")
    figure = detections_figure(image, everything, loaded.class_names, gt_boxes=torch.tensor([[1.0, 2, 30, 40]]))
    assert figure.layout.title.text == f"{len(everything.boxes)} detections"
    # Labels of the best 25 at most, fewer where one would cover another (tests/viz/test_image_figures.py).
    assert 0 < len(figure.layout.annotations) <= min(25, len(everything.boxes))
    legend = [t.name for t in figure.data if getattr(t, "legendgroup", None) == "classes"]
    labels = everything.labels.tolist()
    assert legend == [f"{loaded.class_names[c]} ({labels.count(c)})" for c in sorted(set(labels), key=labels.index)]


def test_load_detector_refuses_another_preset_and_corrupt_files(demo_run: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="records preset 'fcos_demo_r18'.*instead of 'fcos_r50_fpn_1x'"):
        runs.load_detector(demo_run / "model_final.pt", "fcos_r50_fpn_1x")
    corrupt = tmp_path / "model_final.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="refused to load"):
        runs.load_detector(corrupt)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        runs.load_detector(empty)


# ---------------------------------------------------------------------------------------------- timing


def test_interactions_on_an_800_pixel_image_take_under_two_seconds(app_data: Path, demo_run: Path) -> None:
    """The computation behind one interaction of each image page, on an 800 x 800 input, model loaded."""
    dataset = samples.open_dataset(app_data / "synthetic" / "annotations" / "instances_val.json",
                                   app_data / "synthetic" / "val", PAPER)
    sample = samples.dataset_sample(dataset, 3)
    frame = samples.resize_sample(sample, PAPER)
    assert frame.image.shape[-2:] == (800, 800)
    loaded = runs.load_detector(demo_run)
    dense = predict.predict_dense(loaded, sample.image, 800)  # once per image: cached by the app
    timings = {}
    start = time.perf_counter()
    objective = Objective.from_config(resolve("fcos_imprv_r50_fpn_1x"))  # center sampling 1.5
    assignment = assign_image(objective, (800, 800), frame.boxes, frame.labels)
    assignment_figure(frame.image, assignment, None, sample.class_names).to_json()
    timings["assignments"] = time.perf_counter() - start
    start = time.perf_counter()
    detections = predict.detections_from(dense, score_thresh=0.05, nms_thresh=0.6)
    detections_figure(sample.image, detections, loaded.class_names, gt_boxes=sample.boxes).to_json()
    timings["detections"] = time.perf_counter() - start
    print("interaction seconds on an 800-pixel image:", json.dumps({k: round(v, 3) for k, v in timings.items()}))
    assert max(timings.values()) < 2.0, timings


# ---------------------------------------------------------------------------------------------- runs the app offers


def test_the_app_finds_the_readme_demo_and_every_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     demo_run: Path) -> None:
    """`fcos-lab demo` writes runs/demo/run and `fcos-lab import-weights` a folder with model_final.pt and
    config.json: both are offered, newest first, with the app's own runs, each once."""
    runs_root = tmp_path / "runs"
    demo = runs_root / "demo" / "run"
    shutil.copytree(demo_run, demo)
    imported = runs_root / "torchvision_fcos"
    imported.mkdir()
    shutil.copy(demo_run / "model_final.pt", imported / "model_final.pt")
    shutil.copy(demo_run / "config.json", imported / "config.json")
    (runs_root / "notes").mkdir()  # not a run
    monkeypatch.setenv(app_data.RUNS_ENV, str(runs_root))
    monkeypatch.setenv(app_data.APP_DATA_ENV, str(demo_run.parent.parent))
    os.utime(imported / "model_final.pt")  # the newest
    found = app_data.find_app_runs()
    assert found[0] == imported and set(found) == {imported, demo, demo_run}
    monkeypatch.setenv(app_data.APP_DATA_ENV, str(runs_root / "app"))  # the default layout: app data inside runs/
    (runs_root / "app").mkdir()
    shutil.copytree(demo_run, runs_root / "app" / "demo" / "run")
    found = app_data.find_app_runs()
    assert len(found) == len({p.resolve() for p in found}) == 3


def test_a_runs_config_gives_its_validation_files(demo_run: Path, tmp_path: Path) -> None:
    config = app_data.run_config(demo_run)
    assert config is not None and config.name == "fcos_demo_r18"
    ann, images = app_data.run_validation_files(config)
    assert ann == str(Path(config.data.synthetic_root) / "annotations" / "instances_val.json") and Path(ann).is_file()
    assert Path(images).is_dir()
    assert app_data.run_config(tmp_path) is None and app_data.run_validation_files(None) == ("", "")
    (tmp_path / "config.json").write_text("{not json")
    assert app_data.run_config(tmp_path) is None


def test_the_classes_a_checkpoint_lacks() -> None:
    import widgets

    coco80 = ["person", "bicycle", "car", "motorcycle"]
    torchvision91 = ["__background__", "person", "bicycle", "car", "motorcycle", "N/A"]
    assert widgets.lacking_classes(coco80, torchvision91) == []  # placeholders are no classes
    assert widgets.lacking_classes(["circle", "person", "N/A"], ["circle"]) == ["person"]
