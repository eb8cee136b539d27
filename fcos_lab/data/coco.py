"""COCO-format detection data (Section 4 of the paper: COCO ``trainval35k`` / ``minival``).

Any COCO-style annotation file and image folder can be read. The annotation file is validated before
pycocotools sees it (:mod:`fcos_lab.data.coco_annotations`).

Training augmentation is the paper's: horizontal flip with probability 0.5 and, for its multi-scale
training (Section 4.2), a shorter side sampled from [640, 800]. Randomness is a
pure function of ``(seed, epoch, index)``, so results do not depend on the number of DataLoader workers.

Shapes: images ``[3, H, W]``; boxes ``[M, 4]`` xyxy in absolute pixels of the resized image.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from fcos_lab import paper
from fcos_lab.boxes import BOX_CONVENTIONS, coco_to_xyxy
from fcos_lab.data.coco_annotations import is_json_int, load_coco_annotations
from fcos_lab.data.transforms import RESIZE_RULES, ImageBatch, hflip, normalize, pad_batch, resize_boxes, resize_image
from fcos_lab.errors import DataError

logger = logging.getLogger("fcos_lab.data")

ON_BAD_IMAGE_CHOICES = ("error", "skip")


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to ``[H, W, 3]`` uint8 RGB."""
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit data (PIL opens 16-bit PNGs as I;16 or I): rescale to 8 bits, where convert("RGB") clips.
        gray = np.clip(np.rint(np.array(img, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("P", "PA") and "transparency" in img.info:
        img = img.convert("RGBA")  # the direct P -> RGB conversion warns about byte transparency
    # Alpha is dropped, not composited, as torchvision's read_image(mode=RGB) does.
    return np.array(img.convert("RGB"), dtype=np.uint8)


def load_image(path: str | Path, *, image_id: int | None = None) -> Tensor:
    """Load any image file as RGB, with its EXIF orientation applied.

    Args:
        path: the image file.
        image_id: the COCO image id, only to name it in errors.

    Returns:
        ``[3, H, W]`` float32 in [0, 1]; (H, W) after the EXIF transpose.

    Raises:
        DataError: the file is missing, empty, truncated, corrupt or implausibly large (PIL's
            decompression-bomb limit); the message names the path, the image id and the problem.
    """
    path = Path(path)
    name = f"{path}" + (f" (image id {image_id})" if image_id is not None else "")
    if not path.is_file():
        raise DataError(f"{name}: image file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{name}: image file is empty")
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning means an image so large that decoding it could exhaust memory.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decode now: a truncated file must fail here, not be half-read silently
                pixels = _to_rgb_uint8(ImageOps.exif_transpose(img))
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError, ...) for bad files
        raise DataError(f"{name}: cannot read image ({type(error).__name__}: {error})") from error
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous().float().div_(255.0)


class CocoDetection(Dataset):
    """A COCO-format detection dataset with the paper's training and testing transforms.

    Each item is ``(image, target)``: ``image`` ``[3, H, W]`` normalized and resized; ``target`` with
    ``boxes`` ``[M, 4]`` float32 xyxy in resized pixels, ``labels`` ``[M]`` int64 contiguous class
    indices, ``iscrowd`` ``[M]`` bool, ``ann_ids`` ``[M]`` int64 COCO annotation ids, ``image_id`` int,
    ``orig_size`` and ``size`` ``(h, w)`` before and after resizing, and ``flipped`` bool.

    Attributes:
        coco: the pycocotools index, for COCO evaluation.
        category_ids: COCO category id of each contiguous class index (sorted ids).
        class_names: name of each class index.
        num_classes: C.
        image_ids: the images kept, in sorted id order; item ``i`` is ``image_ids[i]``.
        num_degenerate: boxes dropped because they had no area once clipped to the image.
        skipped_images: ids of images that failed to load under ``on_bad_image="skip"`` (recorded in
            the process that loaded them: with DataLoader workers, in the workers).
        num_skipped: how many times an item was replaced by the next good image.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        *,
        train: bool,
        min_size: int | tuple[int, int] = paper.MIN_SIZE,
        max_size: int = paper.MAX_SIZE,
        resize_rule: str = "torchvision",
        box_convention: str = "continuous",
        flip_prob: float = 0.5,
        on_bad_image: str = "error",
        seed: int = 0,
        image_ids: Sequence[int] | None = None,
        require_annotations: bool = True,
    ) -> None:
        """Index the annotations; images are read lazily.

        Args:
            ann_file: COCO-format annotation JSON.
            image_dir: folder that ``file_name`` of each image record is relative to.
            train: training mode: random flip and multi-scale, and images without a non-crowd box
                are dropped.
            min_size: shorter side after resizing; ``(lo, hi)`` samples it uniformly from the
                integers in [lo, hi] in training and uses ``hi`` in evaluation.
            max_size: upper bound on the longer side after resizing.
            resize_rule: how the resized size is computed (:func:`fcos_lab.data.transforms.resized_size`).
            box_convention: how ``[x, y, w, h]`` becomes a box (:func:`fcos_lab.boxes.coco_to_xyxy`).
            flip_prob: horizontal flip probability (training only).
            on_bad_image: ``"error"`` raises :class:`DataError` on an unreadable image; ``"skip"``
                logs it and returns the next readable image.
            seed: seed of the augmentation randomness.
            image_ids: restrict the dataset to these image ids.
            require_annotations: whether a file without ``annotations`` is an error.
        """
        if on_bad_image not in ON_BAD_IMAGE_CHOICES:
            raise ValueError(f"on_bad_image must be one of {ON_BAD_IMAGE_CHOICES}, got {on_bad_image!r}")
        sizes = (min_size, min_size) if isinstance(min_size, int) else tuple(min_size)
        if len(sizes) != 2 or not all(is_json_int(s) and s > 0 for s in sizes) or sizes[0] > sizes[1]:
            raise ValueError(f"min_size must be a positive int or a (lo, hi) pair with lo <= hi, got {min_size!r}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: image folder not found")
        self.train = train
        self.min_size_range: tuple[int, int] = sizes
        self.max_size = max_size
        if resize_rule not in RESIZE_RULES:
            raise ValueError(f"resize_rule must be one of {RESIZE_RULES}, got {resize_rule!r}")
        if box_convention not in BOX_CONVENTIONS:
            raise ValueError(f"box_convention must be one of {BOX_CONVENTIONS}, got {box_convention!r}")
        self.resize_rule = resize_rule
        self.box_convention = box_convention
        self.flip_prob = flip_prob if train else 0.0
        self.on_bad_image = on_bad_image
        self.seed = seed
        self.epoch = 0

        self.coco = load_coco_annotations(self.ann_file, require_annotations=require_annotations)
        self.category_ids: list[int] = sorted(self.coco.cats)
        self.class_names: list[str] = [self.coco.cats[c]["name"] for c in self.category_ids]
        self.num_classes = len(self.category_ids)
        self.category_id_to_label: dict[int, int] = {c: i for i, c in enumerate(self.category_ids)}

        candidates = sorted(self.coco.imgs) if image_ids is None else sorted(set(image_ids))
        unknown = [i for i in candidates if i not in self.coco.imgs]
        if unknown:
            raise DataError(f"{self.ann_file}: image_ids not in the file: {unknown[:10]}")
        self._build_index(candidates)
        self.skipped_images: list[int] = []
        self.num_skipped = 0
        self._bad: dict[int, str] = {}

    def _build_index(self, candidates: list[int]) -> None:
        """Convert, clip and filter the boxes of ``candidates`` into flat arrays with per-image offsets."""
        # One row per kept box: x1, y1, x2, y2, label, iscrowd, annotation id. Flat arrays rather than
        # per-image tensors keep DataLoader workers from copying millions of small objects.
        rows: list[tuple[float, float, float, float, int, bool, int]] = []
        offsets, kept, degenerate_images = [0], [], []
        for image_id in candidates:
            width, height = self.coco.imgs[image_id]["width"], self.coco.imgs[image_id]["height"]
            start = len(rows)
            anns = sorted(self.coco.imgToAnns.get(image_id, []), key=lambda a: a["id"])
            boxes, degenerate = coco_to_xyxy(
                np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4),
                np.array([[height, width]] * len(anns)).reshape(-1, 2), self.box_convention,
            )
            if degenerate.any():
                degenerate_images.extend([image_id] * int(degenerate.sum()))
            for ann, box, bad in zip(anns, boxes.tolist(), degenerate.tolist()):
                if bad:
                    continue
                # Deviation from paper: its code (maskrcnn-benchmark) drops iscrowd annotations here; we
                # pass them on, flagged, so that assignment and statistics can decide what to do with them.
                label = self.category_id_to_label[ann["category_id"]]
                rows.append((*box, label, bool(ann.get("iscrowd", 0)), ann["id"]))
            if self.train and all(row[5] for row in rows[start:]):
                # As the paper's code (FCOS/maskrcnn-benchmark) does: an image without a usable box
                # contributes only negatives, and is skipped in training.
                del rows[start:]
                continue
            kept.append(image_id)
            offsets.append(len(rows))
        self.image_ids: list[int] = kept
        columns = list(zip(*rows)) if rows else [()] * 7
        self._boxes = np.asarray(columns[:4], dtype=np.float32).T.reshape(-1, 4)
        self._labels = np.asarray(columns[4], dtype=np.int64)
        self._crowd = np.asarray(columns[5], dtype=bool)
        self._ann_ids = np.asarray(columns[6], dtype=np.int64)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self.num_degenerate = len(degenerate_images)
        if degenerate_images:
            images = list(dict.fromkeys(degenerate_images))
            more = f" and {len(images) - 10} more" if len(images) > 10 else ""
            logger.warning(
                "%s: dropped %d degenerate boxes (images %s%s)",
                self.ann_file.name, self.num_degenerate, ", ".join(map(str, images[:10])), more,
            )
        if len(kept) < len(candidates):
            n_left_out = len(candidates) - len(kept)
            logger.info("%s: %d images without a non-crowd box left out of training", self.ann_file.name, n_left_out)

    def __len__(self) -> int:
        return len(self.image_ids)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation randomness; call before iterating (non-persistent workers copy it)."""
        self.epoch = epoch

    def label_to_category_id(self, labels: Tensor) -> Tensor:
        """Map contiguous class indices ``[...]`` (int64) to COCO category ids ``[...]`` (int64)."""
        table = torch.as_tensor(self.category_ids, dtype=torch.int64, device=labels.device)
        return table[labels.long()]

    def _generator(self, index: int) -> torch.Generator:
        """The random stream of item ``index`` in the current epoch, independent of worker layout."""
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def _load(self, index: int) -> Tensor:
        """Read image ``index`` as ``[3, H, W]`` in [0, 1], checking it matches its record's size."""
        image_id = self.image_ids[index]
        if image_id in self._bad:
            raise DataError(self._bad[image_id])
        record = self.coco.imgs[image_id]
        path = self.image_dir / record["file_name"]
        try:
            image = load_image(path, image_id=image_id)
            height, width = image.shape[-2:]
            if (height, width) != (record["height"], record["width"]):
                # The boxes were clipped to the recorded size; a mismatch means they are in another frame.
                raise DataError(
                    f"{path} (image id {image_id}): image is {width}x{height} (after EXIF orientation) "
                    f"but {self.ann_file.name} records {record['width']}x{record['height']}"
                )
        except DataError as error:
            self._bad[image_id] = str(error)
            raise
        return image

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        for step in range(len(self)):
            candidate = (index + step) % len(self)
            try:
                image = self._load(candidate)
            except DataError as error:
                if self.on_bad_image == "error":
                    raise
                self.num_skipped += 1
                image_id = self.image_ids[candidate]
                if image_id not in self.skipped_images:
                    self.skipped_images.append(image_id)
                    logger.warning("skipping unreadable image: %s", error)
                continue
            return self._transform(candidate, image)
        raise DataError(f"{self.ann_file}: no image of the {len(self)} in {self.image_dir} could be read")

    def annotations_of(self, index: int) -> dict[str, Tensor]:
        """The kept boxes of image ``index`` in its own pixels, before any flip or resize.

        Returns:
            ``boxes`` ``[M, 4]`` float32 xyxy in the dataset's box convention, clipped, degenerate ones
            dropped; ``labels`` ``[M]`` int64; ``iscrowd`` ``[M]`` bool; ``ann_ids`` ``[M]`` int64 (by id).
        """
        start, stop = int(self._offsets[index]), int(self._offsets[index + 1])
        return {
            "boxes": torch.from_numpy(self._boxes[start:stop].copy()),
            "labels": torch.from_numpy(self._labels[start:stop].copy()),
            "iscrowd": torch.from_numpy(self._crowd[start:stop].copy()),
            "ann_ids": torch.from_numpy(self._ann_ids[start:stop].copy()),
        }

    def _transform(self, index: int, image: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """Flip (training), normalize and resize image ``index`` and its boxes."""
        annotations = self.annotations_of(index)
        boxes = annotations["boxes"]
        orig_size = (int(image.shape[-2]), int(image.shape[-1]))
        generator = self._generator(index)
        flipped = False
        if self.train:
            # Both draws happen every time, so the size drawn does not depend on flip_prob.
            flipped = bool(torch.rand((), generator=generator) < self.flip_prob)
            lo, hi = self.min_size_range
            min_size = int(torch.randint(lo, hi + 1, (), generator=generator))
        else:
            min_size = self.min_size_range[1]
        if flipped:
            image, boxes = hflip(image, boxes, 1.0 if self.box_convention == "legacy" else 0.0)
        image = resize_image(normalize(image), min_size, self.max_size, self.resize_rule)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        boxes = resize_boxes(boxes, orig_size, size)
        target = {
            **annotations,
            "boxes": boxes,
            "image_id": self.image_ids[index],
            "orig_size": orig_size,
            "size": size,
            "flipped": flipped,
        }
        return image, target


def collate(
    batch: Sequence[tuple[Tensor, dict[str, Any]]], size_divisible: int = 32
) -> tuple[ImageBatch, list[dict[str, Any]]]:
    """Pad a list of ``(image [3, H_i, W_i], target)`` into an :class:`ImageBatch` ``[B, 3, H, W]``.

    Use ``functools.partial(collate, size_divisible=...)`` as a DataLoader ``collate_fn`` for another
    divisor (128 when P7 must tile the image exactly).
    """
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    tensors = pad_batch(images, size_divisible)
    return ImageBatch(
        tensors=tensors,
        image_sizes=tuple(tuple(t["size"]) for t in targets),
        original_sizes=tuple(tuple(t["orig_size"]) for t in targets),
    ), targets
