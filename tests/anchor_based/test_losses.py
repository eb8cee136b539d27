"""The anchor-based baselines: hand-computed matching, RPN sampling, delta round trip."""

import math

import pytest
import torch

from fcos_lab.anchor_based.losses import BOX_CODER, anchor_loss, assign_anchors, decode_to_ltrb, sample_anchors
from fcos_lab.boxes import decode_ltrb
from fcos_lab.targets import pad_ground_truth


def test_retinanet_matching_by_hand_with_a_low_quality_match():
    # Three anchors, two boxes (classes 4 and 7).
    # A0 = [0,0,10,10] and box0 = [0,0,10,10]: IoU 1.0 -> positive for box0.
    # A1 = [20,0,30,10] and box1 = [20,0,34,10] (area 140): inter 100, union 140 -> IoU 0.714 >= 0.5, positive.
    # A2 = [40,0,50,10] and box1: no overlap -> IoU 0 < 0.4, negative.
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]])
    gt = pad_ground_truth([torch.tensor([[0.0, 0, 10, 10], [20, 0, 34, 10]])], [torch.tensor([4, 7])])
    a = assign_anchors(anchors, gt, 0.5, 0.4, "0.4")
    assert a.matched_gt.tolist() == [[0, 1, -1]]
    assert a.labels.tolist() == [[4, 7, -1]]

    # Low-quality: box2 = [36,0,56,12] contains A2: area 240, inter 100, union 240 -> IoU 0.4167, between
    # 0.4 and 0.5 -> ignored without low-quality matches; it is box2's best anchor and >= 0.4, so "0.4"
    # and "all" make A2 positive for box2 (index 1).
    gt = pad_ground_truth([torch.tensor([[0.0, 0, 10, 10], [36, 0, 56, 12]])], [torch.tensor([4, 7])])
    assert assign_anchors(anchors, gt, 0.5, 0.4, "none").matched_gt.tolist() == [[0, -1, -2]]
    assert assign_anchors(anchors, gt, 0.5, 0.4, "0.4").matched_gt.tolist() == [[0, -1, 1]]
    # box3 = [40,0,70,20]: area 600, inter 100 -> IoU 1/6 < 0.4: only "all" rescues it.
    gt = pad_ground_truth([torch.tensor([[0.0, 0, 10, 10], [40, 0, 70, 20]])], [torch.tensor([4, 7])])
    assert assign_anchors(anchors, gt, 0.5, 0.4, "0.4").matched_gt.tolist() == [[0, -1, -1]]
    assert assign_anchors(anchors, gt, 0.5, 0.4, "all").matched_gt.tolist() == [[0, -1, 1]]


def test_crowd_and_padding_never_match():
    anchors = torch.tensor([[0.0, 0, 10, 10]])
    gt = pad_ground_truth([torch.tensor([[0.0, 0, 10, 10]]), torch.zeros(0, 4)],
                          [torch.tensor([1]), torch.zeros(0, dtype=torch.long)], [torch.tensor([True]), torch.zeros(0, dtype=torch.bool)])
    assert assign_anchors(anchors, gt, 0.5, 0.4, "all").matched_gt.tolist() == [[-1], [-1]]


def test_deltas_round_trip_and_ltrb_form():
    anchors = torch.tensor([[0.0, 0, 16, 16], [10, 20, 50, 40]])
    boxes = torch.tensor([[2.0, 3, 20, 14], [5, 25, 60, 45]])
    deltas = BOX_CODER.encode_single(boxes, anchors)
    ltrb = decode_to_ltrb(deltas[None], anchors)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    torch.testing.assert_close(decode_ltrb(centers, ltrb[0]), boxes, atol=1e-4, rtol=0)


def test_rpn_sampling_counts():
    # 1 image, 10 anchors: 6 positive, 3 negative, 1 ignored; sample 4 with at most half positive.
    from fcos_lab.anchor_based.losses import AnchorAssignment

    matched = torch.tensor([[0, 0, 0, 0, 0, 0, -1, -1, -1, -2]])
    a = AnchorAssignment(matched, matched.clamp(min=-1), torch.zeros(1, 10, 4), matched >= 0, matched != -2)
    sampled = sample_anchors(a, 4, 0.5, torch.Generator().manual_seed(0))
    assert int((sampled & a.positive).sum()) == 2 and int((sampled & ~a.positive).sum()) == 2
    assert not bool(sampled[0, 9])
    # Few positives: the negatives fill the sample.
    matched = torch.tensor([[0, -1, -1, -1, -1, -1]])
    a = AnchorAssignment(matched, matched, torch.zeros(1, 6, 4), matched >= 0, matched != -2)
    sampled = sample_anchors(a, 4, 0.5)
    assert int((sampled & a.positive).sum()) == 1 and int(sampled.sum()) == 4


def test_retinanet_loss_by_hand():
    # One positive anchor (class 0 of 2) with logits (0, 0) and exact deltas: focal terms
    # positive class: alpha * (1-p)^2 * -ln p = 0.25 * 0.25 * ln 2; other class: 0.75 * 0.25 * ln 2.
    # One negative anchor with logits (0, 0): two terms of 0.75 * 0.25 * ln 2. One ignored anchor adds nothing.
    from fcos_lab.anchor_based.losses import AnchorAssignment

    matched = torch.tensor([[0, -1, -2]])
    labels = torch.tensor([[0, -1, -1]])
    a = AnchorAssignment(matched, labels, torch.zeros(1, 3, 4), matched >= 0, matched != -2)
    losses = anchor_loss(torch.zeros(1, 3, 2), torch.zeros(1, 3, 4), a)
    expected = (0.25 * 0.25 + 3 * 0.75 * 0.25) * math.log(2)
    assert float(losses["loss_cls"]) == pytest.approx(expected, rel=1e-6)
    assert float(losses["loss_box"]) == 0.0
