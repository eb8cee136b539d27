"""Imported torchvision weights through the app's loader and page functions, and through the FiftyOne export.

The same seeded torchvision FCOS as ``tests/interop/test_import_weights.py`` (saved as a plain ``.pth``,
nothing downloaded), imported with the CLI; each surface must give torchvision's own detections on real
val2017 images of several sizes (boxes to 1e-2 px, scores to 1e-4, same labels and counts).
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from fcos_lab.cli import main
from fcos_lab.data.coco import load_image
from fcos_lab.interop.compare import detections_mismatch
from fcos_lab.predict import detections_from
from tests.conftest import REPO
from tests.interop.test_import_weights import _subset_annotations
from tests.torchvision_weights import save_torchvision_fcos, torchvision_fcos

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The run folder of ``fcos-lab import-weights`` and the torchvision model it came from."""
    folder = tmp_path_factory.mktemp("imported")
    path = save_torchvision_fcos(folder / "fcos_resnet50_fpn_seeded.pth", num_classes=91, seed=0)
    assert main(["import-weights", str(path), "--from", "torchvision", "--out", str(folder / "run")]) == 0
    return folder / "run", torchvision_fcos(91, 0)


def _assert_same(got_boxes, got_scores, got_labels, expected) -> None:
    """Same count, and every row of ``expected`` matched by one of ``got`` (a seeded random head scores many
    locations alike, so rows of equal score are matched as a set: fcos_lab.interop.compare)."""
    assert len(got_scores) == len(expected["scores"]) > 0
    got = {"boxes": torch.as_tensor(got_boxes, dtype=torch.float32).reshape(-1, 4),
           "scores": torch.as_tensor(got_scores, dtype=torch.float32),
           "labels": torch.as_tensor(list(got_labels), dtype=torch.int64)}
    problem = detections_mismatch(expected, got, score_tol=1e-4, box_tol=1e-2)
    assert problem is None, problem


def test_the_apps_loader_and_detections_page_functions(imported, shared_coco, tmp_path, monkeypatch):
    # The Detections page: fcos_app.detector (the app's cached loader), fcos_app.dense_prediction at the
    # model's own input size, then detections_from with the preset's threshold and NMS, one image at a time.
    run, tv = imported
    monkeypatch.syspath_prepend(str(REPO / "app"))
    sys.modules.pop("fcos_app", None)
    import fcos_app

    loaded = fcos_app.detector(str(run / "model_final.pt"), 0.0, None)
    post = loaded.config.postprocess
    _, images = _subset_annotations(shared_coco, tmp_path / "subset.json")
    for record in images:
        image = load_image(shared_coco / "images" / "val2017" / record["file_name"])
        dense = fcos_app.dense_prediction(fcos_app.model_key(loaded), record["file_name"],
                                          loaded.config.input.min_size, loaded, image)
        got = detections_from(dense, score_thresh=post.score_thresh, nms_thresh=post.nms_thresh)
        with torch.no_grad():
            expected = tv([image])[0]
        _assert_same(got.boxes, got.scores, got.labels.tolist(), expected)


def test_the_fiftyone_export(imported, shared_coco, tmp_path, fo, capsys):
    # fcos-lab eval writes the detections, fcos-lab fiftyone imports them: each sample's predictions are
    # torchvision's detections, in FiftyOne's relative boxes, under the COCO category names.
    from fcos_lab.integrations.fiftyone_fields import PRED_FIELD

    run, tv = imported
    ann, images = _subset_annotations(shared_coco, tmp_path / "subset.json")
    image_dir = shared_coco / "images" / "val2017"
    assert main(["eval", "--checkpoint", str(run), "--ann", str(ann), "--images", str(image_dir),
                 "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0, capsys.readouterr().err
    assert main(["fiftyone", "--ann", str(ann), "--images", str(image_dir), "--pred",
                 str(tmp_path / "eval" / "detections.json"), "--name", "fcos-lab-imported",
                 "--preset", "fcos_r50_fpn_torchvision"]) == 0, capsys.readouterr().err
    dataset = fo.load_dataset("fcos-lab-imported")
    names = {c["id"]: c["name"] for c in json.loads(ann.read_text())["categories"]}
    # eval runs the images as one batch, padded to the largest; torchvision's P6/P7 locations follow the
    # padded size (stride = padded size // grid), so torchvision runs the same batch.
    with torch.no_grad():
        batch = tv([load_image(image_dir / record["file_name"]) for record in images])
    for record, expected in zip(images, batch, strict=True):
        sample = dataset.match({"coco_id": record["id"]}).first()
        width, height = record["width"], record["height"]
        predictions = sorted(sample[PRED_FIELD].detections, key=lambda d: -d.confidence)
        # eval keeps the labels that are categories of the file (not background 0 or "N/A").
        keep = torch.tensor([int(label) in names for label in expected["labels"]], dtype=torch.bool)
        expected = {k: v[keep] for k, v in expected.items()}
        boxes = [[d.bounding_box[0] * width, d.bounding_box[1] * height,
                  (d.bounding_box[0] + d.bounding_box[2]) * width, (d.bounding_box[1] + d.bounding_box[3]) * height]
                 for d in predictions]
        ids = {name: category for category, name in names.items()}
        _assert_same(boxes, [d.confidence for d in predictions], [ids[d.label] for d in predictions], expected)
