"""Detections drawn on images (Figure 8): arrays in, a PIL image out."""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor


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


def draw_detections(
    image: Tensor | np.ndarray | Image.Image,
    boxes: Tensor,
    labels: Tensor,
    scores: Tensor | None = None,
    class_names: list[str] | None = None,
    *,
    levels: Tensor | None = None,
    gt_boxes: Tensor | None = None,
    width: int = 2,
) -> Image.Image:
    """Draw xyxy ``boxes`` ``[K, 4]`` with class, score and FPN level; ground truth dashed-white underneath."""
    picture = to_pil(image)
    draw = ImageDraw.Draw(picture)
    if gt_boxes is not None:
        for box in gt_boxes.tolist():
            draw.rectangle(box, outline=(255, 255, 255), width=1)
    for k, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
        color = class_color(int(label))
        draw.rectangle(box, outline=color, width=width)
        name = class_names[label] if class_names and 0 <= label < len(class_names) else str(label)
        text = name
        if scores is not None:
            text += f" {float(scores[k]):.2f}"
        if levels is not None:
            text += f" P{int(levels[k])}"
        x0, y0 = box[0], max(0.0, box[1] - 11)
        draw.rectangle([x0, y0, x0 + 6 * len(text) + 2, y0 + 11], fill=color)
        draw.text((x0 + 1, y0), text, fill=(0, 0, 0))
    return picture
