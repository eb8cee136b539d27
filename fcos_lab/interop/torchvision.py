"""Exchange weights with ``torchvision.models.detection.FCOS``.

:func:`from_torchvision` turns a torchvision FCOS (for example ``fcos_resnet50_fpn(weights=None,
weights_backbone=None)``) into an fcos_lab model with the ``fcos_r50_fpn_torchvision`` preset and the
same weights, so that both produce the same detections and the same losses (see
``tests/interop/test_torchvision_parity.py``).
"""

from __future__ import annotations

import re
from dataclasses import replace

from torch import nn

from fcos_lab.config import Config
from fcos_lab.errors import CheckpointError
from fcos_lab.model.detector import FCOS, build_model
from fcos_lab.presets import get_preset

_RENAMES = (
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.", r"fpn.lateral.\1."),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.", r"fpn.output.\1."),
    (r"^backbone\.fpn\.extra_blocks\.", "fpn."),
    (r"^head\.classification_head\.conv\.", "head.cls_tower."),
    (r"^head\.classification_head\.cls_logits\.", "head.cls_logits."),
    (r"^head\.regression_head\.conv\.", "head.box_tower."),
    (r"^head\.regression_head\.bbox_reg\.", "head.box_pred."),
    (r"^head\.regression_head\.bbox_ctrness\.", "head.centerness."),
)


def torchvision_key_to_fcos_lab(key: str) -> str:
    """The fcos_lab state-dict key of a torchvision FCOS key."""
    for pattern, replacement in _RENAMES:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    raise CheckpointError(f"torchvision FCOS key {key!r} has no fcos_lab counterpart")


def torchvision_config(tv_model: nn.Module) -> Config:
    """The ``fcos_r50_fpn_torchvision`` preset adjusted to ``tv_model``'s classes and post-processing."""
    config = get_preset("fcos_r50_fpn_torchvision")
    num_classes = tv_model.head.classification_head.num_classes
    transform = tv_model.transform
    return replace(
        config,
        model=replace(config.model, num_classes=num_classes),
        postprocess=replace(
            config.postprocess,
            score_thresh=float(tv_model.score_thresh),
            nms_thresh=float(tv_model.nms_thresh),
            max_detections=int(tv_model.detections_per_img),
            pre_nms_topk=int(tv_model.topk_candidates),
        ),
        assign=replace(config.assign, center_sampling_radius=float(tv_model.center_sampling_radius)),
        input=replace(
            config.input,
            min_size=int(transform.min_size[-1]),
            train_min_size=(int(transform.min_size[0]), int(transform.min_size[-1])),
            max_size=int(transform.max_size),
            size_divisible=int(transform.size_divisible),
        ),
    )


def from_torchvision(tv_model: nn.Module) -> tuple[FCOS, Config]:
    """An fcos_lab FCOS carrying the weights of a torchvision FCOS with a ResNet-50 FPN backbone.

    Returns:
        ``(model, config)``: the model (in eval mode) and the resolved ``fcos_r50_fpn_torchvision``
        config that reproduces torchvision's behaviour.
    """
    config = torchvision_config(tv_model)
    model = build_model(config)
    own = model.state_dict()
    state = {}
    for key, value in tv_model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        new_key = torchvision_key_to_fcos_lab(key)
        if new_key not in own or own[new_key].shape != value.shape:
            raise CheckpointError(f"torchvision key {key!r} -> {new_key!r} does not fit the fcos_lab model")
        state[new_key] = value
    missing = sorted(set(own) - set(state) - {"head.scales"})
    if missing:
        raise CheckpointError(f"torchvision model lacks weights for {missing[:5]}")
    model.load_state_dict(state, strict=False)
    return model.eval(), config
