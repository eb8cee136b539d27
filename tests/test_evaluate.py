"""COCO evaluation on hand-made scenes whose AP and AR can be derived on paper (fcos_lab.evaluate)."""

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from fcos_lab.detections_file import load_detections, save_detections
from fcos_lab.errors import DataError
from fcos_lab.evaluate import (
    EvalResult,
    ap_at_iou,
    evaluate_detections,
    precision_recall_curves,
)

BACKENDS = ["pycocotools", "faster_coco_eval"]
# Non-contiguous category ids, as in COCO itself, catch any id/index confusion.
CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
# (image_id, category_id, bbox xywh): small (< 32^2), medium and large boxes in two images.
GT_BOXES = [
    (1, 3, [10.0, 10.0, 20.0, 20.0]),  # area 400: small
    (1, 7, [100.0, 100.0, 50.0, 60.0]),  # area 3000: medium
    (2, 3, [200.0, 100.0, 200.0, 150.0]),  # area 30000: large
    (2, 7, [20.0, 300.0, 40.0, 40.0]),  # area 1600: medium
]


def make_gt(boxes=GT_BOXES, categories=CATEGORIES, num_images=2, size=(640, 480)) -> dict:
    width, height = size
    return {
        "images": [{"id": i, "width": width, "height": height, "file_name": f"{i}.jpg"}
                   for i in range(1, num_images + 1)],
        "categories": copy.deepcopy(categories),
        "annotations": [
            {"id": n, "image_id": image_id, "category_id": category_id, "bbox": list(bbox),
             "area": bbox[2] * bbox[3], "iscrowd": 0}
            for n, (image_id, category_id, bbox) in enumerate(boxes, start=1)
        ],
    }


def write_json(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload))
    return path


def perfect_detections(boxes=GT_BOXES, score: float = 0.9) -> list[dict]:
    return [{"image_id": i, "category_id": c, "bbox": list(b), "score": score} for i, c, b in boxes]


@pytest.fixture
def gt_file(tmp_path: Path) -> Path:
    return write_json(tmp_path / "gt.json", make_gt())


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_detections_score_one(gt_file: Path, backend: str) -> None:
    result = evaluate_detections(gt_file, perfect_detections(), backend=backend)
    assert isinstance(result, EvalResult) and result.backend == backend
    for key in ("AP", "AP50", "AP75", "AP90", "APs", "APm", "APl", "AR1", "AR10", "AR100"):
        assert result.metrics[key] == pytest.approx(1.0, abs=1e-9), key
    assert result.per_class_ap == pytest.approx({"cat": 1.0, "dog": 1.0}, abs=1e-9)
    assert result.precision.shape == (10, 101, 2, 4, 3)  # T x R x K x A x M
    assert result.category_ids == (3, 7)
    assert "maxDets= 100" in result.summary


@pytest.mark.parametrize("backend", BACKENDS)
def test_false_positive_at_rank_two_gives_hand_computed_ap(tmp_path: Path, backend: str) -> None:
    # One class, 4 GT boxes; detections ranked by score: TP, FP, TP, TP, TP (boxes exact, so the
    # same at every IoU threshold).
    #   rank:      1     2     3     4     5
    #   precision: 1/1   1/2   2/3   3/4   4/5
    #   recall:    .25   .25   .50   .75   1.0
    # COCO's envelope (max precision at this or higher recall): 1, .8, .8, .8, .8.
    # 101-point interpolation takes, for each recall threshold r in {0, .01, ..., 1}, the envelope
    # at the first rank whose recall >= r: r in [0, .25] -> rank 1 (26 points, precision 1),
    # r in [.26, 1] -> ranks 3..5 (75 points, precision .8).  AP = (26 * 1 + 75 * .8) / 101 = 86/101.
    boxes = [(1, 3, [10.0, 10.0, 30.0, 30.0]), (1, 3, [100.0, 100.0, 60.0, 40.0]),
             (2, 3, [50.0, 50.0, 80.0, 80.0]), (2, 3, [300.0, 200.0, 120.0, 90.0])]
    gt = write_json(tmp_path / "gt.json", make_gt(boxes, categories=CATEGORIES[:1]))
    scores = [0.9, 0.7, 0.6, 0.5]
    detections = [{"image_id": i, "category_id": c, "bbox": b, "score": s}
                  for (i, c, b), s in zip(boxes, scores)]
    detections.append({"image_id": 1, "category_id": 3, "bbox": [400.0, 300.0, 50.0, 50.0],
                       "score": 0.8})  # IoU 0 with every GT: the false positive at rank 2
    result = evaluate_detections(gt, detections, backend=backend)
    for key in ("AP", "AP50", "AP75", "AP90"):
        assert result.metrics[key] == pytest.approx(86 / 101, abs=1e-6), key
    assert result.metrics["AR100"] == pytest.approx(1.0)
    # AR1: one detection per image, the top-scored TP in each image -> 2 of 4 GTs.
    assert result.metrics["AR1"] == pytest.approx(0.5)
    assert result.per_class_ap == pytest.approx({"cat": 86 / 101}, abs=1e-6)


def random_scene(seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    boxes = []
    # Base sizes cover COCO's small, medium, large and a medium/large boundary case.
    base_sizes = [(16.0, 20.0), (60.0, 50.0), (150.0, 180.0), (30.0, 90.0)]
    for image_id in (1, 2, 3):
        for base in base_sizes:
            w, h = np.array(base) * rng.uniform(0.8, 1.2, size=2)
            x, y = rng.uniform(0, 400, size=2)
            boxes.append((image_id, int(rng.choice([3, 7])), [float(x), float(y), float(w), float(h)]))
    detections = []
    for _ in range(50):
        image_id, category_id, (x, y, w, h) = boxes[rng.integers(len(boxes))]
        jitter = rng.normal(0.0, 0.15, size=4) * [w, h, w, h]
        detections.append({
            "image_id": image_id,
            "category_id": category_id if rng.random() < 0.8 else int(rng.choice([3, 7])),
            "bbox": [float(x + jitter[0]), float(y + jitter[1]), float(max(1.0, w + jitter[2])),
                     float(max(1.0, h + jitter[3]))],
            "score": float(rng.random()),
        })
    return make_gt(boxes, num_images=3), detections


def test_backends_agree_on_random_detections(tmp_path: Path) -> None:
    gt, detections = random_scene(seed=0)
    gt_path = write_json(tmp_path / "gt.json", gt)
    reference = evaluate_detections(gt_path, detections, backend="pycocotools")
    fast = evaluate_detections(gt_path, detections, backend="faster_coco_eval")
    assert 0.05 < reference.metrics["AP"] < 0.95  # a scene that exercises partial matches
    # pycocotools divides by tp + fp + eps, faster-coco-eval by tp + fp: 2e-16 apart at most.
    assert fast.metrics.keys() == reference.metrics.keys()
    for key, value in reference.metrics.items():
        assert fast.metrics[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
    assert fast.per_class_ap == pytest.approx(reference.per_class_ap, abs=1e-12)
    np.testing.assert_allclose(fast.precision, reference.precision, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(fast.recall, reference.recall)


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_agnostic_counts_a_wrong_class_box(backend: str) -> None:
    gt = COCO()
    gt.dataset = make_gt(GT_BOXES[:1], num_images=1)
    gt.createIndex()
    untouched = copy.deepcopy(gt.dataset)
    detections = [{"image_id": 1, "category_id": 7, "bbox": GT_BOXES[0][2], "score": 0.9}]
    by_class = evaluate_detections(gt, detections, backend=backend)
    agnostic = evaluate_detections(gt, detections, backend=backend, class_agnostic=True)
    assert by_class.metrics["AP"] == 0.0  # a dog box where the GT is a cat
    assert agnostic.metrics["AP"] == pytest.approx(1.0, abs=1e-9)
    assert agnostic.per_class_ap.keys() == {"object"} and agnostic.class_agnostic
    assert gt.dataset == untouched  # the caller's COCO object is never modified
    assert gt.anns[1]["category_id"] == 3 and "ignore" not in gt.anns[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_detections_give_zeros(gt_file: Path, backend: str) -> None:
    result = evaluate_detections(gt_file, [], backend=backend)
    assert all(value == 0.0 for value in result.metrics.values()), result.metrics
    assert result.per_class_ap == {"cat": 0.0, "dog": 0.0}
    assert ap_at_iou(result) == {"AP50": 0.0, "AP75": 0.0, "AP90": 0.0}


def test_metric_without_ground_truth_is_nan_and_class_is_omitted(tmp_path: Path) -> None:
    gt = write_json(tmp_path / "gt.json", make_gt(GT_BOXES[:1]))  # one small cat, no dog
    result = evaluate_detections(gt, perfect_detections(GT_BOXES[:1]))
    assert math.isnan(result.metrics["APl"]) and math.isnan(result.metrics["APm"])
    assert result.per_class_ap.keys() == {"cat"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_proposal_recall_at_1000(tmp_path: Path, backend: str) -> None:
    # 1 image, 2 GT boxes, 150 proposals by descending score; the exact GT boxes are ranked 50th
    # and 120th, the other 148 are 10x10 boxes far from both GTs (IoU 0).
    # AR100: only the 50th is kept -> recall 1/2 at every IoU threshold -> 0.5.
    # AR300 = AR1000: both kept -> 1.0.
    # AP (at the last max_dets, 1000): precision 1/50 at recall .5 and 2/120 at recall 1;
    # envelope 1/50 for r in [0, .5] (51 points) and 1/60 for r in [.51, 1] (50 points).
    boxes = [(1, 3, [10.0, 10.0, 50.0, 50.0]), (1, 3, [500.0, 500.0, 100.0, 100.0])]
    gt = write_json(tmp_path / "gt.json", make_gt(boxes, CATEGORIES[:1], num_images=1,
                                                 size=(1000, 1000)))
    junk = iter([700.0 + 20 * (i % 14), 20.0 * (i // 14), 10.0, 10.0] for i in range(148))
    proposals = []
    for rank in range(1, 151):
        bbox = boxes[0][2] if rank == 50 else boxes[1][2] if rank == 120 else next(junk)
        proposals.append({"image_id": 1, "category_id": 3, "bbox": bbox, "score": 1.0 - rank / 1000})
    result = evaluate_detections(gt, proposals, class_agnostic=True, max_dets=(100, 300, 1000),
                                 backend=backend)
    assert result.metrics["AR100"] == pytest.approx(0.5)
    assert result.metrics["AR300"] == pytest.approx(1.0)
    assert result.metrics["AR1000"] == pytest.approx(1.0)
    assert result.metrics["AP"] == pytest.approx((51 / 50 + 50 / 60) / 101, abs=1e-6)
    assert "AR1" not in result.metrics and "maxDets=1000" in result.summary


def test_precision_recall_curves(tmp_path: Path) -> None:
    gt, detections = random_scene(seed=1)
    gt_path = write_json(tmp_path / "gt.json", gt)
    curves = precision_recall_curves(gt_path, detections)
    assert sorted(curves) == [0.5, 0.75, 0.9]
    agnostic = evaluate_detections(gt_path, detections, class_agnostic=True)
    ap = ap_at_iou(agnostic)
    assert ap.keys() == {"AP50", "AP75", "AP90"}
    assert ap["AP50"] == pytest.approx(agnostic.metrics["AP50"])
    assert ap["AP90"] == pytest.approx(agnostic.metrics["AP90"])
    for iou, (recall, precision) in curves.items():
        assert recall.shape == precision.shape == (101,)
        np.testing.assert_allclose(recall, np.linspace(0, 1, 101))
        assert np.all(np.diff(precision) <= 1e-12), iou  # COCO's envelope never increases
        assert np.all((precision >= 0) & (precision <= 1))
        assert precision.mean() == pytest.approx(ap[f"AP{round(iou * 100)}"])
    # A stricter IoU can only lower precision.
    assert np.all(curves[0.9][1] <= curves[0.5][1] + 1e-12)


def test_curves_from_a_per_class_result_average_the_classes(gt_file: Path) -> None:
    result = evaluate_detections(gt_file, perfect_detections()[:2])  # one cat and one dog found
    recall, precision = precision_recall_curves(result, iou_thresholds=(0.5,))[0.5]
    assert precision.mean() == pytest.approx(result.metrics["AP50"])
    with pytest.raises(ValueError, match="0.55"):
        precision_recall_curves(result, iou_thresholds=(0.42,))


def test_detections_file_round_trips_extra_fields(tmp_path: Path, gt_file: Path) -> None:
    detections = [
        {"image_id": 1, "category_id": 3, "bbox": [np.float32(10.5), 10, 20, 20],
         "score": np.float32(0.75), "level": np.int64(3), "location": np.array([20.0, 20.0]),
         "cls_score": 0.8, "centerness": 0.7},
        {"image_id": 2, "category_id": 7, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.1, "level": 7},
    ]
    path = save_detections(tmp_path / "out" / "dets.json", detections)
    gt = COCO(str(gt_file))
    loaded = load_detections(path, gt)
    assert loaded[0] == {"image_id": 1, "category_id": 3, "bbox": [10.5, 10, 20, 20], "score": 0.75,
                         "level": 3, "location": [20.0, 20.0], "cls_score": 0.8, "centerness": 0.7}
    assert loaded[1]["level"] == 7
    assert [p.name for p in path.parent.iterdir()] == ["dets.json"]  # no temp file left behind
    # The saved file feeds evaluation directly. One of the 2 cats found (IoU 390/410 > 0.95 at
    # every threshold) at precision 1: recall thresholds 0..0.5 score 1, i.e. AP = 51/101.
    assert evaluate_detections(gt_file, path).per_class_ap["cat"] == pytest.approx(51 / 101)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1.0},
          {"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}], r"detections\[1\].*'score'"),
        ([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1], "score": 1.0}], r"detections\[0\].*'bbox'"),
        ([{"image_id": 1, "category_id": 3, "bbox": [0, 0, "a", 1], "score": 1.0}],
         r"detections\[0\].*'bbox'"),
        ([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": float("nan")}],
         r"detections\[0\].*'score'"),
        ([{"image_id": 9, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1.0}],
         r"detections\[0\].*'image_id' 9"),
        ([{"image_id": 1, "category_id": 4, "bbox": [0, 0, 1, 1], "score": 1.0}],
         r"detections\[0\].*'category_id' 4"),
        ({"image_id": 1}, "must be a JSON list"),
    ],
)
def test_bad_detection_files_name_file_record_and_field(
    tmp_path: Path, gt_file: Path, payload, message: str
) -> None:
    # json.dumps writes NaN as the non-standard token that json.load accepts: the file is "valid".
    path = write_json(tmp_path / "bad_dets.json", payload)
    with pytest.raises(DataError, match=f"bad_dets.json.*{message}"):
        load_detections(path, COCO(str(gt_file)))
    with pytest.raises(DataError, match=f"bad_dets.json.*{message}"):
        evaluate_detections(gt_file, path)


def test_unreadable_files_raise_data_error(tmp_path: Path, gt_file: Path) -> None:
    (tmp_path / "truncated.json").write_text('[{"image_id": 1,')
    with pytest.raises(DataError, match="truncated.json.*not a valid JSON"):
        load_detections(tmp_path / "truncated.json")
    with pytest.raises(DataError, match="missing.json.*not found"):
        evaluate_detections(tmp_path / "missing.json", [])
    with pytest.raises(DataError, match=r"detections\[0\].*'score'"):
        save_detections(tmp_path / "never.json", [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1],
                                                   "score": float("inf")}])
    assert not (tmp_path / "never.json").exists()


def test_invalid_arguments(gt_file: Path) -> None:
    with pytest.raises(ValueError, match="pycocotools"):
        evaluate_detections(gt_file, [], backend="detectron2")
    with pytest.raises(ValueError, match="increasing"):
        evaluate_detections(gt_file, [], max_dets=(100, 10, 1))


def test_auto_backend_prefers_faster_coco_eval(gt_file: Path) -> None:
    assert evaluate_detections(gt_file, []).backend == "faster_coco_eval"


@pytest.mark.parametrize("backend", BACKENDS)
def test_segmentation_iou(tmp_path: Path, backend: str) -> None:
    from pycocotools import mask as mask_utils

    gt = make_gt(GT_BOXES[:2], num_images=1)
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    gt_path = write_json(tmp_path / "gt.json", gt)
    detections = []
    for _, category_id, (x, y, w, h) in GT_BOXES[:2]:
        rle = mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]], 480, 640)[0]
        rle["counts"] = rle["counts"].decode()
        detections.append({"image_id": 1, "category_id": category_id, "bbox": [x, y, w, h],
                           "score": 0.9, "segmentation": rle})
    result = evaluate_detections(gt_path, detections, iou_type="segm", backend=backend)
    assert result.metrics["AP"] == pytest.approx(1.0, abs=1e-9)
