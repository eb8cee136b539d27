"""fcos_lab.analysis.from_weights: what identifies given weights, and the validation subset they are scored on.

(The evaluation itself runs in tests/notebooks/test_notebooks.py, through the notebooks, on random
torchvision weights imported with fcos-lab import-weights.)
"""

from __future__ import annotations

import hashlib
import json

import pytest

from fcos_lab.analysis import from_weights, scales
from fcos_lab.checkpoint import save_checkpoint
from fcos_lab.errors import CheckpointError, ConfigError
from fcos_lab.model import build_model
from fcos_lab.presets import resolve


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder holding one small fcos_lab checkpoint."""
    folder = tmp_path_factory.mktemp("run")
    config = resolve("fcos_demo_r18")
    save_checkpoint(folder / "model_final.pt", build_model(config), config, iteration=0)
    return folder


def test_a_checkpoint_is_named_by_its_file_and_sha256(run_folder):
    given = from_weights.given_weights(run_folder)  # a folder: its newest checkpoint
    checkpoint = run_folder / "model_final.pt"
    assert given.checkpoint == checkpoint and given.name == "model_final.pt" and given.detector == "fcos"
    assert given.sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert given.label == f"model_final.pt (sha256 {given.sha256}, fcos_lab checkpoint)"
    assert from_weights.given_weights(checkpoint) == given


def test_imported_weights_are_named_by_the_file_imported_json_records(run_folder, tmp_path):
    folder = tmp_path / "imported"
    folder.mkdir()
    (folder / "model_final.pt").write_bytes((run_folder / "model_final.pt").read_bytes())
    record = {"source": "torchvision", "file": "/somewhere/fcos_resnet50_fpn_coco-99b0c9b7.pth", "sha256": "99b0c9b7" * 8}
    (folder / "imported.json").write_text(json.dumps(record))
    given = from_weights.given_weights(folder)
    assert (given.name, given.sha256, given.source) == ("fcos_resnet50_fpn_coco-99b0c9b7.pth", "99b0c9b7" * 8, "torchvision")
    assert given.label.endswith("imported from torchvision)")
    (folder / "imported.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="imported.json: unreadable provenance record"):
        from_weights.given_weights(folder)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        from_weights.given_weights(tmp_path / "missing")


def test_validation_subset_keeps_the_first_images_by_id(tmp_path):
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 10, "height": 10} for i in (9, 3, 5)],
        "annotations": [{"id": k, "image_id": i, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0}
                        for k, i in enumerate((9, 3, 5, 3))],
        "categories": [{"id": 1, "name": "a"}],
    }))
    settings = scales.scale_settings("smoke", work_dir=tmp_path).with_files(val_ann=str(ann), val_images=str(tmp_path))
    assert from_weights.validation_subset(settings, tmp_path / "out", None) is settings
    subset = from_weights.validation_subset(settings, tmp_path / "out", 2)
    data = json.loads(open(subset.val_ann).read())
    assert [i["id"] for i in data["images"]] == [3, 5] and sorted(a["id"] for a in data["annotations"]) == [1, 2, 3]
    assert subset.val_images == str(tmp_path) and subset.dataset == "coco"
    with pytest.raises(ConfigError, match="val_max_images needs COCO-format"):
        from_weights.validation_subset(scales.scale_settings("smoke", work_dir=tmp_path), tmp_path, 2)
