"""ONNX export (``fcos-lab export --format onnx``): onnxruntime's detections equal fcos_lab's own.

Three image sizes per model, one of them a single P6/P7 location wide. Without in-graph NMS the graph's
dense boxes and scores go through fcos_lab's own selection (top-k per level, NMS, limit); with it the
graph's detections are compared directly. Boxes to 1e-2 px, scores to 1e-4, same labels and counts.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from fcos_lab.checkpoint import save_checkpoint
from fcos_lab.cli import main
from fcos_lab.data.transforms import ImageBatch
from fcos_lab.errors import ConfigError
from fcos_lab.interop.compare import detections_mismatch
from fcos_lab.interop.onnx import DeployableFCOS, export_onnx
from fcos_lab.model.detector import build_model
from fcos_lab.points import feature_shapes
from fcos_lab.postprocess import select_detections
from fcos_lab.predict import detect, preprocess_images
from fcos_lab.presets import resolve

# Demo preset (128 / 192 resize, the authors' rule): 100x130 -> 128x166 (padded 128x192); 96x224 -> 82x191
# (96x192); 256x64 -> 128x32 (128x32: P6 and P7 are one location wide).
SIZES = [(100, 130), (96, 224), (256, 64)]


def _seeded(preset: str, overrides: list[str]) -> tuple[nn.Module, object]:
    # The exported graph is float32: compare with fcos_lab in float32, not with the bf16 that
    # ``inference_amp=auto`` picks on a CPU with bf16 units (AMX or AVX-512 BF16).
    config = resolve(preset, [*overrides, "model.inference_amp=off"])
    torch.manual_seed(0)
    model = build_model(config).eval()
    # A fresh head scores every location at the prior 0.01: spread the logits so some pass the threshold.
    with torch.no_grad():
        nn.init.normal_(model.head.cls_logits.weight, std=0.05)
        nn.init.uniform_(model.head.cls_logits.bias, -3.0, -0.5)
        nn.init.normal_(model.head.centerness.weight, std=0.05)
    return model, config


def _images(sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, h, w, generator=generator) for h, w in sizes]


def _run(session: ort.InferenceSession, batch: ImageBatch, config, nms: bool):
    """Detections of the exported graph for a one-image batch, in the resized image's pixels."""
    outputs = [torch.from_numpy(o) for o in session.run(None, {
        "images": batch.tensors.numpy(), "image_size": np.array(batch.image_sizes[0], dtype=np.int64)})]
    if nms:
        return outputs
    boxes, ranked = outputs
    p = config.postprocess
    shapes = feature_shapes(tuple(batch.tensors.shape[-2:]), len(config.model.strides))
    assert boxes.shape[1] == ranked.shape[1] == sum(h * w for h, w in shapes)
    _, location, labels, scores = select_detections(
        boxes, ranked, [h * w for h, w in shapes], pre_nms_topk=p.pre_nms_topk, nms_thresh=p.nms_thresh,
        max_detections=p.max_detections, class_agnostic_nms=p.class_agnostic_nms)
    return boxes[0, location], scores, labels


def _assert_same(session, model, config, images, nms: bool) -> int:
    total = 0
    for image in images:
        batch = preprocess_images([image], config)
        expected = detect(model, config, [image])[0].rescaled(batch.original_sizes[0], batch.image_sizes[0])
        boxes, scores, labels = _run(session, batch, config, nms)
        got = {"boxes": boxes, "scores": scores, "labels": labels}
        problem = detections_mismatch(expected, got, score_tol=1e-4, box_tol=1e-2)
        assert problem is None, problem
        total += len(scores)
    return total


@pytest.fixture(scope="module")
def demo():
    return _seeded("fcos_demo_r18", [])


def test_dense_graph_matches_fcos_lab(demo, tmp_path):
    model, config = demo
    path = export_onnx(model, config, tmp_path / "dense.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    assert [(i.name, i.type) for i in inputs] == [("images", "tensor(float)"), ("image_size", "tensor(int64)")]
    assert inputs[0].shape[:2] == [1, 3] and all(isinstance(d, str) for d in inputs[0].shape[2:])  # dynamic H, W
    assert [o.name for o in outputs] == ["boxes", "scores"] and outputs[1].shape[-1] == config.model.num_classes
    assert _assert_same(session, model, config, _images(SIZES), nms=False) > 30


def test_nms_graph_from_the_cli_matches_fcos_lab(demo, tmp_path, capsys):
    model, config = demo
    save_checkpoint(tmp_path / "run" / "model_final.pt", model, config, iteration=0)
    code = main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "onnx", "--out",
                 str(tmp_path / "nms.onnx"), "--nms"])
    assert code == 0, capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["nms.onnx"]  # one file, no temporary left
    session = ort.InferenceSession(str(tmp_path / "nms.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels"]
    assert _assert_same(session, model, config, _images(SIZES), nms=True) > 30


@pytest.mark.slow
def test_nms_graph_without_candidates_is_empty(tmp_path):
    # A threshold no score reaches: no candidate at all, and the graph returns empty outputs as fcos_lab does.
    model, config = _seeded("fcos_demo_r18", ["postprocess.score_thresh=0.999"])
    session = ort.InferenceSession(str(export_onnx(model, config, tmp_path / "empty.onnx", nms=True)),
                                   providers=["CPUExecutionProvider"])
    image = _images(SIZES[:1])
    assert len(detect(model, config, image)[0].scores) == 0
    batch = preprocess_images(image, config)
    assert [tuple(o.shape) for o in _run(session, batch, config, nms=True)] == [(0, 4), (0,), (0,)]


@pytest.mark.slow
@pytest.mark.parametrize("nms", [False, True])
def test_torchvision_preset_graph_matches_fcos_lab(nms, tmp_path):
    # torchvision's rules: locations at x*s spaced by padded size // grid on P6/P7, sqrt(cls*ctr) thresholded.
    # A 320 / 533 resize keeps it quick; the graph itself does not depend on the resize.
    model, config = _seeded("fcos_r50_fpn_torchvision", ["input.min_size=320", "input.max_size=533",
                                                         "postprocess.score_thresh=0.25"])
    path = export_onnx(model, config, tmp_path / "tv.onnx", nms=nms)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert _assert_same(session, model, config, _images([(300, 410), (500, 230), (420, 420)]), nms=nms) > 30


def test_what_cannot_be_exported():
    with pytest.raises(ConfigError, match="FCOS only"):
        DeployableFCOS(nn.Identity(), resolve("retinanet_r50_fpn_1x"))
    with pytest.raises(ConfigError, match="oracle"):
        DeployableFCOS(nn.Identity(), resolve("fcos_r50_fpn_1x", ["postprocess.centerness_mode=oracle"]))
