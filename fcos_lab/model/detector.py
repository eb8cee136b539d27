"""The FCOS detector (Figure 2): backbone, feature pyramid, shared head.

``forward(images)`` returns predictions only, the same :class:`FCOSOutput` in training and evaluation:
the dense maps and the geometry they were computed on (feature-map shapes, padded input size). Where
each output lives on the image (its *location*, Section 3.1) is a setting of the training objective:
:meth:`fcos_lab.objective.Objective.locations` computes it for training, statistics and inference alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fcos_lab.config import ModelConfig
from fcos_lab.model.head import FCOSHead
from fcos_lab.model.pyramid import PyramidDetector


@dataclass(frozen=True)
class FCOSOutput:
    """Dense predictions for a batch.

    Attributes:
        cls_logits: ``[B, P, C]`` classification logits (C binary classifiers, Section 3.1).
        box_regression: ``[B, P, 4]`` predicted l, t, r, b in input-image pixels.
        centerness_logits: ``[B, P]`` center-ness logits, or None without the branch.
        feature_shapes: ``(H_l, W_l)`` of each level; the P outputs are these grids flattened level by
            level, row-major.
        image_size: ``(H, W)`` of the padded input batch.
    """

    cls_logits: Tensor
    box_regression: Tensor
    centerness_logits: Tensor | None
    feature_shapes: tuple[tuple[int, int], ...]
    image_size: tuple[int, int]


class FCOS(PyramidDetector):
    """FCOS with a torchvision ResNet backbone.

    Args:
        model: architecture switches.
    """

    def __init__(self, model: ModelConfig) -> None:
        super().__init__(model)
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
        return FCOSOutput(cls_logits, box_regression, centerness_logits, shapes, (int(images.shape[-2]), int(images.shape[-1])))


def build_model(config) -> nn.Module:
    """The detector of a :class:`fcos_lab.config.Config`: FCOS, or an anchor-based baseline."""
    if config.model.detector == "anchor":
        from fcos_lab.anchor_based.detector import AnchorDetector

        model: nn.Module = AnchorDetector(config.model)
    else:
        model = FCOS(config.model)
    if config.train.channels_last:
        # NHWC activations: faster oneDNN / cuDNN convolutions; inputs are converted in forward.
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    return model
