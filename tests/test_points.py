"""Location grids (fcos_lab.points, Section 3.1): the floor(s/2) + x*s mapping, torchvision's offsets."""

import pytest
import torch

from fcos_lab.model import build_model
from fcos_lab.points import feature_shapes, grid_shapes, make_locations
from fcos_lab.presets import get_preset


def test_paper_mapping_half_stride_two_levels():
    # Section 3.1: feature location (x, y) maps to (floor(s/2) + x*s, floor(s/2) + y*s).
    # P3 (s=8) of shape 2x3: x in {4, 12, 20}, y in {4, 12}, row-major (y outer, x inner).
    # P4 (s=16) of shape 1x2: x in {8, 24}, y = 8.
    loc = make_locations(((2, 3), (1, 2)), (8, 16))
    expected = torch.tensor(
        [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12], [8, 8], [24, 8]], dtype=torch.float32
    )
    assert torch.equal(loc.points, expected)
    assert torch.equal(loc.strides, torch.tensor([8.0] * 6 + [16.0] * 2))
    assert torch.equal(loc.level_index, torch.tensor([0] * 6 + [1] * 2))
    assert loc.num_per_level == (6, 2)
    assert loc.shapes == ((2, 3), (1, 2))


@pytest.mark.parametrize("stride", [8, 16, 32, 64, 128])
def test_paper_mapping_each_stride(stride):
    # floor(s/2) + x*s for x = 0, 1, 2: s/2, 3s/2, 5s/2 (all strides are even).
    loc = make_locations(((1, 3),), (stride,))
    assert loc.points[:, 0].tolist() == [stride // 2, stride // 2 + stride, stride // 2 + 2 * stride]
    assert loc.points[:, 1].tolist() == [stride // 2] * 3


def test_offset_zero_is_torchvision_grid():
    # torchvision's anchor centers sit at x*s: 0, 8, 16 on P3.
    loc = make_locations(((2, 3),), (8,), offset="zero")
    assert loc.points[:, 0].tolist() == [0, 8, 16, 0, 8, 16]
    assert loc.points[:, 1].tolist() == [0, 0, 0, 8, 8, 8]


def test_bad_offset_raises():
    with pytest.raises(ValueError, match="half_stride"):
        make_locations(((2, 2),), (8,), offset="center")


def test_stride_from_image_quirk_padded_800x1216():
    # A padded 800x1216 batch: every level is ceil(previous/2) from 800x1216 through 7 halvings,
    # 400x608, 200x304, P3 100x152, P4 50x76, P5 25x38, P6 13x19, P7 7x10.
    # torchvision spaces P6 locations by 800 // 13 = 61 (not 64) vertically and 1216 // 19 = 64
    # horizontally; P7 by 800 // 7 = 114 and 1216 // 10 = 121 (not 128). P3..P5 divide exactly.
    shapes = feature_shapes((800, 1216))
    assert shapes == ((100, 152), (50, 76), (25, 38), (13, 19), (7, 10))
    loc = make_locations(shapes, (8, 16, 32, 64, 128), offset="zero", image_size=(800, 1216))
    start_p6 = sum(loc.num_per_level[:3])
    p6 = loc.points[start_p6 : start_p6 + loc.num_per_level[3]].view(13, 19, 2)
    assert p6[0, 1].tolist() == [64.0, 0.0]
    assert p6[1, 0].tolist() == [0.0, 61.0]
    assert p6[12, 18].tolist() == [18 * 64.0, 12 * 61.0]
    p7 = loc.points[start_p6 + loc.num_per_level[3] :].view(7, 10, 2)
    assert p7[1, 1].tolist() == [121.0, 114.0]
    # The nominal strides (used for center sampling and size ranges) are unchanged.
    assert loc.strides[start_p6].item() == 64.0 and loc.strides[-1].item() == 128.0
    # Without the quirk, P6 would be spaced by 64 in both directions.
    plain = make_locations(shapes, (8, 16, 32, 64, 128), offset="zero")
    assert plain.points[start_p6 + 19].tolist() == [0.0, 64.0]
    # P3 is unaffected: 800 // 100 = 8 and 1216 // 152 = 8.
    assert torch.equal(loc.points[: loc.num_per_level[0]], plain.points[: loc.num_per_level[0]])


def test_feature_shapes_by_hand():
    # 64x96: 32x48, 16x24, P3 8x12, P4 4x6, P5 2x3, P6 1x2, P7 1x1.
    assert feature_shapes((64, 96)) == ((8, 12), (4, 6), (2, 3), (1, 2), (1, 1))
    # 100x130 (not a multiple of 32): ceil halving 50x65, 25x33, 13x17, 7x9, 4x5, 2x3, 1x2.
    assert feature_shapes((100, 130)) == ((13, 17), (7, 9), (4, 5), (2, 3), (1, 2))
    assert feature_shapes((64, 96), num_levels=3) == ((8, 12), (4, 6), (2, 3))


@pytest.fixture(scope="module")
def demo_model():
    torch.manual_seed(0)
    return build_model(get_preset("fcos_demo_r18")).eval()


@pytest.mark.parametrize("size", [(64, 96), (100, 130), (320, 480), (33, 65)])
def test_feature_shapes_match_real_model(demo_model, size):
    with torch.no_grad():
        out = demo_model(torch.zeros(1, 3, *size))
    assert out.feature_shapes == feature_shapes(size)
    assert out.cls_logits.shape[1] == sum(h * w for h, w in feature_shapes(size))


def test_locations_are_cached():
    a = make_locations(((2, 2),), (8,))
    b = make_locations([(2, 2)], [8])
    assert a is b


@pytest.mark.parametrize("size", [(800, 800), (800, 1088), (96, 1344), (32, 32)])
def test_grid_shapes_equal_the_backbone_feature_shapes(size: tuple[int, int]) -> None:
    # ceil(H / 2^k) equals k ceil-halvings, the backbone's arithmetic (fcos_lab.points.feature_shapes).
    assert grid_shapes(size, (8, 16, 32, 64, 128)) == feature_shapes(size, 5)
