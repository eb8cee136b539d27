"""Feature pyramid P3-P7 (Section 3.2, Figure 2), optionally with P2.

P3-P5 come from C3-C5 through 1x1 lateral convs and the top-down pathway of FPN; P6 and P7 are
3x3 stride-2 convs on P5 (the paper's FCOS) or on C5 (RetinaNet, Table 3 row "C5"), with a ReLU
before P7. Initialization follows torchvision's FPN (kaiming uniform, a=1).

Given C2 as well (``layer1``, stride 4), the same top-down pathway continues one level down and adds P2
with its own lateral and output convs, as FPN itself does (Lin et al., 2017); the paper's FCOS stops at P3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FPN(nn.Module):
    """Feature pyramid network with the P6/P7 extension.

    Args:
        in_channels: channels of C3, C4, C5 (or C2, C3, C4, C5 for a P2 level).
        out_channels: channels of every pyramid level (256 in the paper).
        p6p7_from: ``"p5"`` or ``"c5"``.
    """

    def __init__(self, in_channels: list[int], out_channels: int, p6p7_from: str = "p5") -> None:
        super().__init__()
        if p6p7_from not in ("p5", "c5"):
            raise ValueError(f"p6p7_from must be 'p5' or 'c5', got {p6p7_from!r}")
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.p6p7_from = p6p7_from
        p6_in = out_channels if p6p7_from == "p5" else in_channels[-1]
        self.p6 = nn.Conv2d(p6_in, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                nn.init.zeros_(module.bias)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """C3, C4, C5 in; P3, P4, P5, P6, P7 out (each ``[B, out_channels, H_l, W_l]``); C2 in gives P2 out too."""
        inner = self.lateral[-1](features[-1])
        outputs = [self.output[-1](inner)]
        for idx in range(len(features) - 2, -1, -1):
            lateral = self.lateral[idx](features[idx])
            lateral += F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")  # a fresh conv output
            inner = lateral
            outputs.insert(0, self.output[idx](inner))
        p6 = self.p6(outputs[-1] if self.p6p7_from == "p5" else features[-1])
        p7 = self.p7(F.relu(p6))
        return outputs + [p6, p7]
