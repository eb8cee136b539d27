"""Box formats, the l*t*r*b* encoding of Eq. (1) and its inverse, and element-wise IoU.

Boxes are ``[..., 4]`` xyxy in absolute pixels unless a name says otherwise; ltrb distances are
``[..., 4]`` (left, top, right, bottom) from a location to the box sides.

The box convention (how a COCO ``[x, y, w, h]`` becomes xyxy, and what its area is) is defined here
once: :func:`coco_to_xyxy` for data loading and statistics, :func:`box_area` for the minimal-area rule.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

BOX_CONVENTIONS = ("continuous", "legacy")


def coco_to_xyxy(xywh: np.ndarray, image_sizes: np.ndarray, convention: str = "continuous") -> tuple[np.ndarray, np.ndarray]:
    """COCO boxes ``[A, 4]`` ``[x, y, w, h]`` to xyxy clipped to their images, in one of two conventions.

    Args:
        xywh: ``[A, 4]`` as in the file (float64).
        image_sizes: ``[A, 2]`` (H, W) of each box's image.
        convention: ``"continuous"``: ``[x, y, x + w, y + h]`` clipped to ``[0, W] x [0, H]`` in float64
            (fcos_lab's and torchvision's boxes). ``"legacy"``: the authors' maskrcnn-benchmark
            ``[x, y, x + max(w - 1, 0), y + max(h - 1, 0)]`` clipped to ``[0, W - 1] x [0, H - 1]``, in
            float32 as their code computes it.

    Returns:
        ``(boxes, degenerate)``: ``[A, 4]`` float32 xyxy and ``[A]`` bool, True where the clipped box
        has no area (``x1 <= x0`` or ``y1 <= y0``), which both codebases drop.
    """
    if convention not in BOX_CONVENTIONS:
        raise ValueError(f"box convention must be one of {BOX_CONVENTIONS}, got {convention!r}")
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    height, width = (np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)[:, k] for k in (0, 1))
    if convention == "continuous":
        x0, y0 = xywh[:, 0], xywh[:, 1]
        x1, y1 = x0 + xywh[:, 2], y0 + xywh[:, 3]
    else:
        x0, y0, w, h = xywh.astype(np.float32).T
        one = np.float32(1)
        x1, y1 = x0 + np.maximum(w - one, 0), y0 + np.maximum(h - one, 0)
        width, height = (width - 1).astype(np.float32), (height - 1).astype(np.float32)
    boxes = np.stack([np.clip(x0, 0, width), np.clip(y0, 0, height), np.clip(x1, 0, width), np.clip(y1, 0, height)], 1)
    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    return boxes.astype(np.float32), degenerate


def box_area(boxes: Tensor, offset: float = 0.0) -> Tensor:
    """``(x1 - x0 + offset) * (y1 - y0 + offset)`` of xyxy ``boxes`` ``[..., 4]``; returns ``[...]``.

    ``offset`` is 1 for the "legacy" convention's "+1" areas (maskrcnn-benchmark's ``BoxList.area``),
    0 for continuous boxes.
    """
    return (boxes[..., 2] - boxes[..., 0] + offset) * (boxes[..., 3] - boxes[..., 1] + offset)


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
