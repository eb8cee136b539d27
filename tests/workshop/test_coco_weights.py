"""The instructor guide's day with torchvision's COCO weights: imported weights, real photographs, notebooks 05-06.

Seeded random torchvision weights stand in for the published file (nothing is downloaded); the photographs are
a few of ../shared/data's val2017 images with their boxes. The workshop's synthetic data stays the training and
check data; the imported model is looked at and evaluated on the photographs, at its own input size.
"""

from __future__ import annotations

import json

import pytest

from fcos_lab.runs import load_detector
from fcos_lab.workshop.session import Workshop
from tests.torchvision_weights import SMALL_INPUT, imported_torchvision_fcos
from tests.workshop.conftest import SMALL_DATA

PHOTOS = 3


@pytest.fixture(scope="module")
def photographs(shared_coco, tmp_path_factory):
    """A COCO-format file of the first val2017 images that have boxes, and their folder."""
    data = json.loads((shared_coco / "annotations" / "instances_val2017_lightly128_bboxonly_DERIVED.json").read_text())
    with_boxes = {a["image_id"] for a in data["annotations"]}
    data["images"] = [im for im in data["images"] if im["id"] in with_boxes][:PHOTOS]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = tmp_path_factory.mktemp("photos") / "photos.json"
    path.write_text(json.dumps(data))
    return path, shared_coco / "images" / "val2017"


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.timeout(600)
def test_an_imported_coco_model_on_photographs(small_workshop, photographs, tmp_path):
    folder, _, _ = small_workshop
    ann, images = photographs
    ws = Workshop(folder, overrides=SMALL_DATA, val_ann=ann, val_images=images)
    assert len(ws.val_set) == PHOTOS and ws.config.data.synthetic_num_val == 8  # checks and training: synthetic
    run = imported_torchvision_fcos(tmp_path)
    loaded = load_detector(run, overrides=SMALL_INPUT)
    evaluation = ws.evaluate(loaded, detections_path=tmp_path / "detections.json")
    assert evaluation["detections"], "the spread random head clears torchvision's 0.2 threshold somewhere"
    assert {d["category_id"] for d in evaluation["detections"]} <= {c["id"] for c in ws.val_set.coco.dataset["categories"]}
    assert 0.0 <= evaluation["metrics"]["AP50"] <= 1.0 and (tmp_path / "detections.json").is_file()
    analysis, _ = ws.error_analysis(loaded)
    assert analysis.summary["inputs"]["images"] == PHOTOS
    view_figure = ws.detections_view(loaded).figures()[0]
    assert view_figure.layout.title.text.endswith("detections")
    with pytest.raises(Exception, match="give both val_ann"):
        Workshop(folder, overrides=SMALL_DATA, val_ann=ann)
