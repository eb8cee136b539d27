"""Image and box transforms of the paper's training and testing settings (Section 4, "Training Details").

Images are resized so that the shorter side is ``min_size`` (800) and the longer side at most
``max_size`` (1333), normalized with the ImageNet statistics of torchvision's backbones, and padded
to a multiple of 32 at the bottom and right. The resize reproduces torchvision's
``GeneralizedRCNNTransform`` bit for bit (same scale formula, same interpolation call), so the
torchvision-parity preset sees exactly the tensors torchvision's FCOS sees.

Shapes: images ``[3, H, W]`` float in [0, 1] before :func:`normalize`; boxes ``[M, 4]`` xyxy in
absolute pixels of the image they belong to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

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


def resize_scale(height: int, width: int, min_size: float, max_size: float) -> float:
    """The scale that makes the shorter side ``min_size`` with the longer side at most ``max_size``.

    Computed in Python floats (double precision) exactly as torchvision's ``_resize_image_and_masks`` does
    in eager mode (its float32 branch is only for TorchScript and tracing). The difference shows: a
    640x586 image gets 800 / 586 = 1.3651877133 and becomes 873x800; in float32, 1.3651876 gives 873x799.
    """
    return min(min_size / min(height, width), max_size / max(height, width))


def resize_image(image: Tensor, min_size: float, max_size: float) -> Tensor:
    """Bilinearly resize ``image`` ``[3, H, W]`` with :func:`resize_scale`; returns ``[3, H', W']``."""
    scale = resize_scale(image.shape[-2], image.shape[-1], min_size, max_size)
    return F.interpolate(
        image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )[0]


def resize_boxes(boxes: Tensor, original_size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """Scale xyxy ``boxes`` ``[M, 4]`` from ``original_size`` (h, w) to ``new_size`` (h, w)."""
    ratio_h = torch.tensor(new_size[0], dtype=torch.float32) / torch.tensor(original_size[0], dtype=torch.float32)
    ratio_w = torch.tensor(new_size[1], dtype=torch.float32) / torch.tensor(original_size[1], dtype=torch.float32)
    scale = torch.stack([ratio_w, ratio_h, ratio_w, ratio_h]).to(boxes)
    return boxes * scale


def hflip(image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror ``image`` ``[3, H, W]`` and its xyxy ``boxes`` ``[M, 4]`` left to right."""
    width = image.shape[-1]
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
    min_size: float = 800.0,
    max_size: float = 1333.0,
    size_divisible: int = 32,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> ImageBatch:
    """Test-time preprocessing of raw images ``[3, H, W]`` in [0, 1]: normalize, resize, pad.

    The order (normalize, then resize) is torchvision's; both are linear so it only matters to the last bit.
    """
    if not isinstance(images, (list, tuple)) or not images:
        raise InputError("images: expected a non-empty list of [3, H, W] tensors")
    resized = []
    for i, image in enumerate(images):
        check_image(image, f"images[{i}]")
        resized.append(resize_image(normalize(image, mean, std), min_size, max_size))
    return ImageBatch(
        tensors=pad_batch(resized, size_divisible),
        image_sizes=tuple((int(r.shape[-2]), int(r.shape[-1])) for r in resized),
        original_sizes=tuple((int(img.shape[-2]), int(img.shape[-1])) for img in images),
    )
