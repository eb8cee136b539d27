"""One-image assignment view and its figures (fcos_lab.viz.assignments), on hand-computed tiny scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcos_lab.errors import DataError
from fcos_lab.points import feature_shapes
from fcos_lab.viz.assignments import (
    assign_image,
    assignment_figure,
    grid_shapes,
    level_setup,
    ranges_from_boundaries,
)
from fcos_lab.viz.dataset_statistics import box_size_histogram_figure
from fcos_lab.viz.image_figures import add_boxes, image_figure, image_uri

PAPER = level_setup()  # P3-P7, strides 8..128, m = 0, 64, 128, 256, 512, inf


def scene(*boxes: list[float], labels: list[int] | None = None, **kwargs):
    """A 64 x 64 input (no padding) with the given xyxy boxes."""
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels_t = torch.tensor(labels if labels is not None else [0] * len(boxes_t), dtype=torch.int64)
    setup = kwargs.pop("setup", PAPER)
    return assign_image((64, 64), boxes_t, labels_t, setup, **kwargs)


def location_index(assignment, x: float, y: float, level: int = 0) -> int:
    hits = np.flatnonzero((assignment.points[:, 0] == x) & (assignment.points[:, 1] == y) & (assignment.level_index == level))
    assert len(hits) == 1
    return int(hits[0])


def test_level_setup_and_ranges() -> None:
    assert PAPER.names == ("P3", "P4", "P5", "P6", "P7")
    assert PAPER.size_ranges == ((0, 64), (64, 128), (128, 256), (256, 512), (512, float("inf")))
    p4 = level_setup(fpn=False)
    assert (p4.names, p4.strides, p4.size_ranges) == (("P4",), (16,), ((0.0, float("inf")),))
    assert ranges_from_boundaries([64, 128, 256, 512]) == PAPER.size_ranges
    assert level_setup((8, 12), ((0, 10), (10, 20))).names == ("P3", "s12")
    with pytest.raises(DataError, match="positive and increasing"):
        ranges_from_boundaries([64, 32])
    with pytest.raises(DataError, match="2 strides but 1 size ranges"):
        level_setup((8, 16), ((0, 64),))
    with pytest.raises(DataError, match="lo < hi"):
        level_setup((8,), ((64, 64),))


@pytest.mark.parametrize("size", [(800, 800), (800, 1088), (96, 1344), (32, 32)])
def test_grid_shapes_equal_the_backbone_feature_shapes(size: tuple[int, int]) -> None:
    # ceil(H / 2^k) equals k ceil-halvings, the backbone's arithmetic (fcos_lab.points.feature_shapes).
    assert grid_shapes(size, (8, 16, 32, 64, 128)) == feature_shapes(size, 5)


def test_one_box_on_p3_with_hand_computed_targets() -> None:
    # Box [0, 0, 32, 32] on a 64 x 64 input. P3 locations sit at 4, 12, 20, 28, ... (floor(8/2) + 8x):
    # 4 x 4 = 16 of them lie strictly inside, with max(l*, t*, r*, b*) <= 28 <= 64, so all are positive
    # on P3. P4 locations (8, 24, ...) inside have max distance 24 < 64: outside P4's range [64, 128].
    a = scene([0, 0, 32, 32])
    assert a.positives_per_box.tolist() == [[16, 0, 0, 0, 0]]
    assert a.box_status == ("regressed",) and len(a.unreachable) == 0
    p = location_index(a, 12, 12)
    # l* = t* = 12, r* = b* = 20; center-ness* = sqrt(12/20 * 12/20) = 0.6 (Eq. 3).
    assert a.ltrb[p].tolist() == [12, 12, 20, 20]
    assert a.centerness[p] == pytest.approx(0.6)
    rows = a.level_rows()
    assert [r["positive locations"] for r in rows] == [16, 0, 0, 0, 0]
    assert rows[0]["grid"] == "8 x 8" and rows[0]["boxes regressed"] == "0" and rows[1]["boxes regressed"] == "-"
    box = a.box_rows(["cat"])[0]
    assert box["class"] == "cat" and box["P3"] == 16 and box["max(l*,t*,r*,b*) at center"] == 16.0


def test_ambiguous_locations_regress_the_smaller_box() -> None:
    # A = [0, 0, 32, 32] (area 1024) and B = [8, 8, 24, 24] (area 256): the four P3 locations (12|20, 12|20)
    # are inside both, hence ambiguous, and the minimal-area rule gives them to B.
    a = scene([0, 0, 32, 32], [8, 8, 24, 24], labels=[0, 1])
    ambiguous = np.flatnonzero(a.num_candidates > 1)
    assert sorted(map(tuple, a.points[ambiguous].tolist())) == [(12, 12), (12, 20), (20, 12), (20, 20)]
    assert set(a.matched_gt[ambiguous].tolist()) == {1}
    assert a.positives_per_box[:, 0].tolist() == [12, 4]
    assert a.level_rows()[0]["ambiguous"] == 4 and a.num_ambiguous == 4 and a.num_positive == 16
    figure = assignment_figure(torch.zeros(3, 64, 64), a, 0, ["big", "small"])
    names = [trace.name for trace in figure.data]
    assert "box 0 (big)" in names and "box 1 (small)" in names
    assert any(name.startswith("ambiguous (4)") for name in names)
    small = next(t for t in figure.data if t.name == "box 1 (small)")
    assert len(small.x) == 4 and list(small.marker.symbol) == ["diamond"] * 4
    assert "minimal area chose box 1" in small.hovertext[0]
    assert "box 0 (area 1024)" in small.hovertext[0] and "box 1 (area 256)" in small.hovertext[0]
    plain = next(t for t in figure.data if t.name == "box 0 (big)")
    hover = plain.hovertext[list(zip(plain.x, plain.y)).index((4.0, 4.0))]
    # Location (4, 4) of box A: l* = t* = 4, r* = b* = 28, center-ness* = 4/28 = 0.143.
    assert "<b>P3</b> (stride 8) at (4, 4)" in hover and "l*=4.0  t*=4.0  r*=28.0  b*=28.0" in hover
    assert "center-ness*=0.143" in hover and "regresses box 0 (big)" in hover


@pytest.mark.parametrize(
    ("boxes", "kwargs", "status"),
    [
        # No P3..P7 location lies strictly inside a 2 x 2 box at (1, 1).
        ([[1, 1, 3, 3]], {}, "unreachable: no location falls inside it"),
        # A single level whose range stops at 8: inside locations are >= 16 from some side.
        ([[0, 0, 32, 32]], {"setup": level_setup((8,), ((0, 8),))}, "unreachable: outside every level's size range"),
        # Center sampling with 0.25 strides = 2 px around (32, 32): the nearest locations are 4 px away.
        ([[0, 0, 64, 64]], {"center_sampling_radius": 0.25}, "unreachable: outside the center-sampling region"),
    ],
)
def test_unreachable_boxes_and_why(boxes, kwargs, status: str) -> None:
    a = scene(*boxes, **kwargs)
    assert a.box_status[0] == status
    assert a.unreachable.tolist() == [0]
    figure = assignment_figure(torch.zeros(3, 64, 64), a)
    assert "1 unreachable boxes" in figure.layout.title.text
    lines = [trace for trace in figure.data if trace.type == "scatter" and trace.mode == "lines"]
    assert any(trace.line.dash == "dash" and trace.line.color == "red" for trace in lines)


def test_a_box_that_loses_every_location_to_a_smaller_one() -> None:
    # B = [0, 0, 32, 31.9] holds every P3 location of A = [0, 0, 32, 32] (the last row is at y = 28) and is smaller.
    a = scene([0, 0, 32, 32], [0, 0, 32, 31.9])
    assert a.box_status[0] == "unreachable: a smaller box wins every location (minimal area)"
    assert a.positives_per_box[1, 0] == 16


def test_crowd_boxes_are_never_assigned_nor_counted_unreachable() -> None:
    a = scene([0, 0, 32, 32], crowd=torch.tensor([True]))
    assert a.box_status == ("crowd: never assigned",)
    assert (a.matched_gt < 0).all() and len(a.unreachable) == 0


def test_p4_only_and_center_sampling_change_the_positives() -> None:
    box = [0, 0, 48, 48]
    fpn = scene(box)
    p4 = scene(box, setup=level_setup(fpn=False))
    # Stride-16 locations at 8, 24, 40 inside the box: 3 x 3 positives on the single level.
    assert p4.positives_per_box.tolist() == [[9]]
    assert fpn.positives_per_box[0].sum() == 36  # 6 x 6 P3 locations (4, ..., 44), max distance 44 <= 64
    sampled = scene(box, center_sampling_radius=1.0)  # |x - 24| < 8: locations 20 and 28 per axis
    assert sampled.positives_per_box[0].sum() == 4


def test_padding_extends_the_grid() -> None:
    a = assign_image((50, 70), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), PAPER)
    assert a.padded_size == (64, 96) and a.shapes[0] == (8, 12)
    assert a.boxes.shape == (0, 4) and (a.matched_gt < 0).all()
    figure = assignment_figure(torch.zeros(3, 50, 70), a, None, show_negatives=True)
    negatives = next(t for t in figure.data if t.name == "negative")
    assert len(negatives.x) == len(a.points)


def test_image_helpers_and_boxes_share_traces() -> None:
    uri = image_uri(torch.rand(3, 20, 30))
    assert uri.startswith("data:image/jpeg;base64,")
    figure = image_figure(torch.rand(3, 20, 30))
    assert figure.data[0].type == "image" and tuple(figure.layout.yaxis.range) == (20, 0)
    with pytest.raises(ValueError, match="needs its"):
        image_figure(uri)
    boxes = np.array([[0, 0, 5, 5], [1, 1, 6, 6], [2, 2, 7, 7]], dtype=float)
    add_boxes(figure, boxes, ["red", "blue", "red"], ["a", "", "c"])
    lines = [t for t in figure.data if t.type == "scatter" and t.mode == "lines"]
    assert len(lines) == 2  # one trace per colour
    assert [a.text for a in figure.layout.annotations] == ["a", "c"]


def test_box_size_histogram_counts_every_box_against_the_ranges() -> None:
    widths = np.array([10.0, 30.0, 100.0, 300.0, 700.0])
    heights = np.array([20.0, 30.0, 50.0, 100.0, 800.0])
    figure = box_size_histogram_figure(widths, heights, PAPER)
    centers, corners = figure.data
    assert sum(centers.y) == 5 and sum(corners.y) == 5
    # The half longer side of the 800-pixel box is 400: log2(400) = 8.64 falls in the bin [8.5, 8.75).
    assert centers.y[list(np.round(centers.x, 3)).index(8.625)] == 1
    labels = [a.text for a in figure.layout.annotations]
    assert labels == ["P3 [0, 64]", "P4 [64, 128]", "P5 [128, 256]", "P6 [256, 512]", "P7 [512, inf]"]
    empty = box_size_histogram_figure(np.zeros(0), np.zeros(0), level_setup(fpn=False))
    assert sum(empty.data[0].y) == 0
