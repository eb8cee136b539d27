"""The input size for a dataset: ``input.min_size`` / ``input.max_size`` from its image and box sizes (Section 4).

The paper resizes COCO images to a shorter side of 800 (longer side at most 1333), about 1.7x COCO's
typical 480 px. Another dataset may have much smaller boxes, or much smaller images. The rule
(:func:`recommend_input_size`), in two steps:

1. **Small boxes.** A box narrower than the finest stride may hold no location at all (the locations
   are a stride apart), so no level can regress it. If the 5 % smallest boxes (the 5th percentile of
   the boxes' shorter side, after the preset's resize) are narrower than the finest stride, the input
   grows by ``finest stride / that percentile``.
2. **No absurd upscaling.** The shorter side is kept at most 2x the median shorter side of the images,
   which also shrinks the preset's 800 for small images (it never grows an image more than 2x); where
   this cap stops step 1, the boxes stay too small for the finest level, and a P2 level is the remedy.

A changed size is rounded to a multiple of 32; ``max_size`` keeps the preset's ratio to ``min_size``
(1333 / 800) and the training sizes ``input.train_min_size`` scale with it.

Glossary: N images, K boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fcos_lab.config import Config

SMALL_BOX_PERCENTILE = 5.0  # the boxes that step 1 brings up to one stride: all but the 5 % smallest
MAX_UPSCALE = 2.0  # step 2: the shorter side at most twice the median image's
SIZE_MULTIPLE = 32  # a changed size is a multiple of the coarsest backbone stride


@dataclass(frozen=True)
class InputSizeAdvice:
    """The recommended input size and why.

    Attributes:
        min_size, max_size, train_min_size: the recommended ``input.*`` values.
        preset_min_size, preset_max_size: the preset's.
        finest_stride: stride of the finest level (8 for P3).
        box_short_side: the 5th percentile of the boxes' shorter sides at the preset's size (pixels).
        image_short_side: the median shorter side of the images (original pixels).
        small_box_factor: step 1's ``finest_stride / box_short_side`` (1 when the boxes are wide enough).
        upscale_cap: step 2's largest shorter side.
        small_boxes_remain: at the recommended size the 5th percentile is still below the finest stride
            (step 2's cap stopped step 1): a P2 level is the remedy.
        reasons: the rule applied, in words.
    """

    min_size: int
    max_size: int
    train_min_size: tuple[int, int]
    preset_min_size: int
    preset_max_size: int
    finest_stride: int
    box_short_side: float
    image_short_side: float
    small_box_factor: float
    upscale_cap: float
    small_boxes_remain: bool
    reasons: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return (self.min_size, self.max_size) != (self.preset_min_size, self.preset_max_size)

    def overrides(self) -> list[str]:
        """The dotted overrides that set this input size (``input.min_size=...`` ...)."""
        lo, hi = self.train_min_size
        return [f"input.min_size={self.min_size}", f"input.max_size={self.max_size}",
                f"input.train_min_size=[{lo},{hi}]"]


def _multiple(value: float) -> int:
    return max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def recommend_input_size(image_sizes: np.ndarray, box_short_sides: np.ndarray, config: Config,
                         finest_stride: int) -> InputSizeAdvice:
    """The input size of the module docstring's rule.

    Args:
        image_sizes: ``[N, 2]`` (H, W) of the images, original pixels.
        box_short_sides: ``[K]`` shorter side of each box after the resize of ``config`` (pixels).
        config: the preset (its ``input.min_size``, ``max_size``, ``train_min_size``).
        finest_stride: the stride of the finest level that will be trained (8 for P3, 4 for P2).

    Raises:
        ValueError: no images or no boxes.
    """
    sizes = np.asarray(image_sizes, dtype=float).reshape(-1, 2)
    short_sides = np.asarray(box_short_sides, dtype=float)
    if not len(sizes) or not len(short_sides):
        raise ValueError("recommend_input_size needs at least one image and one box")
    i = config.input
    box_short = float(np.percentile(short_sides, SMALL_BOX_PERCENTILE))
    image_short = float(np.median(sizes.min(axis=1)))
    factor = max(1.0, finest_stride / max(box_short, 1e-6))
    cap = MAX_UPSCALE * image_short
    wanted = i.min_size * factor
    reasons = [f"step 1: the 5th percentile of the boxes' shorter side is {box_short:.1f} px at the preset's "
               f"{i.min_size} px, " + (f"narrower than the finest stride {finest_stride}: grow the input "
                                       f"{factor:.2f}x to {wanted:.0f} px" if factor > 1 else
                                       f"at least the finest stride {finest_stride}: no need to grow the input")]
    if wanted <= cap and factor == 1:
        min_size = i.min_size
        reasons.append(f"step 2: {i.min_size} px is at most {MAX_UPSCALE:g}x the median image's shorter side "
                       f"({image_short:.0f} px): keep it")
    elif wanted <= cap:
        min_size = -(-math.ceil(wanted) // SIZE_MULTIPLE) * SIZE_MULTIPLE  # rounded up: boxes reach the stride
        reasons.append(f"step 2: {wanted:.0f} px is within {MAX_UPSCALE:g}x the median image's shorter side "
                       f"({image_short:.0f} px); shorter side {min_size} px (a multiple of {SIZE_MULTIPLE})")
    else:
        min_size = max(SIZE_MULTIPLE, int(cap // SIZE_MULTIPLE) * SIZE_MULTIPLE)
        reasons.append(f"step 2: at most {MAX_UPSCALE:g}x the median image's shorter side ({image_short:.0f} px) "
                       f"= {cap:.0f} px; shorter side {min_size} px (a multiple of {SIZE_MULTIPLE})")
    box_short_after = box_short * min_size / i.min_size
    small_boxes_remain = box_short_after < finest_stride
    if small_boxes_remain:
        remedy = "a P2 level (stride 4) is the remedy" if finest_stride > 4 else "even P2 leaves them few locations"
        reasons.append(f"the 5th percentile of the boxes' shorter side stays about {box_short_after:.1f} px at "
                       f"{min_size} px, below the finest stride {finest_stride}: {remedy}")
    scale = min_size / i.min_size
    max_size = i.max_size if min_size == i.min_size else round(i.max_size * scale)
    lo, hi = i.train_min_size
    train = (lo, hi) if min_size == i.min_size else (_multiple(lo * scale), _multiple(hi * scale))
    return InputSizeAdvice(
        min_size=min_size, max_size=max_size, train_min_size=train, preset_min_size=i.min_size,
        preset_max_size=i.max_size, finest_stride=finest_stride, box_short_side=box_short,
        image_short_side=image_short, small_box_factor=factor, upscale_cap=cap, small_boxes_remain=small_boxes_remain,
        reasons=tuple(reasons),
    )
