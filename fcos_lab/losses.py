"""The FCOS training loss: Eq. (2) plus the center-ness BCE of Section 3.3.

``L = 1/N_pos * sum focal(p, c*) + lambda/N_pos * sum_{c*>0} L_reg(t, t*) + 1/N_pos * sum_{c*>0} BCE(o, centerness*)``

Everything is computed over all locations with masks (no boolean indexing), so the training step has
no host-device synchronisation; ``N_pos`` is all-reduced across processes when distributed and clamped
at 1, so an image batch without boxes gives exactly zero box and center-ness loss.

Shapes: B images, P locations, C classes. Box predictions and targets are ltrb distances in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from fcos_lab.boxes import ltrb_iou


def reduce_mean(value: Tensor) -> Tensor:
    """Average ``value`` over the processes of the default group (identity when not distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        if world > 1:
            value = value.clone()
            torch.distributed.all_reduce(value)
            value = value / world
    return value


def focal_loss_sum(cls_logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sum of the sigmoid focal loss (RetinaNet) over all locations and classes.

    Args:
        cls_logits: ``[B, P, C]`` logits.
        labels: ``[B, P]`` class index, -1 for background.
    """
    num_classes = cls_logits.shape[-1]
    one_hot = F.one_hot(labels.clamp(min=0), num_classes).to(cls_logits.dtype) * (labels >= 0)[..., None]
    return sigmoid_focal_loss(cls_logits, one_hot, alpha=alpha, gamma=gamma, reduction="sum")


def box_loss_per_location(
    pred_ltrb: Tensor, target_ltrb: Tensor, kind: str = "iou", smooth: float = 0.0, strides: Tensor | None = None
) -> Tensor:
    """Element-wise box loss ``[...]`` between ltrb distances ``[..., 4]`` measured from the same location.

    Args:
        kind: ``"iou"`` (UnitBox ``-ln IoU``, Eq. 2), ``"giou"`` (``1 - GIoU``, Table 3) or ``"smooth_l1"``.
        smooth: added to intersection and union (the official code uses 1; the paper none).
        strides: ``[...]`` per-location strides; smooth-L1 compares ``ltrb / stride``.
    """
    if kind == "smooth_l1":
        # Deviation from paper: Table 8's smooth-L1 row does not give its parametrization; we compare
        # stride-normalized distances with RetinaNet's beta = 1/9.
        scale = strides[..., None] if strides is not None else 1.0
        return F.smooth_l1_loss(pred_ltrb / scale, target_ltrb / scale, beta=1 / 9, reduction="none").sum(dim=-1)
    iou, union, enclosing = ltrb_iou(pred_ltrb, target_ltrb, smooth)
    if kind == "iou":
        return -torch.log(iou.clamp(min=1e-7))
    if kind == "giou":
        giou = iou - (enclosing - union) / enclosing.clamp(min=1e-7)
        return 1 - giou
    raise ValueError(f"unknown box loss {kind!r}; valid: iou, giou, smooth_l1")


@dataclass(frozen=True)
class LossInputs:
    """What the loss needs from the model's output and the assignment (all ``[B, P, ...]``)."""

    cls_logits: Tensor
    box_regression: Tensor
    centerness_logits: Tensor | None
    labels: Tensor
    box_targets: Tensor
    centerness_targets: Tensor
    positive: Tensor
    strides: Tensor


def fcos_loss(
    inputs: LossInputs,
    *,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    box_loss: str = "iou",
    box_loss_weight: float = 1.0,
    centerness_weighted_box_loss: bool = False,
    iou_smooth: float = 0.0,
) -> dict[str, Tensor]:
    """The three loss terms, each a scalar tensor.

    Box targets must be in pixels (the same units as ``box_regression``); IoU and GIoU are scale
    invariant, so "normalization by stride" changes only the network's parametrization.

    Returns:
        ``{"loss_cls", "loss_box", "loss_centerness", "loss"}`` with ``loss`` their weighted sum.
    """
    positive = inputs.positive
    pos_float = positive.to(inputs.box_regression.dtype)
    num_pos = reduce_mean(pos_float.sum().detach()).clamp(min=1.0)

    loss_cls = focal_loss_sum(inputs.cls_logits.float(), inputs.labels, focal_alpha, focal_gamma) / num_pos

    # Background locations get a unit box on both sides (loss 0, finite gradient 0): masking after the fact.
    pred = torch.where(positive[..., None], inputs.box_regression.float(), 1.0)
    target = torch.where(positive[..., None], inputs.box_targets.float(), 1.0)
    per_location = box_loss_per_location(pred, target, box_loss, iou_smooth, inputs.strides.expand_as(positive))
    if centerness_weighted_box_loss:
        weight = inputs.centerness_targets * pos_float
        weight_sum = reduce_mean(weight.sum().detach()).clamp(min=1e-6)
        loss_box = (per_location * weight).sum() / weight_sum
    else:
        loss_box = (per_location * pos_float).sum() / num_pos

    if inputs.centerness_logits is None:
        loss_centerness = inputs.cls_logits.new_zeros((), dtype=torch.float32)
    else:
        bce = F.binary_cross_entropy_with_logits(
            inputs.centerness_logits.float(), inputs.centerness_targets.float(), reduction="none"
        )
        loss_centerness = (bce * pos_float).sum() / num_pos

    total = loss_cls + box_loss_weight * loss_box + loss_centerness
    return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_centerness": loss_centerness, "loss": total}
