"""Seeded random torchvision FCOS weights, saved as torchvision publishes them (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn


def torchvision_fcos(num_classes: int, seed: int) -> nn.Module:
    """torchvision's ``fcos_resnet50_fpn(weights=None, weights_backbone=None)`` with a seeded, spread head."""
    torch.manual_seed(seed)
    tv = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes)
    # A random head scores every location at the prior (0.07 after sqrt), below torchvision's 0.2: spread
    # the logits so that some locations clear the threshold, over all indices (0 and "N/A" included).
    with torch.no_grad():
        nn.init.normal_(tv.head.classification_head.cls_logits.weight, std=0.05)
        nn.init.uniform_(tv.head.classification_head.cls_logits.bias, -3.0, -0.5)
        nn.init.normal_(tv.head.regression_head.bbox_reg.weight, std=0.05)
        nn.init.constant_(tv.head.regression_head.bbox_reg.bias, 2.0)
        nn.init.normal_(tv.head.regression_head.bbox_ctrness.weight, std=0.05)
    return tv.eval()


def save_torchvision_fcos(path: Path, num_classes: int = 91, seed: int = 0) -> Path:
    """Write :func:`torchvision_fcos`'s state dict to ``path`` (a plain ``.pth``) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision_fcos(num_classes, seed).state_dict(), path)
    return path


def imported_torchvision_fcos(folder: Path) -> Path:
    """:func:`save_torchvision_fcos` imported with ``fcos_lab.interop.import_weights``: the run folder."""
    from fcos_lab.interop.import_weights import import_weights

    return import_weights(save_torchvision_fcos(folder / "fcos_resnet50_fpn_random.pth"), folder / "imported")


# Evaluation overrides that keep an R-50 on a CPU to about a second per image (torchvision's config: 800 px).
SMALL_INPUT = ["input.min_size=320", "input.max_size=533"]
