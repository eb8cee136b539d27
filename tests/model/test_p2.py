"""The P2 level (stride 4), an extension for small objects: config, network, assignment, training, export.

Input 1x3x32x64: P2..P7 are 8x16, 4x8, 2x4, 1x2, 1x1, 1x1 (ceil halvings), P = 128 + 32 + 8 + 2 + 1 + 1 = 172.
"""

import math

import pytest
import torch

from fcos_lab.analysis.recall_ambiguity import recall_and_ambiguity
from fcos_lab.analysis.tune import with_p2
from fcos_lab.demo import demo_config
from fcos_lab.errors import ConfigError
from fcos_lab.model import FCOSOutput, build_model
from fcos_lab.objective import Objective
from fcos_lab.paper import SIZE_RANGES
from fcos_lab.presets import P2_SIZE_RANGES, P2_STRIDES, get_preset, resolve
from fcos_lab.targets import pad_ground_truth
from fcos_lab.train import train
from tests.analysis.test_level_statistics import padded

SMALL = ["model.backbone=resnet18", "model.fpn_channels=64"]
SIZE = (32, 64)
SHAPES = ((8, 16), (4, 8), (2, 4), (1, 2), (1, 1), (1, 1))
P2_DEMO = ["model.strides=[4,8,16,32,64,128]", "assign.size_ranges=[[0,8],[8,16],[16,32],[32,64],[64,128],[128,inf]]"]


def test_p2_preset_and_validation():
    config = get_preset("fcos_r50_fpn_p2_1x")
    assert config.model.strides == P2_STRIDES == (4, 8, 16, 32, 64, 128)
    assert config.assign.size_ranges == P2_SIZE_RANGES == with_p2(SIZE_RANGES)
    assert Objective.from_config(config).level_names == ("P2", "P3", "P4", "P5", "P6", "P7")
    for overrides, message in [  # messages are regular expressions
        (["model.strides=[4,8,16,32,64]", "assign.size_ranges=[[0,1],[1,2],[2,3],[3,4],[4,inf]]"], "up to 128"),
        (["model.strides=[2,4,8,16,32,64,128]", f"assign.size_ranges={[[i, i + 1] for i in range(6)] + [[6, 'inf']]}"
          .replace("'", "")], r"from 8 \(P3\) or 4 \(P2\)"),
        (["model.strides=[4,8,16,32,64,128]"], "size_ranges has 5 ranges"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve("fcos_r50_fpn_1x", overrides)
    with pytest.raises(ConfigError, match="anchor_sizes has 5 sizes"):
        resolve("retinanet_r50_fpn_1x", ["model.strides=[4,8,16,32,64,128]",
                                         "assign.size_ranges=[[0,32],[32,64],[64,128],[128,256],[256,512],[512,inf]]"])


@pytest.mark.parametrize("backbone, c2_channels", [("resnet18", 64), ("resnet50", 256)])
def test_forward_with_p2(backbone, c2_channels):
    config = resolve("fcos_r50_fpn_p2_1x", [f"model.backbone={backbone}"])
    torch.manual_seed(0)
    model = build_model(config).eval()
    # FPN: a lateral conv per input C2..C5; C2 is layer1's output (64 channels on R-18, 256 on R-50).
    assert model.fpn.lateral[0].in_channels == c2_channels and len(model.fpn.lateral) == 4
    assert model.head.scales.shape == (6,)  # one learnable scale per level, the head shared by all six
    with torch.no_grad():
        out = model(torch.randn(1, 3, *SIZE))
    assert isinstance(out, FCOSOutput) and out.feature_shapes == SHAPES
    assert out.cls_logits.shape == (1, 172, 80) and out.box_regression.shape == (1, 172, 4)
    assert torch.isfinite(out.cls_logits).all() and (out.box_regression > 0).all()
    locations = Objective.from_config(config).output_locations(out)
    assert locations.num_per_level == (128, 32, 8, 2, 1, 1)
    assert locations.points[0].tolist() == [2.0, 2.0]  # floor(4 / 2) on P2
    # The P3-P7 model of the same backbone: same C3-C5 laterals, no P2.
    paper = build_model(resolve("fcos_r50_fpn_1x", [f"model.backbone={backbone}"]))
    assert len(paper.fpn.lateral) == 3 and paper.head.scales.shape == (5,)


def test_a_tiny_box_only_p2_recalls():
    # Box (5, 5, 11, 11) in a 32 x 32 image. P3 locations lie at 4, 12, 20, 28: none strictly inside (4 < 5,
    # 12 > 11). P2 locations lie at 2, 6, 10, 14, ...: (6|10, 6|10) are inside, and at (6, 6) max(l*, t*, r*, b*)
    # = max(1, 1, 5, 5) = 5, within P2's (0, 32): four P2 locations regress it.
    boxes = padded([[(5.0, 5.0, 11.0, 11.0)]], [[0]])
    paper = Objective.from_config(get_preset("fcos_r50_fpn_1x"))
    p2 = Objective.from_config(get_preset("fcos_r50_fpn_p2_1x"))
    assert recall_and_ambiguity(boxes, paper)["best_possible_recall"] == 0.0
    with_p2_level = recall_and_ambiguity(boxes, p2)
    assert with_p2_level["best_possible_recall"] == 100.0 and with_p2_level["positive_locations"] == 4
    assert [row["boxes regressed"] for row in with_p2_level["per_level"]] == [1, 0, 0, 0, 0, 0]
    # The training loss of a P2 model sees it: four positive locations, all on P2.
    gt = pad_ground_truth([torch.tensor([[5.0, 5.0, 11.0, 11.0]])], [torch.tensor([0])])
    config = resolve("fcos_r50_fpn_p2_1x", SMALL)
    torch.manual_seed(0)
    out = build_model(config)(torch.randn(1, 3, 32, 32))
    assignment = Objective.from_config(config).assign_output(out, gt)
    points = Objective.from_config(config).output_locations(out).points[assignment.positive[0]]
    assert sorted(points.tolist()) == [[6.0, 6.0], [6.0, 10.0], [10.0, 6.0], [10.0, 10.0]]
    losses = Objective.from_config(config).loss(out, gt)
    assert all(math.isfinite(float(v.detach())) for v in losses.values()) and float(losses["loss_box"].detach()) > 0


def test_two_training_iterations_with_p2(tmp_path):
    config = demo_config(tmp_path, quick=True, overrides=["train.max_iters=2", "train.batch_size=2", *P2_DEMO])
    result = train(config, tmp_path / "run", device="cpu", evaluate_at_end=False, progress=False)
    assert result.iterations == 2
    saved = (tmp_path / "run" / "model_final.pt")
    assert saved.is_file()
    state = torch.load(saved, map_location="cpu", weights_only=False)["model"]
    assert state["head.scales"].shape == (6,) and "fpn.lateral.3.weight" in state


def test_onnx_export_with_p2(tmp_path):
    # The exported graph (locations from the symbolic feature-map sizes, P2 first) gives fcos_lab's detections.
    # A random head scores many locations alike: rows are matched as a set (fcos_lab.interop.compare).
    import numpy as np
    import onnxruntime as ort

    from fcos_lab.interop.compare import detections_mismatch
    from fcos_lab.interop.onnx import export_onnx
    from fcos_lab.predict import detect, preprocess_images
    from tests.interop.test_onnx import _images, _seeded

    model, config = _seeded("fcos_demo_r18", P2_DEMO)
    session = ort.InferenceSession(str(export_onnx(model, config, tmp_path / "p2.onnx", nms=True)),
                                   providers=["CPUExecutionProvider"])
    total = 0
    for image in _images([(100, 130), (96, 224)]):
        batch = preprocess_images([image], config)  # the resize rule of the config, as detect uses
        expected = detect(model, config, [image])[0].rescaled(batch.original_sizes[0], batch.image_sizes[0])
        boxes, scores, labels = (torch.from_numpy(o) for o in session.run(None, {
            "images": batch.tensors.numpy(), "image_size": np.array(batch.image_sizes[0], dtype=np.int64)}))
        got = {"boxes": boxes, "scores": scores, "labels": labels}
        assert detections_mismatch(expected, got, score_tol=1e-4, box_tol=1e-2) is None
        total += len(scores)
    assert total > 10
