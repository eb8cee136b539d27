"""The objective of a config (fcos_lab.objective): every assignment switch is read once, here.

Hand-made scenes first; then the property that makes the module worth having: the objective of a preset
carries every switch of ``config.assign`` (and the box convention's "+1" areas) into the assignment.
"""

import dataclasses
import math

import pytest
import torch

from fcos_lab import paper
from fcos_lab.config import AssignConfig
from fcos_lab.model.detector import FCOSOutput
from fcos_lab.objective import Objective
from fcos_lab.presets import PRESETS, resolve
from fcos_lab.targets import assign, pad_ground_truth


def test_from_config_reads_every_assignment_switch():
    # Every field of AssignConfig reaches the objective (a new switch fails here until it is wired in).
    config = resolve(
        "fcos_r50_fpn_1x",
        {"assign.size_range_inclusive": False, "assign.center_sampling_radius": 0.75,
         "assign.center_sampling_rule": "distance", "assign.location_offset": "zero",
         "assign.stride_from_image": True, "assign.area_tiebreak_float32": True,
         "assign.size_ranges": [[0, 32], [32, 64], [64, 128], [128, 256], [256, math.inf]],
         "assign.anchor_pos_iou": 0.6, "assign.anchor_neg_iou": 0.3, "assign.anchor_low_quality": "all",
         "data.box_convention": "legacy"},
    )
    objective = Objective.from_config(config)
    for field in dataclasses.fields(AssignConfig):
        value = getattr(config.assign, field.name)
        got = getattr(objective, field.name)
        if field.name == "size_ranges":
            value = tuple((float(lo), float(hi)) for lo, hi in value)
        assert got == value, field.name
    assert objective.area_offset == 1.0
    assert Objective.from_config(PRESETS["fcos_r50_fpn_1x"]).area_offset == 0.0
    assert objective.strides == paper.STRIDES and objective.level_names == ("P3", "P4", "P5", "P6", "P7")


def test_without_fpn_is_p4_alone_with_no_size_limit():
    p4 = Objective.from_config(PRESETS["fcos_imprv_r50_fpn_1x"]).without_fpn()
    assert p4.strides == (16,) and p4.size_ranges == ((0.0, math.inf),) and p4.level_names == ("P4",)
    assert p4.center_sampling_radius == 1.5  # the other switches stay
    # A 64 x 64 padded input: P4 is its 4 x 4 grid at 8 + 16 k (half-stride offset).
    locations = p4.image_locations((64, 64))
    assert locations.shapes == ((4, 4),)
    assert sorted(set(locations.points[:, 0].tolist())) == [8.0, 24.0, 40.0, 56.0]


def test_locations_follow_the_offset_and_torchvision_spacing():
    # A padded 96 x 96 input: P6 (stride 64) has ceil(96 / 64) = 2 columns. The paper puts them at
    # floor(64/2) + 64 k = 32, 96; torchvision at k * (96 // 2) = 0, 48 (its spacing is image // grid).
    paper_loc = Objective.from_config(PRESETS["fcos_r50_fpn_1x"]).image_locations((96, 96))
    tv_loc = Objective.from_config(PRESETS["fcos_r50_fpn_torchvision"]).image_locations((96, 96))
    start = sum(paper_loc.num_per_level[:3])
    assert paper_loc.shapes[3] == (2, 2) == tv_loc.shapes[3]
    assert paper_loc.points[start : start + 2, 0].tolist() == [32.0, 96.0]
    assert tv_loc.points[start : start + 2, 0].tolist() == [0.0, 48.0]


@pytest.mark.parametrize("name", sorted(n for n, c in PRESETS.items() if c.model.detector == "fcos"))
def test_objective_assign_is_targets_assign_with_the_config_switches(name):
    config = resolve(PRESETS[name], {"data.box_convention": "legacy"})
    objective = Objective.from_config(config)
    generator = torch.Generator().manual_seed(3)
    xy = torch.rand(12, 2, generator=generator) * 200
    boxes = torch.cat([xy, xy + torch.rand(12, 2, generator=generator) * 150 + 2], 1)
    gt = pad_ground_truth([boxes], [torch.randint(0, 5, (12,), generator=generator)])
    locations = objective.image_locations((320, 352))
    a = config.assign
    expected = assign(locations, gt, a.size_ranges, size_range_inclusive=a.size_range_inclusive,
                      center_sampling_radius=a.center_sampling_radius, center_sampling_rule=a.center_sampling_rule,
                      area_offset=1.0, area_tiebreak_float32=a.area_tiebreak_float32)
    got = objective.assign(locations, gt)
    assert torch.equal(got.matched_gt, expected.matched_gt) and got.positive.any()


def test_output_locations_and_oracle_centerness():
    # An output of one 2 x 2 level of stride 8 over a 16 x 16 input: locations at 4 and 12; a box
    # (0, 0, 16, 16) covers all four; each location's center-ness target is sqrt(4/12 * 4/12) = 1/3.
    objective = dataclasses.replace(Objective(), strides=(8,), size_ranges=((0.0, math.inf),))
    output = FCOSOutput(torch.zeros(1, 4, 2), torch.ones(1, 4, 4), torch.zeros(1, 4), ((2, 2),), (16, 16))
    locations = objective.output_locations(output)
    assert locations.points.tolist() == [[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0]]
    gt = pad_ground_truth([torch.tensor([[0.0, 0.0, 16.0, 16.0]])], [torch.tensor([1])])
    oracle = objective.oracle_centerness(output, gt)
    torch.testing.assert_close(oracle, torch.full((1, 4), 1 / 3))
    losses = objective.loss(output, gt)
    assert set(losses) == {"loss_cls", "loss_box", "loss_centerness", "loss"}
    # Empty ground truth: exactly zero box and center-ness loss.
    empty = objective.loss(output, pad_ground_truth([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)]))
    assert empty["loss_box"].item() == 0.0 and empty["loss_centerness"].item() == 0.0
