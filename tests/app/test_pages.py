"""Every page of the Streamlit app and its main widgets, with streamlit.testing.v1.AppTest (in process)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from fcos_lab import predict, runs
from fcos_lab.analysis.image_assignment import assign_image
from fcos_lab.data import samples
from fcos_lab.objective import Objective
from fcos_lab.presets import resolve
from fcos_lab.viz.detections import detection_rows
from tests.app.conftest import APP_MAIN

OTHER_RUN = "another folder or file ..."  # app/widgets.py's choice of a typed path

pytestmark = pytest.mark.usefixtures("app_data")
PRESET = "fcos_r50_fpn_1x"
DEMO = "fcos_demo_r18"


def open_page(page: str | None) -> AppTest:
    at = AppTest.from_file(str(APP_MAIN), default_timeout=180).run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    assert_ok(at)
    return at


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def run(at: AppTest) -> AppTest:
    at.run()
    assert_ok(at)
    return at


def specs(at: AppTest) -> list[str]:
    return [chart.proto.spec for chart in at.get("plotly_chart")]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error)


def infos(at: AppTest) -> str:
    return "\n".join(i.value for i in at.info)


def computed_with(at: AppTest) -> str:
    """The Assignments page's statement of the settings it computed with."""
    return next(c.value for c in at.main.caption if c.value.startswith("Computed with"))


def title_of(spec: str) -> str:
    return json.loads(spec)["layout"]["title"]["text"]


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels) if mode == "RGB" else Image.new(mode, (width, height))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_home_lists_the_pages_and_the_cache(app_data: Path) -> None:
    at = open_page(None)
    assert at.title[0].value == "FCOS lab"
    text = "\n".join(m.value for m in at.markdown)
    assert str(app_data) in text and "present" in text
    assert len(at.get("page_link")) == 6


def test_assignments_main_widgets() -> None:
    at = open_page("assignments")
    # The default image is the one with the most boxes (8 in the synthetic validation split).
    assert metric(at, "Boxes") == "8" and int(metric(at, "Positive locations")) > 0
    at.selectbox(key="image_id").set_value(3)  # 7 boxes, several overlaps
    run(at)
    assert metric(at, "Boxes") == "7" and int(metric(at, "Ambiguous locations")) > 0
    all_levels = specs(at)[0]
    assert "all levels" in title_of(all_levels)

    at.radio(key="asg_view").set_value("P3")
    run(at)
    assert specs(at)[0] != all_levels and title_of(specs(at)[0]).startswith("P3 (stride 8)")
    positives = int(metric(at, "Positive locations"))

    at.toggle(key="asg_center_sampling").set_value(True)
    run(at)
    sampled = int(metric(at, "Positive locations"))
    assert sampled < positives
    at.slider(key="asg_radius").set_value(3.0)
    run(at)
    assert sampled < int(metric(at, "Positive locations")) <= positives

    table = at.dataframe[0].value
    at.number_input(key="asg_m3").set_value(32.0)
    run(at)
    assert not at.dataframe[0].value.equals(table)
    assert at.dataframe[0].value["size range"].tolist()[:2] == ["[0, 32]", "[32, 128]"]

    at.checkbox(key="asg_negatives").check()
    run(at)
    assert '"name":"negative"' in specs(at)[0]

    at.toggle(key="asg_fpn").set_value(False)
    run(at)
    assert at.dataframe[0].value["level"].tolist() == ["P4"]
    assert at.radio(key="asg_view").value == "all levels"  # P3 went with the FPN: back to the default
    assert "FPN off (P4 only)" in computed_with(at)

    at.number_input(key="asg_min_size").set_value(400)
    run(at)
    assert "400 x 400 input" in at.main.caption[-1].value

    # Another preset sets what it decides (center sampling 1.5, its size), under the same keys.
    at.selectbox(key="preset").set_value("fcos_imprv_r50_fpn_1x")
    run(at)
    assert at.toggle(key="asg_center_sampling").value is True and at.slider(key="asg_radius").value == 1.5
    assert at.number_input(key="asg_min_size").value == 800
    assert "center sampling on, radius 1.5 strides" in computed_with(at)

    # The box filter and the level-by-level view.
    at.radio(key="asg_view").set_value("level by level")
    run(at)
    assert title_of(specs(at)[0]).startswith("Level by level: 7 of 7 boxes")
    at.multiselect(key="asg_boxes").select(at.multiselect(key="asg_boxes").options[0])
    run(at)
    assert title_of(specs(at)[0]).startswith("Level by level: 1 of 7 boxes")


def test_assignments_with_a_p2_level() -> None:
    # The P2 preset: six levels P2-P7 everywhere on the page, the first boundary named m2.
    at = open_page("assignments")
    at.selectbox(key="preset").set_value("fcos_r50_fpn_p2_1x")
    run(at)
    assert at.dataframe[0].value["level"].tolist() == ["P2", "P3", "P4", "P5", "P6", "P7"]
    assert at.number_input(key="asg_m2").label == "m2 (px)"
    assert at.radio(key="asg_view").options[2] == "P2"
    at.radio(key="asg_view").set_value("P2")
    run(at)
    assert title_of(specs(at)[0]).startswith("P2 (stride 4)")


def test_the_assignments_page_assigns_as_training_does(app_data: Path) -> None:
    """With fcos_r50_fpn_torchvision the page's numbers are that preset's training assignment (image-size
    spacing, strict ranges, torchvision's center-sampling distance), on the image as its data loader resizes it."""
    torchvision = "fcos_r50_fpn_torchvision"
    at = open_page("assignments")
    at.selectbox(key="preset").set_value(torchvision)
    run(at)
    image_id = at.selectbox(key="image_id").value
    config = resolve(torchvision)
    dataset = samples.open_dataset(app_data / "synthetic" / "annotations" / "instances_val.json",
                                   app_data / "synthetic" / "val", config)
    frame = samples.resize_sample(samples.dataset_sample(dataset, image_id), config)
    expected = assign_image(Objective.from_config(config), tuple(frame.image.shape[-2:]), frame.boxes, frame.labels,
                            crowd=frame.crowd)
    assert int(metric(at, "Positive locations")) == expected.num_positive > 0
    assert int(metric(at, "Ambiguous locations")) == expected.num_ambiguous
    assert at.dataframe[0].value.to_dict("records") == expected.level_rows()


def test_assignments_from_a_coco_dataset_by_path(coco_tiny: Path, tmp_path: Path) -> None:
    at = open_page("assignments")
    at.radio(key="image_source").set_value("COCO-format dataset")
    run(at)
    assert "annotation file" in infos(at)
    at.text_input(key="coco_ann").set_value(str(coco_tiny / "annotations" / "instances_val.json"))
    at.text_input(key="coco_images").set_value(str(coco_tiny / "val"))
    run(at)
    assert not errors(at) and len(specs(at)) == 1
    assert "256 x 256" not in at.main.caption[-1].value and "800 x 800 input" in at.main.caption[-1].value

    # A corrupt image file in the dataset: a message in the page, not a traceback.
    broken = tmp_path / "broken_images"
    shutil.copytree(coco_tiny / "val", broken)
    first = sorted(broken.iterdir())[0]
    first.write_bytes(first.read_bytes()[:200])
    at.text_input(key="coco_images").set_value(str(broken))
    at.selectbox(key="image_id").set_value(1)
    run(at)
    assert "Cannot read this image" in errors(at) and first.name in errors(at)

    malformed = tmp_path / "malformed.json"
    malformed.write_text('{"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}], '
                         '"categories": [{"id": 1, "name": "x"}], "annotations": [{"id": 1, "image_id": 9, '
                         '"category_id": 1, "bbox": [0, 0, 1, 1]}]}')
    at.text_input(key="coco_ann").set_value(str(malformed))
    run(at)
    assert "Cannot read this dataset" in errors(at) and "image_id 9 is not in images" in errors(at)
    at.text_input(key="coco_ann").set_value(str(tmp_path / "missing.json"))
    run(at)
    assert "annotation file not found" in errors(at)


def test_assignments_from_an_upload_with_typed_boxes() -> None:
    at = open_page("assignments")
    at.radio(key="image_source").set_value("Upload an image")
    run(at)
    assert "Upload an image" in infos(at)
    assert any("typed" in c.value for c in at.sidebar.caption)
    uploader = at.sidebar.get("file_uploader")[0]
    uploader.set_value(("scene.png", png(200, 160), "image/png"))
    at.text_area(key="typed_boxes").set_value("10 10 120 100 cat\n40 30 180 150 dog\n0 0 3 3 cat")
    run(at)
    assert metric(at, "Boxes") == "3" and not errors(at)
    assert at.dataframe[1].value["class"].tolist() == ["cat", "dog", "cat"]

    at.text_area(key="typed_boxes").set_value("10 10 120 cat")
    run(at)
    assert "line 1" in errors(at)

    for name, data, message in [
        ("notes.png", b"this is a text file, not an image", "not an image"),
        ("cut.png", png(200, 160)[:300], "cannot read image"),
        ("huge.png", png(9000, 5000, mode="1"), "megapixels"),
    ]:
        at.sidebar.get("file_uploader")[0].set_value((name, data, "image/png"))
        run(at)
        assert message in errors(at) and name in errors(at)
    # The page keeps working after bad input.
    at.sidebar.get("file_uploader")[0].set_value(("scene.png", png(200, 160), "image/png"))
    at.text_area(key="typed_boxes").set_value("10 10 120 100 cat")
    run(at)
    assert metric(at, "Boxes") == "1" and not errors(at)


def test_centerness_targets_and_predictions(demo_run: Path) -> None:
    at = open_page("centerness")
    charts = specs(at)
    assert len(charts) == 3  # targets per level, Eq. 3 in one box, predictions
    assert "Center-ness targets" in title_of(charts[0])
    assert DEMO in "\n".join(m.value for m in at.markdown)
    assert "ground truth" in charts[0] and "ground truth" in charts[2]  # the boxes on the maps
    at.radio(key="ctr_level").set_value("P4")
    run(at)
    assert specs(at)[2] != charts[2] and "predicted center-ness P4" in specs(at)[2]
    assert "Each cell is one location of P4" in at.main.caption[-2].value
    at.number_input(key="ctr_min_size").set_value(480)  # larger than the checkpoint's 160: finer maps
    run(at)
    assert specs(at)[0] != charts[0] and at.radio(key="ctr_level").value == "P4"

    at.selectbox(key="run").set_value(OTHER_RUN)
    run(at)
    assert len(specs(at)) == 2 and "fcos-lab demo" in infos(at)
    at.text_input(key="checkpoint").set_value(str(demo_run.parent / "nowhere"))
    run(at)
    assert "no such run folder" in errors(at) and "fcos-lab demo" in infos(at)
    at.text_input(key="checkpoint").set_value(str(demo_run / "model_final.pt"))
    at.selectbox(key="checkpoint_preset").set_value(PRESET)
    run(at)
    assert "Cannot use this checkpoint" in errors(at) and f"records preset '{DEMO}'" in errors(at)


def test_detections_sliders_and_bad_checkpoints(demo_run: Path, app_data: Path, tmp_path: Path) -> None:
    at = open_page("detections")
    assert len(specs(at)) == 1 and not errors(at)
    before = title_of(specs(at)[0])
    at.slider(key="score_thresh").set_value(0.0)
    run(at)
    everything = title_of(specs(at)[0])
    assert everything != before and int(everything.split()[0]) > 0
    assert at.dataframe[0].value["level"].str.startswith("P").all()
    at.slider(key="nms_thresh").set_value(0.1)
    run(at)
    # The page shows what the package computes with these sliders (whether NMS 0.1 removes boxes depends
    # on how much the barely trained model's boxes overlap).
    loaded = runs.load_detector(demo_run)
    sample = at.selectbox(key="image_id").value
    dataset = samples.open_dataset(app_data / "synthetic" / "annotations" / "instances_val.json",
                                   app_data / "synthetic" / "val", loaded.config)
    dense = predict.predict_dense(loaded, samples.dataset_sample(dataset, sample).image)
    expected = detection_rows(predict.detections_from(dense, score_thresh=0.0, nms_thresh=0.1), loaded.class_names)
    assert at.dataframe[0].value.to_dict("records") == expected
    at.toggle(key="use_centerness").set_value(False)
    run(at)
    assert (at.dataframe[0].value["center-ness"] == 1.0).all()
    with_gt = specs(at)[0]
    assert '"name":"ground truth (8), dashed white"' in with_gt
    at.toggle(key="show_gt").set_value(False)
    run(at)
    assert "ground truth" not in specs(at)[0]
    at.number_input(key="det_min_size").set_value(192)
    run(at)
    assert "network input 192 x 192" in at.main.caption[-1].value

    at.selectbox(key="checkpoint_preset").set_value(PRESET)
    run(at)
    assert "weights do not fit" in errors(at) and not specs(at)
    at.selectbox(key="checkpoint_preset").set_value("as recorded in the checkpoint")
    at.selectbox(key="run").set_value(OTHER_RUN)
    run(at)
    assert "fcos-lab demo --quick" in infos(at) and not specs(at)  # nothing typed yet
    corrupt = tmp_path / "broken.pt"
    corrupt.write_bytes(b"\x00" * 64)
    at.text_input(key="checkpoint").set_value(str(corrupt))
    run(at)
    assert "refused to load" in errors(at)
    at.text_input(key="checkpoint").set_value(str(tmp_path / "nowhere"))
    run(at)
    assert "no such run folder" in errors(at) and "fcos-lab demo --quick" in infos(at)
    at.text_input(key="checkpoint").set_value("")
    run(at)
    assert "fcos-lab demo --quick" in infos(at) and not specs(at)
    at.text_input(key="checkpoint").set_value(str(demo_run))
    run(at)
    assert len(specs(at)) == 1 and not errors(at)
    files = at.selectbox(key="checkpoint_file")
    assert files.options == ["model_final.pt", "model_0000002.pt"]
    files.set_value(str(demo_run / "model_0000002.pt"))
    run(at)
    assert any("iteration 2," in c.value for c in at.sidebar.caption) and len(specs(at)) == 1


def test_dataset_statistics_recompute_live(coco_tiny: Path, tmp_path: Path) -> None:
    at = open_page("dataset_statistics")
    assert metric(at, "Best possible recall").endswith("%") and len(specs(at)) == 1
    ambiguous = metric(at, "Ambiguous samples")
    at.toggle(key="stats_fpn").set_value(False)
    run(at)
    assert float(metric(at, "Ambiguous samples").rstrip(" %")) > float(ambiguous.rstrip(" %"))
    at.toggle(key="stats_fpn").set_value(True)
    at.toggle(key="stats_cs").set_value(True)
    run(at)
    sampled = at.dataframe[0].value["positive locations"].sum()
    at.slider(key="stats_radius").set_value(3.0)
    run(at)
    assert at.dataframe[0].value["positive locations"].sum() > sampled
    at.text_input(key="stats_strides").set_value("16, 32, 64, 128, 256")
    run(at)
    assert at.dataframe[0].value["stride"].tolist() == [16, 32, 64, 128, 256]
    at.text_input(key="stats_bounds").set_value("32, 64, 128, 256")
    run(at)
    assert at.dataframe[0].value["size range"].tolist()[0] == "[0, 32]"

    at.text_input(key="stats_strides").set_value("8, sixteen")
    run(at)
    assert "strides must be integers separated by commas" in errors(at)
    at.text_input(key="stats_strides").set_value("8, 16, 32")
    run(at)
    assert "3 strides but 5 size ranges" in errors(at)
    at.text_input(key="stats_strides").set_value("8, 16, 32, 64, 128")
    run(at)
    assert not errors(at)

    at.radio(key="stats_source").set_value("COCO-format file")
    run(at)
    assert "annotation file" in infos(at)
    at.text_input(key="stats_ann").set_value(str(coco_tiny / "annotations" / "instances_train.json"))
    run(at)
    assert metric(at, "Boxes / images").endswith("/ 4")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [], "categories": [], "annotations": [{"id": 1}]}')
    at.text_input(key="stats_ann").set_value(str(bad))
    run(at)
    assert "missing key 'image_id'" in errors(at)


def test_runs_curves_tables_and_bad_folders(demo_run: Path, tmp_path: Path) -> None:
    at = open_page("runs")
    assert at.multiselect(key="runs_shown").value == [str(demo_run)]  # the run found, chosen by default
    assert len(specs(at)) == 1 and "Training curves" in title_of(specs(at)[0])
    assert at.dataframe[0].value["preset"].tolist() == [DEMO]

    copy = tmp_path / "copy"
    shutil.copytree(demo_run, copy, ignore=shutil.ignore_patterns("*.pt", "*.safetensors"))
    with open(copy / "metrics.jsonl", "a") as handle:
        handle.write("{truncated\n")
    at.text_area(key="run_dirs").set_value(f"{copy}\n{tmp_path / 'missing'}")
    run(at)
    assert len(specs(at)) == 2 and len(at.dataframe[0].value) == 2
    assert "run folder not found" in errors(at)
    assert any("not JSON" in w.value for w in at.warning)

    at.text_area(key="run_dirs").set_value("")
    at.multiselect(key="runs_shown").set_value([])
    run(at)
    assert "fcos-lab demo --quick" in infos(at)
