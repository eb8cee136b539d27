"""The FCOS network (fcos_lab.model): forward over every preset, frozen stages, weights files, bad inputs.

Input 1x3x32x64 keeps even R-101 / X-101 cheap: levels halve with ceil from 32x64, so P3..P7 are
4x8, 2x4, 1x2, 1x1, 1x1 and P = 32 + 8 + 2 + 1 + 1 = 44 locations.
"""

import dataclasses
import math

import pytest
import torch
import torchvision

from fcos_lab.errors import CheckpointError, InputError
from fcos_lab.losses import LossInputs, fcos_loss
from fcos_lab.model import FCOS, FCOSOutput, build_model
from fcos_lab.model.backbone import build_resnet, load_state_dict_file
from fcos_lab.objective import Objective
from fcos_lab.points import feature_shapes, grid_shapes, make_locations
from fcos_lab.presets import PRESETS, get_preset
from fcos_lab.targets import assign, pad_ground_truth

SIZE = (32, 64)
NUM_LOCATIONS = 4 * 8 + 2 * 4 + 1 * 2 + 1 + 1


def test_location_count_by_hand():
    assert feature_shapes(SIZE) == ((4, 8), (2, 4), (1, 2), (1, 1), (1, 1))
    assert sum(h * w for h, w in feature_shapes(SIZE)) == NUM_LOCATIONS == 44


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_forward_every_preset(name):
    config = PRESETS[name]
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *SIZE))
    num_classes = config.model.num_classes
    if config.model.detector == "anchor":
        # The RetinaNet / RPN baselines: A anchors per location, the same shapes otherwise.
        from fcos_lab.anchor_based.detector import AnchorOutput

        assert isinstance(out, AnchorOutput)
        num_anchors = len(config.model.anchor_scales) * len(config.model.anchor_ratios)
        assert out.cls_logits.shape == (1, NUM_LOCATIONS * num_anchors, num_classes)
        assert out.box_deltas.shape == (1, NUM_LOCATIONS * num_anchors, 4)
        assert out.anchors.shape == (NUM_LOCATIONS * num_anchors, 4)
        assert torch.isfinite(out.cls_logits).all() and torch.isfinite(out.box_deltas).all()
    else:
        # P3-P7 (44 locations), or P2-P7 with P2's 8 x 16 grid in front (172).
        shapes = grid_shapes(SIZE, config.model.strides)
        num_locations = sum(h * w for h, w in shapes)
        assert num_locations == (NUM_LOCATIONS if config.model.strides[0] == 8 else NUM_LOCATIONS + 128)
        assert isinstance(out, FCOSOutput)
        assert out.cls_logits.shape == (1, num_locations, num_classes)
        assert out.box_regression.shape == (1, num_locations, 4)
        if config.model.centerness_on == "none":
            assert out.centerness_logits is None
        else:
            assert out.centerness_logits.shape == (1, num_locations)
        assert out.feature_shapes == shapes and out.image_size == SIZE
        locations = Objective.from_config(config).output_locations(out)
        expected_locations = make_locations(
            shapes,
            config.model.strides,
            config.assign.location_offset,
            SIZE if config.assign.stride_from_image else None,
        )
        assert torch.equal(locations.points, expected_locations.points)
        assert torch.isfinite(out.cls_logits).all() and torch.isfinite(out.box_regression).all()
        # exp(s x) is positive; ReLU(s x) * stride is non-negative.
        if config.model.box_param == "exp":
            assert (out.box_regression > 0).all()
        else:
            assert (out.box_regression >= 0).all()
    # Section 4: classification bias = -log((1 - pi) / pi), so the initial scores are near pi = 0.01.
    bias = model.head.cls_logits.bias
    prior = config.model.prior_prob
    assert torch.allclose(bias, torch.full_like(bias, -math.log((1 - prior) / prior)))
    # Frozen stages (Detectron FREEZE_AT=2 = frozen_stages 1): stem and layer1 do not train.
    frozen = config.model.frozen_stages
    backbone = model.backbone
    assert all(p.requires_grad == (frozen == 0) for p in backbone.conv1.parameters())
    for i in range(1, 5):
        layer = getattr(backbone, f"layer{i}")
        assert all(p.requires_grad == (i > frozen) for p in layer.parameters()), f"layer{i}"
    assert all(p.requires_grad for p in model.fpn.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_p6p7_source():
    # Section 4.1.3: P6 from P5 (256 channels) in FCOS, from C5 (2048 channels on R-50) in RetinaNet.
    assert build_model(get_preset("fcos_r50_fpn_1x")).fpn.p6.in_channels == 256
    assert build_model(get_preset("fcos_r50_c5")).fpn.p6.in_channels == 2048


def test_head_norm_and_scales():
    paper = build_model(get_preset("fcos_demo_r18"))
    assert any(isinstance(m, torch.nn.GroupNorm) for m in paper.head.modules())
    assert isinstance(paper.head.scales, torch.nn.Parameter) and paper.head.scales.shape == (5,)
    no_gn = dataclasses.replace(get_preset("fcos_demo_r18").model, head_norm="none", learnable_scale=False)
    model = FCOS(no_gn)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in model.head.modules())
    assert not isinstance(model.head.scales, torch.nn.Parameter)
    assert "scales" not in dict(model.named_parameters())


@pytest.fixture(scope="module")
def demo_model():
    torch.manual_seed(0)
    return build_model(get_preset("fcos_demo_r18"))


@pytest.mark.parametrize("backbone_norm", ["frozen_bn", "bn"])
def test_same_output_type_in_train_and_eval(backbone_norm):
    config = dataclasses.replace(get_preset("fcos_demo_r18").model, backbone_norm=backbone_norm)
    torch.manual_seed(0)
    model = FCOS(config)
    images = torch.randn(2, 3, *SIZE)
    model.train()
    train_out = model(images)
    model.eval()
    with torch.no_grad():
        eval_out = model(images)
    assert type(train_out) is type(eval_out) is FCOSOutput
    for name in ("cls_logits", "box_regression", "centerness_logits"):
        assert getattr(train_out, name).shape == getattr(eval_out, name).shape
        if backbone_norm == "frozen_bn":  # frozen BatchNorm and GroupNorm behave the same in both modes
            torch.testing.assert_close(getattr(train_out, name), getattr(eval_out, name))
    assert train_out.cls_logits.requires_grad and not eval_out.cls_logits.requires_grad
    assert train_out.feature_shapes == eval_out.feature_shapes and train_out.image_size == eval_out.image_size


@pytest.mark.parametrize("frozen_stages", [0, 1, 2, 3, 4])
def test_frozen_stages(frozen_stages):
    resnet = build_resnet("resnet18", None, frozen_stages)
    stem_trains = frozen_stages == 0
    assert resnet.conv1.weight.requires_grad == stem_trains
    for i in range(1, 5):
        layer = getattr(resnet, f"layer{i}")
        assert all(p.requires_grad == (i > frozen_stages) for p in layer.parameters())
    # BatchNorm is frozen in every case (FrozenBatchNorm2d has buffers, no parameters).
    assert isinstance(resnet.bn1, torchvision.ops.misc.FrozenBatchNorm2d)
    assert not list(resnet.bn1.parameters())


def test_frozen_stages_out_of_range():
    with pytest.raises(ValueError, match="0..4"):
        build_resnet("resnet18", None, 5)


def test_unknown_backbone():
    with pytest.raises(CheckpointError, match="resnet50"):
        build_resnet("vgg16")


def test_missing_weights_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        build_resnet("resnet18", str(tmp_path / "nope.pth"))


def test_mismatched_weights_file(tmp_path):
    # ResNet-34 weights are not ResNet-18 weights: extra blocks (layer1.2...) are unexpected.
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(CheckpointError, match="not a torchvision resnet18 state dict"):
        build_resnet("resnet18", str(path))
    # Same keys, one wrong shape.
    state = torchvision.models.resnet18().state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(1, 1, 3, 3)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="mismatched shapes"):
        build_resnet("resnet18", str(tmp_path / "shape.pth"))
    # A missing key.
    state = torchvision.models.resnet18().state_dict()
    del state["layer4.1.conv2.weight"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="layer4.1.conv2.weight"):
        build_resnet("resnet18", str(tmp_path / "missing.pth"))


def test_unreadable_weights_file(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_state_dict_file(tmp_path / "garbage.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        load_state_dict_file(tmp_path / "list.pth")


def test_pretrained_resnet18_loads(tmp_path):
    # A torchvision state dict as saved from nn.BatchNorm2d models (with num_batches_tracked counters and
    # the fc layer): it must load into the FrozenBatchNorm2d backbone.
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    resnet = build_resnet("resnet18", str(path), frozen_stages=1)
    assert torch.equal(resnet.conv1.weight, reference.conv1.weight)
    assert torch.equal(resnet.layer3[1].bn2.running_var, reference.layer3[1].bn2.running_var)
    assert not hasattr(resnet, "fc")
    # Through the config as well, and wrapped as {"model": state} (a training checkpoint layout).
    torch.save({"model": reference.state_dict()}, tmp_path / "wrapped.pth")
    config = dataclasses.replace(
        get_preset("fcos_demo_r18").model, pretrained_backbone=str(tmp_path / "wrapped.pth")
    )
    model = FCOS(config)
    assert torch.equal(model.backbone.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)
    # The demo's learning BatchNorm keeps the file's statistics (and counters) too.
    assert config.backbone_norm == "bn"
    assert torch.equal(model.backbone.layer4[0].bn1.running_var, reference.layer4[0].bn1.running_var)


def test_pretrained_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    reference = torchvision.models.resnet18()
    save_file(reference.state_dict(), str(tmp_path / "resnet18.safetensors"))
    resnet = build_resnet("resnet18", str(tmp_path / "resnet18.safetensors"))
    assert torch.equal(resnet.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.zeros(3, 32, 64), r"\[B, 3, H, W\]"),
        (torch.zeros(1, 1, 32, 64), r"\[B, 3, H, W\]"),
        (torch.zeros(1, 3, 32, 64, dtype=torch.uint8), "floating-point"),
        (torch.zeros(1, 3, 32, 64, dtype=torch.int64), "floating-point"),
        ([torch.zeros(3, 32, 64)], "list"),
    ],
)
def test_bad_inputs(demo_model, images, match):
    with pytest.raises(InputError, match=match):
        demo_model(images)


def test_exp_overflow_does_not_poison_gradients():
    # Paper's head (exp(s x)) on a light backbone. Push the raw regression output to ~1000 everywhere:
    # exp(1000) overflows float32, and the resulting 0 * inf = NaN on background locations would reach
    # every head weight. The clamp before exp keeps the gradients finite.
    config = get_preset("fcos_r50_fpn_1x")
    model_config = dataclasses.replace(config.model, backbone="resnet18", fpn_channels=64, num_classes=3)
    torch.manual_seed(0)
    model = FCOS(model_config)
    with torch.no_grad():
        model.head.box_pred.bias.fill_(1000.0)
    out = model(torch.randn(1, 3, *SIZE))
    locations = Objective.from_config(config).output_locations(out)
    assert torch.isfinite(out.box_regression).all()
    gt = pad_ground_truth([torch.tensor([[2.0, 2.0, 30.0, 26.0]])], [torch.tensor([1])])
    a = assign(locations, gt, ((0, 32), (32, 64), (64, 128), (128, 256), (256, math.inf)))
    assert a.positive.any() and (~a.positive).any()
    losses = fcos_loss(
        LossInputs(out.cls_logits, out.box_regression, out.centerness_logits, a.labels, a.box_targets,
                   a.centerness_targets, a.positive, locations.strides[None])
    )
    losses["loss"].backward()
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), name


def test_ordinary_exp_predictions_are_unchanged(demo_model):
    # The clamp only bites past e^60: a normal forward equals exp(s x) computed by hand.
    config = dataclasses.replace(get_preset("fcos_r50_fpn_1x").model, backbone="resnet18", fpn_channels=64)
    torch.manual_seed(0)
    model = FCOS(config).eval()
    features = [torch.randn(1, 64, 4, 8), torch.randn(1, 64, 2, 4)]
    model.head.scales.data = torch.tensor([1.5, 0.5, 1.0, 1.0, 1.0])
    with torch.no_grad():
        _, box, _ = model.head(features)
        raw0 = model.head.box_pred(model.head.box_tower(features[0])).flatten(2).transpose(1, 2)
    torch.testing.assert_close(box[:, :32], torch.exp(1.5 * raw0))
