"""FiftyOne integration on a hand-made scene: assignment attributes, TP/FP/FN, saved views, CLI, App, database.

The scene: three 400x400 images, resized x2 to 800x800 by the default preset (shorter side 800), so the
assignment works in a frame where everything is twice the original pixels. Levels P3..P7 have strides
8..128 and locations at floor(s/2) + k*s; size ranges [0,64], [64,128], [128,256], [256,512], [512,inf].

Image 1: cat A (ann 11) xywh [0,0,128,128] -> [0,0,256,256]; dog B (ann 12) [32,32,130,130] -> [64,64,324,324].
  P5 locations x, y in 16 + 32k. Inside A: 16..240 (8 per axis), max(x, 256-x) in [144, 240]: all 64 in
  P5's range; P4 (8+16k) has max >= 136 > 128, P6 (32+64k) max <= 224 < 256: A is on P5 only, 64
  locations. Inside B: 80..304 (8 per axis), max(x-64, 324-x) in [140, 244]: 64 candidates on P5, none
  elsewhere by the same check. Both boxes hold the 6x6 = 36 locations 80..240: ambiguous, of different
  classes; the minimal-area rule gives them to A (256^2 < 260^2), so B keeps 64 - 36 = 28.
Image 2: cat ann 21 [4.5,4.5,1,1] -> [9,9,11,11] holds no location (P3 at 4, 12): unrecallable.
  dog ann 22 [100,100,20,20] -> [200,200,240,240]: P3 locations 204..236 (5x5 = 25), max distance
  <= 36 <= 64, so 25 on P3; P4 locations 216, 232 have max 24 < 64. Crowd cat ann 23 is never assigned.
Image 3: no boxes.

Detections (index: what it is -> expected outcome at IoU 0.5, same class):
  0: image 1, cat on A's box, P5 location (88,88) = (176,176) resized: in A and B -> TP, ambiguous, diff.
  1: image 1, dog on A's box from the same location (A's box with B's class, Appendix 10's mistake):
     IoU with B = 96^2 / (128^2 + 130^2 - 96^2) = 0.383 -> FP, ambiguous, diff. B is then missed (FN).
  2: image 2, dog on ann 22, P3 (110,110) = (220,220): one candidate -> TP; cls 0.95, ctr 0.1.
  3: image 2, cat far from any box, P4 (324,324) = (648,648) -> FP, no candidate; cls 0.6, ctr 0.2.
  4: image 3, cat, P3 (30,30) = (60,60) -> FP, no candidate.
  5: image 1, cat away from A, location (90,90) = (180,180), 4 px off the P5 grid -> FP, ambiguity None.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from PIL import Image

from fcos_lab.analysis.ambiguous_locations import assignment_attributes
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.integrations.fiftyone import main
from fcos_lab.presets import get_preset, resolve
from tests.integrations.conftest import MONGOD, free_port, isolated_env, processes_mentioning, wait_gone

REPO = Path(__file__).resolve().parents[2]
pytestmark = [  # FiftyOne's own dependencies warn on import; not ours to fix
    pytest.mark.filterwarnings("ignore::DeprecationWarning:fiftyone.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mongoengine.*"),
]

ANNOTATIONS = {
    "images": [{"id": i, "file_name": f"{name}.png", "width": 400, "height": 400}
               for i, name in ((1, "one"), (2, "two"), (3, "three"))],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0, 0, 128, 128], "area": 16384, "iscrowd": 0},
        {"id": 12, "image_id": 1, "category_id": 2, "bbox": [32, 32, 130, 130], "area": 16900, "iscrowd": 0},
        {"id": 21, "image_id": 2, "category_id": 1, "bbox": [4.5, 4.5, 1, 1], "area": 1, "iscrowd": 0},
        {"id": 22, "image_id": 2, "category_id": 2, "bbox": [100, 100, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 23, "image_id": 2, "category_id": 1, "bbox": [150, 150, 50, 50], "area": 2500, "iscrowd": 1},
    ],
}


def _det(image_id, category_id, bbox, level, location, cls_score, centerness):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": round(cls_score * centerness, 6),
            "level": level, "location": location, "cls_score": cls_score, "centerness": centerness}


DETECTIONS = [
    _det(1, 1, [0, 0, 128, 128], 5, [88, 88], 0.9, 1.0),
    _det(1, 2, [0, 0, 128, 128], 5, [88, 88], 0.8, 0.9),
    _det(2, 2, [100, 100, 20, 20], 3, [110, 110], 0.95, 0.1),
    _det(2, 1, [300, 300, 40, 40], 4, [324, 324], 0.6, 0.2),
    _det(3, 1, [10, 10, 50, 50], 3, [30, 30], 0.3, 0.5),
    _det(1, 1, [200, 200, 20, 20], 5, [90, 90], 0.4, 0.2),
]
PREDICTION_OUTCOMES = {0: "tp", 1: "fp", 2: "tp", 3: "fp", 4: "fp", 5: "fp"}
BOX_OUTCOMES = {11: "tp", 12: "fn", 21: "fn", 22: "tp", 23: "fn"}  # FiftyOne marks an unmatched crowd box fn
# view -> (COCO ids of the images in it, detection indices or annotation ids of the objects it shows)
EXPECTED_VIEWS = {
    "fp-ambiguous": ({1}, {1}),
    "fp-ambiguous-diff-class": ({1}, {1}),
    "unrecallable-boxes": ({2}, {21}),
    "high-cls-low-centerness": ({2}, {2, 3}),
    "fp-p3": ({3}, {4}),
    "fp-p4": ({2}, {3}),
    "fp-p5": ({1}, {1, 5}),
    "fp-p6": (set(), set()),
    "fp-p7": (set(), set()),
    "fn-p3": (set(), set()),
    "fn-p4": (set(), set()),
    "fn-p5": ({1}, {12}),
    "fn-p6": (set(), set()),
    "fn-p7": (set(), set()),
    # TIDE (fcos_lab.analysis.tide): 1 is a dog on A's box, IoU 0.383 with dog B, in [0.1, 0.5]: Loc (and B is
    # covered by it, not missed); 3, 4 and 5 overlap no box: Bkg; box 21 is unmatched and no error points at it.
    "tide-cls": (set(), set()),
    "tide-loc": ({1}, {1}),
    "tide-both": (set(), set()),
    "tide-dupe": (set(), set()),
    "tide-bkg": ({1, 2, 3}, {3, 4, 5}),
    "tide-miss": ({2}, {21}),
}
TIDE_PREDICTIONS = {0: "tp", 1: "loc", 2: "tp", 3: "bkg", 4: "bkg", 5: "bkg"}
TIDE_BOXES = {11: "tp", 12: "covered", 21: "miss", 22: "tp", 23: "ignore"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scene")
    images = root / "images"
    images.mkdir()
    for image in ANNOTATIONS["images"]:
        Image.new("RGB", (400, 400), (90, 120, 150)).save(images / image["file_name"])
    (root / "annotations.json").write_text(json.dumps(ANNOTATIONS))
    (root / "detections.json").write_text(json.dumps(DETECTIONS))
    return {"ann": root / "annotations.json", "images": images, "pred": root / "detections.json", "root": root}


def test_bundled_mongod_runs():
    result = subprocess.run([str(MONGOD), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "db version v" in result.stdout


def test_assignment_attributes_by_hand(scene, caplog):
    coco = load_coco_annotations(scene["ann"])
    with caplog.at_level(logging.WARNING, logger="fcos_lab.analysis.ambiguous_locations"):
        boxes, predictions = assignment_attributes(coco, DETECTIONS, get_preset("fcos_r50_fpn_1x"))

    def box(levels, count, recallable, ambiguous, diff):
        return {"levels": levels, "num_positive_locations": count, "recallable": recallable,
                "ambiguous": ambiguous, "ambiguous_diff_class": diff}

    assert boxes == {
        11: box([5], 64, True, True, True),
        12: box([5], 28, True, True, True),
        21: box([], 0, False, False, False),
        22: box([3], 25, True, False, False),
        23: box([], 0, None, False, False),  # crowd: never assigned, not counted as recallable or not
    }

    def located(num, diff, target):
        return {"num_candidates": num, "ambiguous": num > 1, "ambiguous_diff_class": diff, "target_ann_id": target}

    assert predictions == [
        located(2, True, 11), located(2, True, 11), located(1, False, 22),
        located(0, False, None), located(0, False, None),
        {"num_candidates": None, "ambiguous": None, "ambiguous_diff_class": None, "target_ann_id": None},
    ]
    assert "1 of 6 detections have no level/location" in caplog.text


def test_assignment_follows_the_config(scene):
    # P4 = [64, 150] and P5 = [150, 256]: A's P4 locations 120 and 136 per axis (max 136) enter P4's range,
    # and at (176, 176) B's max distance 324 - 176 = 148 leaves P5's range: the location is no longer
    # ambiguous (A's max there is 176).
    ranges = "[[0, 64], [64, 150], [150, 256], [256, 512], [512, inf]]"
    config = resolve("fcos_r50_fpn_1x", [f"assign.size_ranges={ranges}"])
    boxes, predictions = assignment_attributes(load_coco_annotations(scene["ann"]), DETECTIONS[:1], config)
    assert boxes[11]["levels"] == [4, 5]
    assert boxes[11]["num_positive_locations"] == 64 - 4 + 4  # P5's 2x2 with max 144 leave, P4's 2x2 come
    assert predictions[0] == {"num_candidates": 1, "ambiguous": False, "ambiguous_diff_class": False,
                              "target_ann_id": 11}


def test_prediction_locations_follow_the_preset(tmp_path, caplog):
    # One 800x800 image (scale 1), box [0, 0, 40, 40]. torchvision's preset puts P3 locations at 8k (offset
    # zero) and samples within 1.5 * 8 = 12 px of the center (20, 20): only 16 and 24 per axis, 4 positives.
    # Location (16, 16) is on its grid; on the paper's grid (4 + 8k) it is not, and is reported as such.
    ann = tmp_path / "one.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 800, "height": 800}, {"id": 2, "file_name": "b.png",
                   "width": 800, "height": 800}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]}],
    }))
    coco = load_coco_annotations(ann)
    at_16 = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "score": 0.5, "level": 3, "location": [16, 16]}
    on_empty_image = {**at_16, "image_id": 2, "location": [4, 4]}
    boxes, predictions = assignment_attributes(coco, [at_16, on_empty_image], get_preset("fcos_r50_fpn_torchvision"))
    assert boxes[5]["num_positive_locations"] == 4
    assert predictions[0] == {"num_candidates": 1, "ambiguous": False, "ambiguous_diff_class": False, "target_ann_id": 5}
    assert predictions[1]["num_candidates"] is None  # 4 is not a multiple of 8
    with caplog.at_level(logging.WARNING, logger="fcos_lab.analysis.ambiguous_locations"):
        boxes, predictions = assignment_attributes(coco, [at_16, on_empty_image], get_preset("fcos_r50_fpn_1x"))
    assert boxes[5]["num_positive_locations"] == 25  # 4..36 per axis, no center sampling
    assert predictions[0]["num_candidates"] is None and predictions[1]["num_candidates"] == 0
    assert "1 of 2 detections" in caplog.text


@pytest.fixture(scope="module")
def dataset(scene, fiftyone_database):
    from fcos_lab.integrations.fiftyone import build_dataset

    return build_dataset(scene["ann"], scene["images"], scene["pred"], name="fcos-lab-test")


def test_build_dataset_marks_every_object(dataset):
    assert len(dataset) == 3
    assert sorted(dataset.values("coco_id")) == [1, 2, 3]
    outcomes = dict(zip(*dataset.values(["predictions.detections.detection_index", "predictions.detections.eval"],
                                        unwind=True)))
    assert outcomes == PREDICTION_OUTCOMES
    boxes = dict(zip(*dataset.values(["ground_truth.detections.ann_id", "ground_truth.detections.eval"],
                                     unwind=True)))
    assert boxes == BOX_OUTCOMES
    assert dict(zip(*dataset.values(["predictions.detections.detection_index", "predictions.detections.error_type"],
                                    unwind=True))) == TIDE_PREDICTIONS
    assert dict(zip(*dataset.values(["ground_truth.detections.ann_id", "ground_truth.detections.error_type"],
                                    unwind=True))) == TIDE_BOXES
    sample = dataset.match({"coco_id": 1}).first()
    b = next(d for d in sample.ground_truth.detections if d.ann_id == 12)
    assert b.bounding_box == pytest.approx([32 / 400, 32 / 400, 130 / 400, 130 / 400])
    assert (b.levels, b.num_positive_locations, b.recallable, b.ambiguous_diff_class) == ([5], 28, True, True)
    p = next(d for d in sample.predictions.detections if d.detection_index == 1)
    assert (p.label, p.level, p.location, p.cls_score, p.centerness) == ("dog", 5, [88.0, 88.0], 0.8, 0.9)
    assert (p.num_candidates, p.ambiguous, p.ambiguous_diff_class, p.target_ann_id) == (2, True, True, 11)
    assert p.confidence == pytest.approx(0.72)
    assert (sample.eval_tp, sample.eval_fp, sample.eval_fn) == (1, 2, 1)
    assert dataset.persistent


def test_saved_views_hold_exactly_the_expected_objects(dataset):
    assert set(dataset.list_saved_views()) == set(EXPECTED_VIEWS)
    for name, (image_ids, objects) in EXPECTED_VIEWS.items():
        view = dataset.load_saved_view(name)
        on_boxes = name.startswith(("fn-", "unrecallable", "tide-miss"))
        field, key = ("ground_truth", "ann_id") if on_boxes else ("predictions", "detection_index")
        assert set(view.values("coco_id")) == image_ids, name
        assert set(view.values(f"{field}.detections.{key}", unwind=True)) == objects, name


def test_errors_per_level_and_ambiguous_share(dataset):
    from fcos_lab.integrations.fiftyone_views import ambiguous_share, errors_per_level

    assert errors_per_level(dataset) == {
        3: {"tp": 1, "fp": 1, "fn": 0}, 4: {"tp": 0, "fp": 1, "fn": 0}, 5: {"tp": 1, "fp": 2, "fn": 1},
        6: {"tp": 0, "fp": 0, "fn": 0}, 7: {"tp": 0, "fp": 0, "fn": 0},
    }
    share = ambiguous_share(dataset)
    assert (share["predictions"], share["ambiguous"], share["ambiguous_diff_class"]) == (5, 2, 2)
    assert share["ambiguous_percent"] == pytest.approx(40.0)
    assert ambiguous_share(dataset, min_score=0.1)["predictions"] == 4  # 0.9, 0.72, 0.12, 0.15; not 0.095


def test_cli_reimport_replaces_the_dataset(scene, fo, capsys):
    argv = ["--ann", str(scene["ann"]), "--images", str(scene["images"]), "--pred", str(scene["pred"]),
            "--name", "fcos-lab-reimport"]
    assert main(argv) == 0
    first = fo.load_dataset("fcos-lab-reimport")
    first_ids = set(first.values("id"))
    assert main(argv) == 0
    output = capsys.readouterr().out
    assert "3 images, 6 predictions (2 TP, 4 FP), 3 missed boxes" in output
    assert "fp-ambiguous" in output
    datasets = fo.list_datasets()
    assert datasets.count("fcos-lab-reimport") == 1
    assert not [name for name in datasets if "importing" in name]
    again = fo.load_dataset("fcos-lab-reimport")
    assert len(again) == 3 and len(again.distinct("filepath")) == 3
    assert not first_ids & set(again.values("id"))  # a new dataset, not samples added to the old one


def test_cli_reports_bad_input(scene, fo, capsys):
    argv = ["--ann", str(scene["ann"]), "--images", str(scene["root"]), "--pred", str(scene["pred"]), "--name", "bad"]
    assert main(argv) == 2
    assert "image(s) of" in capsys.readouterr().err
    assert "bad" not in fo.list_datasets()
    assert not [name for name in fo.list_datasets() if "importing" in name]
    bad_pred = scene["root"] / "bad_detections.json"
    bad_pred.write_text(json.dumps([{**DETECTIONS[0], "image_id": 99}]))
    argv = ["--ann", str(scene["ann"]), "--images", str(scene["images"]), "--pred", str(bad_pred), "--name", "bad"]
    assert main(argv) == 2
    assert "detections[0]" in capsys.readouterr().err


def _subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without FIFTYONE_* settings, plus ``extra``; HOME is ``home`` so that FiftyOne writes
    nothing into the real ~/.fiftyone (the App records a welcome.json there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_")}
    return {**env, **isolated_env(home), "HOME": str(home), "PYTHONPATH": str(REPO), **extra}


@pytest.mark.slow
def test_managed_database_starts_and_stops(tmp_path):
    """FiftyOne's own database service: starts mongod in FIFTYONE_DATABASE_DIR, stops it on exit."""
    database_dir = tmp_path / "fiftyone-db"
    script = textwrap.dedent("""
        import json
        import fiftyone as fo
        import fiftyone.core.odm.database as fodb
        import fiftyone.service.util as fosu

        # Attach to no other FiftyOne database service of this user (they may use another folder).
        fosu.find_processes_by_args = lambda args: iter(())
        dataset = fo.Dataset("fcos-lab-db-check")
        dataset.add_sample(fo.Sample(filepath="/nonexistent.png"))
        assert "fcos-lab-db-check" in fo.list_datasets()
        fo.delete_dataset("fcos-lab-db-check")
        options = fodb.get_db_client().admin.command("getCmdLineOpts")["parsed"]
        print(json.dumps({"dbpath": options["storage"]["dbPath"], "datasets": fo.list_datasets()}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                            env=_subprocess_env(tmp_path, FIFTYONE_DATABASE_DIR=str(database_dir)))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"dbpath": str(database_dir), "datasets": []}
    assert (database_dir / "log" / "mongo.log").is_file()
    left = wait_gone(str(database_dir))
    assert not left, f"mongod left running: {[p.cmdline() for p in left]}"
    shutil.rmtree(database_dir)  # mongod preallocates about 300 MB


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_app_answers_on_localhost_then_stops(scene, fiftyone_database):
    port = free_port()
    command = [sys.executable, "-m", "fcos_lab.integrations.fiftyone", "--ann", str(scene["ann"]),
               "--images", str(scene["images"]), "--pred", str(scene["pred"]), "--name", "fcos-lab-app",
               "--launch", "--port", str(port)]
    log = scene["root"] / "app.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                   env=_subprocess_env(scene["root"], **fiftyone_database))
    tree: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        status = None
        while status != 200:
            assert process.poll() is None, f"CLI exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"App did not answer:\n{log.read_text()[-3000:]}"
            try:
                status = _get(f"http://127.0.0.1:{port}/")
            except OSError:
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/fiftyone", timeout=5) as response:
            assert "version" in json.load(response)  # FiftyOne's server, not something else on the port
        tree = {child.pid for child in psutil.Process(process.pid).children(recursive=True)}
        assert tree, "the App server runs in child processes"
        process.send_signal(signal.SIGTERM)  # SIGINT may be ignored in background jobs; the CLI stops on both
        assert process.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/")
    deadline = time.monotonic() + 30
    while alive := [pid for pid in tree if _running(pid)]:
        assert time.monotonic() < deadline, f"processes left behind: {alive}"
        time.sleep(0.2)
    assert not processes_mentioning(f"--port {port}")
