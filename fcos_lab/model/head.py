"""The shared FCOS head (Section 3.1 "Network Outputs", Section 3.2, Section 3.3, Figure 2).

Two towers of four 3x3 convs (GroupNorm optional, Section 4.1.3), a C-channel classification layer
with the prior-probability bias of RetinaNet, a 4-channel regression layer mapped to positive
distances with ``exp(s_i x)`` (learnable ``s_i`` per level, Section 3.2) or ``ReLU(s_i x) * stride``
(Table 3 "Normalization"), and a one-channel center-ness layer on the classification tower (Figure 2)
or on the regression tower (footnote 2, Table 3 "ctr. on reg.").

The same towers serve the anchor-based baselines (RetinaNet, RPN; Tables 3, 6, 8) with ``num_anchors``
A > 1 outputs per location and raw box deltas (``box_param="delta"``), so that the comparison changes
only what the paper changes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fcos_lab.model.group_norm import GroupNorm

MAX_LOG_DISTANCE = 60.0  # exp(60) ~ 1.1e26 stays finite in float32 (whose exp overflows past ~88.7)


def _tower(channels: int, num_convs: int, norm: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(channels, channels, 3, padding=1))
        if norm == "gn":
            layers.append(GroupNorm(32, channels))
        layers.append(nn.ReLU(inplace=True))  # neither GroupNorm's nor the conv's backward needs its output
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Predicts class logits, ltrb distances (pixels) and center-ness logits on every level."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        strides: tuple[int, ...],
        num_convs: int = 4,
        norm: str = "gn",
        centerness_on: str = "cls",
        box_param: str = "exp",
        learnable_scale: bool = True,
        prior_prob: float = 0.01,
        num_anchors: int = 1,
    ) -> None:
        super().__init__()
        if box_param not in ("exp", "relu", "delta"):
            raise ValueError(f"box_param must be exp, relu or delta, got {box_param!r}")
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.centerness_on = centerness_on
        self.box_param = box_param
        self.register_buffer("strides", torch.tensor(strides, dtype=torch.float32), persistent=False)
        self.cls_tower = _tower(channels, num_convs, norm)
        self.box_tower = _tower(channels, num_convs, norm)
        self.cls_logits = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.centerness = nn.Conv2d(channels, 1, 3, padding=1) if centerness_on != "none" else None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        scales = torch.ones(len(strides))
        if learnable_scale:
            self.scales = nn.Parameter(scales)
        else:
            self.register_buffer("scales", scales)

    def _flatten(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        """``[B, A*K, H, W]`` -> ``[B, H*W*A, K]``: level-major, row-major, anchor innermost."""
        batch, _, height, width = x.shape
        return x.view(batch, self.num_anchors, channels, height, width).permute(0, 3, 4, 1, 2).reshape(batch, -1, channels)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Pyramid levels in; ``[B, P, C]`` logits, ``[B, P, 4]`` ltrb pixels (or deltas), ``[B, P]`` logits out.

        With A anchors per location, P counts anchors (``H * W * A`` per level).
        """
        cls_all, box_all, ctr_all = [], [], []
        for level, feature in enumerate(features):
            cls_feature = self.cls_tower(feature)
            box_feature = self.box_tower(feature)
            # Outputs leave the head in float32 even under autocast (fcos_lab/precision.py): assignment,
            # the losses, the scores and NMS are computed in full precision.
            cls_all.append(self._flatten(self.cls_logits(cls_feature).float(), self.num_classes))
            raw = self.box_pred(box_feature).float()
            if self.box_param == "exp":
                # Deviation from paper: exp's input is clamped so that it never overflows to inf; an inf on
                # a background location would turn its zero gradient into 0 * inf = NaN and poison every
                # head weight. e^60 ~ 1e26 px leaves every meaningful prediction unchanged.
                box = torch.exp((self.scales[level] * raw).clamp(max=MAX_LOG_DISTANCE))
            elif self.box_param == "relu":
                box = torch.relu(self.scales[level] * raw) * self.strides[level]
            else:
                box = raw  # anchor deltas, decoded against the anchors
            box_all.append(self._flatten(box, 4))
            if self.centerness is not None:
                source = cls_feature if self.centerness_on == "cls" else box_feature
                ctr_all.append(self.centerness(source).float().flatten(1))
        centerness = torch.cat(ctr_all, dim=1) if ctr_all else None
        return torch.cat(cls_all, dim=1), torch.cat(box_all, dim=1), centerness
