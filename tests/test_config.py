"""Configuration (fcos_lab.config): dotted overrides, validation, serialisation, immutability."""

import dataclasses
import json
import math

import pytest

from fcos_lab.config import Config, apply_overrides, config_from_dict
from fcos_lab.errors import ConfigError
from fcos_lab.presets import get_preset, resolve


def test_dotted_overrides():
    c = resolve(
        "fcos_r50_fpn_1x",
        [
            "model.backbone=resnet101",
            "train.max_iters=200",
            "assign.size_ranges=[[0,32],[32,64],[64,128],[128,256],[256,inf]]",
            "model.pretrained_backbone=none",
            "model.learnable_scale=false",
            "postprocess.nms_thresh=0.5",
            "input.train_min_size=[640, 800]",
        ],
    )
    assert c.model.backbone == "resnet101"
    assert c.train.max_iters == 200 and isinstance(c.train.max_iters, int)
    assert c.assign.size_ranges == ((0, 32), (32, 64), (64, 128), (128, 256), (256, math.inf))
    assert isinstance(c.assign.size_ranges, tuple) and isinstance(c.assign.size_ranges[0], tuple)
    assert c.model.pretrained_backbone is None
    assert c.model.learnable_scale is False
    assert c.postprocess.nms_thresh == 0.5
    assert c.input.train_min_size == (640, 800)
    # The preset itself is untouched (frozen dataclasses, new objects).
    assert get_preset("fcos_r50_fpn_1x").model.backbone == "resnet50"
    # A path for the pretrained weights is kept as a string.
    with_weights = resolve("fcos_r50_fpn_1x", ["model.pretrained_backbone=/w/r50.pth"])
    assert with_weights.model.pretrained_backbone == "/w/r50.pth"
    # Overrides survive a round trip.
    assert config_from_dict(json.loads(c.to_json())) == c


def test_dict_overrides():
    c = apply_overrides(get_preset("fcos_r50_fpn_1x"), {"train.max_iters": 200, "assign.size_ranges": [[0, 1e9]] * 5})
    assert c.train.max_iters == 200
    with pytest.raises(ConfigError, match="expected int"):
        apply_overrides(get_preset("fcos_r50_fpn_1x"), {"train.max_iters": 2.5})


def test_unknown_key_lists_valid_fields():
    with pytest.raises(ConfigError) as info:
        resolve("fcos_r50_fpn_1x", ["model.backbnoe=resnet101"])
    message = str(info.value)
    assert "model.backbnoe" in message
    for name in ("backbone", "fpn_channels", "centerness_on", "head_norm"):
        assert name in message


def test_unknown_section_lists_valid_sections():
    with pytest.raises(ConfigError) as info:
        resolve("fcos_r50_fpn_1x", ["optim.lr=0.1"])
    for name in ("assign", "data", "input", "loss", "model", "postprocess", "train"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.max_iters=abc", "expected int"),
        ("train.max_iters=2.5", "expected int"),
        ("train.base_lr=fast", "expected float"),
        ("train.base_lr=nan", "NaN"),
        ("model.learnable_scale=maybe", "true/false"),
        ("assign.size_ranges=oops", "JSON list"),
        ("assign.size_ranges=[1, 2]", "expected a list"),
        ("input.train_min_size=[640, 700, 800]", "expected 2 values"),
        ("train.max_iters", "section.field=value"),
    ],
)
def test_wrong_type(override, expected):
    with pytest.raises(ConfigError, match=expected):
        resolve("fcos_r50_fpn_1x", [override])


@pytest.mark.parametrize(
    "override, choices",
    [
        ("model.backbone=resnet152", ["resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x8d"]),
        ("model.head_norm=bn", ["gn", "none"]),
        ("model.centerness_on=box", ["cls", "reg", "none"]),
        ("loss.box_loss=l1", ["iou", "giou", "smooth_l1"]),
        ("postprocess.centerness_mode=sqrt", ["learned", "none", "from_box", "oracle"]),
        ("assign.location_offset=center", ["half_stride", "zero"]),
    ],
)
def test_bad_literal_lists_choices(override, choices):
    with pytest.raises(ConfigError) as info:
        resolve("fcos_r50_fpn_1x", [override])
    message = str(info.value)
    assert "valid choices" in message
    for choice in choices:
        assert choice in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.strides=[8,16,32]", "size_ranges has 5 ranges"),
        ("assign.size_ranges=[[0,64],[128,64],[128,256],[256,512],[512,inf]]", "lo < hi"),
        ("model.num_classes=0", "num_classes"),
        ("model.frozen_stages=5", "0..4"),
        ("model.fpn_channels=48", "multiple of 32"),
        ("model.centerness_on=none", "centerness_mode=learned"),
        ("train.batch_size=0", "batch_size"),
        ("input.train_min_size=[800, 640]", "train_min_size"),
    ],
)
def test_cross_field_validation(override, expected):
    with pytest.raises(ConfigError, match=expected):
        resolve("fcos_r50_fpn_1x", [override])


def test_config_from_dict_rejects_bad_content():
    good = get_preset("fcos_r50_fpn_1x").to_dict()
    with pytest.raises(ConfigError, match="unknown fields"):
        config_from_dict({**good, "model": {**good["model"], "bogus": 1}})
    with pytest.raises(ConfigError, match="valid choices"):
        config_from_dict({**good, "model": {**good["model"], "backbone": "resnet152"}})
    with pytest.raises(ConfigError, match="expected int"):
        config_from_dict({**good, "train": {**good["train"], "max_iters": "many"}})
    # Missing sections fall back to the defaults.
    assert config_from_dict({"name": "x"}) == Config(name="x")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("fcos_r50_fpn_1x").model.backbone = "resnet18"  # type: ignore[misc]
