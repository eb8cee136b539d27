"""Center-ness heatmaps (fcos_lab.viz.heatmaps): one panel per level or per map, Eq. (3) in one box."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcos_lab.analysis.centerness_maps import LevelGrid, target_centerness_grids
from fcos_lab.analysis.image_assignment import assign_image
from fcos_lab.objective import Objective
from fcos_lab.presets import resolve
from fcos_lab.viz.heatmaps import centerness_function_figure, centerness_target_figure, prediction_maps_figure

PAPER = Objective.from_config(resolve("fcos_r50_fpn_1x"))


def test_figures_have_one_panel_per_level_or_map() -> None:
    a = assign_image(PAPER, (64, 64), torch.tensor([[0.0, 0, 32, 32]]), torch.tensor([0]))
    figure = centerness_target_figure(torch.rand(3, 64, 64), target_centerness_grids(a))
    assert [t.type for t in figure.data] == ["image", "heatmap"] * 5
    assert figure.data[1].dx == 8 and figure.data[1].x0 == 4
    assert figure.layout.annotations[0].text == "P3 (stride 8): 16 positives"
    p4 = assign_image(PAPER.without_fpn(), (64, 64), torch.tensor([[0.0, 0, 32, 32]]), torch.tensor([0]))
    assert len(centerness_target_figure(torch.rand(3, 64, 64), target_centerness_grids(p4)).data) == 2
    rng = np.random.default_rng(0)
    maps = {name: LevelGrid("P5", 32, rng.random((2, 2)), 16, 16, 32, 32) for name in ("center-ness", "classification", "score")}
    figure = prediction_maps_figure(torch.rand(3, 64, 64), maps)
    assert [t.type for t in figure.data] == ["image", "heatmap"] * 3
    assert figure.layout.annotations[2].text == "predicted score P5"
    assert figure.data[1].x0 == 16 and figure.data[1].dx == 32


def test_centerness_function_is_one_at_the_center_and_zero_on_the_sides() -> None:
    figure = centerness_function_figure(160, 100, samples=81)
    values = np.asarray(figure.data[0].z)
    assert values[40, 40] == pytest.approx(1.0)
    assert values[0, :].max() == 0 and values[:, 0].max() == 0
    assert ((values >= 0) & (values <= 1)).all()


def test_maps_show_the_boxes_on_a_grey_image() -> None:
    a = assign_image(PAPER, (64, 64), torch.tensor([[0.0, 0, 32, 32]]), torch.tensor([0]))
    figure = centerness_target_figure(torch.rand(3, 64, 64), target_centerness_grids(a), boxes=a.boxes)
    outlines = [t for t in figure.data if t.type == "scatter"]
    assert len(outlines) == 2 * 5  # a dark and a light line on each of the five panels
    assert {t.xaxis for t in outlines} == {"x", "x2", "x3", "x4", "x5"}
    assert list(outlines[1].x[:5]) == [0, 32, 32, 0, 0]
    maps = {name: LevelGrid("P3", 8, np.zeros((8, 8)), 4, 4, 8, 8) for name in ("center-ness", "classification")}
    figure = prediction_maps_figure(torch.rand(3, 64, 64), maps, boxes=a.boxes)
    assert len([t for t in figure.data if t.type == "scatter"]) == 4
