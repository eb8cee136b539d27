"""Training targets and losses of the anchor-based baselines (RetinaNet, RPN) that the paper compares with.

RetinaNet (Lin et al., 2017; Tables 3, 7, 8): each anchor takes its highest-IoU box; positive at IoU >=
0.5, negative below 0.4, ignored in between, plus low-quality matches (Table 1's rules); focal loss over
non-ignored anchors and smooth-L1 on Faster R-CNN box deltas, both normalized by the positives.
RPN (Ren et al., 2015; Table 6): positive at 0.7, negative below 0.3, all low-quality matches, 256 anchors
sampled per image with at most half positive, binary cross-entropy and smooth-L1 normalized by the
sample size.

Batched over images (padded ground truth), no Python loop over images or boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import sigmoid_focal_loss

from fcos_lab.anchor_based.anchors import MATCH_IGNORED, match_anchors, pairwise_box_iou
from fcos_lab.losses import reduce_mean
from fcos_lab.targets import GroundTruth

# Detectron's clamp of dw, dh before exp (log(1000 / 16)); torchvision's BoxCoder applies the same.
BOX_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


@dataclass(frozen=True)
class AnchorAssignment:
    """Per-anchor targets for a batch.

    Attributes:
        matched_gt: ``[B, N]`` box index, -1 negative, -2 ignored.
        labels: ``[B, N]`` class of positives, -1 otherwise.
        box_targets: ``[B, N, 4]`` deltas to the matched box (zero where not positive).
        positive: ``[B, N]``.
        valid: ``[B, N]`` positive or negative (not ignored).
    """

    matched_gt: Tensor
    labels: Tensor
    box_targets: Tensor
    positive: Tensor
    valid: Tensor


def assign_anchors(
    anchors: Tensor, gt: GroundTruth, pos_iou: float = 0.5, neg_iou: float = 0.4, low_quality: str = "0.4"
) -> AnchorAssignment:
    """Match ``anchors`` ``[N, 4]`` to the padded ground truth of each image."""
    num_images, num_boxes, _ = gt.boxes.shape
    num_anchors = anchors.shape[0]
    if num_boxes == 0:
        matched = torch.full((num_images, num_anchors), -1, dtype=torch.int64, device=anchors.device)
    else:
        iou = pairwise_box_iou(anchors[None].expand(num_images, -1, -1), gt.boxes)
        usable = (gt.valid & ~gt.crowd)[:, None, :]
        iou = torch.where(usable, iou, torch.full_like(iou, -1.0))  # padding and crowd never match
        matched = match_anchors(iou, pos_iou, neg_iou, low_quality)
    positive = matched >= 0
    safe = matched.clamp(min=0)
    if num_boxes:
        matched_boxes = gt.boxes.gather(1, safe[..., None].expand(-1, -1, 4))
        labels = torch.where(positive, gt.labels.gather(1, safe), -1)
    else:
        matched_boxes = anchors[None].expand(num_images, -1, -1)
        labels = torch.full_like(matched, -1)
    # Encode against the anchor itself where there is no match, so every delta stays finite.
    reference = torch.where(positive[..., None], matched_boxes, anchors[None])
    deltas = BOX_CODER.encode_single(reference.reshape(-1, 4), anchors[None].expand(num_images, -1, -1).reshape(-1, 4))
    box_targets = torch.where(positive[..., None], deltas.view(num_images, num_anchors, 4), 0.0)
    return AnchorAssignment(matched, labels, box_targets, positive, matched != MATCH_IGNORED)


def sample_anchors(assignment: AnchorAssignment, sample_size: int, positive_fraction: float,
                   generator: torch.Generator | None = None) -> Tensor:
    """RPN's per-image random sample: ``[B, N]`` mask of at most ``sample_size`` anchors, <= fraction positive."""
    positive, negative = assignment.positive, assignment.valid & ~assignment.positive
    noise = torch.rand(positive.shape, device=positive.device, generator=generator)
    max_positive = int(sample_size * positive_fraction)
    pos_rank = _rank_within(torch.where(positive, noise, -1.0))
    take_pos = positive & (pos_rank < max_positive)
    quota = sample_size - take_pos.sum(dim=1, keepdim=True)
    neg_rank = _rank_within(torch.where(negative, noise, -1.0))
    take_neg = negative & (neg_rank < quota)
    return take_pos | take_neg


def _rank_within(keys: Tensor) -> Tensor:
    """Rank of each entry of ``keys`` ``[B, N]`` in descending order within its row."""
    order = keys.argsort(dim=1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(keys.shape[1], device=keys.device).expand_as(order))
    return ranks


def anchor_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    assignment: AnchorAssignment,
    *,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    smooth_l1_beta: float = 0.11,
    box_loss_weight: float = 1.0,
    sample_size: int = 0,
    positive_fraction: float = 0.5,
) -> dict[str, Tensor]:
    """RetinaNet's loss (``sample_size == 0``) or RPN's (``sample_size > 0``), keyed like the FCOS loss.

    Args:
        cls_logits: ``[B, N, C]``.
        box_deltas: ``[B, N, 4]``.
    """
    num_classes = cls_logits.shape[-1]
    positive = assignment.positive
    one_hot = F.one_hot(assignment.labels.clamp(min=0), num_classes).to(cls_logits.dtype) * positive[..., None]
    per_anchor_box = F.smooth_l1_loss(
        box_deltas.float(), assignment.box_targets, beta=smooth_l1_beta, reduction="none"
    ).sum(dim=-1)
    if sample_size > 0:
        sampled = sample_anchors(assignment, sample_size, positive_fraction)
        normalizer = float(sample_size * cls_logits.shape[0])
        bce = F.binary_cross_entropy_with_logits(cls_logits.float(), one_hot.float(), reduction="none").sum(-1)
        loss_cls = (bce * sampled).sum() / normalizer
        loss_box = (per_anchor_box * (sampled & positive)).sum() / normalizer
    else:
        num_pos = reduce_mean(positive.sum().to(torch.float32)).clamp(min=1.0)
        focal = sigmoid_focal_loss(cls_logits.float(), one_hot.float(), alpha=focal_alpha, gamma=focal_gamma, reduction="none")
        loss_cls = (focal.sum(-1) * assignment.valid).sum() / num_pos
        loss_box = (per_anchor_box * positive).sum() / num_pos
    loss_centerness = cls_logits.new_zeros((), dtype=torch.float32)
    total = loss_cls + box_loss_weight * loss_box
    return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_centerness": loss_centerness, "loss": total}


def decode_to_ltrb(box_deltas: Tensor, anchors: Tensor) -> Tensor:
    """Decode deltas ``[B, N, 4]`` against ``anchors`` ``[N, 4]`` and express the boxes as distances from
    the anchor centers, so FCOS's post-processing (``box = center -/+ ltrb``) applies unchanged."""
    batch, num, _ = box_deltas.shape
    boxes = BOX_CODER.decode_single(box_deltas.reshape(-1, 4).float(), anchors[None].expand(batch, -1, -1).reshape(-1, 4))
    boxes = boxes.view(batch, num, 4)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    return torch.cat([centers[None] - boxes[..., :2], boxes[..., 2:] - centers[None]], dim=-1)
