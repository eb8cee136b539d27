"""Detections drawn on images: enlargement for legibility, boxes scaled with the picture, readable labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcos_lab.viz.draw import MIN_LABEL_PX, class_color, display_scale, draw_detections


@pytest.mark.parametrize(
    ("height", "width", "display_size", "expected"),
    [
        (128, 128, 512, 4.0),  # the demo's thumbnails: 4x
        (96, 128, 512, 4.0),  # the longer side decides: 128 -> 512
        (256, 256, 512, 2.0),
        (800, 1216, 512, 1.0),  # never shrinks
        (128, 128, None, 1.0),
    ],
)
def test_display_scale(height, width, display_size, expected):
    assert display_scale(height, width, display_size) == expected


def _gray(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 90, dtype=np.uint8)


def test_boxes_follow_the_enlarged_picture():
    # A 128-px image drawn at 512 px: scale 4, so the box [16, 40, 48, 100] is drawn at [64, 160, 192, 400]
    # with the default outline of 2 px per 512 px = 2 px.
    boxes = torch.tensor([[16.0, 40.0, 48.0, 100.0]])
    picture = draw_detections(_gray(128, 128), boxes, torch.tensor([1]), torch.tensor([0.9]), ["a", "b"],
                              display_size=512)
    pixels = np.asarray(picture)
    assert picture.size == (512, 512)
    color = class_color(1)
    assert tuple(pixels[300, 64]) == color and tuple(pixels[300, 65]) == color  # left edge, 2 px wide
    assert tuple(pixels[300, 192]) == color  # right edge
    assert tuple(pixels[300, 66]) == (90, 90, 90)  # inside, untouched
    assert tuple(pixels[70, 16]) == (90, 90, 90)  # where the unscaled box would have been
    # The label sits above the box (top edge 160) in the class colour and is at least MIN_LABEL_PX tall.
    column = pixels[:160, 66]
    label_rows = np.flatnonzero((column == color).all(axis=1) | (column != 90).any(axis=1))
    assert label_rows.size >= MIN_LABEL_PX and label_rows.max() < 160


def test_without_display_size_the_picture_keeps_its_size_and_ground_truth_is_white():
    gt = torch.tensor([[10.0, 10.0, 60.0, 50.0]])
    picture = draw_detections(_gray(64, 80), torch.zeros((0, 4)), torch.zeros(0, dtype=torch.int64), gt_boxes=gt)
    pixels = np.asarray(picture)
    assert picture.size == (80, 64)
    assert tuple(pixels[30, 10]) == (255, 255, 255) and tuple(pixels[30, 11]) == (90, 90, 90)


def test_label_of_a_box_at_the_top_edge_stays_inside_the_picture():
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    picture = draw_detections(_gray(128, 128), boxes, torch.tensor([0]), torch.tensor([0.5]), ["circle"],
                              levels=torch.tensor([4]), display_size=512)
    pixels = np.asarray(picture)
    # No room above: the label (colour and glyphs, no background showing) fills the box's top rows instead,
    # at least MIN_LABEL_PX of them, and the box's inside below it is untouched.
    assert (pixels[:MIN_LABEL_PX, 2:60] != 90).any(axis=2).all()
    assert pixels[0, 30, 1] == class_color(0)[1]
    assert (pixels[30, 2:60] == 90).all()
