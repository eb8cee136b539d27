"""Detections drawn on images (Figure 8): arrays in, a PIL image out."""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

# Label text height as a share of the drawn picture's longer side, and its floor in pixels: 512 px
# pictures get 14-px labels, which read at a glance; PIL's fixed bitmap font (11 px) on a 128-px
# thumbnail did not.
LABEL_FRACTION = 1 / 36
MIN_LABEL_PX = 12


def class_color(label: int) -> tuple[int, int, int]:
    """A stable, distinct color per class index (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def to_pil(image: Tensor | np.ndarray | Image.Image) -> Image.Image:
    """A ``[3, H, W]`` float tensor in [0, 1], an ``[H, W, 3]`` uint8 array or a PIL image, as RGB PIL."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, Tensor):
        image = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")


def display_scale(height: int, width: int, display_size: int | None) -> float:
    """The factor that brings an image's longer side up to ``display_size`` (1 when None or already larger).

    Only enlarges: a 128 x 96 image at ``display_size=512`` is drawn at 4x (512 x 384); an 800 x 1216 one
    stays as it is.
    """
    if display_size is None or max(height, width) >= display_size:
        return 1.0
    return display_size / max(height, width)


def draw_detections(
    image: Tensor | np.ndarray | Image.Image,
    boxes: Tensor,
    labels: Tensor,
    scores: Tensor | None = None,
    class_names: list[str] | None = None,
    *,
    levels: Tensor | None = None,
    gt_boxes: Tensor | None = None,
    width: int | None = None,
    display_size: int | None = None,
) -> Image.Image:
    """Draw detections with class, score and FPN level over the ground truth (thin white).

    Args:
        image: ``[3, H, W]`` float in [0, 1], ``[H, W, 3]`` uint8 or PIL.
        boxes: ``[K, 4]`` xyxy, absolute pixels of ``image``.
        labels: ``[K]`` class indices; ``scores`` ``[K]`` and ``levels`` ``[K]`` (3 for P3, ...) optional.
        class_names: names of the class indices (the index is written otherwise).
        gt_boxes: ``[M, 4]`` xyxy ground truth in the same pixels, drawn underneath.
        width: box outline width in drawn pixels (default: 2 px per 512 px of the picture's longer side).
        display_size: enlarge the picture (bicubic) so that its longer side is this many pixels, boxes
            scaled with it, so that a small input stays legible; None draws at the image's own size.

    Returns:
        An RGB PIL image, ``image``'s size times :func:`display_scale`.
    """
    picture = to_pil(image)
    scale = display_scale(picture.height, picture.width, display_size)
    if scale != 1.0:
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.BICUBIC)
    longer = max(picture.size)
    if width is None:
        width = max(1, round(2 * longer / 512))
    font = ImageFont.load_default(size=max(MIN_LABEL_PX, round(longer * LABEL_FRACTION)))
    draw = ImageDraw.Draw(picture)
    if gt_boxes is not None:
        for box in (gt_boxes.reshape(-1, 4).float() * scale).tolist():
            draw.rectangle(box, outline=(255, 255, 255), width=max(1, width // 2))
    for k, (box, label) in enumerate(zip((boxes.reshape(-1, 4).float() * scale).tolist(), labels.tolist())):
        color = class_color(int(label))
        draw.rectangle(box, outline=color, width=width)
        text = class_names[label] if class_names and 0 <= label < len(class_names) else str(label)
        if scores is not None:
            text += f" {float(scores[k]):.2f}"
        if levels is not None:
            text += f" P{int(levels[k])}"
        # The label sits above the box, or inside its top edge when the box touches the image's top.
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x0, y0 = box[0], box[1] - (bottom - top) - 3
        if y0 < 0:
            y0 = box[1]
        draw.rectangle([x0, y0, x0 + right - left + 4, y0 + bottom - top + 3], fill=color)
        draw.text((x0 + 2 - left, y0 + 1 - top), text, fill=(0, 0, 0), font=font)
    return picture
