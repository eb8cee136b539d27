"""fcos_lab.analysis.experiments, fcos_lab.analysis.centerness_iou and fcos_lab.viz.figures on tiny inputs.

(Here beside the notebook tests because they are the notebooks' library; no training runs here: the
notebook tests train every row at the smoke scale.)
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fcos_lab import paper
from fcos_lab.analysis import experiments as ex
from fcos_lab.analysis import qualitative, scales
from fcos_lab.analysis.centerness_iou import score_vs_iou, summarize
from fcos_lab.analysis.report import SCALES, Results
from fcos_lab.errors import ConfigError, DataError
from fcos_lab.presets import resolve

TRAINED_ROWS = [row for rows in paper.TABLES.values() for row in rows if row.preset]


def _fake_coco_root(root: Path, scale: str) -> Path:
    for relative in scales.COCO_FILES[scale]:
        path = root / relative
        if relative.endswith(".json"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
        else:
            path.mkdir(parents=True, exist_ok=True)
    return root


@pytest.mark.parametrize("scale", SCALES)
def test_every_paper_row_resolves_at_every_scale(scale, tmp_path):
    settings = scales.scale_settings(scale, tmp_path / "no-data-here", work_dir=tmp_path)
    for row in TRAINED_ROWS:
        config = ex.row_config(row, settings, seed=3)
        assert config.train.seed == 3
        if scale != "paper":
            assert config.model.backbone in ("resnet18", "resnet34")
            base = resolve(settings.base_preset).train.max_iters if settings.base_preset else None
            assert config.train.max_iters == (settings.max_iters or base)


def test_paper_scale_keeps_the_presets_and_only_points_at_the_data(tmp_path):
    root = _fake_coco_root(tmp_path, "paper")
    settings = scales.scale_settings("paper", root)
    assert settings.dataset == "coco" and settings.train_ann.endswith("instances_train2017.json")
    for row in TRAINED_ROWS:
        config = ex.row_config(row, settings)
        expected = resolve(row.preset, list(row.overrides))
        assert replace(config, data=expected.data) == expected
        assert config.data.val_images == str(root / "coco/images/val2017")
    settings.check_training_data()


def test_paper_scale_without_coco_fails_with_the_missing_files(tmp_path):
    settings = scales.scale_settings("paper", tmp_path)
    with pytest.raises(DataError, match="instances_train2017.json"):
        settings.check_training_data()


def test_smoke_scales_every_length_tied_to_the_input_size(tmp_path):
    settings = scales.scale_settings("smoke", work_dir=tmp_path)
    assert settings.dataset == "synthetic" and settings.synthetic_root == str(tmp_path / "synthetic")
    config = ex.row_config(paper.TABLE_3[0], settings)  # RetinaNet: anchors too
    factor = 128 / 800
    assert config.input.min_size == 128 and config.input.train_min_size == (128, 128)
    assert config.assign.size_ranges[0] == pytest.approx((0, 64 * factor))
    assert math.isinf(config.assign.size_ranges[-1][1])
    assert config.model.anchor_sizes == pytest.approx(tuple(s * factor for s in (32, 64, 128, 256, 512)))
    assert config.model.fpn_channels % 32 == 0 and config.data.synthetic_image_size == 128


def test_workshop_trains_on_synthetic_data_and_uses_coco_only_when_asked(tmp_path):
    root = _fake_coco_root(tmp_path, "workshop")
    assert scales.scale_settings("workshop", root).dataset == "synthetic"
    settings = scales.scale_settings("workshop", root, dataset="coco")
    assert settings.dataset == "coco" and "coco128" in settings.train_ann and settings.seeds == 3
    # Given weights are evaluated on real images unless the dataset is named.
    assert scales.scale_settings("smoke", root, given_weights=True).dataset == "coco"
    assert scales.scale_settings("smoke", root, given_weights=True, dataset="synthetic").dataset == "synthetic"
    with pytest.raises(ConfigError, match="valid scales"):
        scales.scale_settings("huge")


def test_workshop_takes_the_demo_preset_by_name_and_keeps_every_row_switch(tmp_path, monkeypatch):
    from fcos_lab import presets

    settings = scales.scale_settings("workshop", work_dir=tmp_path)
    demo = resolve(scales.WORKSHOP_PRESET)
    assert settings.base_preset == presets.DEMO_PRESET and settings.seeds >= 3
    assert settings.synthetic_image_size == demo.data.synthetic_image_size
    config = ex.row_config(paper.TABLE_3[6], settings, seed=2)  # + ctr. sampling
    factor = demo.assign.size_ranges[0][1] / 64  # the demo's m_3 against the paper's 64
    assert (config.input.min_size, config.input.max_size) == (demo.input.min_size, demo.input.max_size)
    assert config.assign.size_ranges[1] == pytest.approx((64 * factor, 128 * factor))
    assert (config.model.backbone, config.model.backbone_norm) == (demo.model.backbone, demo.model.backbone_norm)
    assert config.train.base_lr == demo.train.base_lr and config.train.warmup_iters == demo.train.warmup_iters
    assert config.train.max_iters == min(demo.train.max_iters, scales.WORKSHOP_MAX_ITERS)  # the time budget
    assert config.assign.center_sampling_radius == 1.5 and config.model.centerness_on == "reg"  # the row's own
    assert config.train.seed == 2 and config.data.synthetic_root == str(tmp_path / "synthetic")
    # A retuned demo retunes the workshop: nothing of it is copied.
    retuned = resolve(presets.DEMO_PRESET, ["input.min_size=96", "input.max_size=160", "train.max_iters=50",
                                            "assign.size_ranges=[[0,32],[32,64],[64,128],[128,256],[256,inf]]",
                                            "data.synthetic_num_train=64"])
    monkeypatch.setitem(presets.PRESETS, presets.DEMO_PRESET, retuned)
    settings = scales.scale_settings("workshop", work_dir=tmp_path)
    config = ex.row_config(paper.TABLE_3[0], settings)  # RetinaNet: anchors scale with the ranges (x 0.5)
    assert (config.input.min_size, config.train.max_iters, settings.synthetic_num_train) == (96, 50, 64)
    assert config.model.anchor_sizes == pytest.approx((16.0, 32.0, 64.0, 128.0, 256.0))
    assert "50 iterations" in settings.describe() and "3 seeds" in settings.describe()


def test_workshop_trains_only_the_comparisons_that_can_show(tmp_path):
    settings = scales.scale_settings("workshop", work_dir=tmp_path)
    trained, untrained = ex.rows_at_scale(paper.TABLE_3, settings)
    assert [r.row for r in trained] == ["+ ctr. on reg.", "+ ctr. sampling"] and len(untrained) == 7
    trained, untrained = ex.rows_at_scale(paper.TABLE_4, settings)
    assert not untrained and [r.row for r in trained] == [r.row for r in paper.TABLE_4]
    # Center-ness at test time: the four rows are evaluated on Table 3's "+ ctr. on reg." trainings, which are
    # also the one model of notebooks 02, 09 and 10: no training of their own.
    assert ex.model_row(settings) == paper.TABLE_3[5]
    keys = {ex.training_key(ex.row_config(r, settings, seed=1)) for r in trained}
    assert keys == {ex.training_key(ex.row_config(paper.TABLE_3[5], settings, seed=1))}
    modes = [resolve(ex.row_config(r, settings), list(r.eval_overrides)).postprocess.centerness_mode for r in trained]
    assert modes == ["none", "from_box", "learned", "oracle"]
    assert ex.rows_at_scale(paper.TABLE_5, settings)[0] == []
    picked, _ = ex.rows_at_scale(paper.TABLE_5, settings, labels=["FCOS ResNet-101-FPN"])  # the user's choice wins
    assert [r.row for r in picked] == ["FCOS ResNet-101-FPN"]
    smoke = scales.scale_settings("smoke", work_dir=tmp_path)
    assert ex.rows_at_scale(paper.TABLE_4, smoke)[0] == list(paper.TABLE_4) and smoke.seeds == 1
    assert ex.model_row(smoke) == paper.TABLE_4[2]


def test_rows_not_trained_at_the_scale_are_listed_with_the_reason(tmp_path):
    settings = scales.scale_settings("workshop", work_dir=tmp_path)
    results = Results(notebook="t", scale="workshop", hardware={})
    assert ex.run_rows(paper.TABLE_8, settings, tmp_path, results) == []  # nothing trained, nothing invented
    assert {m.row for m in results.measurements} == {r.row for r in paper.TABLE_8}
    assert all(m.measured is None and "not trained at workshop scale" in m.note for m in results.measurements)
    assert results.measurements[1].reference == paper.TABLE_8[0].row


def test_record_row_over_seeds_by_hand():
    results = Results(notebook="t", scale="workshop", hardware={})
    outcomes = [{"metrics": {"AP": ap, "AP50": 0.5, "AP75": 0.2, "APs": 0.1, "APm": 0.2, "APl": 0.3}, "note": "n"}
                for ap in (0.30, 0.32, 0.34)]
    ex.record_row(results, paper.TABLE_3[6], outcomes)  # + ctr. sampling, compared with + ctr. on reg.
    ap = next(m for m in results.measurements if m.metric == "AP")
    # 30, 32, 34 percent: mean 32, sample standard deviation 2.
    assert (ap.measured, ap.spread, ap.paper) == (pytest.approx(32.0), pytest.approx(2.0), 38.1)
    assert ap.samples == pytest.approx([30.0, 32.0, 34.0]) and ap.reference == "+ ctr. on reg."
    assert "mean over 3 seeds" in ap.note
    ex.record_row(results, paper.TABLE_4[2], outcomes[0], deterministic=True, weights="w")
    learned = results.measurements[-6]
    assert (learned.measured, learned.spread, learned.weights, learned.reference) == (pytest.approx(30.0), 0.0, "w", "None")


def test_with_files_switches_to_coco_and_rejects_unknown_keys(tmp_path):
    settings = scales.scale_settings("smoke", work_dir=tmp_path).with_files(train_ann="a.json", val_ann=None)
    assert settings.dataset == "coco" and settings.train_ann == "a.json" and settings.val_ann == ""
    with pytest.raises(ConfigError, match="unknown file setting"):
        settings.with_files(weights="w.pt")


def test_rows_that_differ_only_at_test_time_share_one_training(tmp_path):
    settings = scales.scale_settings("smoke", work_dir=tmp_path)
    key = lambda row: ex.training_key(ex.row_config(row, settings))
    assert key(paper.TABLE_4[0]) == key(paper.TABLE_4[1])  # None and center-ness from the box
    assert key(paper.TABLE_4[2]) == key(paper.TABLE_4[3])  # learned and oracle
    assert key(paper.TABLE_3[2]) == key(paper.TABLE_3[3])  # NMS .50 and .60
    assert key(paper.TABLE_3[0]) != key(paper.TABLE_3[1]) != key(paper.TABLE_4[2])


def test_select_rows_names_the_valid_rows():
    assert ex.select_rows(paper.TABLE_8, None) == list(paper.TABLE_8)
    assert ex.select_rows(paper.TABLE_8, ["FCOS, P5"]) == [paper.TABLE_8[3]]
    with pytest.raises(ConfigError, match="valid rows"):
        ex.select_rows(paper.TABLE_8, ["FCOS, P9"])


def test_record_row_keeps_the_tables_metrics_in_percent():
    results = Results(notebook="t", scale="smoke", hardware={})
    outcome = {"metrics": {"AR100": 0.25, "AR1000": 0.5, "AP": 0.1}, "note": "n"}
    ex.record_row(results, paper.TABLE_6[2], outcome)
    assert [(m.metric, m.measured, m.paper) for m in results.measurements] == [("AR100", 25.0, 52.8), ("AR1000", 50.0, 60.3)]


def test_record_statistics_and_difference():
    results = Results(notebook="t", scale="smoke", hardware={})
    stats = {"fcos_bpr_fpn": 98.0, "fcos_bpr_p4": 95.0, "ambiguous_p4": 23.0, "ambiguous_diff_class_p4": 17.0}
    ex.record_statistics(results, stats, paper.TABLE_1 + paper.TABLE_2, "subset")
    got = {(m.row, m.metric): (m.measured, m.paper) for m in results.measurements}
    assert got[("FCOS w/ FPN", "BPR")] == (98.0, 98.40)
    assert got[("w/o FPN (P4 only)", "ambiguous_diff_class")] == (17.0, 17.84)
    assert len(got) == 4  # rows whose keys are missing (RetinaNet here) and trained rows are skipped
    results.add("Table 7", "FCOS", "AP90", 5.0, 13.1)
    results.add("Table 7", "RetinaNet w/ GN", "AP90", 3.5, 10.4)
    ex.record_difference(results, "Table 7", "FCOS - RetinaNet", "FCOS", "RetinaNet w/ GN")
    last = results.measurements[-1]
    assert (last.row, last.measured, last.unit) == ("FCOS - RetinaNet", 1.5, "points")
    assert last.paper == pytest.approx(2.7)


def _tiny_coco(path: Path) -> Path:
    """One 800 x 800 image: box A (class 1) [100, 100, 300, 300], box B (class 2) [200, 200, 400, 400]."""
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 800, "height": 800}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [100, 100, 200, 200], "area": 40000, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [200, 200, 200, 200], "area": 40000, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    path.write_text(json.dumps(data))
    return path


def test_detections_from_ambiguous_locations_by_hand(tmp_path):
    # P5 (stride 32) locations sit at 16 + 32k. (240, 240) is inside A (l* = 140, r* = 60: max 140) and B
    # (l* = 40, r* = 160: max 160), both in P5's range [128, 256]: ambiguous, different classes.
    # (144, 144) is inside A only (max 156): not ambiguous. A P3 location there is no candidate of A
    # (max 156 > 64): not ambiguous either.
    ann = _tiny_coco(tmp_path / "gt.json")
    config = resolve("fcos_r50_fpn_1x", ["model.num_classes=2"])
    det = lambda location, level, score: {"image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10],
                                          "score": score, "level": level, "location": location}
    detections = [det([240, 240], 5, 0.9), det([144, 144], 5, 0.8), det([148, 148], 3, 0.7), det([240, 240], 5, 0.01)]
    share = qualitative.detections_from_ambiguous_locations(ann, detections, config, min_score=0.05)
    assert share["detections"] == 3 and share["ambiguous"] == 1 and share["ambiguous_diff_class"] == 1
    assert share["detections_ambiguous"] == pytest.approx(100 / 3)
    results = Results(notebook="t", scale="smoke", hardware={})
    ex.record_detection_share(results, paper.TABLE_2[2], share, "hand")
    assert [(m.metric, m.paper) for m in results.measurements] == [("detections_ambiguous", 2.3),
                                                                    ("detections_ambiguous_diff_class", 1.5)]


def test_statistics_file_cuts_the_first_images_at_smoke(tmp_path):
    ann = _tiny_coco(tmp_path / "gt.json")
    data = json.loads(ann.read_text())
    data["images"].append({"id": 3, "file_name": "b.jpg", "width": 10, "height": 10})
    ann.write_text(json.dumps(data))
    settings = replace(scales.scale_settings("smoke", work_dir=tmp_path), stats_ann=str(ann), stats_max_images=1)
    path, note = scales.statistics_file(settings, tmp_path / "out")
    subset = json.loads(Path(path).read_text())
    assert [i["id"] for i in subset["images"]] == [3] and subset["annotations"] == []
    assert "first 1 of 2 images" in note
    path, note = scales.statistics_file(settings.with_files(stats_max_images=0), tmp_path / "out")
    assert path == str(ann) and note.startswith("full")


def test_score_vs_iou_by_hand(tmp_path):
    ann = _tiny_coco(tmp_path / "gt.json")
    detections = [
        # Class 1 over the top half of A: IoU 100 x 200 / (200 x 200) = 0.5; score 0.8 x 0.5 = 0.4.
        {"image_id": 7, "category_id": 1, "bbox": [100, 100, 200, 100], "score": 0.4, "cls_score": 0.8, "centerness": 0.5},
        # Class 2 exactly on A: no class-2 box overlaps beyond B; IoU with B = 100^2 / (2 * 200^2 - 100^2) = 1/7.
        {"image_id": 7, "category_id": 2, "bbox": [100, 100, 200, 200], "score": 0.9, "cls_score": 0.9, "centerness": 1.0},
    ]
    points = score_vs_iou(ann, detections)
    np.testing.assert_allclose(points.iou, [0.5, 1 / 7])
    np.testing.assert_allclose(points.score, [0.4, 0.9])
    agnostic = score_vs_iou(ann, detections, class_agnostic=True)
    np.testing.assert_allclose(agnostic.iou, [0.5, 1.0])
    summary = summarize(points, high_score=0.5, low_iou=0.5)
    # Before: 0.8 > 0.5 and 0.9 > 1/7: both under y = x; after: 0.4 < 0.5, 0.9 > 1/7: one.
    assert summary["below_diagonal_before"] == 100.0 and summary["below_diagonal_after"] == 50.0
    assert summary["high_score_low_iou_before"] == 50.0 and summary["high_score_low_iou_after"] == 50.0
    assert summary["detections"] == 2


def test_figures_write_png_and_html(tmp_path):
    from fcos_lab.analysis.centerness_iou import ScoreIoU
    from fcos_lab.analysis.centerness_maps import LevelGrid
    from fcos_lab.postprocess import Detections
    from fcos_lab.viz import figures

    results = Results(notebook="t", scale="smoke", hardware={})
    results.add("Table 8", "a", "AP", 1.0, 36.6)
    results.add("Table 8", "b", "AP", None, 35.7)
    figure = figures.paper_vs_measured_figure(results.measurements, "AP", title="Table 8")
    assert len(figure.data) == 2 and list(figure.data[0].y) == [36.6, 35.7]
    assert figures.save_html(figure, tmp_path / "t8.html").is_file() and (tmp_path / "plotly.min.js").is_file()
    assert figures.paper_vs_measured_png(results.measurements, tmp_path / "t8.png", "AP").stat().st_size > 1000
    per_level = {"fcos_fpn": {"P3": {"boxes": 3}, "P4": {"boxes": 1}}, "fcos_p4": {"P4": {"boxes": 4}}}
    assert len(figures.per_level_figure(per_level, "boxes").data) == 2
    assert figures.per_level_png(per_level, tmp_path / "lv.png", "boxes").is_file()
    rng = np.random.default_rng(0)
    points = ScoreIoU(*(rng.random(50) for _ in range(4)), level=np.full(50, 3), image_id=np.arange(50))
    assert len(figures.score_iou_figure(points).data) == 4
    assert figures.score_iou_png(points, tmp_path / "f7.png").is_file()
    image = torch.rand(3, 64, 96)
    grids = [LevelGrid("P3", 8, np.where(rng.random((8, 12)) > 0.5, rng.random((8, 12)), np.nan), 4, 4, 8, 8),
             LevelGrid("P4", 16, np.full((4, 6), np.nan), 8, 8, 16, 16)]
    assert figures.centerness_png(image, grids, tmp_path / "f3.png").is_file()
    det = Detections(boxes=torch.tensor([[1.0, 2, 30, 40], [5, 5, 9, 9]]), scores=torch.tensor([0.9, 0.1]),
                     labels=torch.tensor([0, 1]), levels=torch.tensor([3, 4]), locations=torch.zeros(2, 2),
                     cls_scores=torch.tensor([0.9, 0.1]), centerness=torch.ones(2), location_index=torch.zeros(2, dtype=torch.long))
    drawn = figures.draw_all([image], [det], ["a", "b"], threshold=0.5)
    assert figures.image_grid_png(drawn, tmp_path / "f8.png", titles=["x"]).is_file()
    browser = figures.detection_browser([image, image], [det, det], ["a", "b"], threshold=0.5)
    picture, caption = browser.children[2], browser.children[1]
    assert picture.value[:4] == b"\x89PNG" and caption.value.startswith("1 of 2")
    browser.children[0].children[1].value = 0.0  # moving the slider redraws
    assert caption.value.startswith("2 of 2")


def test_smoke_on_coco_uses_the_128_image_files_and_names_what_is_missing(tmp_path):
    root = _fake_coco_root(tmp_path / "data", "workshop")
    settings = scales.scale_settings("smoke", root, dataset="coco")
    assert settings.train_ann == str(root / scales.COCO_FILES["workshop"][0])
    settings.check_training_data()
    partial = scales.scale_settings("smoke", work_dir=tmp_path).with_files(val_ann=str(root / scales.COCO_FILES["workshop"][2]))
    with pytest.raises(DataError, match="train_ann ''"):
        partial.check_training_data()
