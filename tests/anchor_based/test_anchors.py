"""RetinaNet anchors and the IoU matcher of Table 1 (fcos_lab.analysis.anchors)."""

import math

import pytest
import torch
import torchvision

from fcos_lab.anchor_based.anchors import (
    LOW_QUALITY_CHOICES,
    MATCH_IGNORED,
    MATCH_NEGATIVE,
    anchor_recall,
    candidate_anchors,
    cell_anchor_sizes,
    generate_anchors,
    match_anchors,
    pairwise_box_iou,
)
from fcos_lab.errors import InputError
from fcos_lab.points import feature_shapes


def test_cell_anchor_sizes_detectron_rounding_at_p3():
    # Detectron: base 8x8; ratio 0.5 -> w = round(sqrt(64 / 0.5)) = round(11.31) = 11, h = round(5.5) = 6
    # (half to even); ratio 2 -> w = round(5.66) = 6, h = 12; then x (32 / 8) = 4.
    sizes = cell_anchor_sizes(8, 32.0)
    assert sizes[:3].tolist() == [[44.0, 24.0], [32.0, 32.0], [24.0, 48.0]]
    assert sizes.shape == (9, 2)
    scale = 2 ** (1 / 3)  # second octave, ratio 1: 8 * (32 * 2^(1/3) / 8)
    assert sizes[4].tolist() == pytest.approx([32 * scale, 32 * scale])


def test_cell_anchor_sizes_exact():
    sizes = cell_anchor_sizes(8, 32.0, detectron_rounding=False)
    assert sizes[0].tolist() == pytest.approx([32 * math.sqrt(2), 32 / math.sqrt(2)])
    assert (sizes[:, 1] / sizes[:, 0])[:3].tolist() == pytest.approx([0.5, 1.0, 2.0])


def test_generate_anchors_matches_detectron_first_anchor_and_layout():
    # Detectron's first P3 anchor in its "+1" convention is [3.5 - 21.5, 3.5 - 11.5, 3.5 + 21.5, 3.5 + 11.5]
    # = [-18, -8, 25, 15]; in continuous coordinates [x0, x1 + 1] = [-18, -8, 26, 16], centered at 4 = s/2.
    anchors = generate_anchors(((2, 3),), strides=(8,), sizes=(32.0,))
    assert anchors.shape == (2 * 3 * 9, 4)
    assert anchors[0].tolist() == [-18.0, -8.0, 26.0, 16.0]
    # Row-major positions, 9 cell anchors innermost: position (row 1, col 2) starts at (1 * 3 + 2) * 9.
    block = anchors[(1 * 3 + 2) * 9 : (1 * 3 + 3) * 9]
    centers = (block[:, :2] + block[:, 2:]) / 2
    assert torch.allclose(centers, torch.tensor([[20.0, 12.0]]).expand(9, 2))


def test_generate_anchors_torchvision_layout_is_centered_at_zero():
    anchors = generate_anchors(((1, 1),), strides=(16,), sizes=(64.0,), offset=0.0, detectron_rounding=False)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert torch.allclose(centers, torch.zeros(9, 2), atol=1e-5)


def test_pairwise_box_iou_batched_equals_torchvision():
    torch.manual_seed(0)
    xy = torch.rand(3, 7, 2) * 50
    anchors = torch.cat([xy, xy + torch.rand(3, 7, 2) * 30 + 1], -1)
    xy = torch.rand(3, 5, 2) * 50
    boxes = torch.cat([xy, xy + torch.rand(3, 5, 2) * 30 + 1], -1)
    batched = pairwise_box_iou(anchors, boxes)
    for b in range(3):
        assert torch.equal(batched[b], torchvision.ops.box_iou(anchors[b], boxes[b]))


# Scene for the low-quality rules. Ground truth g0 = [0, 0, 10, 10] (area 100).
# a0 = [0, 0, 10, 4]: intersection 40, union 100 + 40 - 40 = 100, IoU exactly 0.4 (40/100 in float32 is
#     the float nearest 0.4, the same number the threshold 0.4 becomes), the best anchor of g0.
# a1 = [0, 0, 10, 2]: IoU 0.2. a2 = [50, 50, 60, 60]: IoU 0.
GT_04 = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
ANCHORS_04 = torch.tensor([[0.0, 0.0, 10.0, 4.0], [0.0, 0.0, 10.0, 2.0], [50.0, 50.0, 60.0, 60.0]])


@pytest.mark.parametrize(
    "rule, expected",
    [
        # none: 0.4 is not below the negative threshold and not >= 0.5, so a0 is ignored; g0 unmatched.
        ("none", [MATCH_IGNORED, MATCH_NEGATIVE, MATCH_NEGATIVE]),
        # >= 0.4: a0 is g0's best anchor and its IoU 0.4 is not below 0.4, so it survives Detectron's reset.
        ("0.4", [0, MATCH_NEGATIVE, MATCH_NEGATIVE]),
        ("all", [0, MATCH_NEGATIVE, MATCH_NEGATIVE]),
    ],
)
def test_match_at_exactly_iou_04(rule, expected):
    iou = pairwise_box_iou(ANCHORS_04, GT_04)
    assert iou[0, 0].item() == torch.tensor(0.4).item()
    assert match_anchors(iou, low_quality=rule).tolist() == expected
    recalled, positives = anchor_recall(ANCHORS_04, GT_04[None], torch.ones(1, 1, dtype=torch.bool),
                                        torch.zeros(3, dtype=torch.long), torch.arange(3))[rule]
    assert recalled.tolist() == [[expected[0] == 0]]
    assert positives == sum(m >= 0 for m in expected)


@pytest.mark.parametrize("rule, expected", [("none", MATCH_NEGATIVE), ("0.4", MATCH_NEGATIVE), ("all", 0)])
def test_low_quality_match_below_04(rule, expected):
    # g0's only overlapping anchor a1 has IoU 0.2: Detectron's ">= 0.4" sets it back to background.
    iou = pairwise_box_iou(ANCHORS_04[1:], GT_04)
    assert match_anchors(iou, low_quality=rule)[0].item() == expected


def test_low_quality_anchor_keeps_its_own_best_box():
    # Anchor x = [0, 0, 10, 6] is the best (only) anchor of ga = [0, 0, 10, 10] (IoU 60/100 = 0.6) but has a
    # higher IoU with gb = [0, 0, 10, 8] (60/80 = 0.75): it is matched to gb and ga stays unmatched under
    # every rule, as in Detectron's, detectron2's and torchvision's matchers.
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 8.0]])
    anchors = torch.tensor([[0.0, 0.0, 10.0, 6.0], [50.0, 50.0, 60.0, 60.0]])
    for rule in LOW_QUALITY_CHOICES:
        assert match_anchors(pairwise_box_iou(anchors, gt), low_quality=rule).tolist() == [1, MATCH_NEGATIVE]


def test_low_quality_ties_are_all_matched():
    # g = [0, 0, 30, 10] (area 300) has two tied best anchors: a0 = [0, 0, 10, 10] and a1 = [20, 0, 30, 10],
    # IoU 100/300 each. a0 has IoU 100/120 with h = [0, 0, 10, 12] and goes to h; a1 goes to g.
    # "all": g is matched through the tie a1. ">= 0.4": a1's IoU 1/3 < 0.4, so a1 is background again.
    gt = torch.tensor([[0.0, 0.0, 30.0, 10.0], [0.0, 0.0, 10.0, 12.0]])
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    iou = pairwise_box_iou(anchors, gt)
    assert match_anchors(iou, low_quality="all").tolist() == [1, 0]
    assert match_anchors(iou, low_quality="0.4").tolist() == [1, MATCH_NEGATIVE]
    assert match_anchors(iou, low_quality="none").tolist() == [1, MATCH_NEGATIVE]


def test_match_anchors_batched_padding_and_empty():
    iou = pairwise_box_iou(ANCHORS_04, GT_04)
    padded = torch.cat([iou, torch.full((3, 1), -1.0)], dim=1)  # a padding box never matches
    batched = torch.stack([padded, torch.full((3, 2), -1.0)])  # an image with padding only
    out = match_anchors(batched, low_quality="all")
    assert out.tolist() == [[0, MATCH_NEGATIVE, MATCH_NEGATIVE], [MATCH_NEGATIVE] * 3]
    assert match_anchors(torch.zeros(4, 0)).tolist() == [MATCH_NEGATIVE] * 4
    with pytest.raises(InputError, match="low_quality"):
        match_anchors(iou, low_quality="0.5")


@pytest.mark.parametrize("offset, rounding", [(0.5, True), (0.0, False)])
def test_candidate_anchors_give_the_dense_matching(offset, rounding):
    # The pruned matching must give exactly the dense one: same matched boxes, same number of positives.
    torch.manual_seed(1)
    size = (320, 416)
    shapes = feature_shapes(size)
    anchors = generate_anchors(shapes, offset=offset, detectron_rounding=rounding)
    for _ in range(8):
        num_images, num_boxes = 3, 10
        xy = torch.rand(num_images, num_boxes, 2) * torch.tensor([400.0, 300.0])
        wh = torch.exp(torch.rand(num_images, num_boxes, 2) * 5.5)
        wh[:, :2, 1] *= 0.1  # thin boxes
        boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([416.0, 320.0]))], -1)
        valid = torch.rand(num_images, num_boxes) < 0.8
        image_index, anchor_index = candidate_anchors(boxes, valid, shapes, offset=offset, detectron_rounding=rounding)
        assert len(anchor_index) < 0.1 * num_images * len(anchors)
        pruned = anchor_recall(anchors, boxes, valid, image_index, anchor_index)
        for rule in LOW_QUALITY_CHOICES:
            positives = 0
            for b in range(num_images):
                matched = match_anchors(pairwise_box_iou(anchors, boxes[b][valid[b]]), low_quality=rule)
                recalled = torch.zeros(int(valid[b].sum()), dtype=torch.bool)
                recalled[matched[matched >= 0]] = True
                positives += int((matched >= 0).sum())
                assert torch.equal(pruned[rule][0][b][valid[b]], recalled)
            assert pruned[rule][1] == positives
