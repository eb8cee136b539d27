"""Presets named after the paper's rows and tables (fcos_lab.presets)."""

import dataclasses
import json
import math

import pytest

from fcos_lab.config import config_from_dict, validate
from fcos_lab.errors import ConfigError
from fcos_lab.presets import DEMO_PRESET, PRESETS, get_preset, resolve


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_and_round_trips(name):
    config = resolve(name)
    assert config is PRESETS[name] and config.name == name
    validate(config)
    # to_dict -> config_from_dict, directly and through JSON (inf is written as Infinity and read back).
    assert config_from_dict(config.to_dict()) == config
    assert config_from_dict(json.loads(config.to_json())) == config
    assert config_from_dict(json.loads(config.to_json())).assign.size_ranges[-1][1] == math.inf


def test_demo_preset_is_registered():
    assert DEMO_PRESET in PRESETS


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError) as info:
        get_preset("fcos_r50_fpn_3x")
    for name in PRESETS:
        assert name in str(info.value)


def test_paper_preset_values():
    # Sections 3.1-3.3 and 4: P6/P7 from P5, GN in the head, NMS 0.6, center-ness on the classification
    # branch, IoU loss, exp(s_i x) with learnable s_i, m_2..m_7 = 0, 64, 128, 256, 512, inf, inclusive
    # bounds, floor(s/2) offset, no center sampling, threshold 0.05, 1000 top-k, 100 detections.
    c = get_preset("fcos_r50_fpn_1x")
    assert c.model.backbone == "resnet50"
    assert c.model.p6p7_from == "p5"
    assert c.model.head_norm == "gn"
    assert c.model.centerness_on == "cls"
    assert c.model.box_param == "exp" and c.model.learnable_scale is True
    assert c.model.strides == (8, 16, 32, 64, 128)
    assert c.model.num_classes == 80
    assert c.postprocess.nms_thresh == 0.6
    assert c.postprocess.score_thresh == 0.05
    assert c.postprocess.pre_nms_topk == 1000 and c.postprocess.max_detections == 100
    assert c.postprocess.centerness_mode == "learned"
    assert c.loss.box_loss == "iou" and c.loss.box_loss_weight == 1.0
    assert (c.loss.focal_alpha, c.loss.focal_gamma) == (0.25, 2.0)
    assert c.loss.centerness_weighted_box_loss is False
    assert c.assign.size_ranges == ((0, 64), (64, 128), (128, 256), (256, 512), (512, math.inf))
    assert c.assign.size_range_inclusive is True
    assert c.assign.center_sampling_radius == 0.0
    assert c.assign.location_offset == "half_stride"
    assert c.train.max_iters == 90_000 and c.train.batch_size == 16 and c.train.base_lr == 0.01
    assert (c.input.min_size, c.input.max_size) == (800, 1333)


def test_improvements_preset():
    # Table 3 "Improvements": center-ness on the regression branch, center sampling (radius 1.5), GIoU,
    # normalization (ReLU * stride); and the official code's center-ness-weighted box loss.
    base, c = get_preset("fcos_r50_fpn_1x"), get_preset("fcos_imprv_r50_fpn_1x")
    assert c.model.centerness_on == "reg"
    assert c.assign.center_sampling_radius == 1.5
    assert c.loss.box_loss == "giou"
    assert c.model.box_param == "relu"
    assert c.loss.centerness_weighted_box_loss is True
    # Everything else is the paper's model.
    assert dataclasses.replace(c.model, centerness_on="cls", box_param="exp") == base.model
    assert c.postprocess == base.postprocess and c.train == base.train


def test_c5_preset():
    # Table 3 row "C5 / no GN / .50": P6/P7 from C5, no GroupNorm, NMS 0.5 (and clipped gradients).
    c = get_preset("fcos_r50_c5")
    assert c.model.p6p7_from == "c5"
    assert c.model.head_norm == "none"
    assert c.postprocess.nms_thresh == 0.5
    assert c.train.grad_clip > 0


def test_backbone_presets():
    assert get_preset("fcos_r101_fpn_2x").model.backbone == "resnet101"
    assert get_preset("fcos_x101_32x8d_fpn_2x").model.backbone == "resnext101_32x8d"
    assert get_preset("fcos_x101_64x4d_fpn_2x").model.backbone == "resnext101_64x4d"
    assert get_preset("fcos_r101_fpn_2x").train.max_iters == 180_000
    assert get_preset("fcos_r101_fpn_2x").input.train_min_size == (640, 800)


def test_torchvision_preset():
    c = get_preset("fcos_r50_fpn_torchvision")
    assert c.assign.size_range_inclusive is False
    assert c.assign.location_offset == "zero" and c.assign.stride_from_image is True
    assert c.assign.area_tiebreak_float32 is True
    assert c.postprocess.threshold_on == "combined" and c.postprocess.score_sqrt is True
    assert c.model.num_classes == 91
