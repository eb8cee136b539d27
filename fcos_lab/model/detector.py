"""The FCOS detector (Figure 2): backbone, feature pyramid, shared head.

``forward(images)`` returns predictions only, the same :class:`FCOSOutput` in training and
evaluation; the training loop calls :func:`fcos_lab.targets.assign` and :func:`fcos_lab.losses.fcos_loss`,
and inference calls :func:`fcos_lab.postprocess.postprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fcos_lab.config import AssignConfig, ModelConfig
from fcos_lab.errors import InputError
from fcos_lab.model.backbone import ResNetBody, build_resnet
from fcos_lab.model.fpn import FPN
from fcos_lab.model.head import FCOSHead
from fcos_lab.points import Locations, make_locations


@dataclass(frozen=True)
class FCOSOutput:
    """Dense predictions for a batch.

    Attributes:
        cls_logits: ``[B, P, C]`` classification logits (C binary classifiers, Section 3.1).
        box_regression: ``[B, P, 4]`` predicted l, t, r, b in input-image pixels.
        centerness_logits: ``[B, P]`` center-ness logits, or None without the branch.
        locations: the location of each of the P outputs.
    """

    cls_logits: Tensor
    box_regression: Tensor
    centerness_logits: Tensor | None
    locations: Locations


class PyramidDetector(nn.Module):
    """Backbone and feature pyramid shared by FCOS and the anchor-based baselines."""

    def __init__(self, model: ModelConfig) -> None:
        super().__init__()
        self.config = model
        self.strides = tuple(model.strides)
        self.backbone = ResNetBody(build_resnet(model.backbone, model.pretrained_backbone, model.frozen_stages, model.backbone_norm))
        self.fpn = FPN(self.backbone.out_channels, model.fpn_channels, model.p6p7_from)

    def pyramid(self, images: Tensor) -> list[Tensor]:
        """Check the padded batch ``[B, 3, H, W]`` and return the pyramid levels P3..P7."""
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InputError(f"images: expected a batch tensor [B, 3, H, W], got {shape}")
        if not images.is_floating_point():
            raise InputError(f"images: expected a floating-point tensor, got {images.dtype}")
        if getattr(self, "channels_last", False):
            images = images.contiguous(memory_format=torch.channels_last)
        return self.fpn(self.backbone(images))


class FCOS(PyramidDetector):
    """FCOS with a torchvision ResNet backbone.

    Args:
        model: architecture switches.
        assign: only the location switches are used here (offset and torchvision's stride quirk).
    """

    def __init__(self, model: ModelConfig, assign: AssignConfig | None = None) -> None:
        super().__init__(model)
        assign = assign or AssignConfig()
        self.location_offset = assign.location_offset
        self.stride_from_image = assign.stride_from_image
        self.head = FCOSHead(
            model.fpn_channels,
            model.num_classes,
            self.strides,
            num_convs=model.head_num_convs,
            norm=model.head_norm,
            centerness_on=model.centerness_on,
            box_param=model.box_param,
            learnable_scale=model.learnable_scale,
            prior_prob=model.prior_prob,
        )

    def forward(self, images: Tensor) -> FCOSOutput:
        """Predict on a padded batch ``[B, 3, H, W]`` (normalized, H and W multiples of 32)."""
        features = self.pyramid(images)
        cls_logits, box_regression, centerness_logits = self.head(features)
        shapes = tuple((int(f.shape[-2]), int(f.shape[-1])) for f in features)
        locations = make_locations(
            shapes,
            self.strides,
            offset=self.location_offset,
            image_size=tuple(images.shape[-2:]) if self.stride_from_image else None,
            device=images.device,
        )
        return FCOSOutput(cls_logits, box_regression, centerness_logits, locations)


def build_model(config) -> nn.Module:
    """The detector of a :class:`fcos_lab.config.Config`: FCOS, or an anchor-based baseline."""
    if config.model.detector == "anchor":
        from fcos_lab.model.anchor_detector import AnchorDetector

        model: nn.Module = AnchorDetector(config.model, config.assign)
    else:
        model = FCOS(config.model, config.assign)
    if config.train.channels_last:
        # NHWC activations: faster oneDNN / cuDNN convolutions; inputs are converted in forward.
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    return model
