"""Backbones from ``torchvision.models`` (Section 4 "Training Details", Table 5).

ResNet-18/34/50/101 and ResNeXt-101 32x8d / 64x4d with frozen BatchNorm and, as in Detectron's
training settings the paper follows, the stem and the first stage frozen. Pretrained weights come
only from a local torchvision state-dict file (``.pth`` read with ``weights_only=True`` or
``.safetensors``); nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models
from torchvision.ops import misc

from fcos_lab.errors import CheckpointError
from fcos_lab.model.group_norm import GroupNorm


class FrozenBatchNorm2d(misc.FrozenBatchNorm2d):
    """torchvision's frozen BatchNorm (same buffers and state-dict keys) through the fused inference kernel.

    torchvision's version computes ``x * scale + shift`` as two element-wise passes; ``F.batch_norm`` in
    evaluation mode is one pass (and the same kernel torchvision's FCOS uses with BatchNorm2d in eval).
    Inside :class:`ResNetBody` this forward is not reached: :func:`conv_norm` folds the layer into the
    preceding convolution instead.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


BACKBONES = {
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "resnet101": models.resnet101,
    "resnext101_32x8d": models.resnext101_32x8d,
    "resnext101_64x4d": models.resnext101_64x4d,
}


def stage_channels(resnet: models.ResNet, first_level: int = 3) -> list[int]:
    """Output channels of C{first_level} .. C5 (``layer1`` is C2, stride 4; ``layer4`` is C5, stride 32)."""
    return [
        getattr(resnet, name)[-1].conv3.out_channels
        if hasattr(getattr(resnet, name)[-1], "conv3")
        else getattr(resnet, name)[-1].conv2.out_channels
        for name in ("layer1", "layer2", "layer3", "layer4")[first_level - 2 :]
    ]


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``.pth`` file without unpickling code.

    Raises:
        CheckpointError: the file is missing, unreadable, or carries anything but tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to parse is the file's fault
        raise CheckpointError(f"{path}: cannot be read as weights without running code ({exc})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return state


NORM_LAYERS = {
    "frozen_bn": FrozenBatchNorm2d,
    "bn": nn.BatchNorm2d,
    "gn": lambda channels: GroupNorm(32, channels),
}


def build_resnet(name: str, pretrained: str | None = None, frozen_stages: int = 1, norm: str = "frozen_bn") -> models.ResNet:
    """A torchvision ResNet/ResNeXt with frozen BatchNorm, optionally loaded from a local file.

    Args:
        name: one of :data:`BACKBONES`.
        pretrained: path of a torchvision ImageNet state dict for this architecture, or None.
        frozen_stages: 0 freezes nothing; k >= 1 freezes the stem and ``layer1..layer{k}``
            (Detectron's FREEZE_AT=2, used by the paper, is ``frozen_stages=1``).
        norm: ``"frozen_bn"`` (the paper, with pretrained weights), or ``"bn"`` / ``"gn"`` for training
            from scratch, where a frozen BN with random statistics would be no normalization at all.
    """
    if name not in BACKBONES:
        raise CheckpointError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    if not 0 <= frozen_stages <= 4:
        raise ValueError(f"frozen_stages must be in 0..4 (stem + layer1..layer4), got {frozen_stages}")
    # Deviation from paper: none in spirit; Detectron freezes BN statistics and affine terms, as
    # FrozenBatchNorm2d does. With random init the statistics stay at mean 0 / var 1.
    if norm not in NORM_LAYERS:
        raise ValueError(f"backbone norm must be one of {', '.join(NORM_LAYERS)}, got {norm!r}")
    resnet = BACKBONES[name](weights=None, norm_layer=NORM_LAYERS[norm])
    if pretrained:
        state = load_state_dict_file(pretrained)
        own = resnet.state_dict()
        # BatchNorm's ``num_batches_tracked`` counters (in torchvision's ImageNet files; FrozenBatchNorm2d
        # has none) are optional either way: they are not a sign of another architecture.
        counter = ".num_batches_tracked"
        state = {k: v for k, v in state.items() if not k.startswith("fc.") and (k in own or not k.endswith(counter))}
        missing = sorted(k for k in own if k not in state and not k.startswith("fc.") and not k.endswith(counter))
        mismatched = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
        unexpected = sorted(k for k in state if k not in own)
        if missing or mismatched or unexpected:
            raise CheckpointError(
                f"{pretrained}: not a torchvision {name} state dict "
                f"(missing {missing[:3]}, mismatched shapes {mismatched[:3]}, unexpected {unexpected[:3]})"
            )
        resnet.load_state_dict(state, strict=False)
    del resnet.fc, resnet.avgpool
    if frozen_stages >= 1:
        for module in [resnet.conv1, resnet.bn1] + [getattr(resnet, f"layer{i}") for i in range(1, frozen_stages + 1)]:
            for param in module.parameters():
                param.requires_grad_(False)
    return resnet


class ResNetBody(nn.Module):
    """Runs a torchvision ResNet and returns C3, C4, C5 (strides 8, 16, 32), or C2 .. C5 for a P2 level.

    Args:
        resnet: the network of :func:`build_resnet`.
        first_level: 3 (the paper's C3-C5) or 2 (also C2, ``layer1``'s output at stride 4, for P2).
    """

    def __init__(self, resnet: models.ResNet, first_level: int = 3) -> None:
        super().__init__()
        if first_level not in (2, 3):
            raise ValueError(f"first_level must be 2 (C2-C5) or 3 (C3-C5), got {first_level}")
        self.conv1, self.bn1, self.maxpool = resnet.conv1, resnet.bn1, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.first_level = first_level
        self.out_channels = stage_channels(resnet, first_level)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(F.relu(conv_norm(self.conv1, self.bn1, x), inplace=True))
        outputs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = residual_block(block, x)
            outputs.append(x)
        return outputs[self.first_level - 2 :]  # C3, C4, C5 (C2 first with a P2 level)


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))``, with a frozen BatchNorm folded into the convolution.

    A frozen BN is the affine map ``y * s + t`` per channel (``s = weight / sqrt(var + eps)``,
    ``t = bias - mean * s``), so ``conv(x, W) * s + t == conv(x, W * s) + t``: one pass over the
    activations instead of two, and no BatchNorm kernel in the backward pass. The fold is recomputed at
    every call (a few million multiplies), so gradients reach ``W`` exactly as without it. Outputs equal
    the unfolded ones up to float rounding (the parity tests hold to 1e-5). It matters most in NHWC,
    where PyTorch's CPU BatchNorm is several times slower than in NCHW.
    """
    if not isinstance(norm, FrozenBatchNorm2d):
        return norm(conv(x))
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    shift = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    return F.conv2d(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)


def residual_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``BasicBlock`` / ``Bottleneck`` forward, through :func:`conv_norm`."""
    out = F.relu(conv_norm(block.conv1, block.bn1, x), inplace=True)
    if isinstance(block, models.resnet.Bottleneck):
        out = F.relu(conv_norm(block.conv2, block.bn2, out), inplace=True)
        out = conv_norm(block.conv3, block.bn3, out)
    else:
        out = conv_norm(block.conv2, block.bn2, out)
    identity = x if block.downsample is None else conv_norm(block.downsample[0], block.downsample[1], x)
    out += identity  # in place, as torchvision does: a convolution's backward does not need its output
    return F.relu(out, inplace=True)
