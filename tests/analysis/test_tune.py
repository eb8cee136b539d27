"""``fcos-lab tune`` (fcos_lab.analysis.tune, tune_report): range helpers by hand, a synthetic dataset of tiny
boxes, the real 128-image file through the CLI, and clean errors."""

import json
import math

import numpy as np
import pytest

from fcos_lab.analysis.tune import ranges_text, tune, with_p2, without_p2
from fcos_lab.cli import main
from fcos_lab.config import INF
from fcos_lab.paper import SIZE_RANGES
from fcos_lab.presets import P2_SIZE_RANGES, PRESETS, resolve

TRAIN128 = "annotations/instances_train2017_coco128_bboxonly_DERIVED.json"


def test_range_helpers_by_hand():
    assert with_p2(SIZE_RANGES) == P2_SIZE_RANGES == PRESETS["fcos_r50_fpn_p2_1x"].assign.size_ranges
    assert without_p2(P2_SIZE_RANGES) == SIZE_RANGES
    text = ranges_text(((0.0, 77.0), (77.0, 38.5 * 4), (154.0, INF)))
    assert text == "[[0,77],[77,154],[154,inf]]"
    config = resolve("fcos_r50_fpn_1x", [f"assign.size_ranges={ranges_text(SIZE_RANGES)}"])
    assert config.assign.size_ranges == SIZE_RANGES


def tiny_boxes_file(tmp_path, num_images=6, boxes_per_image=12, side=3.0):
    """COCO JSON of 480 x 640 images holding ``side``-pixel boxes on a jittered grid (no overlaps)."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(num_images):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": 480, "width": 640})
        for k in range(boxes_per_image):
            x, y = 40 + 50 * (k % 10) + rng.uniform(0, 10), 40 + 60 * (k // 10) + rng.uniform(0, 10)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                                "bbox": [round(x, 2), round(y, 2), side, side], "area": side * side, "iscrowd": 0})
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "dot"}]}))
    return path


def test_tiny_boxes_grow_the_input_and_ask_for_p2(tmp_path):
    # 3 px boxes in 480 x 640 images are 5 px at 800 (scale 5/3): step 1 asks for 800 * 8 / 5 = 1280 px, the
    # cap allows 2 x 480 = 960, where the boxes are 6 px: below stride 8, so P2 is the remedy. A 6 px box
    # holds a stride-8 location only in some places ((6/8)^2 ~ 56 % on average), a stride-4 one always.
    result = tune(tiny_boxes_file(tmp_path), resolve("fcos_r50_fpn_1x"))
    advice = result.input_size
    assert (advice.min_size, advice.max_size) == (960, round(1333 * 960 / 800)) and advice.small_boxes_remain
    assert result.overrides[:3] == ("input.min_size=960", "input.max_size=1600", "input.train_min_size=[960,960]")
    rows = {row.name: row.statistics for row in result.rows}
    assert rows["recommended + P2"].best_possible_recall == 100.0
    assert rows["recommended"].best_possible_recall < 90.0
    assert result.p2["helps"] and result.p2["best_possible_recall_gain"] > 10
    assert next(iter(rows)).startswith("preset as is (800 px)")  # the input changed: the preset as is comes first
    config = resolve("fcos_r50_fpn_1x", list(result.overrides))
    assert config.input.min_size == 960 and config.assign.size_ranges == result.recommended_ranges


@pytest.mark.shared_data
def test_cli_on_the_128_train_images(shared_coco, tmp_path, capsys):
    out = tmp_path / "tune"
    assert main(["tune", "--ann", str(shared_coco / TRAIN128), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "| paper | all images | P3-P7 | 0, 64, 128, 256, 512, inf |" in report
    assert "assign.size_ranges=[[0," in report and "P2" in report
    assert {p.name for p in out.iterdir()} == {"tune.json", "report.md", "tune.html", "tune.png", "box_sizes.html",
                                                "plotly.min.js"}
    assert (out / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "tune.json").read_text())
    assert summary["counts"] == {"images": 128, "images_with_boxes": 126, "boxes": 929, "sample_images": 126,
                                 "sample_boxes": 929}
    assert summary["input_size"]["min_size"] == 800  # COCO images and boxes: the paper's size
    paper, recommended = summary["rows"][0], summary["rows"][1]
    assert paper["best_possible_recall"] == pytest.approx(100 * 926 / 929)  # 3 of 929 boxes missed
    assert recommended["ambiguous"] <= paper["ambiguous"]
    assert recommended["best_possible_recall"] >= paper["best_possible_recall"]
    # The override string drops into a config and gives the recommended ranges.
    override = next(o for o in summary["overrides"] if o.startswith("assign.size_ranges="))
    ranges = resolve("fcos_r50_fpn_1x", [override]).assign.size_ranges
    assert [list(r) for r in ranges] == [[lo, math.inf if hi == "inf" else hi] for lo, hi in recommended["size_ranges"]]

    # Six levels: the strides come with the ranges.
    assert main(["tune", "--ann", str(shared_coco / TRAIN128), "--levels", "p2", "--json"]) == 0
    p2 = json.loads(capsys.readouterr().out)
    assert p2["levels"] == ["P2", "P3", "P4", "P5", "P6", "P7"]
    assert p2["overrides"][0] == "model.strides=[4,8,16,32,64,128]"
    assert resolve("fcos_r50_fpn_1x", p2["overrides"]).model.strides == (4, 8, 16, 32, 64, 128)
    assert p2["rows"][0]["setting"] == "paper + P2 (0, 32)" and p2["rows"][-1]["levels"][0] == "P3"


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}],
                                 "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    cases = [
        (["--ann", str(tmp_path / "missing.json")], "missing.json"),
        (["--ann", str(empty)], "no usable box"),
        (["--ann", str(empty), "--preset", "retinanet_r50_fpn_1x"], "anchor-based"),
        (["--ann", str(empty), "--max-ambiguity", "120"], "max_ambiguity"),
        (["--ann", str(empty), "--search-images", "0"], "search_images"),
        (["--ann", str(empty), "assign.bogus=1"], "unknown override key"),
    ]
    for argv, expected in cases:
        assert main(["tune", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("fcos-lab tune: error:") and expected in err and "\n" not in err, err
    assert not list(tmp_path.glob("*/tune.json"))
