"""Box encodings (fcos_lab.boxes): Eq. (1) and its inverse, Eq. (3) center-ness, ltrb IoU (UnitBox)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcos_lab.boxes import centerness_from_ltrb, decode_ltrb, encode_ltrb, ltrb_iou, xywh_to_xyxy, xyxy_to_xywh


def test_encode_by_hand():
    # Eq. (1) for location (12, 4) and box (2, 0, 42, 10):
    # l* = 12 - 2 = 10, t* = 4 - 0 = 4, r* = 42 - 12 = 30, b* = 10 - 4 = 6.
    ltrb = encode_ltrb(torch.tensor([12.0, 4.0]), torch.tensor([2.0, 0.0, 42.0, 10.0]))
    assert ltrb.tolist() == [10.0, 4.0, 30.0, 6.0]
    # Outside the box the distances go negative: location (50, 4) has r* = 42 - 50 = -8.
    assert encode_ltrb(torch.tensor([50.0, 4.0]), torch.tensor([2.0, 0.0, 42.0, 10.0])).tolist() == [48, 4, -8, 6]


def test_decode_by_hand():
    # Inverse of Eq. (1): (x - l, y - t, x + r, y + b) = (12 - 10, 4 - 4, 12 + 30, 4 + 6).
    box = decode_ltrb(torch.tensor([12.0, 4.0]), torch.tensor([10.0, 4.0, 30.0, 6.0]))
    assert box.tolist() == [2.0, 0.0, 42.0, 10.0]


def test_encode_decode_round_trip_random():
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(3, 50, 2, generator=generator) * 800
    xy = torch.rand(3, 50, 2, generator=generator) * 800
    boxes = torch.cat([xy, xy + torch.rand(3, 50, 2, generator=generator) * 400 + 1], dim=-1)
    torch.testing.assert_close(decode_ltrb(points, encode_ltrb(points, boxes)), boxes, rtol=0, atol=1e-4)
    ltrb = torch.rand(3, 50, 4, generator=generator) * 300
    torch.testing.assert_close(encode_ltrb(points, decode_ltrb(points, ltrb)), ltrb, rtol=0, atol=1e-4)


coord = st.floats(min_value=-1000, max_value=1000, allow_nan=False, width=32)
size = st.floats(min_value=0.5, max_value=1000, allow_nan=False, width=32)


@settings(max_examples=50, deadline=None)
@given(px=coord, py=coord, x0=coord, y0=coord, w=size, h=size)
def test_encode_decode_round_trip_property(px, py, x0, y0, w, h):
    points = torch.tensor([px, py], dtype=torch.float64)
    box = torch.tensor([x0, y0, x0 + w, y0 + h], dtype=torch.float64)
    torch.testing.assert_close(decode_ltrb(points, encode_ltrb(points, box)), box, rtol=0, atol=1e-9)


def test_centerness_by_hand():
    # Eq. (3): l=1, t=2, r=3, b=2 -> sqrt(min(1,3)/max(1,3) * min(2,2)/max(2,2)) = sqrt(1/3 * 1) = 0.57735.
    # l=10, t=4, r=30, b=6 -> sqrt(10/30 * 4/6) = sqrt(2/9) = 0.471405.
    # The exact center l=r, t=b -> 1.
    ltrb = torch.tensor([[1.0, 2.0, 3.0, 2.0], [10.0, 4.0, 30.0, 6.0], [5.0, 7.0, 5.0, 7.0]])
    expected = torch.tensor([math.sqrt(1 / 3), math.sqrt(2 / 9), 1.0])
    torch.testing.assert_close(centerness_from_ltrb(ltrb), expected)


def test_centerness_symmetric_and_outside_is_zero():
    ltrb = torch.tensor([1.0, 2.0, 3.0, 2.0])
    mirrored = torch.tensor([3.0, 2.0, 1.0, 2.0])
    assert centerness_from_ltrb(ltrb).item() == pytest.approx(centerness_from_ltrb(mirrored).item())
    # On the border (l = 0) the ratio is 0; outside (l < 0) it is clamped to 0, never NaN.
    assert centerness_from_ltrb(torch.tensor([0.0, 2.0, 3.0, 2.0])).item() == 0.0
    assert centerness_from_ltrb(torch.tensor([-1.0, 2.0, 3.0, 2.0])).item() == 0.0
    assert centerness_from_ltrb(torch.zeros(4)).item() == 0.0


def test_ltrb_iou_by_hand():
    # pred (l,t,r,b) = (1, 2, 3, 1), target = (2, 1, 1, 2), both from the same location:
    #   pred area = (1+3)*(2+1) = 12, target area = (2+1)*(1+2) = 9,
    #   intersection width = min(1,2) + min(3,1) = 2, height = min(2,1) + min(1,2) = 2 -> 4,
    #   union = 12 + 9 - 4 = 17, IoU = 4/17,
    #   enclosing = (max(1,2) + max(3,1)) * (max(2,1) + max(1,2)) = 5 * 4 = 20.
    pred = torch.tensor([1.0, 2.0, 3.0, 1.0])
    target = torch.tensor([2.0, 1.0, 1.0, 2.0])
    iou, union, enclosing = ltrb_iou(pred, target)
    assert iou.item() == pytest.approx(4 / 17)
    assert union.item() == 17.0
    assert enclosing.item() == 20.0
    # The official code's smoothing adds 1 to both: (4 + 1) / (17 + 1).
    assert ltrb_iou(pred, target, smooth=1.0)[0].item() == pytest.approx(5 / 18)
    # Nested squares (1,1,1,1) inside (2,2,2,2): 4 / 16.
    assert ltrb_iou(torch.ones(4), torch.full((4,), 2.0))[0].item() == pytest.approx(0.25)
    # Identical boxes: IoU 1.
    assert ltrb_iou(target, target)[0].item() == pytest.approx(1.0)


def test_ltrb_iou_matches_torchvision_box_iou():
    from torchvision.ops import box_iou

    generator = torch.Generator().manual_seed(3)
    point = torch.tensor([100.0, 100.0])
    pred = torch.rand(20, 4, generator=generator) * 50 + 1
    target = torch.rand(20, 4, generator=generator) * 50 + 1
    iou, _, _ = ltrb_iou(pred, target)
    expected = box_iou(decode_ltrb(point, pred), decode_ltrb(point, target)).diagonal()
    torch.testing.assert_close(iou, expected)


def test_xywh_round_trip():
    xywh = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    assert xywh_to_xyxy(xywh).tolist() == [[10.0, 20.0, 40.0, 60.0]]
    assert torch.equal(xyxy_to_xywh(xywh_to_xyxy(xywh)), xywh)


def test_coco_to_xyxy_continuous_and_legacy_by_hand():
    # Image 10 (h) x 20 (w). Box A [2, 3, 5, 4]: continuous (2, 3, 7, 7); legacy (2, 3, 2 + 4, 3 + 3) = (2, 3, 6, 6).
    # Box B [18, 8, 5, 5] leaves the image: continuous clips x1 to 20, y1 to 10; legacy clips to W - 1 = 19,
    # H - 1 = 9. Box C [4, 4, 0.5, 3] is 0.5 wide: continuous (4, 4, 4.5, 7); legacy max(0.5 - 1, 0) = 0 wide:
    # degenerate (maskrcnn-benchmark's remove_empty drops it).
    import numpy as np

    from fcos_lab.boxes import coco_to_xyxy

    xywh = np.array([[2, 3, 5, 4], [18, 8, 5, 5], [4, 4, 0.5, 3]], dtype=np.float64)
    sizes = np.array([[10, 20]] * 3)
    boxes, degenerate = coco_to_xyxy(xywh, sizes, "continuous")
    assert boxes.tolist() == [[2, 3, 7, 7], [18, 8, 20, 10], [4, 4, 4.5, 7]] and not degenerate.any()
    assert boxes.dtype == np.float32
    boxes, degenerate = coco_to_xyxy(xywh, sizes, "legacy")
    assert boxes.tolist() == [[2, 3, 6, 6], [18, 8, 19, 9], [4, 4, 4, 6]]
    assert degenerate.tolist() == [False, False, True]
    with pytest.raises(ValueError, match="box convention"):
        coco_to_xyxy(xywh, sizes, "xywh")


def test_box_area_plus_one():
    from fcos_lab.boxes import box_area

    boxes = torch.tensor([[0.0, 0.0, 2.0, 200.0], [1.0, 1.0, 1.0, 5.0]])
    assert box_area(boxes).tolist() == [400.0, 0.0]
    assert box_area(boxes, 1.0).tolist() == [603.0, 5.0]  # maskrcnn-benchmark: (x1 - x0 + 1)(y1 - y0 + 1)
