"""Box formats, the l*t*r*b* encoding of Eq. (1) and its inverse, and element-wise IoU.

Boxes are ``[..., 4]`` xyxy in absolute pixels unless a name says otherwise; ltrb distances are
``[..., 4]`` (left, top, right, bottom) from a location to the box sides.
"""

from __future__ import annotations

import torch
from torch import Tensor


def encode_ltrb(points: Tensor, boxes: Tensor) -> Tensor:
    """Eq. (1): distances ``[..., 4]`` from ``points`` ``[..., 2]`` to the sides of xyxy ``boxes`` ``[..., 4]``."""
    x, y = points[..., 0], points[..., 1]
    return torch.stack([x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y], dim=-1)


def decode_ltrb(points: Tensor, ltrb: Tensor) -> Tensor:
    """Inverse of Eq. (1): xyxy boxes ``[..., 4]`` from ``points`` ``[..., 2]`` and distances ``ltrb``."""
    x, y = points[..., 0], points[..., 1]
    return torch.stack([x - ltrb[..., 0], y - ltrb[..., 1], x + ltrb[..., 2], y + ltrb[..., 3]], dim=-1)


def centerness_from_ltrb(ltrb: Tensor) -> Tensor:
    """Eq. (3): ``sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))`` for ``ltrb`` ``[..., 4]``; returns ``[...]``.

    Non-positive distances (locations outside the box) give 0 rather than NaN.
    """
    left, top, right, bottom = ltrb.unbind(dim=-1)
    ratio = (torch.minimum(left, right) / torch.maximum(left, right).clamp(min=1e-12)) * (
        torch.minimum(top, bottom) / torch.maximum(top, bottom).clamp(min=1e-12)
    )
    return ratio.clamp(min=0).sqrt()


def ltrb_iou(pred: Tensor, target: Tensor, smooth: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Element-wise IoU of two boxes given as ltrb distances from the same location (UnitBox).

    Returns:
        ``(iou, union, enclosing_area)``, each ``[...]``; the enclosing area is for GIoU.
    """
    pred_area = (pred[..., 0] + pred[..., 2]) * (pred[..., 1] + pred[..., 3])
    target_area = (target[..., 0] + target[..., 2]) * (target[..., 1] + target[..., 3])
    width_inter = torch.minimum(pred[..., 0], target[..., 0]) + torch.minimum(pred[..., 2], target[..., 2])
    height_inter = torch.minimum(pred[..., 1], target[..., 1]) + torch.minimum(pred[..., 3], target[..., 3])
    inter = width_inter.clamp(min=0) * height_inter.clamp(min=0)
    union = pred_area + target_area - inter
    width_enclosing = torch.maximum(pred[..., 0], target[..., 0]) + torch.maximum(pred[..., 2], target[..., 2])
    height_enclosing = torch.maximum(pred[..., 1], target[..., 1]) + torch.maximum(pred[..., 3], target[..., 3])
    iou = (inter + smooth) / (union + smooth).clamp(min=1e-7)
    return iou, union, width_enclosing * height_enclosing


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """COCO ``[x, y, w, h]`` to ``[x0, y0, x1, y1]``."""
    return torch.cat([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], dim=-1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``[x0, y0, x1, y1]`` to COCO ``[x, y, w, h]``."""
    return torch.cat([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], dim=-1)
