"""Your own dataset, end to end through the command line: convert YOLO labels, tune, train, eval, errors.

The 128 real train2017 and val2017 images of ../shared/data/coco and their YOLO labels stand in for a
user's dataset. Every step runs through ``fcos_lab.cli.main`` and is checked for outputs that exist and
make sense (not for the AP of a 4-iteration model).
"""

from __future__ import annotations

import json
import math

import pytest

from fcos_lab.analysis.tune import ranges_text
from fcos_lab.cli import main
from fcos_lab.presets import resolve

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

# The CPU demo's light network at a small input (320 px instead of 800), four iterations from scratch.
SMALL = ["model.backbone=resnet18", "model.fpn_channels=64", "model.frozen_stages=0", "model.backbone_norm=bn",
         "input.min_size=320", "input.max_size=512", "input.train_min_size=[320,320]", "train.max_iters=4",
         "train.batch_size=2", "train.warmup_iters=2", "train.log_every=1", "train.num_workers=0",
         "postprocess.score_thresh=0.0"]  # an untrained head still emits detections to evaluate


def _boxes_per_image(coco: dict) -> dict[int, int]:
    counts: dict[int, int] = {}
    for annotation in coco["annotations"]:
        counts[annotation["image_id"]] = counts.get(annotation["image_id"], 0) + 1
    return counts


def test_convert_tune_train_eval_errors(shared_coco, tmp_path, capsys):
    derived = {split: json.loads((shared_coco / "annotations" / name).read_text()) for split, name in (
        ("train2017", "instances_train2017_coco128_bboxonly_DERIVED.json"),
        ("val2017", "instances_val2017_lightly128_bboxonly_DERIVED.json"))}
    names = tmp_path / "coco80.txt"  # COCO's 80 class names in the coco80 order (categories sorted by id)
    categories = sorted(derived["val2017"]["categories"], key=lambda c: c["id"])
    names.write_text("\n".join(c["name"] for c in categories) + "\n")

    # 1. convert: YOLO labels -> COCO JSON with COCO's category ids and the file stems as image ids.
    converted = {}
    for split in ("train2017", "val2017"):
        out = tmp_path / f"{split}.json"
        assert main(["convert", "--from", "yolo", "--images", str(shared_coco / "images" / split), "--labels",
                     str(shared_coco / "labels" / split), "--names", str(names), "--out", str(out),
                     "--category-ids", "coco80", "--image-ids", "stem"]) == 0
        converted[split] = coco = json.loads(out.read_text())
        assert len(coco["images"]) == 128 and len(coco["categories"]) == 80
        # The same images and the same number of boxes per image as the shared derived file.
        assert {i["id"] for i in coco["images"]} == {i["id"] for i in derived[split]["images"]}
        assert _boxes_per_image(coco) == _boxes_per_image(derived[split])
    assert "929 boxes" in capsys.readouterr().out

    # 2. tune on the training file (at the paper's 800 px).
    train_json, val_json = tmp_path / "train2017.json", tmp_path / "val2017.json"
    assert main(["tune", "--ann", str(train_json), "--out", str(tmp_path / "tune")]) == 0
    report = capsys.readouterr().out
    summary = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert (tmp_path / "tune" / "tune.png").stat().st_size > 10_000 and "## P2 level" in report
    assert summary["counts"]["boxes"] == 929 and summary["input_size"]["min_size"] == 800
    recommended = summary["rows"][1]
    assert recommended["setting"] == "recommended" and recommended["levels"] == ["P3", "P4", "P5", "P6", "P7"]
    assert recommended["best_possible_recall"] >= summary["rows"][0]["best_possible_recall"]

    # 3. train: the tuned ranges scaled from 800 to the small 320 px input (as the demo preset divides them).
    scale = 320 / 800
    ranges = tuple((lo * scale, math.inf if hi == "inf" else hi * scale) for lo, hi in recommended["size_ranges"])
    overrides = [*SMALL, f"assign.size_ranges={ranges_text(ranges)}"]
    assert resolve("fcos_r50_fpn_1x", overrides).assign.size_ranges == ranges
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--train-ann", str(train_json), "--train-images",
                 str(shared_coco / "images" / "train2017"), "--no-eval", "--device", "cpu", *overrides]) == 0
    assert "trained 4 iterations" in capsys.readouterr().out
    assert (run / "model_final.pt").is_file()
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in losses if "loss" in row]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)

    # 4. eval on the converted validation file.
    evaluation = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(run), "--ann", str(val_json), "--images",
                 str(shared_coco / "images" / "val2017"), "--out", str(evaluation), "--device", "cpu"]) == 0
    capsys.readouterr()
    detections = json.loads((evaluation / "detections.json").read_text())
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert detections and {d["image_id"] for d in detections} <= {i["id"] for i in converted["val2017"]["images"]}
    assert {d["category_id"] for d in detections} <= {c["id"] for c in converted["val2017"]["categories"]}
    assert 0.0 <= metrics["AP"] <= 1.0 and 0.0 <= metrics["AP50"] <= 1.0

    # 5. errors: TIDE's breakdown of those detections, with the preset and overrides they were made with.
    errors = tmp_path / "errors"
    assert main(["errors", "--detections", str(evaluation / "detections.json"), "--ann", str(val_json), "--out",
                 str(errors), "--preset", "fcos_r50_fpn_1x", *overrides]) == 0
    assert "# TIDE error analysis" in capsys.readouterr().out
    result = json.loads((errors / "errors.json").read_text())
    counts = result["counts"]
    assert counts["tp"] + sum(counts[k] for k in ("cls", "loc", "both", "dupe", "bkg")) > 0
    assert {row["group"] for row in result["breakdowns"]["level"]} <= {"P3", "P4", "P5", "P6", "P7"}
    assert (errors / "report.md").is_file()
