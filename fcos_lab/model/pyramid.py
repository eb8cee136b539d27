"""The backbone and feature pyramid shared by FCOS and the anchor-based baselines (Figure 2, Section 3.2).

C3-C5 of a torchvision ResNet, the FPN's P3-P5 and P6/P7 (from P5 or C5). Sharing this module is what
makes the paper's comparisons change only what the paper changes (the head and its targets). Strides
starting at 4 (``model.strides = (4, 8, ..., 128)``) add P2 from C2, an extension for small objects.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fcos_lab.config import ModelConfig
from fcos_lab.errors import InputError
from fcos_lab.model.backbone import ResNetBody, build_resnet
from fcos_lab.model.fpn import FPN


class PyramidDetector(nn.Module):
    """Backbone and feature pyramid shared by FCOS and the anchor-based baselines."""

    def __init__(self, model: ModelConfig) -> None:
        super().__init__()
        self.config = model
        self.strides = tuple(model.strides)
        self.backbone = ResNetBody(
            build_resnet(model.backbone, model.pretrained_backbone, model.frozen_stages, model.backbone_norm),
            first_level=round(math.log2(self.strides[0])),  # 3 (P3, stride 8), or 2 with a P2 level
        )
        self.fpn = FPN(self.backbone.out_channels, model.fpn_channels, model.p6p7_from)

    def pyramid(self, images: Tensor) -> list[Tensor]:
        """Check the padded batch ``[B, 3, H, W]`` and return the pyramid levels P3..P7 (P2..P7 with P2)."""
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InputError(f"images: expected a batch tensor [B, 3, H, W], got {shape}")
        if not images.is_floating_point():
            raise InputError(f"images: expected a floating-point tensor, got {images.dtype}")
        if getattr(self, "channels_last", False):
            images = images.contiguous(memory_format=torch.channels_last)
        return self.fpn(self.backbone(images))
