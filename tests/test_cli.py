"""The fcos-lab command line: help, errors as one line with exit code 2, the quick demo end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from fcos_lab.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "train", "eval", "predict", "stats", "errors", "presets", "tune"):
        assert command in out


def test_unknown_preset_is_a_clear_error(capsys, tmp_path):
    assert main(["train", "--preset", "fcos_nope", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'fcos_nope'" in err and "fcos_r50_fpn_1x" in err and "Traceback" not in err


def test_bad_override_names_choices(capsys, tmp_path):
    assert main(["train", "--run-dir", str(tmp_path), "model.head_norm=batch"]) == 2
    err = capsys.readouterr().err
    assert "model.head_norm" in err and "gn" in err and "none" in err


def test_missing_annotation_file(capsys, tmp_path):
    assert main(["eval", "--ann", str(tmp_path / "nope.json"), "--detections", str(tmp_path / "d.json")]) == 2
    assert "d.json" in capsys.readouterr().err


def test_demo_quick_then_predict_and_eval(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "fcos_lab.cli"]
    done = subprocess.run(cmd + ["demo", "--quick", "--out", str(out), "--device", "cpu"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "AP50" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    for path in summary["files"].values():
        assert (tmp_path / path).exists() or __import__("pathlib").Path(path).exists(), path
    samples = list((out / "run" / "samples").glob("*.png"))
    assert samples and all(max(Image.open(path).size) == 512 for path in samples)  # drawn enlarged, legible
    assert {"APs", "APm", "APl", "ARl"} <= summary.keys()
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["iter"] for row in rows if "AP" in row] == [6, 12]  # evaluated during training and at the end

    pred = tmp_path / "pred"
    done = subprocess.run(
        cmd + ["predict", "--checkpoint", str(out / "run"), str(out / "synthetic" / "val"), "--out", str(pred),
               "--device", "cpu", "postprocess.score_thresh=0.0"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = json.loads((pred / "detections.json").read_text())
    assert records and {"file_name", "bbox", "score", "level", "centerness", "category_name"} <= records[0].keys()
    assert "000001.jpg (image 1): " in done.stdout  # the synthetic files are named by their COCO ids
    assert list(pred.glob("*_detections.jpg"))

    done = subprocess.run(
        cmd + ["eval", "--checkpoint", str(out / "run" / "model_final.pt"), "--ann",
               str(out / "synthetic" / "annotations" / "instances_val.json"), "--images", str(out / "synthetic" / "val"),
               "--out", str(tmp_path / "eval"), "--device", "cpu"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "AP50" in metrics

    # TIDE errors of the model's own detections, placed on the quick demo's training assignment.
    done = subprocess.run(
        cmd + ["errors", "--detections", str(tmp_path / "eval" / "detections.json"), "--ann",
               str(out / "synthetic" / "annotations" / "instances_val.json"), "--json", "--preset", "fcos_demo_r18",
               "input.min_size=160", "input.max_size=256"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    errors = json.loads(done.stdout)
    assert errors["ambiguous_locations"]["unplaced"] == 0
    assert {"size", "level", "centerness", "ambiguous"} == set(errors["breakdowns"])


def test_eval_proposals_reports_ar1000(tmp_path, capsys):
    # One image, two boxes; 150 proposals of which the 50th and the 120th hit the boxes exactly:
    # AR100 = 1/2 (only the first box within the top 100), AR1000 = 1.
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 400, "height": 400}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [200, 200, 80, 60], "area": 4800, "iscrowd": 0}],
          "categories": [{"id": 1, "name": "thing"}]}
    dets = []
    for rank in range(150):
        score = 1.0 - rank / 1000
        bbox = [10, 10, 50, 50] if rank == 49 else [200, 200, 80, 60] if rank == 119 else [300 + rank % 5, 5, 4, 4]
        dets.append({"image_id": 1, "category_id": 1, "bbox": bbox, "score": score})
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    assert main(["eval", "--ann", str(tmp_path / "gt.json"), "--detections", str(tmp_path / "dets.json"),
                 "--proposals", "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["AR100"] == pytest.approx(0.5)
    assert metrics["AR1000"] == pytest.approx(1.0)


def test_overrides_are_taken_one_way_by_every_command():
    # Positional section.field=value arguments, before or after the options, for every command that takes them;
    # predict splits them from its image paths. The old --set is gone.
    from fcos_lab.cli import parse, split_overrides

    override = "postprocess.nms_thresh=0.5"
    for argv in (
        ["train", override, "--preset", "fcos_r50_fpn_1x"],
        ["train", "--preset", "fcos_r50_fpn_1x", override],
        ["eval", "--ann", "a.json", override, "--checkpoint", "c"],
        ["stats", "--ann", "a.json", override],
        ["errors", "--detections", "d.json", "--ann", "a.json", override],
        ["fiftyone", "--ann", "a.json", "--images", "i", "--pred", "d.json", override],
    ):
        assert parse(argv).overrides == [override], argv
    args = parse(["predict", "--checkpoint", "c", "img.jpg", "--device", "cpu", override, "folder"])
    assert split_overrides(args.inputs) == (["img.jpg", "folder"], [override])
    with pytest.raises(SystemExit):
        parse(["predict", "--checkpoint", "c", "img.jpg", "--set", override])
    with pytest.raises(SystemExit):
        parse(["presets", override])


@pytest.fixture
def untrained_run(tmp_path):
    """A run folder holding an untrained fcos_demo_r18 (its scores are all low), with class names and COCO ids."""
    import torch

    from fcos_lab.checkpoint import save_checkpoint
    from fcos_lab.model.detector import build_model
    from fcos_lab.presets import resolve

    torch.manual_seed(0)
    config = resolve("fcos_demo_r18")
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "model_final.pt", build_model(config), config, iteration=0,
                    class_names=["circle", "square", "triangle", "cross", "ring"], category_ids=[11, 12, 13, 14, 15])
    return run


def test_predict_reports_what_it_drew_and_writes_coco_ids_and_names(tmp_path, capsys, untrained_run):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for name in ("000000000139.jpg", "cat.png", "dog.png"):
        Image.new("RGB", (96, 64), (120, 60, 30)).save(images / name)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 777, "file_name": "sub/cat.png", "width": 96, "height": 64}],
                               "categories": [{"id": 11, "name": "circle"}], "annotations": []}))
    out = tmp_path / "pred"
    code = main(["predict", "--checkpoint", str(untrained_run), str(images), "postprocess.score_thresh=0.0",
                 "--out", str(out), "--device", "cpu", "--ann", str(ann)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = json.loads((out / "detections.json").read_text())
    # The COCO id from the file stem, from the annotation file, and a running number after the largest (777).
    ids = {r["file_name"]: r["image_id"] for r in records}
    assert ids == {"000000000139.jpg": 139, "cat.png": 777, "dog.png": 778}
    names = dict(zip([11, 12, 13, 14, 15], ["circle", "square", "triangle", "cross", "ring"]))
    assert records and all(names[r["category_id"]] == r["category_name"] for r in records)
    # Untrained: every score is far below the default --render-thresh 0.3, and the output says so.
    lines = captured.out.splitlines()
    line = next(line for line in lines if line.startswith("000000000139.jpg (image 139): 0 of "))
    top = max(r["score"] for r in records if r["image_id"] == 139)
    assert f"held back; top score {top:.3f} -> nothing drawn: lower --render-thresh" in line
    assert len([line for line in lines if "-> nothing drawn" in line]) == 3


def test_predict_refuses_two_files_of_one_image_id(tmp_path, capsys, untrained_run):
    from PIL import Image

    for name in ("7.jpg", "7.png"):
        Image.new("RGB", (64, 64)).save(tmp_path / name)
    code = main(["predict", "--checkpoint", str(untrained_run), str(tmp_path / "7.jpg"), str(tmp_path / "7.png"),
                 "--out", str(tmp_path / "pred"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "7.png and" in err and "would both be image 7" in err and "Traceback" not in err


def test_presets_print_a_header_and_the_paper_rows(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["preset", "backbone", "P6/P7"] and "paper rows" in lines[0]
    row = next(line for line in lines if line.startswith("fcos_imprv_r50_fpn_1x "))
    assert row.endswith('Table 3 "+ Normalization" (AP 38.6)')
    assert next(line for line in lines if line.startswith("fcos_demo_r18 ")).endswith(" -")
