"""Center-ness heatmaps (fcos_lab.viz.heatmaps): grids, prediction maps, figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fcos_lab.viz.assignments import assign_image, level_setup
from fcos_lab.viz.heatmaps import (
    centerness_function_figure,
    centerness_target_figure,
    level_grid,
    location_offset,
    prediction_maps,
    prediction_maps_figure,
    target_centerness_grids,
)


def test_level_grid_slices_the_flattened_levels() -> None:
    values = np.arange(6 + 2)
    shapes = ((2, 3), (1, 2))
    assert level_grid(values, shapes, 0).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert level_grid(torch.tensor(values), shapes, 1).tolist() == [[6, 7]]
    assert level_grid(np.zeros((8, 4)), shapes, 0).shape == (2, 3, 4)
    assert location_offset(8) == 4 and location_offset(8, "zero") == 0


def test_target_grids_hold_eq3_on_positives_and_nan_elsewhere() -> None:
    # Box [0, 0, 32, 32] on a 64 x 64 input: the P3 location (12, 12) is cell (1, 1) with
    # center-ness* = sqrt(12/20 * 12/20) = 0.6; (20, 20) is cell (2, 2) with the same value by symmetry.
    a = assign_image((64, 64), torch.tensor([[0.0, 0, 32, 32]]), torch.tensor([0]), level_setup())
    grids = target_centerness_grids(a)
    assert [g.shape for g in grids] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    assert grids[0][1, 1] == pytest.approx(0.6) and grids[0][2, 2] == pytest.approx(0.6)
    # (4, 4): l* = t* = 4, r* = b* = 28, so center-ness* = sqrt((4/28)^2) = 1/7; (4, 12): sqrt(4/28 * 12/20).
    assert grids[0][0, 0] == pytest.approx(1 / 7)
    assert grids[0][1, 0] == pytest.approx(math.sqrt(4 / 28 * 12 / 20))
    assert np.isnan(grids[0][5, 5]) and np.isnan(grids[1]).all()
    assert np.isfinite(grids[0]).sum() == 16
    shown = target_centerness_grids(a, hide_background=False)
    assert shown[0][5, 5] == 0.0


def test_prediction_maps_combine_scores_and_mask_the_padding() -> None:
    shapes = ((2, 3), (1, 2))
    cls_logits = torch.zeros(8, 4)
    cls_logits[0, 2] = 10.0  # one confident class at the first location
    centerness_logits = torch.zeros(8)  # sigmoid(0) = 0.5
    maps = prediction_maps(cls_logits, centerness_logits, shapes, 0, stride=8, image_size=(16, 17))
    assert list(maps) == ["center-ness", "classification", "score"]
    assert maps["classification"][0, 0] == pytest.approx(torch.sigmoid(torch.tensor(10.0)).item())
    assert maps["classification"][0, 1] == pytest.approx(0.5)
    assert maps["score"][0, 1] == pytest.approx(0.25)
    # Columns at x = 4, 12, 20: x = 20 >= 17 is padding.
    assert np.isnan(maps["score"][:, 2]).all() and np.isfinite(maps["score"][:, :2]).all()
    sqrt_maps = prediction_maps(cls_logits, centerness_logits, shapes, 0, stride=8, image_size=(16, 24), score_sqrt=True)
    assert sqrt_maps["score"][0, 1] == pytest.approx(0.5)
    without_branch = prediction_maps(cls_logits, None, shapes, 1, stride=16, image_size=(16, 32))
    assert (without_branch["center-ness"] == 1).all() and without_branch["score"].shape == (1, 2)


def test_figures_have_one_panel_per_level_or_map() -> None:
    a = assign_image((64, 64), torch.tensor([[0.0, 0, 32, 32]]), torch.tensor([0]), level_setup())
    figure = centerness_target_figure(torch.rand(3, 64, 64), a)
    assert [t.type for t in figure.data] == ["image", "heatmap"] * 5
    assert figure.data[1].dx == 8 and figure.data[1].x0 == 4
    assert figure.layout.annotations[0].text == "P3 (stride 8): 16 positives"
    p4 = assign_image((64, 64), torch.tensor([[0.0, 0, 32, 32]]), torch.tensor([0]), level_setup(fpn=False))
    assert len(centerness_target_figure(torch.rand(3, 64, 64), p4).data) == 2
    maps = {name: np.random.default_rng(0).random((2, 2)) for name in ("center-ness", "classification", "score")}
    figure = prediction_maps_figure(torch.rand(3, 64, 64), maps, stride=32, level_name="P5")
    assert [t.type for t in figure.data] == ["image", "heatmap"] * 3
    assert figure.layout.annotations[2].text == "predicted score P5"


def test_centerness_function_is_one_at_the_center_and_zero_on_the_sides() -> None:
    figure = centerness_function_figure(160, 100, samples=81)
    values = np.asarray(figure.data[0].z)
    assert values[40, 40] == pytest.approx(1.0)
    assert values[0, :].max() == 0 and values[:, 0].max() == 0
    assert ((values >= 0) & (values <= 1)).all()
