"""TIDE error analysis (fcos_lab.analysis.tide): hand-computed scenes, then tidecv itself, then bad input via the CLI.

Scene (one 100 x 100 image; cat = 1, dog = 2, bird = 3 has no box; xywh boxes):
  g1 cat [0,0,10,10], g2 cat [50,50,10,10], g3 dog [20,0,10,10], g4 dog [80,80,10,10], g5 crowd cat [0,60,30,30],
  g6 cat [70,0,10,10], g7 dog [0,80,10,10].
Detections, by score (each the type it is made to be):
  d0 cat [0,0,10,10]   .9  TP (g1).
  d1 cat [1,0,10,10]   .8  IoU with the matched g1 = 90 / 110 = 0.82 > 0.5, not Loc/Cls  -> Dupe.
  d2 dog [50,50,10,10] .7  no dog overlaps; IoU 1 with cat g2                          -> Cls (g2, fixable).
  d3 dog [25,0,10,10]  .6  IoU with dog g3 = 50 / 150 = 1/3 in [0.1, 0.5]                -> Loc (g3, fixable).
  d4 cat [20,20,10,10] .5  overlaps nothing                                             -> Bkg.
  d5 bird [52,52,10,10] .4 no bird box; IoU with cat g2 = 64 / 136 = 0.47: not Cls, > 0.1 -> Both.
  d6 cat [2,62,10,10]  .3  inside the crowd cat box: ignored (no AP point); overlaps no other box -> Bkg.
  d7 cat [70,0,10,10]  .2  TP (g6).      d8 dog [0,80,10,10] .1  TP (g7).
  g4 is left unmatched and no error points at it: Miss. g2, g3: covered by d2, d3.

AP = mean over cat, dog and bird (bird has a point, no box: AP 0) of sum(101-point precision) / 101 * 100.
Write A = 100 / 101. Original (3 cat boxes, 3 dog boxes):
  cat: d0 T, d1 F, d4 F, d7 T: precision 1, 1/2, 1/3, 1/2, monotone 1, 1/2, 1/2, 1/2; recall 1/3 (x = 0..0.33:
       34 points at 1), 2/3 (0.34..0.66: 33 points at 1/2) -> 50.5 A.
  dog: d2 F, d3 F, d8 T: monotone precision 1/3 everywhere; recall 1/3 -> 34 points at 1/3 -> 34/3 A.
  mAP = (50.5 + 34/3) / 3 A.
Cls fix: d2 becomes a cat TP at .7: cat T F T F T, monotone 1, 2/3, 2/3, .6, .6 over 34, 33, 34 points ->
  76.4 A; dog d3 F, d8 T -> 34 points at 1/2 = 17 A.  dCls = (76.4 + 17 - 61.8333) / 3 A.
Loc fix: d3 becomes a dog TP: F T T, monotone 2/3 over 67 points -> 44.667 A.  dLoc = (44.667 - 34/3) / 3 A.
Dupe fix (d1 removed) and Bkg fix (d4 removed; d6 has no point): cat T F T -> 34 + 33 * 2/3 = 56 A.
  dDupe = dBkg = (56 - 50.5) / 3 A.
Both fix (d5 removed): bird has neither point nor box and leaves the mean: (50.5 + 34/3) / 2 A - mAP.
Miss fix (g4 removed: 2 dog boxes): F F T, recall 1/2 -> 51 points at 1/3 = 17 A.  dMiss = (17 - 34/3) / 3 A.
FalsePos: each class's TPs first: cat recall 2/3 at precision 1 (67 points), dog 1/3 (34) -> (101 / 3) A - mAP.
FalseNeg: boxes = matched ones (cat 2, dog 1): cat 51 points at 1, 50 at 1/2 = 76 A; dog 101 at 1/3.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fcos_lab.analysis.tide import (
    MAIN_ERRORS,
    detection_error_types,
    ground_truth_error_types,
    mean_average_precision,
    tide_errors,
)
from fcos_lab.cli import main as cli_main
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.errors import ConfigError
from tests.analysis.tide_reference import perturbed_detections, require_tidecv, tidecv_errors
from tests.conftest import require_shared

A = 100 / 101
AP = (50.5 + 34 / 3) / 3 * A
EXPECTED = {
    "Cls": (76.4 + 17 - 50.5 - 34 / 3) / 3 * A, "Loc": (44 + 2 / 3 - 34 / 3) / 3 * A, "Both": (50.5 + 34 / 3) / 2 * A - AP,
    "Dupe": (56 - 50.5) / 3 * A, "Bkg": (56 - 50.5) / 3 * A, "Miss": (17 - 34 / 3) / 3 * A,
    "FalsePos": 101 / 3 * A - AP, "FalseNeg": (76 + 101 / 3) / 3 * A - AP,
}


def _box(ann_id, category, bbox, crowd=0):
    return {"id": ann_id, "image_id": 1, "category_id": category, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": crowd}


SCENE = {
    "images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 100}],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}],
    "annotations": [_box(1, 1, [0, 0, 10, 10]), _box(2, 1, [50, 50, 10, 10]), _box(3, 2, [20, 0, 10, 10]),
                    _box(4, 2, [80, 80, 10, 10]), _box(5, 1, [0, 60, 30, 30], crowd=1), _box(6, 1, [70, 0, 10, 10]),
                    _box(7, 2, [0, 80, 10, 10])],
}
SCENE_DETECTIONS = [
    {"image_id": 1, "category_id": c, "bbox": b, "score": s} for c, b, s in [
        (1, [0, 0, 10, 10], 0.9), (1, [1, 0, 10, 10], 0.8), (2, [50, 50, 10, 10], 0.7), (2, [25, 0, 10, 10], 0.6),
        (1, [20, 20, 10, 10], 0.5), (3, [52, 52, 10, 10], 0.4), (1, [2, 62, 10, 10], 0.3), (1, [70, 0, 10, 10], 0.2),
        (2, [0, 80, 10, 10], 0.1)]
]


@pytest.fixture
def scene_files(tmp_path) -> dict[str, Path]:
    (tmp_path / "ann.json").write_text(json.dumps(SCENE))
    (tmp_path / "det.json").write_text(json.dumps(SCENE_DETECTIONS))
    return {"ann": tmp_path / "ann.json", "det": tmp_path / "det.json", "root": tmp_path}


def _all_errors(errors) -> dict[str, float]:
    return {"AP": errors.ap, **errors.main_errors(), **errors.special_errors()}


def test_scene_types_by_hand(scene_files):
    errors = tide_errors(load_coco_annotations(scene_files["ann"]), SCENE_DETECTIONS)
    assert detection_error_types(errors) == ["tp", "dupe", "cls", "loc", "bkg", "both", "bkg", "tp", "tp"]
    assert errors.det_ignored.tolist() == [False] * 6 + [True, False, False]
    assert errors.det_fixable.tolist() == [False, False, True, True] + [False] * 5
    assert errors.det_gt.tolist() == [0, 0, 1, 2, -1, -1, -1, 5, 6]  # annotation indices: g1, g1, g2, g3, g6, g7
    assert ground_truth_error_types(errors) == {1: "tp", 2: "covered", 3: "covered", 4: "miss", 5: "ignore",
                                                6: "tp", 7: "tp"}
    assert errors.counts() == {"tp": 3, "cls": 1, "loc": 1, "both": 1, "dupe": 1, "bkg": 2, "miss": 1, "covered": 2,
                               "ignored": 1, "not_evaluated": 0}


def test_scene_dap_by_hand(scene_files):
    errors = tide_errors(load_coco_annotations(scene_files["ann"]), SCENE_DETECTIONS)
    assert _all_errors(errors) == pytest.approx({"AP": AP, **EXPECTED}, abs=1e-9)
    # Fixing a subset: only d4 of the two Bkg (d6 has no point, so it changes nothing).
    only_d4 = np.arange(len(SCENE_DETECTIONS)) == 4
    assert errors.delta_ap("bkg", only_d4) == pytest.approx(EXPECTED["Bkg"], abs=1e-9)
    assert errors.delta_ap("bkg", ~only_d4) == 0.0
    with pytest.raises(ConfigError, match="unknown TIDE error type"):
        errors.delta_ap("tp")


def test_scene_agrees_with_tidecv(scene_files):
    require_tidecv()
    reference = tidecv_errors(SCENE, SCENE_DETECTIONS, scene_files["root"])
    assert reference == pytest.approx({"AP": AP, **EXPECTED}, abs=1e-9)


def test_mean_average_precision_by_hand():
    # Class 0: T F T with 4 boxes: precision 1, 1/2, 2/3 -> monotone 1, 2/3, 2/3; recall 1/4, 1/4, 1/2: 26 points
    # at 1 and 25 at 2/3. Class 1: no point, no box: left out. Class 2: one F, no box: AP 0, counted.
    classes, true_positive = np.array([0, 0, 0, 2]), np.array([True, False, True, False])
    expected = (26 + 25 * 2 / 3) / 101 * 100 / 2
    assert mean_average_precision(classes, true_positive, np.array([4, 0, 0])) == pytest.approx(expected)
    assert mean_average_precision(np.zeros(0, int), np.zeros(0, bool), np.zeros(3, int)) == 0.0


def test_ties_follow_tidecv(tmp_path):
    # One cat box; a TP and a Bkg at the same score, the TP first in the file. Original AP: the TP ranks first
    # (file order) -> 100. tidecv rebuilds every fixed AP with the errors' points first: with nothing fixed
    # (FalseNeg removes no box here) the FP ranks first -> precision 0 then 1/2, 101 points at 1/2 = 50.
    annotations = {**SCENE, "annotations": SCENE["annotations"][:1]}
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    detections = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5},
                  {"image_id": 1, "category_id": 1, "bbox": [40, 40, 10, 10], "score": 0.5}]
    errors = tide_errors(load_coco_annotations(tmp_path / "ann.json"), detections)
    assert errors.ap == pytest.approx(100.0)
    assert errors.special_errors()["FalseNeg"] == pytest.approx(-50.0)
    assert errors.main_errors() == {name: 0.0 for name in MAIN_ERRORS.values()}
    require_tidecv()
    assert tidecv_errors(annotations, detections, tmp_path) == pytest.approx(_all_errors(errors), abs=1e-9)


def test_only_the_best_100_of_an_image_are_evaluated(tmp_path):
    # 101 background boxes: the one with the lowest score is not looked at; no box at all: every AP is 0.
    (tmp_path / "ann.json").write_text(json.dumps({**SCENE, "annotations": []}))
    detections = [{"image_id": 1, "category_id": 1, "bbox": [i % 90, 0, 5, 5], "score": 1 - i / 1000} for i in range(101)]
    errors = tide_errors(load_coco_annotations(tmp_path / "ann.json"), detections[::-1])
    assert detection_error_types(errors)[0] is None  # reversed: the lowest score comes first
    assert errors.counts()["bkg"] == 100 and errors.counts()["not_evaluated"] == 1
    assert errors.ap == 0.0 and errors.main_errors()["Bkg"] == 0.0


def _random_world(rng: np.random.Generator) -> dict:
    """1-5 images (ids in shuffled order), 1-4 categories (the last without boxes), crowd boxes, integer boxes."""
    images = [{"id": int(i * 7 + 3), "file_name": f"{i}.jpg", "width": 100, "height": 80}
              for i in rng.permutation(rng.integers(1, 6))]
    categories = [{"id": 2 * c + 1, "name": f"c{c}"} for c in range(rng.integers(1, 5))]
    anns = []
    for image in images:
        for _ in range(rng.integers(0, 8)):
            x, y, w, h = (int(v) for v in (rng.integers(0, 60), rng.integers(0, 50), rng.integers(1, 40), rng.integers(1, 30)))
            category = categories[int(rng.integers(0, max(1, len(categories) - 1)))]["id"]
            anns.append({"id": len(anns) + 1, "image_id": image["id"], "category_id": category, "bbox": [x, y, w, h],
                         "area": float(w * h), "iscrowd": int(rng.random() < 0.15)})
    rng.shuffle(anns)
    return {"images": images, "categories": categories, "annotations": anns}


@pytest.mark.parametrize("seed", range(12))
def test_random_worlds_agree_with_tidecv(tmp_path, seed):
    # Crowd boxes, classes without boxes, images without detections or boxes, ties (scores rounded to 0.1),
    # boxes exactly on the IoU thresholds (integer boxes), over 100 detections in an image.
    require_tidecv()
    rng = np.random.default_rng(seed)
    annotations = _random_world(rng)
    detections = perturbed_detections(annotations, seed, background=float(rng.uniform(0, 150)), jitter=0.6, swap=0.3,
                                      duplicate=0.4, score_decimals=1)
    detections += [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                    "score": round(float(rng.random()), 1)} for a in annotations["annotations"] if rng.random() < 0.3]
    for det in detections[::2]:
        det["bbox"] = [float(round(v)) for v in det["bbox"]]
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    errors = tide_errors(load_coco_annotations(tmp_path / "ann.json"), detections)
    assert _all_errors(errors) == pytest.approx(tidecv_errors(annotations, detections, tmp_path), abs=1e-6)


@pytest.mark.shared_data
@pytest.mark.parametrize("seed", range(4))
def test_val2017_128_agrees_with_tidecv(tmp_path, seed):
    require_tidecv()
    ann = require_shared("coco", "annotations", "instances_val2017_lightly128_bboxonly_DERIVED.json")
    annotations = json.loads(ann.read_text())
    detections = perturbed_detections(annotations, seed, score_decimals=2 if seed % 2 else None)
    undetected = {image["id"] for image in annotations["images"][::5]}  # every 5th image: no detection at all
    detections = [d for d in detections if d["image_id"] not in undetected]
    errors = tide_errors(load_coco_annotations(ann), detections)
    assert _all_errors(errors) == pytest.approx(tidecv_errors(annotations, detections, tmp_path), abs=0.1)


@pytest.mark.slow
@pytest.mark.shared_data
def test_val2017_5000_agrees_with_tidecv(tmp_path):
    require_tidecv()
    ann = require_shared("coco", "annotations", "instances_val2017_bboxonly_DERIVED.json")
    annotations = json.loads(ann.read_text())
    detections = perturbed_detections(annotations, 7, score_decimals=3)
    errors = tide_errors(load_coco_annotations(ann), detections)
    assert _all_errors(errors) == pytest.approx(tidecv_errors(annotations, detections, tmp_path), abs=0.1)


def test_cli_json_has_the_eight_names(scene_files, capsys):
    assert cli_main(["errors", "--detections", str(scene_files["det"]), "--ann", str(scene_files["ann"]), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {name: summary[name] for name in EXPECTED} == pytest.approx(EXPECTED, abs=1e-3)
    assert summary["AP50"] == pytest.approx(AP, abs=1e-3)


BAD_DETECTIONS = [
    ("unknown image", [{**SCENE_DETECTIONS[0], "image_id": 99}], "detections[0]: field 'image_id' 99 is not an image"),
    ("unknown category", [SCENE_DETECTIONS[0], {**SCENE_DETECTIONS[0], "category_id": 7}],
     "detections[1]: field 'category_id' 7 is not a category"),
    ("NaN score", [{**SCENE_DETECTIONS[0], "score": float("nan")}], "field 'score' must be a finite number"),
    ("wrong type", [{**SCENE_DETECTIONS[0], "bbox": "0 0 10 10"}], "field 'bbox' must be 4 finite numbers"),
    ("not a list", {"detections": []}, "detections must be a JSON list"),
    ("missing field", [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}], "missing field(s) ['score']"),
]


@pytest.mark.parametrize("case, content, message", BAD_DETECTIONS, ids=[c[0] for c in BAD_DETECTIONS])
def test_cli_bad_detections(scene_files, capsys, case, content, message):
    bad = scene_files["root"] / "bad.json"
    bad.write_text(json.dumps(content))
    assert cli_main(["errors", "--detections", str(bad), "--ann", str(scene_files["ann"])]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and message in err and "Traceback" not in err


@pytest.mark.parametrize("text, message", [("", "not a valid JSON detections file"), ("[{", "not a valid JSON")])
def test_cli_empty_or_malformed_detections_file(scene_files, capsys, text, message):
    bad = scene_files["root"] / "bad.json"
    bad.write_text(text)
    assert cli_main(["errors", "--detections", str(bad), "--ann", str(scene_files["ann"]), "--out",
                     str(scene_files["root"] / "out")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and message in err
    assert not (scene_files["root"] / "out").exists()  # nothing written


def test_cli_bad_annotations_and_preset(scene_files, capsys):
    bad = scene_files["root"] / "bad_ann.json"
    bad.write_text(json.dumps({**SCENE, "annotations": [{**SCENE["annotations"][0], "bbox": [0, 0, "w", 1]}]}))
    assert cli_main(["errors", "--detections", str(scene_files["det"]), "--ann", str(bad)]) == 2
    assert f"{bad}: annotations[0] (id 1): bbox must be a list of 4 finite numbers" in capsys.readouterr().err
    missing = scene_files["root"] / "missing.json"
    assert cli_main(["errors", "--detections", str(scene_files["det"]), "--ann", str(missing)]) == 2
    assert f"{missing}: annotation file not found" in capsys.readouterr().err
    argv = ["errors", "--detections", str(scene_files["det"]), "--ann", str(scene_files["ann"])]
    assert cli_main(argv + ["--preset", "no_such_preset"]) == 2
    assert cli_main(argv + ["assign.no_such_key=1"]) == 2
    assert "no_such" in capsys.readouterr().err
