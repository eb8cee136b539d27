"""A COCO file's boxes resized as training does, padded per image (Section 4: shorter side 800, longer <= 1333).

No image is read: the training size of each image comes from the sizes in the file, through the same
integer rule (:func:`fcos_lab.data.transforms.resized_size`), box convention
(:func:`fcos_lab.boxes.coco_to_xyxy`) and float32 per-axis box scaling as training's data loader, so
the boxes are exactly the ones training assigns. The paper-table statistics
(:mod:`fcos_lab.analysis.statistics`), the app's Dataset statistics page and ``fcos-lab tune`` assign
them with the objective of a config (:mod:`fcos_lab.analysis.recall_ambiguity`).

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

from fcos_lab.boxes import BOX_CONVENTIONS, coco_to_xyxy
from fcos_lab.config import Config
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.data.transforms import RESIZE_RULES, resized_size
from fcos_lab.errors import ConfigError, DataError

CROWD_CHOICES = ("exclude", "include", "ignore")


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
        crowd: ``[N, M]`` crowd boxes kept with ``crowd="ignore"`` (never assigned, as in training).
        annotation_index: ``[N, M]`` index into the file's annotations, -1 for padding.
        sizes: ``[N, 2]`` (H, W) of each image as recorded in the file.
        resized_sizes: ``[N, 2]`` (H, W) after the training resize.
        padded_sizes: ``[N, 2]`` the resized size rounded up to a multiple of ``size_divisible``.
    """

    image_ids: np.ndarray
    boxes: Tensor
    iou_boxes: Tensor
    labels: Tensor
    valid: Tensor
    crowd: Tensor
    annotation_index: Tensor
    sizes: np.ndarray
    resized_sizes: np.ndarray
    padded_sizes: np.ndarray

    def select(self, rows: np.ndarray) -> PaddedBoxes:
        """The images ``rows`` (indices into N), trimmed to the most boxes any of them has."""
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        max_boxes = int(self.valid[index].sum(1).max()) if len(index) else 0
        return PaddedBoxes(
            image_ids=self.image_ids[rows], boxes=self.boxes[index, :max_boxes],
            iou_boxes=self.iou_boxes[index, :max_boxes], labels=self.labels[index, :max_boxes],
            valid=self.valid[index, :max_boxes], crowd=self.crowd[index, :max_boxes],
            annotation_index=self.annotation_index[index, :max_boxes], sizes=self.sizes[rows],
            resized_sizes=self.resized_sizes[rows], padded_sizes=self.padded_sizes[rows],
        )

    def keep(self, mask: Tensor) -> PaddedBoxes:
        """Only the boxes where ``mask`` ``[N, M]`` is True, moved to the front of each row in their order.

        The order of the kept boxes is unchanged (the minimal-area rule keeps the first of equal areas), and
        the padding is trimmed to the most boxes any row keeps. Images keep their rows, possibly empty.
        """
        kept = mask & self.valid
        order = torch.sort((~kept).to(torch.uint8), dim=1, stable=True).indices  # kept boxes first, in order
        max_boxes = int(kept.sum(1).max()) if kept.numel() else 0
        order = order[:, :max_boxes]

        def gather(values: Tensor) -> Tensor:
            index = order if values.ndim == 2 else order[..., None].expand(-1, -1, values.shape[-1])
            return values.gather(1, index)

        valid = gather(kept)
        return PaddedBoxes(
            image_ids=self.image_ids, boxes=gather(self.boxes), iou_boxes=gather(self.iou_boxes),
            labels=gather(self.labels), valid=valid, crowd=gather(self.crowd) & valid,
            annotation_index=torch.where(valid, gather(self.annotation_index), -1), sizes=self.sizes,
            resized_sizes=self.resized_sizes, padded_sizes=self.padded_sizes,
        )


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
    resize_rule: str = "official",
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
            trains on by default. ``"legacy"``: Detectron's and maskrcnn-benchmark's "+1" pixel convention
            ``[x, x + w - 1]`` clipped to ``[0, W - 1]`` (:func:`fcos_lab.boxes.coco_to_xyxy`); ``iou_boxes``
            then add 1 to x1 and y1 so that a continuous IoU equals Detectron's "+1"-area IoU.
        crowd: ``"exclude"``: ``iscrowd`` boxes are left out (Detectron); ``"include"``: ordinary boxes;
            ``"ignore"``: kept and flagged in ``crowd`` (never assigned, as fcos_lab's training does).
        drop_degenerate: whether degenerate boxes leave the ``counted`` denominator (they are never
            ``valid`` either way).
        size_divisible: padded sizes are rounded up to a multiple of this.
        resize_rule: :func:`fcos_lab.data.transforms.resized_size`'s rule.

    Returns:
        The padded boxes and a dict of counts: ``num_images`` (N), ``num_images_with_boxes``,
        ``num_annotations`` (A), ``num_boxes`` (boxes counted), ``num_crowd`` (crowd boxes, kept or not),
        ``num_degenerate`` (degenerate boxes, crowd ones included), and per-annotation ``[A]`` arrays
        ``counted``, ``crowd``, ``degenerate`` (bool) and ``annotation_ids`` (object).

    Raises:
        DataError: a record lacks a field or has a bad value (the message names the file and record).
        ConfigError: an unknown ``box_convention`` or ``crowd``.
    """
    for name, value, choices in (("box_convention", box_convention, BOX_CONVENTIONS), ("crowd", crowd, CROWD_CHOICES),
                                 ("resize_rule", resize_rule, RESIZE_RULES)):
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

    # The training resize (Section 4): each image's resized size by the integer rule training uses, then the
    # boxes scaled by the float32 per-axis ratios new / old, as fcos_lab.data.transforms.resize_boxes does.
    resized = np.array([resized_size(hh, ww, min_size, max_size, resize_rule)
                        for hh, ww in zip(heights.tolist(), widths.tolist())], dtype=np.int64).reshape(num_images, 2)
    padded_sizes = (-(-resized // size_divisible) * size_divisible).astype(np.int64)
    ratios = resized.astype(np.float32) / np.stack([heights, widths], 1).astype(np.float32)  # [N, 2] (h, w)
    clipped, degenerate = coco_to_xyxy(np.stack([x0, y0, w, h], 1), np.stack([heights, widths], 1)[ann_image],
                                       box_convention)
    scale = ratios[ann_image][:, [1, 0, 1, 0]]
    xyxy = clipped * scale
    degenerate |= (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])
    # An IoU with "+1" areas (Detectron's bbox_overlaps) is the continuous IoU of [x0, x1 + 1].
    iou_xyxy = xyxy + (np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32) if box_convention == "legacy" else 0.0)
    dropped_crowd = ann_crowd & (crowd == "exclude")
    keep = ~degenerate & ~dropped_crowd
    counted = ~(ann_crowd & (crowd != "include")) & ~(degenerate & drop_degenerate)

    # Pad per image: [N, M, ...] with M the most boxes of any image, each image's boxes by annotation id as
    # the training data loader orders them (the minimal-area rule keeps the first of equal areas).
    order = np.lexsort((np.array([c[7] if isinstance(c[7], (int, np.integer)) else i for i, c in enumerate(columns)],
                                 dtype=np.int64), ann_image))
    order = order[keep[order]]
    per_image = np.bincount(ann_image[order], minlength=num_images)
    max_boxes = int(per_image.max()) if len(order) else 0
    rows = ann_image[order]
    slot = np.arange(len(order)) - np.repeat(np.cumsum(per_image) - per_image, per_image)
    boxes = np.zeros((num_images, max_boxes, 4), dtype=np.float32)
    iou_boxes = np.zeros((num_images, max_boxes, 4), dtype=np.float32)
    labels = np.zeros((num_images, max_boxes), dtype=np.int64)
    crowd_flags = np.zeros((num_images, max_boxes), dtype=bool)
    index = np.full((num_images, max_boxes), -1, dtype=np.int64)
    boxes[rows, slot], iou_boxes[rows, slot] = xyxy[order], iou_xyxy[order]
    labels[rows, slot], index[rows, slot] = ann_label[order], order
    crowd_flags[rows, slot] = ann_crowd[order] & (crowd == "ignore")
    gt = PaddedBoxes(
        image_ids=np.array(image_ids, dtype=np.int64),
        boxes=torch.from_numpy(boxes),
        iou_boxes=torch.from_numpy(iou_boxes),
        labels=torch.from_numpy(labels),
        valid=torch.from_numpy(index >= 0),
        crowd=torch.from_numpy(crowd_flags),
        annotation_index=torch.from_numpy(index),
        sizes=np.stack([heights, widths], 1).reshape(num_images, 2),
        resized_sizes=resized,
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


def boxes_for_config(
    data: dict[str, Any], ann_file: str | Path, config: Config, *, crowd: str = "exclude", drop_degenerate: bool = True
) -> tuple[PaddedBoxes, dict[str, Any]]:
    """:func:`prepare_boxes` with the resize and box convention of ``config`` (``config.input``, ``config.data``)."""
    i = config.input
    return prepare_boxes(
        data, ann_file, min_size=i.min_size, max_size=i.max_size, box_convention=config.data.box_convention,
        crowd=crowd, drop_degenerate=drop_degenerate, size_divisible=i.size_divisible, resize_rule=i.resize_rule,
    )


@dataclass(frozen=True)
class DatasetBoxes:
    """A COCO-format file's usable boxes at the training resize, for pages and tools that try settings live.

    Attributes:
        ann_file: the file.
        boxes: the images with at least one usable box (by increasing id, at most ``max_images``).
        widths, heights: ``[K]`` sizes of their K usable boxes, resized pixels.
        num_images: images in the file; ``num_crowd`` crowd boxes left out (as Detectron does);
            ``num_degenerate`` non-crowd boxes with no area once clipped. Both count the whole file.
        class_names: names of the class indices.
    """

    ann_file: str
    boxes: PaddedBoxes
    widths: np.ndarray
    heights: np.ndarray
    num_images: int
    num_crowd: int
    num_degenerate: int
    class_names: tuple[str, ...]


def load_dataset_boxes(ann_file: str | Path, config: Config, *, max_images: int | None = None) -> DatasetBoxes:
    """Read a COCO-format annotation file (no image is opened) and resize its boxes as ``config`` trains.

    Crowd boxes and boxes with no area are left out.

    Raises:
        DataError: the file is missing or malformed (the message names the record).
    """
    coco = load_coco_annotations(Path(ann_file).expanduser())
    padded, info = boxes_for_config(coco.dataset, ann_file, config)
    boxes_per_image = padded.valid.sum(1).numpy()
    rows = np.flatnonzero(boxes_per_image > 0)
    rows = rows[np.argsort(padded.image_ids[rows], kind="stable")]
    if max_images is not None:
        rows = rows[: max(max_images, 0)]
    selected = padded.select(rows)
    flat = selected.boxes[selected.valid]
    return DatasetBoxes(
        ann_file=str(ann_file), boxes=selected,
        widths=(flat[:, 2] - flat[:, 0]).numpy(), heights=(flat[:, 3] - flat[:, 1]).numpy(),
        num_images=info["num_images"], num_crowd=info["num_crowd"],
        num_degenerate=int((info["degenerate"] & ~info["crowd"]).sum()),
        class_names=tuple(coco.cats[c]["name"] for c in sorted(coco.cats)),
    )
