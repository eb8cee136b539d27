"""Center-ness grids (fcos_lab.analysis.centerness_maps): targets of an image's assignment, prediction maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fcos_lab.analysis.centerness_maps import level_grid, prediction_maps, target_centerness_grids
from fcos_lab.analysis.image_assignment import assign_image
from fcos_lab.objective import Objective
from fcos_lab.points import make_locations
from fcos_lab.presets import resolve

PAPER = Objective.from_config(resolve("fcos_r50_fpn_1x"))


def test_level_grid_slices_the_flattened_levels() -> None:
    values = np.arange(6 + 2)
    shapes = ((2, 3), (1, 2))
    assert level_grid(values, shapes, 0).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert level_grid(torch.tensor(values), shapes, 1).tolist() == [[6, 7]]
    assert level_grid(np.zeros((8, 4)), shapes, 0).shape == (2, 3, 4)


def test_target_grids_hold_eq3_on_positives_and_nan_elsewhere() -> None:
    # Box [0, 0, 32, 32] on a 64 x 64 input: the P3 location (12, 12) is cell (1, 1) with
    # center-ness* = sqrt(12/20 * 12/20) = 0.6; (20, 20) is cell (2, 2) with the same value by symmetry.
    a = assign_image(PAPER, (64, 64), torch.tensor([[0.0, 0, 32, 32]]), torch.tensor([0]))
    grids = target_centerness_grids(a)
    assert [g.values.shape for g in grids] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    assert [(g.name, g.stride) for g in grids][:2] == [("P3", 8), ("P4", 16)]
    values = grids[0].values
    assert values[1, 1] == pytest.approx(0.6) and values[2, 2] == pytest.approx(0.6)
    # (4, 4): l* = t* = 4, r* = b* = 28, so center-ness* = sqrt((4/28)^2) = 1/7; (4, 12): sqrt(4/28 * 12/20).
    assert values[0, 0] == pytest.approx(1 / 7)
    assert values[1, 0] == pytest.approx(math.sqrt(4 / 28 * 12 / 20))
    assert np.isnan(values[5, 5]) and np.isnan(grids[1].values).all()
    assert np.isfinite(values).sum() == 16
    # Cell (i, j) of P3 is the location (4 + 8 j, 4 + 8 i) (Section 3.1); P7's single cell is at (64, 64).
    assert (grids[0].x0, grids[0].y0, grids[0].dx, grids[0].dy) == (4, 4, 8, 8)
    assert (grids[4].x0, grids[4].y0, grids[4].dx, grids[4].dy) == (64, 64, 128, 128)
    shown = target_centerness_grids(a, hide_background=False)
    assert shown[0].values[5, 5] == 0.0


def test_target_grids_sit_on_torchvision_locations() -> None:
    # fcos_r50_fpn_torchvision on a 150 x 150 input padded to 160 x 160: locations at x * (160 // grid), so
    # P3 (20 cells) starts at 0 with spacing 8, but P6 (ceil(160 / 64) = 3 cells) has spacing 160 // 3 = 53
    # and P7 (2 cells) 80, not their strides 64 and 128.
    torchvision = Objective.from_config(resolve("fcos_r50_fpn_torchvision"))
    a = assign_image(torchvision, (150, 150), torch.tensor([[0.0, 0, 32, 32]]), torch.tensor([0]))
    grids = target_centerness_grids(a)
    assert [(g.x0, g.dx, g.dy) for g in grids] == [(0, 8, 8), (0, 16, 16), (0, 32, 32), (0, 53, 53), (0, 80, 80)]


def test_prediction_maps_combine_scores_and_mask_the_padding() -> None:
    locations = make_locations(((2, 3), (1, 2)), (8, 16))
    cls_logits = torch.zeros(8, 4)
    cls_logits[0, 2] = 10.0  # one confident class at the first location
    centerness_logits = torch.zeros(8)  # sigmoid(0) = 0.5
    maps = prediction_maps(cls_logits, centerness_logits, locations, 0, image_size=(16, 17), level_name="P3")
    assert list(maps) == ["center-ness", "classification", "score"]
    assert maps["score"].name == "P3" and maps["score"].stride == 8 and maps["score"].x0 == 4
    assert maps["classification"].values[0, 0] == pytest.approx(torch.sigmoid(torch.tensor(10.0)).item())
    assert maps["classification"].values[0, 1] == pytest.approx(0.5)
    assert maps["score"].values[0, 1] == pytest.approx(0.25)
    # Columns at x = 4, 12, 20: x = 20 >= 17 is padding.
    assert np.isnan(maps["score"].values[:, 2]).all() and np.isfinite(maps["score"].values[:, :2]).all()
    sqrt_maps = prediction_maps(cls_logits, centerness_logits, locations, 0, image_size=(16, 24), score_sqrt=True)
    assert sqrt_maps["score"].values[0, 1] == pytest.approx(0.5)
    without_branch = prediction_maps(cls_logits, None, locations, 1, image_size=(16, 32))
    assert (without_branch["center-ness"].values == 1).all() and without_branch["score"].values.shape == (1, 2)
