"""Exchange weights with ``torchvision.models.detection.FCOS``.

:func:`from_torchvision` turns a torchvision FCOS (for example ``fcos_resnet50_fpn(weights=None,
weights_backbone=None)``) into an fcos_lab model with the ``fcos_r50_fpn_torchvision`` preset and the
same weights, so that both produce the same detections and the same losses (see
``tests/interop/test_torchvision_parity.py``). :func:`from_torchvision_state_dict` does the same from
a state dict alone, such as torchvision's published ``fcos_resnet50_fpn_coco-99b0c9b7.pth``.

torchvision's FCOS has no background class: its C sigmoid classifiers are trained on one-hot targets
of the dataset's labels (``FCOSHead.compute_loss``), and its COCO weights use the raw COCO category ids
as labels, so index k is COCO category k and indices 0 and the ten "N/A" ids are never a target.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import Tensor, nn

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
CLS_LOGITS_KEY = "head.classification_head.cls_logits.weight"
# BatchNorm's step counter: in a BatchNorm2d model, absent with FrozenBatchNorm2d (the published files).
_COUNTER = ".num_batches_tracked"


def torchvision_key_to_fcos_lab(key: str) -> str:
    """The fcos_lab state-dict key of a torchvision FCOS key."""
    for pattern, replacement in _RENAMES:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    raise CheckpointError(f"torchvision FCOS key {key!r} has no fcos_lab counterpart")


def torchvision_preset(num_classes: int) -> Config:
    """The ``fcos_r50_fpn_torchvision`` preset (torchvision's defaults) with ``num_classes`` classes."""
    config = get_preset("fcos_r50_fpn_torchvision")
    return replace(config, model=replace(config.model, num_classes=int(num_classes)))


def torchvision_config(tv_model: nn.Module) -> Config:
    """The ``fcos_r50_fpn_torchvision`` preset adjusted to ``tv_model``'s classes and post-processing."""
    config = torchvision_preset(tv_model.head.classification_head.num_classes)
    transform = tv_model.transform
    return replace(
        config,
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


def torchvision_shapes(num_classes: int) -> dict[str, torch.Size]:
    """Key -> shape of torchvision's ``fcos_resnet50_fpn(num_classes=...)`` state dict (BN counters left out).

    The model is built on the meta device: no memory, no weights, nothing downloaded.
    """
    from torchvision.models.detection import fcos_resnet50_fpn

    with torch.device("meta"):
        reference = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes)
    return {k: v.shape for k, v in reference.state_dict().items() if not k.endswith(_COUNTER)}


def check_torchvision_state_dict(state: Mapping[str, Tensor], source: str) -> int:
    """Check that ``state`` is a torchvision FCOS ResNet-50 FPN state dict; return its number of classes C.

    C is read from the classification layer (``[C, 256, 3, 3]``, one anchor per location).

    Raises:
        CheckpointError: naming ``source`` and a few of the missing keys, unexpected keys or shape mismatches.
    """
    logits = state.get(CLS_LOGITS_KEY)
    if not isinstance(logits, Tensor) or logits.ndim != 4:
        raise CheckpointError(f"{source}: no torchvision FCOS classification layer {CLS_LOGITS_KEY!r}")
    num_classes = int(logits.shape[0])
    expected = torchvision_shapes(num_classes)
    given = {k: v for k, v in state.items() if not k.endswith(_COUNTER)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k} {tuple(v.shape)} (expected {tuple(expected[k])})"
        for k, v in given.items()
        if k in expected and (not isinstance(v, Tensor) or v.shape != expected[k])
    ]
    if missing or unexpected or mismatched:
        problems = [
            f"{len(items)} {what}: {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}"
            for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
            if items
        ]
        raise CheckpointError(
            f"{source}: not a torchvision FCOS ResNet-50 FPN state dict with {num_classes} classes: " + "; ".join(problems)
        )
    return num_classes


def _load_converted(model: FCOS, state: Mapping[str, Tensor], source: str) -> None:
    """Load torchvision-named ``state`` into ``model``; every fcos_lab weight must be covered."""
    own = model.state_dict()
    converted = {}
    for key, value in state.items():
        if key.endswith(_COUNTER):
            continue
        new_key = torchvision_key_to_fcos_lab(key)
        if new_key not in own or own[new_key].shape != value.shape:
            raise CheckpointError(f"{source}: torchvision key {key!r} -> {new_key!r} does not fit the fcos_lab model")
        converted[new_key] = value
    # torchvision has no per-level scale (ReLU * stride, no learnable s_i): fcos_lab's stay at 1.
    missing = sorted(set(own) - set(converted) - {"head.scales"})
    if missing:
        raise CheckpointError(f"{source}: no weights for {missing[:5]}")
    model.load_state_dict(converted, strict=False)


def from_torchvision(tv_model: nn.Module) -> tuple[FCOS, Config]:
    """An fcos_lab FCOS carrying the weights of a torchvision FCOS with a ResNet-50 FPN backbone.

    Returns:
        ``(model, config)``: the model (in eval mode) and the resolved ``fcos_r50_fpn_torchvision``
        config that reproduces torchvision's behaviour.
    """
    config = torchvision_config(tv_model)
    model = build_model(config)
    _load_converted(model, tv_model.state_dict(), "torchvision model")
    return model.eval(), config


def from_torchvision_state_dict(state: Mapping[str, Tensor], source: str) -> tuple[FCOS, Config]:
    """An fcos_lab FCOS from a torchvision ``fcos_resnet50_fpn`` state dict of any number of classes.

    The config is :func:`torchvision_preset`: torchvision's default inference settings (score 0.2 on
    ``sqrt(cls x ctr)``, 1000 candidates per level, NMS 0.6, 100 detections, 800 / 1333 resize).

    Raises:
        CheckpointError: ``state`` is not such a state dict (names ``source`` and the keys at fault).
    """
    num_classes = check_torchvision_state_dict(state, source)
    config = torchvision_preset(num_classes)
    model = build_model(config)
    _load_converted(model, state, source)
    return model.eval(), config
