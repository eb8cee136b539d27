"""A COCO file's boxes resized as training does, padded per image (Section 4: shorter side 800, longer <= 1333).

No image is read: the training scale of each image comes from the sizes in the file. Both the
paper-table statistics (:mod:`fcos_lab.analysis.statistics`) and the app's Dataset statistics page
(:mod:`fcos_lab.viz.dataset_statistics`) assign these boxes with :func:`fcos_lab.targets.assign`.

Glossary: N images of the file, M the most usable boxes of any image (the padding dimension), A the
file's annotations. Boxes are xyxy in absolute pixels of the resized image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fcos_lab.data.transforms import resize_scale
from fcos_lab.errors import ConfigError, DataError

BOX_CONVENTIONS = ("continuous", "legacy")
CROWD_CHOICES = ("exclude", "include")


@dataclass(frozen=True)
class PaddedBoxes:
    """Ground truth of a whole file after the training resize, padded per image.

    Rows follow the order of the file's ``images``; an image without usable boxes has an all-False row.

    Attributes:
        image_ids: ``[N]`` the images' ids.
        boxes: ``[N, M, 4]`` xyxy in resized-image pixels, for FCOS assignment; zeros in padding.
        iou_boxes: ``[N, M, 4]`` the same boxes as seen by IoU matching (differs only for "legacy").
        labels: ``[N, M]`` contiguous class indices (categories sorted by id); 0 in padding.
        valid: ``[N, M]`` real, usable boxes (not padding, not dropped).
        annotation_index: ``[N, M]`` index into the file's annotations, -1 for padding.
        padded_sizes: ``[N, 2]`` (H, W) of each resized image rounded up to a multiple of
            ``size_divisible``.
    """

    image_ids: np.ndarray
    boxes: Tensor
    iou_boxes: Tensor
    labels: Tensor
    valid: Tensor
    annotation_index: Tensor
    padded_sizes: np.ndarray


def prepare_boxes(
    data: dict[str, Any],
    ann_file: str | Path,
    *,
    min_size: float,
    max_size: float,
    box_convention: str,
    crowd: str,
    drop_degenerate: bool,
    size_divisible: int = 32,
) -> tuple[PaddedBoxes, dict[str, Any]]:
    """Resize every box with its image's training scale and pad per image.

    Boxes are clipped to the image, then scaled. A box with no area once clipped and scaled is
    degenerate; it is never in ``valid``.

    Args:
        data: the file's JSON (``images``, ``annotations``, ``categories``), e.g. the ``dataset`` of
            :func:`fcos_lab.data.coco_annotations.load_coco_annotations`, which validates it.
        ann_file: the file, named in error messages.
        min_size, max_size: the training resize: shorter side ``min_size``, longer side <= ``max_size``.
        box_convention: ``"continuous"``: ``[x, x + w]`` clipped to ``[0, W]``, the boxes fcos_lab
            trains on. ``"legacy"``: Detectron's and maskrcnn-benchmark's "+1" pixel convention
            ``[x, x + w - 1]`` clipped to ``[0, W - 1]``; ``iou_boxes`` then add 1 to x1 and y1 so that a
            continuous IoU equals Detectron's "+1"-area IoU.
        crowd: ``"exclude"``: ``iscrowd`` boxes are left out (Detectron); ``"include"``: ordinary boxes.
        drop_degenerate: whether degenerate boxes leave the ``counted`` denominator (they are never
            ``valid`` either way).
        size_divisible: padded sizes are rounded up to a multiple of this.

    Returns:
        The padded boxes and a dict of counts: ``num_images`` (N), ``num_images_with_boxes``,
        ``num_annotations`` (A), ``num_boxes`` (boxes counted), ``num_crowd`` (crowd boxes, kept or not),
        ``num_degenerate`` (degenerate boxes, crowd ones included), and per-annotation ``[A]`` arrays
        ``counted``, ``crowd``, ``degenerate`` (bool) and ``annotation_ids`` (object).

    Raises:
        DataError: a record lacks a field or has a bad value (the message names the file and record).
        ConfigError: an unknown ``box_convention`` or ``crowd``.
    """
    for name, value, choices in (("box_convention", box_convention, BOX_CONVENTIONS), ("crowd", crowd, CROWD_CHOICES)):
        if value not in choices:
            raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
    image_row: dict[int, int] = {}
    sizes, image_ids = [], []
    for row, image in enumerate(data["images"]):
        try:
            image_row[image["id"]] = row
            image_ids.append(int(image["id"]))
            sizes.append((int(image["height"]), int(image["width"])))
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{ann_file}: images[{row}]: needs an id and integer height and width ({error!r})") from error
    label_of = {cat_id: i for i, cat_id in enumerate(sorted(c["id"] for c in data["categories"]))}
    columns: list[tuple] = []
    for i, ann in enumerate(data["annotations"]):
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            columns.append((image_row[ann["image_id"]], x, y, w, h, label_of[ann["category_id"]],
                            bool(ann.get("iscrowd", 0)), ann.get("id", i)))
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{ann_file}: annotations[{i}]: bad image_id, category_id or bbox ({error!r})") from error
    num_images, num_annotations = len(sizes), len(columns)
    heights = np.array([hh for hh, _ in sizes], dtype=np.int64)
    widths = np.array([ww for _, ww in sizes], dtype=np.int64)
    table = np.array([c[:7] for c in columns], dtype=np.float64).reshape(num_annotations, 7)
    ann_image, (x0, y0, w, h), ann_label = table[:, 0].astype(np.int64), table[:, 1:5].T, table[:, 5].astype(np.int64)
    ann_crowd = table[:, 6].astype(bool)

    # The training resize (Section 4): one scale per image, from the sizes in the file.
    # Deviation from paper: the scale is torchvision's float ``resize_scale`` (as fcos_lab trains), not
    # maskrcnn-benchmark's integer output size; box corners move by less than a pixel.
    scales = np.array([resize_scale(hh, ww, min_size, max_size) for hh, ww in zip(heights.tolist(), widths.tolist())])
    # The resized size is floor(side * scale) (F.interpolate with recompute_scale_factor).
    padded_sizes = np.stack([np.ceil(np.floor(heights * scales) / size_divisible) * size_divisible,
                             np.ceil(np.floor(widths * scales) / size_divisible) * size_divisible],
                            1).astype(np.int64).reshape(num_images, 2)
    if box_convention == "continuous":
        x1, y1 = x0 + w, y0 + h
        limit_w, limit_h = widths[ann_image], heights[ann_image]
    else:
        # Detectron and maskrcnn-benchmark: x1 = x + w - 1 in their "+1" pixel convention, clipped to W - 1.
        x1, y1 = x0 + np.maximum(w - 1, 0), y0 + np.maximum(h - 1, 0)
        limit_w, limit_h = widths[ann_image] - 1, heights[ann_image] - 1
    xyxy = np.stack([np.clip(x0, 0, limit_w), np.clip(y0, 0, limit_h), np.clip(x1, 0, limit_w), np.clip(y1, 0, limit_h)], 1)
    xyxy = xyxy * scales[ann_image, None]
    # An IoU with "+1" areas (Detectron's bbox_overlaps) is the continuous IoU of [x0, x1 + 1].
    iou_xyxy = xyxy + (np.array([0.0, 0.0, 1.0, 1.0]) if box_convention == "legacy" else 0.0)
    degenerate = (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])
    dropped_crowd = ann_crowd & (crowd == "exclude")
    keep = ~degenerate & ~dropped_crowd
    counted = ~dropped_crowd & ~(degenerate & drop_degenerate)

    # Pad per image: [N, M, ...] with M the most boxes of any image.
    order = np.argsort(ann_image, kind="stable")
    order = order[keep[order]]
    per_image = np.bincount(ann_image[order], minlength=num_images)
    max_boxes = int(per_image.max()) if len(order) else 0
    rows = ann_image[order]
    slot = np.arange(len(order)) - np.repeat(np.cumsum(per_image) - per_image, per_image)
    boxes = np.zeros((num_images, max_boxes, 4), dtype=np.float32)
    iou_boxes = np.zeros((num_images, max_boxes, 4), dtype=np.float32)
    labels = np.zeros((num_images, max_boxes), dtype=np.int64)
    index = np.full((num_images, max_boxes), -1, dtype=np.int64)
    boxes[rows, slot], iou_boxes[rows, slot] = xyxy[order], iou_xyxy[order]
    labels[rows, slot], index[rows, slot] = ann_label[order], order
    gt = PaddedBoxes(
        image_ids=np.array(image_ids, dtype=np.int64),
        boxes=torch.from_numpy(boxes),
        iou_boxes=torch.from_numpy(iou_boxes),
        labels=torch.from_numpy(labels),
        valid=torch.from_numpy(index >= 0),
        annotation_index=torch.from_numpy(index),
        padded_sizes=padded_sizes,
    )
    info = {
        "num_images": num_images,
        "num_images_with_boxes": int((per_image > 0).sum()),
        "num_annotations": num_annotations,
        "num_boxes": int(counted.sum()),
        "num_crowd": int(ann_crowd.sum()),
        "num_degenerate": int(degenerate.sum()),
        "counted": counted,
        "crowd": ann_crowd,
        "degenerate": degenerate,
        "annotation_ids": np.array([c[7] for c in columns], dtype=object),
    }
    return gt, info
