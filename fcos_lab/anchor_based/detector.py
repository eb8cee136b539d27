"""The anchor-based baselines the paper compares against: RetinaNet (Tables 3, 7, 8) and RPN (Table 6).

Same backbone, FPN and head towers as FCOS (:class:`~fcos_lab.model.head.FCOSHead` with A anchors per
location and raw box deltas), so the comparison changes only what the paper changes: anchors and IoU
matching instead of locations and size ranges.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from fcos_lab.anchor_based.anchors import generate_anchors
from fcos_lab.config import ModelConfig
from fcos_lab.model.head import FCOSHead
from fcos_lab.model.pyramid import PyramidDetector
from fcos_lab.points import Locations


@dataclass(frozen=True)
class AnchorOutput:
    """Dense predictions of an anchor-based detector.

    Attributes:
        cls_logits: ``[B, N, C]`` over all N anchors (level-major, row-major, anchor innermost).
        box_deltas: ``[B, N, 4]`` (dx, dy, dw, dh) relative to each anchor (Faster R-CNN encoding).
        anchors: ``[N, 4]`` xyxy in input-image pixels.
        locations: the anchors' centers as a :class:`Locations` (strides, levels, counts per level),
            so post-processing and statistics treat anchors and FCOS locations alike.
    """

    cls_logits: Tensor
    box_deltas: Tensor
    anchors: Tensor
    locations: Locations


@lru_cache(maxsize=32)
def _anchors_cached(shapes, strides, sizes, scales, ratios, device: str) -> tuple[Tensor, Locations]:
    anchors = generate_anchors(shapes, strides, sizes, scales, ratios, device=device)
    per_location = len(scales) * len(ratios)
    counts = tuple(h * w * per_location for h, w in shapes)
    levels = torch.cat([torch.full((n,), i, dtype=torch.int64) for i, n in enumerate(counts)]).to(device)
    stride_per_anchor = torch.tensor(strides, dtype=torch.float32, device=device)[levels]
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    return anchors, Locations(centers, stride_per_anchor, levels, counts, tuple(shapes))


class AnchorDetector(PyramidDetector):
    """RetinaNet (9 anchors, C classes) or an RPN (3 anchors, one class), by configuration."""

    def __init__(self, model: ModelConfig) -> None:
        super().__init__(model)
        self.num_anchors = len(model.anchor_scales) * len(model.anchor_ratios)
        self.head = FCOSHead(
            model.fpn_channels,
            model.num_classes,
            self.strides,
            num_convs=model.head_num_convs,
            norm=model.head_norm,
            centerness_on="none",
            box_param="delta",
            learnable_scale=False,
            prior_prob=model.prior_prob,
            num_anchors=self.num_anchors,
        )

    def forward(self, images: Tensor) -> AnchorOutput:
        """Predict on a padded batch ``[B, 3, H, W]``."""
        features = self.pyramid(images)
        cls_logits, box_deltas, _ = self.head(features)
        shapes = tuple((int(f.shape[-2]), int(f.shape[-1])) for f in features)
        m = self.config
        anchors, locations = _anchors_cached(
            shapes, self.strides, tuple(m.anchor_sizes), tuple(m.anchor_scales), tuple(m.anchor_ratios), str(images.device)
        )
        return AnchorOutput(cls_logits, box_deltas, anchors, locations)
