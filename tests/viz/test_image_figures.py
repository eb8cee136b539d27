"""Images as plotly backgrounds (fcos_lab.viz.image_figures): grey backdrops, shrunk thumbnails placed on the
full pixel frame, box outlines, and labels placed so that none covers another."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from fcos_lab.viz.image_figures import (
    CHAR_WIDTH,
    LINE_HEIGHT,
    add_boxes,
    box_outline_traces,
    image_figure,
    image_trace,
    image_uri,
    place_labels,
)


def decoded(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_a_grey_backdrop_keeps_red_off_the_image() -> None:
    red = torch.zeros(3, 8, 8)
    red[0] = 1.0
    color, gray = decoded(image_uri(red)), decoded(image_uri(red, gray=True))
    assert color[..., 0].mean() > 200 and color[..., 1].mean() < 50
    assert np.abs(gray[..., 0].astype(int) - gray[..., 1]).max() <= 2  # R = G = B: no colour left


def test_a_thumbnail_covers_the_full_pixel_frame() -> None:
    # A 40 x 100 image shrunk to a longer side of 50: 20 x 50 pixels of 2 x 2 original pixels each, so pixel
    # (0, 0) is centred on (0.5, 0.5) of the default frame where pixel j is centred on j: x0 = 2 / 2 - 0.5.
    trace = image_trace(torch.rand(3, 40, 100), max_side=50)
    assert decoded(trace.source).shape[:2] == (20, 50)
    assert (trace.dx, trace.dy, trace.x0, trace.y0) == (2.0, 2.0, 0.5, 0.5)
    full = image_trace(torch.rand(3, 40, 100))
    assert (full.dx, full.dy, full.x0, full.y0) == (1.0, 1.0, 0.0, 0.0)
    assert image_figure(torch.rand(3, 40, 100), gray=True).data[0].x0 == 0.0


def test_halo_outlines_are_a_dark_line_under_a_light_one() -> None:
    dark, light = box_outline_traces(np.array([[0.0, 0, 4, 2]]), "white", width=1.5, halo=True)
    assert (dark.line.color, dark.line.width, light.line.color, light.line.width) == ("black", 3.5, "white", 1.5)
    assert list(light.x[:5]) == [0, 4, 4, 0, 0] and list(light.y[:5]) == [0, 0, 2, 2, 0]


def test_labels_never_cover_each_other() -> None:
    # One screen pixel per image pixel: "abc" is 3 x 6.6 = 19.8 wide and 15 high.
    assert (CHAR_WIDTH, LINE_HEIGHT) == (6.6, 15.0)
    boxes = np.array([
        [10, 50, 60, 90],  # A: above its corner, [10, 29.8] x [35, 50]
        [12, 52, 40, 80],  # B: above would cover A's label -> just inside its top, [12, 31.8] x [52, 67]
        [0, 5, 20, 10],  # C: above leaves the image -> inside, [0, 39.6] x [5, 20]
        [15, 0, 25, 98],  # D: above out, inside covers C's, under leaves the image (98 + 15 > 100) -> left out
        [95, 30, 99, 40],  # E: moved left to stay in the image: 100 - 6.6 = 93.4
    ], dtype=float)
    spots = place_labels(boxes, ["abc", "abc", "abcdef", "x", "e"], (100, 100), 1.0)
    assert spots[0] == (10, 50, "bottom") and spots[1] == (12, 52, "top") and spots[2] == (0, 5, "top")
    assert spots[3] is None
    assert spots[4] == (pytest.approx(93.4), 30, "bottom")
    # At half the screen size a label covers twice the image pixels: A's label is 39.6 x 30 image pixels.
    assert place_labels(boxes[:1], ["abc"], (100, 100), 0.5) == [(10, 50, "bottom")]


def test_add_boxes_places_labels_when_told_the_scale() -> None:
    figure = image_figure(torch.rand(3, 100, 100))
    add_boxes(figure, np.array([[10, 50, 60, 90], [12, 52, 40, 80], [15, 0, 25, 98]], dtype=float),
              ["red", "blue", "red"], ["abc", "abc", "x"], screen_per_pixel=1.0)
    # The third label cannot go above its box (y < 0), so it goes just inside it, where nothing else is.
    assert [(a.text, a.y, a.yanchor) for a in figure.layout.annotations] == [("abc", 50, "bottom"), ("abc", 52, "top"),
                                                                            ("x", 0, "top")]
