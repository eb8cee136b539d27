"""``fcos-lab import-weights``: a torchvision FCOS state-dict file becomes a run folder that evaluates like
torchvision itself, and every bad file is a one-line error that leaves nothing behind.

The weights are torchvision's own ``fcos_resnet50_fpn(weights=None, num_classes=91)`` with a seeded head,
saved as torchvision publishes them (a plain state dict ``.pth``); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from fcos_lab.checkpoint import load_checkpoint
from fcos_lab.cli import main
from fcos_lab.data.coco import load_image
from fcos_lab.interop.import_weights import identify_format
from fcos_lab.interop.torchvision import from_torchvision, torchvision_config
from fcos_lab.runs import load_detector
from tests.torchvision_weights import torchvision_fcos as _torchvision_fcos

COCO_NAMES = torchvision.models.detection.FCOS_ResNet50_FPN_Weights.COCO_V1.meta["categories"]


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory):
    """A torchvision COCO-style (91 classes) FCOS and its state dict saved as a ``.pth`` file."""
    tv = _torchvision_fcos(91, seed=0)
    path = tmp_path_factory.mktemp("weights") / "fcos_resnet50_fpn_random.pth"
    torch.save(tv.state_dict(), path)
    return tv, path


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to fetch weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)


def _import(capsys, path: Path, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["import-weights", str(path), "--from", "torchvision", "--out", str(out), *extra])
    return code, capsys.readouterr().err


def _subset_annotations(shared_coco: Path, out: Path, count: int = 3) -> tuple[Path, list[dict]]:
    """The first ``count`` val2017 images of distinct sizes (with boxes), all 80 categories."""
    full = json.loads((shared_coco / "annotations" / "instances_val2017_lightly128_bboxonly_DERIVED.json").read_text())
    with_boxes = {a["image_id"] for a in full["annotations"]}
    images, sizes = [], set()
    for image in sorted(full["images"], key=lambda i: i["id"]):
        if image["id"] in with_boxes and (image["height"], image["width"]) not in sizes:
            images.append(image)
            sizes.add((image["height"], image["width"]))
        if len(images) == count:
            break
    ids = {i["id"] for i in images}
    subset = {**full, "images": images, "annotations": [a for a in full["annotations"] if a["image_id"] in ids]}
    out.write_text(json.dumps(subset))
    return out, images


@pytest.mark.slow
@pytest.mark.shared_data
def test_imported_weights_evaluate_like_torchvision(coco_file, shared_coco, tmp_path, capsys, no_download):
    tv, path = coco_file
    code, err = _import(capsys, path, tmp_path / "run")
    assert code == 0, err
    assert {p.name for p in (tmp_path / "run").iterdir()} == {
        "model_final.pt", "model_final.safetensors", "config.json", "imported.json"}
    payload = load_checkpoint(tmp_path / "run")
    # Label k of torchvision's COCO model is COCO category k; the preset mirrors torchvision's defaults.
    assert payload["category_ids"] == list(range(91)) and payload["class_names"] == list(COCO_NAMES)
    assert payload["config"] == torchvision_config(tv)

    ann, images = _subset_annotations(shared_coco, tmp_path / "subset.json")
    assert len({(i["height"], i["width"]) for i in images}) == 3
    image_dir = shared_coco / "images" / "val2017"
    code = main(["eval", "--checkpoint", str(tmp_path / "run"), "--ann", str(ann), "--images", str(image_dir),
                 "--out", str(tmp_path / "eval"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert "AP" in json.loads((tmp_path / "eval" / "metrics.json").read_text())
    records = json.loads((tmp_path / "eval" / "detections.json").read_text())

    gt_ids = {c["id"] for c in json.loads(ann.read_text())["categories"]}
    with torch.no_grad():
        expected = tv([load_image(image_dir / i["file_name"]) for i in images])
    total = dropped = 0
    for image, exp in zip(images, expected):
        # Background (0) and "N/A" labels are no category of the ground truth: eval leaves them out.
        in_gt = torch.tensor([int(label) in gt_ids for label in exp["labels"]], dtype=torch.bool)
        dropped += int((~in_gt).sum())
        got = [r for r in records if r["image_id"] == image["id"]]
        assert len(got) == int(in_gt.sum())
        total += len(got)
        xywh = torch.tensor([r["bbox"] for r in got]).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        torch.testing.assert_close(boxes, exp["boxes"][in_gt], atol=1e-2, rtol=0)
        torch.testing.assert_close(torch.tensor([r["score"] for r in got]), exp["scores"][in_gt], atol=1e-4, rtol=0)
        assert [r["category_id"] for r in got] == exp["labels"][in_gt].tolist()
    assert total > 50 and dropped > 0, "the seeded head must give detections, some of them of unused indices"

    # predict reads the same run folder and keeps every label, its category id. One image alone is padded
    # to its own size, which moves torchvision's P6/P7 locations (stride = padded size // grid): compare
    # with torchvision on that image alone.
    code = main(["predict", "--checkpoint", str(tmp_path / "run"), str(image_dir / images[0]["file_name"]),
                 "--out", str(tmp_path / "pred"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    predicted = json.loads((tmp_path / "pred" / "detections.json").read_text())
    with torch.no_grad():
        alone = tv([load_image(image_dir / images[0]["file_name"])])[0]
    assert [r["category_id"] for r in predicted] == alone["labels"].tolist()
    torch.testing.assert_close(torch.tensor([r["score"] for r in predicted]), alone["scores"], atol=1e-4, rtol=0)


def test_other_class_count_wrapped_with_names(tmp_path, capsys, no_download):
    # A 3-class torchvision FCOS saved inside a training checkpoint ({"model": ...}) by a DataParallel run.
    tv = _torchvision_fcos(3, seed=1)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": {f"module.{k}": v for k, v in tv.state_dict().items()}, "epoch": 12}, path)
    names = tmp_path / "names.txt"
    names.write_text("__background__\ncat\ndog\n")
    code, err = _import(capsys, path, tmp_path / "run", "--class-names", str(names))
    assert code == 0, err
    loaded = load_detector(tmp_path / "run")
    model, config = loaded.model, loaded.config
    assert loaded.category_ids == (0, 1, 2) and loaded.class_names == ("__background__", "cat", "dog")
    assert config == torchvision_config(tv)
    reference, _ = from_torchvision(tv)
    expected = reference.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())

    names.write_text("cat\ndog\n")
    code, err = _import(capsys, path, tmp_path / "run2", "--class-names", str(names))
    assert code == 2 and "names.txt" in err and "2 class names" in err and "3 classes" in err
    assert not (tmp_path / "run2").exists()


def _assert_refused(capsys, path: Path, tmp_path: Path, *phrases: str) -> None:
    out = tmp_path / "out" / "run"
    code, err = _import(capsys, path, out)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err, err
    for phrase in phrases:
        assert phrase in err, err
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir()), "nothing half-written"


def test_not_a_weights_file(tmp_path, capsys):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    _assert_refused(capsys, empty, tmp_path, "empty")
    noise = tmp_path / "noise.pth"
    noise.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
                      .numpy().tobytes())
    _assert_refused(capsys, noise, tmp_path, "not a readable PyTorch weights file")
    text = tmp_path / "weights.json"
    text.write_text(json.dumps({"head.classification_head.cls_logits.weight": [[0.0]]}))
    _assert_refused(capsys, text, tmp_path, "JSON")
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listing)
    _assert_refused(capsys, listing, tmp_path, "holds no state dict")
    _assert_refused(capsys, tmp_path / "absent.pth", tmp_path, "not found")


def test_pickled_code_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"model": {"backbone.body.conv1.weight": Payload()}}, protocol=2))
    _assert_refused(capsys, evil, tmp_path, "refused", "mkdir", "weights_only")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "looks_like"),
    [
        # The official FCOS code (maskrcnn-benchmark): a training checkpoint of a DataParallel model.
        ({"model": {"module.backbone.body.stem.conv1.weight": 1, "module.rpn.head.cls_logits.weight": 1,
                    "module.rpn.head.centerness.weight": 1}, "iteration": 90000}, "official FCOS"),
        ({"model": {"backbone.bottom_up.stem.conv1.weight": 1, "proposal_generator.fcos_head.cls_logits.weight": 1,
                    "proposal_generator.fcos_head.ctrness.weight": 1}}, "AdelaiDet FCOS"),
        ({"model": {"backbone.bottom_up.stem.conv1.weight": 1, "head.cls_score.weight": 1}}, "detectron2"),
        ({"meta": {"mmdet_version": "2.25.0"}, "state_dict": {"backbone.conv1.weight": 1, "neck.lateral_convs.0.conv.weight": 1,
          "bbox_head.conv_cls.weight": 1, "bbox_head.conv_centerness.weight": 1}}, "mmdetection FCOS"),
        ({"backbone.body.conv1.weight": 1, "head.classification_head.cls_logits.weight": 1,
          "head.regression_head.bbox_reg.weight": 1}, "torchvision RetinaNet"),
        ({"backbone.body.conv1.weight": 1, "rpn.head.conv.0.0.weight": 1, "roi_heads.box_head.fc6.weight": 1},
         "torchvision Faster/Mask/Keypoint R-CNN"),
        ({"conv1.weight": 1, "layer1.0.conv1.weight": 1, "fc.weight": 1}, "ImageNet classification ResNet"),
        ({"head.cls_tower.0.weight": 1, "fpn.lateral.0.weight": 1}, "raw fcos_lab state dict"),
        ({"encoder.weight": 1}, "an unknown format"),
    ],
)
def test_other_formats_are_named(payload, looks_like, tmp_path, capsys):
    def tensors(value):
        return {k: tensors(v) for k, v in value.items()} if isinstance(value, dict) else (
            torch.zeros(1) if value == 1 else value)

    path = tmp_path / "other.pth"
    torch.save(tensors(payload), path)
    _assert_refused(capsys, path, tmp_path, "not a torchvision FCOS file", looks_like)


def test_fcos_lab_checkpoint_is_pointed_to_directly(tmp_path, capsys):
    path = tmp_path / "model_final.pt"
    torch.save({"format": "fcos_lab/1", "model": {"head.cls_logits.weight": torch.zeros(1)}}, path)
    _assert_refused(capsys, path, tmp_path, "already an fcos_lab checkpoint")


def test_missing_unexpected_and_mismatched_keys(coco_file, tmp_path, capsys):
    _, path = coco_file
    state = torch.load(path, weights_only=True)
    missing = {k: v for k, v in state.items() if not k.startswith("backbone.body.layer4.2.")}
    torch.save(missing, tmp_path / "missing.pth")
    _assert_refused(capsys, tmp_path / "missing.pth", tmp_path, "missing keys", "backbone.body.layer4.2.conv1.weight")
    torch.save({**state, "head.regression_head.extra.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    _assert_refused(capsys, tmp_path / "extra.pth", tmp_path, "1 unexpected keys", "head.regression_head.extra.weight")
    reshaped = {**state, "head.regression_head.bbox_reg.weight": torch.zeros(4, 128, 3, 3)}
    torch.save(reshaped, tmp_path / "shape.pth")
    _assert_refused(capsys, tmp_path / "shape.pth", tmp_path, "shape mismatches",
                    "head.regression_head.bbox_reg.weight (4, 128, 3, 3) (expected (4, 256, 3, 3))")


def test_existing_output_folder_is_kept(coco_file, tmp_path, capsys):
    _, path = coco_file
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, err = _import(capsys, path, out)
    assert code == 2 and "already exists" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_identify_format_prefers_fcos_over_retinanet():
    keys = ["head.classification_head.cls_logits.weight", "head.regression_head.bbox_reg.weight",
            "head.regression_head.bbox_ctrness.weight"]
    assert identify_format(keys) == "a torchvision FCOS state dict"
    assert identify_format(keys[:2]) == "a torchvision RetinaNet state dict"
