"""TIDE errors by FCOS attributes (fcos_lab.analysis.tide_breakdowns), the report and ``fcos-lab errors --out``.

Scene: two 400 x 400 images, resized x2 to 800 x 800 by fcos_r50_fpn_1x. Image 1 holds cat A (ann 11)
[0,0,128,128] and dog B (ann 12) [32,32,130,130]; image 2 is empty. As derived in
tests/integrations/test_fiftyone.py, the P5 location (88, 88) = (176, 176) resized lies in A and B (both on
P5): ambiguous, of different classes, its target is A; both boxes are assigned to P5 only. (324, 324) on P4
= (648, 648) is in no box.

  f0 cat on A, P5 (88, 88), center-ness .9, score .9   -> TP, ambiguous (diff. classes); size: A is large.
  f1 dog on A, P5 (88, 88), center-ness .8, score .72  -> IoU with B 0.383: Loc (B covered), ambiguous.
  f2 dog [300,300,40,40], P4 (324, 324), c .2, s .12   -> Bkg, unambiguous; own area 1600: medium.
  f3 cat [10,10,20,20] on image 2, no level/location   -> Bkg, in no FCOS group; own area 400: small.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fcos_lab.analysis.tide_breakdowns import (
    analyze_errors,
    error_members,
    example_boxes,
    example_image_ids,
    load_inputs,
)
from fcos_lab.analysis.tide_report import format_report
from fcos_lab.cli import main as cli_main
from fcos_lab.errors import ConfigError
from fcos_lab.presets import get_preset

ANNOTATIONS = {
    "images": [{"id": 1, "file_name": "1.png", "width": 400, "height": 400},
               {"id": 2, "file_name": "2.png", "width": 400, "height": 400}],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0, 0, 128, 128], "area": 16384, "iscrowd": 0},
        {"id": 12, "image_id": 1, "category_id": 2, "bbox": [32, 32, 130, 130], "area": 16900, "iscrowd": 0},
    ],
}
DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 128, 128], "score": 0.9, "level": 5, "location": [88, 88],
     "cls_score": 0.9, "centerness": 0.9},
    {"image_id": 1, "category_id": 2, "bbox": [0, 0, 128, 128], "score": 0.72, "level": 5, "location": [88, 88],
     "cls_score": 0.9, "centerness": 0.8},
    {"image_id": 1, "category_id": 2, "bbox": [300, 300, 40, 40], "score": 0.12, "level": 4, "location": [324, 324],
     "cls_score": 0.6, "centerness": 0.2},
    {"image_id": 2, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.05},
]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "ann.json").write_text(json.dumps(ANNOTATIONS))
    (tmp_path / "det.json").write_text(json.dumps(DETECTIONS))
    return {"ann": tmp_path / "ann.json", "det": tmp_path / "det.json", "root": tmp_path}


@pytest.fixture
def analysis(files):
    coco, detections = load_inputs(files["ann"], files["det"])
    return analyze_errors(coco, detections, get_preset("fcos_r50_fpn_1x"))


def _rows(summary, grouping):
    return {row["group"]: row for row in summary["breakdowns"][grouping]}


def test_ambiguous_share_by_hand(analysis):
    share = analysis.summary["ambiguous_locations"]
    assert share["detections"] == {"total": 3, "ambiguous": 2, "ambiguous_diff_class": 2,
                                   "ambiguous_percent": pytest.approx(66.6667), "ambiguous_diff_class_percent":
                                   pytest.approx(66.6667)}
    assert (share["false_positives"]["total"], share["false_positives"]["ambiguous"]) == (2, 1)  # f1, f2
    assert share["by_type"]["loc"]["ambiguous_diff_class"] == 1 and share["by_type"]["bkg"]["ambiguous"] == 0
    assert share["unplaced"] == 1  # f3


def test_breakdown_counts_by_hand(analysis):
    summary = analysis.summary
    level = _rows(summary, "level")
    assert list(level) == ["P4", "P5"]
    assert level["P5"]["counts"] == {"tp": 1, "cls": 0, "loc": 1, "both": 0, "dupe": 0, "bkg": 0, "miss": 0}
    assert level["P4"]["counts"]["bkg"] == 1 and level["P4"]["detections"] == 1
    centerness = _rows(summary, "centerness")
    assert [row["detections"] for row in centerness.values()] == [0, 1, 0, 0, 2]  # .2 -> [0.2, 0.4); .8, .9 -> last
    assert centerness["[0.8, 1.0]"]["counts"]["miss"] is None  # boxes have no center-ness
    ambiguous = _rows(summary, "ambiguous")
    assert [row["detections"] for row in ambiguous.values()] == [1, 0, 2]
    assert ambiguous["ambiguous, different classes"]["counts"]["loc"] == 1
    size = _rows(summary, "size")
    assert [size[g]["detections"] for g in ("small", "medium", "large")] == [1, 1, 2]


def test_group_holding_all_errors_of_a_type_gives_the_main_dap(analysis):
    # P5 holds the only Loc error; the two Bkg errors are split between P4 (f2) and no group (f3).
    summary = analysis.summary
    assert _rows(summary, "level")["P5"]["dAP"]["Loc"] == pytest.approx(summary["Loc"], abs=1e-3)
    assert summary["Loc"] > 0
    sizes = _rows(summary, "size")
    assert sizes["small"]["dAP"]["Bkg"] + sizes["medium"]["dAP"]["Bkg"] <= summary["Bkg"] + 1e-3
    groups = analysis.groupings["level"].detections
    assert analysis.errors.delta_ap("bkg", groups["P4"] | ~(groups["P4"] | groups["P5"])) == pytest.approx(
        summary["Bkg"], abs=1e-3)


def test_example_image_ids(analysis):
    assert example_image_ids(analysis, "bkg") == [1, 2]  # one Bkg each; ties in file order
    assert example_image_ids(analysis, "loc", grouping="level", group="P5") == [1]
    assert example_image_ids(analysis, "loc", grouping="level", group="P4") == []
    assert example_image_ids(analysis, "miss") == []
    with pytest.raises(ConfigError, match="unknown error type"):
        example_image_ids(analysis, "Loc")
    with pytest.raises(ConfigError, match="no group 'P9'"):
        example_image_ids(analysis, "loc", grouping="level", group="P9")


def test_example_boxes_draw_the_errors_and_what_they_point_at(files, analysis):
    coco, detections = load_inputs(files["ann"], files["det"])
    assert error_members(analysis, "bkg").tolist() == [False, False, True, True]
    assert error_members(analysis, "loc", grouping="level", group="P5").tolist() == [False, True, False, False]
    # Image 1's Loc error is f1 (dog [0, 0, 128, 128], score .72), pointing at B [32, 32, 162, 162] (xyxy).
    example = example_boxes(analysis, coco, detections, 1, "loc", grouping="level", group="P5")
    np.testing.assert_array_equal(example["gt_boxes"], [[0, 0, 128, 128], [32, 32, 162, 162]])
    np.testing.assert_array_equal(example["boxes"], [[0, 0, 128, 128]])
    np.testing.assert_array_equal(example["targets"], [[32, 32, 162, 162]])
    assert example["texts"] == ["loc: dog 0.72"]
    # Bkg points at nothing; image 2 has no box at all.
    example = example_boxes(analysis, coco, detections, 2, "bkg")
    np.testing.assert_array_equal(example["boxes"], [[10, 10, 30, 30]])
    assert example["gt_boxes"].shape == (0, 4) and np.isnan(example["targets"]).all()
    assert example_boxes(analysis, coco, detections, 1, "miss")["boxes"].shape == (0, 4)


def test_report_answers_the_papers_question(analysis):
    report = format_report(analysis.summary)
    assert "2 of 3 detections (66.67 %) come from ambiguous locations" in report
    assert "(paper: 2.3 % and 1.5 %)" in report
    assert "## Breakdown by FPN level" in report
    assert "1 of 4 detection records have no level/location" in report


def test_without_fcos_fields_the_fcos_breakdowns_are_skipped(files):
    plain = [{k: d[k] for k in ("image_id", "category_id", "bbox", "score")} for d in DETECTIONS]
    coco, _ = load_inputs(files["ann"], files["det"])
    summary = analyze_errors(coco, plain, get_preset("fcos_r50_fpn_1x")).summary
    assert list(summary["breakdowns"]) == ["size"] and summary["ambiguous_locations"] is None
    assert "Not available" in format_report(summary)


def test_cli_out_writes_every_file(files, capsys):
    out = files["root"] / "out"
    argv = ["errors", "--detections", str(files["det"]), "--ann", str(files["ann"]), "--out", str(out), "--json"]
    assert cli_main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((out / "errors.json").read_text())
    assert written == printed
    assert set(printed) >= {"Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FalsePos", "FalseNeg", "AP50", "breakdowns"}
    assert "come from ambiguous locations" in (out / "report.md").read_text()
    names = {p.name for p in out.iterdir()}
    assert {"tide.html", "by_level_dAP.html", "by_centerness_counts.html", "plotly.min.js"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert 'src="plotly.min.js"' in (out / "tide.html").read_text()


def test_detection_order_does_not_change_the_result(files):
    coco, detections = load_inputs(files["ann"], files["det"])
    permutation = np.random.default_rng(0).permutation(len(detections))
    shuffled = analyze_errors(coco, [detections[i] for i in permutation], get_preset("fcos_r50_fpn_1x")).summary
    original = analyze_errors(coco, detections, get_preset("fcos_r50_fpn_1x")).summary
    assert {k: shuffled[k] for k in ("AP50", "Cls", "Loc", "Bkg", "breakdowns", "ambiguous_locations")} == {
        k: original[k] for k in ("AP50", "Cls", "Loc", "Bkg", "breakdowns", "ambiguous_locations")}
