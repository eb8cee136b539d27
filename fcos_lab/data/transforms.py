"""Image and box transforms of the paper's training and testing settings (Section 4, "Training Details").

Images are resized so that the shorter side is ``min_size`` (800) and the longer side at most
``max_size`` (1333), normalized with the ImageNet statistics of torchvision's backbones, and padded
to a multiple of 32 at the bottom and right.

The resized size is an integer computation, :func:`resized_size`, with two rules:

- ``"official"``: the authors' ``Resize.get_size`` (FCOS / maskrcnn-benchmark). The shorter side is
  exactly ``min_size`` and the longer ``int(min_size * long / short)``; when that would pass
  ``max_size``, the shorter side becomes ``round(max_size * short / long)`` first, and rounding up can
  leave the longer side one pixel over the limit (189 x 640 becomes 394 x 1334), as in the authors' code.
- ``"torchvision"``: ``GeneralizedRCNNTransform``'s ``floor(side * scale)`` with
  ``scale = min(min_size / short, max_size / long)`` in double precision, as its eager code computes it.
  ``short * (800 / short)`` can round below 800, so the shorter side sometimes comes out at 799: the
  two rules differ on 344 of the 5,000 val2017 images (388 x 640 becomes 799 x 1319 here and 800 x 1319
  for the authors; 371 x 640 becomes 772 x 1333 here and 773 x 1333 for the authors).

Pixels are then bilinearly interpolated to that size (``align_corners=False``), the call torchvision makes,
so the torchvision-parity preset sees exactly torchvision's tensors. Boxes scale by the per-axis ratios
``new / old`` in float32, as both codebases do.

Shapes: images ``[3, H, W]`` float in [0, 1] before :func:`normalize`; boxes ``[M, 4]`` xyxy in
absolute pixels of the image they belong to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fcos_lab import paper
from fcos_lab.errors import InputError

# Deviation from paper: the paper's Detectron models take BGR images with per-channel mean subtraction
# only (Caffe2 weights); we use torchvision's ImageNet RGB mean/std because our backbones come from it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_image(image: Tensor, name: str = "image") -> None:
    """Raise :class:`InputError` unless ``image`` is a float ``[3, H, W]`` tensor with finite values."""
    if not isinstance(image, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor [3, H, W], got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise InputError(f"{name}: expected shape [3, H, W], got {list(image.shape)}")
    if not image.is_floating_point():
        raise InputError(f"{name}: expected a floating-point tensor in [0, 1], got dtype {image.dtype}")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise InputError(f"{name}: empty image of shape {list(image.shape)}")


def check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    """Raise :class:`InputError` unless ``boxes`` is a finite float ``[M, 4]`` xyxy tensor."""
    if not isinstance(boxes, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor [M, 4], got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise InputError(f"{name}: expected shape [M, 4] (xyxy), got {list(boxes.shape)}")
    if not boxes.is_floating_point():
        raise InputError(f"{name}: expected a floating-point tensor, got dtype {boxes.dtype}")
    if boxes.numel() and not torch.isfinite(boxes).all():
        bad = (~torch.isfinite(boxes)).any(dim=1).nonzero()[0, 0].item()
        raise InputError(f"{name}: box {bad} has a NaN or infinite coordinate: {boxes[bad].tolist()}")


RESIZE_RULES = ("official", "torchvision")


def resized_size(height: int, width: int, min_size: float, max_size: float, rule: str = "torchvision") -> tuple[int, int]:
    """``(h, w)`` of an image of ``height x width`` after the training/testing resize (Section 4).

    Args:
        height, width: the image's size.
        min_size, max_size: the shorter side's target and the longer side's limit (800, 1333).
        rule: ``"official"`` (the authors' ``Resize.get_size``) or ``"torchvision"``
            (``GeneralizedRCNNTransform``); see the module docstring. The default is torchvision's, which
            this function has always reproduced; presets name their rule in ``input.resize_rule``.
    """
    short, long = min(height, width), max(height, width)
    if rule == "torchvision":
        scale = min(min_size / short, max_size / long)  # Python floats: torchvision's eager (non-scripted) path
        return int(height * scale), int(width * scale)
    if rule != "official":
        raise InputError(f"resize rule must be one of {RESIZE_RULES}, got {rule!r}")
    size = min_size
    if long / short * size > max_size:
        size = int(round(max_size * short / long))
    if short == size:
        return height, width
    if width < height:
        return int(size * height / width), int(size)
    return int(size), int(size * width / height)


def resize_image(image: Tensor, min_size: float, max_size: float, rule: str = "torchvision") -> Tensor:
    """Bilinearly resize ``image`` ``[3, H, W]`` to :func:`resized_size`; returns ``[3, H', W']``."""
    size = resized_size(int(image.shape[-2]), int(image.shape[-1]), min_size, max_size, rule)
    # Deviation from paper: the authors resize 8-bit PIL images (antialiased bilinear); we interpolate the
    # float tensor without antialiasing, as torchvision does. Sizes are the authors' (rule "official").
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


def resize_boxes(boxes: Tensor, original_size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """Scale xyxy ``boxes`` ``[M, 4]`` from ``original_size`` (h, w) to ``new_size`` (h, w)."""
    ratio_h = torch.tensor(new_size[0], dtype=torch.float32) / torch.tensor(original_size[0], dtype=torch.float32)
    ratio_w = torch.tensor(new_size[1], dtype=torch.float32) / torch.tensor(original_size[1], dtype=torch.float32)
    scale = torch.stack([ratio_w, ratio_h, ratio_w, ratio_h]).to(boxes)
    return boxes * scale


def hflip(image: Tensor, boxes: Tensor, pixel_offset: float = 0.0) -> tuple[Tensor, Tensor]:
    """Mirror ``image`` ``[3, H, W]`` and its xyxy ``boxes`` ``[M, 4]`` left to right.

    ``pixel_offset`` is 1 for "legacy" boxes, whose right edge is ``x + w - 1`` (maskrcnn-benchmark maps
    ``x`` to ``W - 1 - x``), 0 for continuous boxes (``x`` to ``W - x``).
    """
    width = image.shape[-1] - pixel_offset
    flipped = boxes[:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=boxes.dtype) + torch.tensor(
        [width, 0.0, width, 0.0], dtype=boxes.dtype
    )
    return image.flip(-1), flipped


def normalize(image: Tensor, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> Tensor:
    """Per-channel ``(image - mean) / std`` for a ``[3, H, W]`` image in [0, 1]."""
    mean_t = torch.as_tensor(mean, dtype=image.dtype, device=image.device)[:, None, None]
    std_t = torch.as_tensor(std, dtype=image.dtype, device=image.device)[:, None, None]
    return (image - mean_t) / std_t


@dataclass(frozen=True)
class ImageBatch:
    """A padded batch of preprocessed images.

    Attributes:
        tensors: ``[B, 3, H_pad, W_pad]`` normalized images, zero-padded at the bottom and right.
        image_sizes: ``(h, w)`` of each image after resizing, before padding.
        original_sizes: ``(h, w)`` of each image as it was loaded; boxes are mapped back to these.
    """

    tensors: Tensor
    image_sizes: tuple[tuple[int, int], ...]
    original_sizes: tuple[tuple[int, int], ...]

    def to(self, device: torch.device | str, **kwargs) -> ImageBatch:
        return ImageBatch(self.tensors.to(device, **kwargs), self.image_sizes, self.original_sizes)


def pad_batch(images: list[Tensor], size_divisible: int = 32) -> Tensor:
    """Stack ``[3, H_i, W_i]`` images into ``[B, 3, H, W]`` with H, W the max rounded up to ``size_divisible``."""
    max_h = max(img.shape[-2] for img in images)
    max_w = max(img.shape[-1] for img in images)
    max_h = (max_h + size_divisible - 1) // size_divisible * size_divisible
    max_w = (max_w + size_divisible - 1) // size_divisible * size_divisible
    batch = images[0].new_zeros((len(images), images[0].shape[0], max_h, max_w))
    for img, slot in zip(images, batch):
        slot[:, : img.shape[-2], : img.shape[-1]].copy_(img)
    return batch


def preprocess(
    images: list[Tensor],
    min_size: float = paper.MIN_SIZE,
    max_size: float = paper.MAX_SIZE,
    size_divisible: int = 32,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    resize_rule: str = "torchvision",
) -> ImageBatch:
    """Test-time preprocessing of raw images ``[3, H, W]`` in [0, 1]: normalize, resize, pad.

    The order (normalize, then resize) is torchvision's; both are linear so it only matters to the last bit.
    ``resize_rule`` is a :func:`resized_size` rule (``config.input.resize_rule``).
    """
    if not isinstance(images, (list, tuple)) or not images:
        raise InputError("images: expected a non-empty list of [3, H, W] tensors")
    resized = []
    for i, image in enumerate(images):
        check_image(image, f"images[{i}]")
        resized.append(resize_image(normalize(image, mean, std), min_size, max_size, resize_rule))
    return ImageBatch(
        tensors=pad_batch(resized, size_divisible),
        image_sizes=tuple((int(r.shape[-2]), int(r.shape[-1])) for r in resized),
        original_sizes=tuple((int(img.shape[-2]), int(img.shape[-1])) for img in images),
    )
