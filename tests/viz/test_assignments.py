"""The one-image assignment figure (fcos_lab.viz.assignments), the image helpers and the box-size histogram,
on hand-computed tiny scenes (the assignment itself is tested in tests/analysis/test_image_assignment.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcos_lab.analysis.image_assignment import assign_image, objective_variant
from fcos_lab.objective import Objective
from fcos_lab.presets import resolve
from fcos_lab.viz.assignments import assignment_figure, assignment_levels_figure
from fcos_lab.viz.dataset_statistics import box_size_histogram_figure
from fcos_lab.viz.image_figures import add_boxes, image_figure, image_uri

CONFIG = resolve("fcos_r50_fpn_1x")
PAPER = Objective.from_config(CONFIG)  # P3-P7, strides 8..128, m = 0, 64, 128, 256, 512, inf


def scene(*boxes: list[float], labels: list[int] | None = None, objective: Objective = PAPER):
    """A 64 x 64 input (no padding) with the given xyxy boxes."""
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels_t = torch.tensor(labels if labels is not None else [0] * len(boxes_t), dtype=torch.int64)
    return assign_image(objective, (64, 64), boxes_t, labels_t)


def test_ambiguous_locations_are_diamonds_of_the_smaller_box() -> None:
    # A = [0, 0, 32, 32] (area 1024) and B = [8, 8, 24, 24] (area 256): the four P3 locations (12|20, 12|20)
    # are inside both, hence ambiguous, and the minimal-area rule gives them to B.
    a = scene([0, 0, 32, 32], [8, 8, 24, 24], labels=[0, 1])
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
    ("boxes", "objective"),
    [
        ([[1, 1, 3, 3]], PAPER),  # no location inside
        ([[0, 0, 32, 32]], objective_variant(CONFIG, strides=(8,), size_ranges=((0, 8),))),  # out of range
        ([[0, 0, 64, 64]], objective_variant(CONFIG, center_sampling_radius=0.25)),  # outside the center region
    ],
)
def test_unreachable_boxes_are_dashed_red(boxes, objective: Objective) -> None:
    a = scene(*boxes, objective=objective)
    figure = assignment_figure(torch.zeros(3, 64, 64), a)
    assert "1 unreachable boxes" in figure.layout.title.text
    lines = [trace for trace in figure.data if trace.type == "scatter" and trace.mode == "lines"]
    assert any(trace.line.dash == "dash" and trace.line.color == "red" for trace in lines)


def test_negative_locations_cover_the_padded_grid() -> None:
    a = assign_image(PAPER, (50, 70), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
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
    empty = box_size_histogram_figure(np.zeros(0), np.zeros(0), PAPER.without_fpn())
    assert sum(empty.data[0].y) == 0


def test_a_box_filter_and_a_busy_image() -> None:
    # 14 boxes of 8 x 8 in a row on a 64 x 128 input: all on P3 (half side 4 in [0, 64]).
    boxes = [[8 * k + 1, 8, 8 * k + 9, 16] for k in range(14)]
    a = assign_image(PAPER, (64, 128), torch.tensor(boxes, dtype=torch.float32), torch.zeros(14, dtype=torch.int64))
    busy = assignment_figure(torch.zeros(3, 64, 128), a, None, ["dot"])
    assert not busy.layout.annotations  # 14 > MAX_LABELS boxes: no wall of labels
    assert not any(t.showlegend for t in busy.data if t.name and t.name.startswith("box "))
    two = assignment_figure(torch.zeros(3, 64, 128), a, None, ["dot"], boxes=[3, 5])
    assert [t.name for t in two.data if t.name and t.name.startswith("box ")] == ["box 3 (dot)", "box 5 (dot)"]
    assert [x.text for x in two.layout.annotations] == ["3 dot", "5 dot"]
    assert "(2 of 14 boxes shown)" in two.layout.title.text


def test_level_by_level_small_multiples() -> None:
    # A = [0, 0, 32, 32]: its 4 x 4 P3 locations (max(l*, t*, r*, b*) <= 28 in [0, 64]); B = [0, 0, 160, 160]:
    # half side 80, in P4's [64, 128] at its center. One panel per level, each with its own positives.
    a = assign_image(PAPER, (192, 192), torch.tensor([[0.0, 0, 32, 32], [0, 0, 160, 160]]), torch.tensor([0, 1]))
    figure = assignment_levels_figure(torch.zeros(3, 192, 192), a, ["small", "big"])
    titles = [x.text for x in figure.layout.annotations]
    assert titles[0].startswith("P3 (stride 8): 16 positive, 1 boxes") and titles[1].startswith("P4 (stride 16)")
    assert titles[1].endswith(f"{int(a.positives_per_box[1, 1])} positive, 1 boxes")
    assert len([t for t in figure.data if t.type == "image"]) == 5
    markers = [t for t in figure.data if t.type == "scatter" and t.mode == "markers"]
    assert sum(len(t.x) for t in markers) == a.num_positive
    only_big = assignment_levels_figure(torch.zeros(3, 192, 192), a, ["small", "big"], boxes=[1])
    assert only_big.layout.annotations[0].text.startswith("P3 (stride 8): 0 positive, 0 boxes")
