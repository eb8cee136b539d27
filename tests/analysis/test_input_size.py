"""The input-size rule (fcos_lab.analysis.input_size), case by case with hand-computed sizes."""

import numpy as np
import pytest

from fcos_lab.analysis.input_size import recommend_input_size
from fcos_lab.presets import resolve

PAPER = resolve("fcos_r50_fpn_1x")  # 800 / 1333, training at 800
MULTI_SCALE = resolve("fcos_r101_fpn_2x")  # training shorter sides 640..800


def images(short: float, count: int = 9) -> np.ndarray:
    return np.array([(short, short * 4 / 3)] * count)


def boxes(p5: float) -> np.ndarray:
    """100 shorter sides whose 5th percentile is ``p5`` (numpy's linear interpolation): 5 at p5, then larger."""
    return np.array([p5] * 6 + [10 * p5] * 94)


def test_coco_like_keeps_the_paper_size():
    # Boxes' 5th percentile 12 px >= stride 8; 800 <= 2 x 480: nothing changes.
    advice = recommend_input_size(images(480), boxes(12.0), PAPER, 8)
    assert (advice.min_size, advice.max_size, advice.train_min_size) == (800, 1333, (800, 800))
    assert not advice.changed and not advice.small_boxes_remain and advice.overrides()[0] == "input.min_size=800"


def test_small_boxes_grow_the_input():
    # 4 px < 8: factor 2 -> 1600 px, within 2 x 1000 = 2000; max 1333 * 2 = 2666; boxes reach 8 px.
    advice = recommend_input_size(images(1000), boxes(4.0), PAPER, 8)
    assert (advice.min_size, advice.max_size, advice.train_min_size) == (1600, 2666, (1600, 1600))
    assert advice.small_box_factor == pytest.approx(2.0) and advice.changed and not advice.small_boxes_remain
    # 5 px: factor 1.6 -> 1280, already a multiple of 32; 4.5 px: 1422.2 rounded up to 1440.
    assert recommend_input_size(images(1000), boxes(5.0), PAPER, 8).min_size == 1280
    assert recommend_input_size(images(1000), boxes(4.5), PAPER, 8).min_size == 1440


def test_the_upscale_cap_stops_growth_and_points_to_p2():
    # 2 px: factor 4 -> 3200 > 2 x 1000 = 2000 -> 1984 (a multiple of 32 below the cap); boxes stay ~5 px.
    advice = recommend_input_size(images(1000), boxes(2.0), PAPER, 8)
    assert advice.min_size == 1984 and advice.max_size == round(1333 * 1984 / 800)
    assert advice.small_boxes_remain and "P2" in advice.reasons[-1]
    # With P2 trained (finest stride 4) the same boxes need only factor 2 -> 1600.
    assert recommend_input_size(images(1000), boxes(2.0), PAPER, 4).min_size == 1600


def test_small_images_are_not_upscaled_absurdly():
    # 200 px images: 800 would be 4x; the cap 400 gives 384 and max 1333 * 384 / 800 = 640; multi-scale
    # training sizes 640..800 scale by 0.48 to 307 -> 320 and 384.
    advice = recommend_input_size(images(200), boxes(40.0), MULTI_SCALE, 8)
    assert (advice.min_size, advice.max_size, advice.train_min_size) == (384, 640, (320, 384))
    assert not advice.small_boxes_remain  # 40 px boxes at 800 are ~19 px at 384
    assert advice.overrides() == ["input.min_size=384", "input.max_size=640", "input.train_min_size=[320,384]"]
    resolve(MULTI_SCALE, advice.overrides())  # the overrides parse


def test_no_boxes_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        recommend_input_size(images(480), np.zeros(0), PAPER, 8)
