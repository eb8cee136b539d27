"""The FCOS loss (fcos_lab.losses): focal loss, IoU / GIoU / smooth-L1, center-ness BCE, Eq. (2) by hand."""

import math

import pytest
import torch

from fcos_lab.losses import LossInputs, box_loss_per_location, fcos_loss, focal_loss_sum, reduce_mean
from fcos_lab.points import make_locations
from fcos_lab.targets import assign, pad_ground_truth

LN3 = math.log(3.0)
# Two boxes measured from one location, used throughout (see tests/test_boxes.py::test_ltrb_iou_by_hand):
# pred (1, 2, 3, 1), target (2, 1, 1, 2): intersection 2 * 2 = 4, areas 12 and 9, union 17,
# IoU = 4/17, enclosing box 5 * 4 = 20.
PRED = [1.0, 2.0, 3.0, 1.0]
TARGET = [2.0, 1.0, 1.0, 2.0]
IOU_LOSS = -math.log(4 / 17)  # UnitBox -ln(IoU) = 1.44692
GIOU_LOSS = 1 - (4 / 17 - (20 - 17) / 20)  # 1 - GIoU = 1 - (0.235294 - 0.15) = 0.914706


def _focal_term(p: float, t: int, alpha: float = 0.25, gamma: float = 2.0) -> float:
    """RetinaNet: -alpha_t (1 - p_t)^gamma ln(p_t) for one binary classifier."""
    p_t = p if t else 1 - p
    alpha_t = alpha if t else 1 - alpha
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


def test_focal_loss_one_location_two_classes_by_hand():
    # Logits (0, ln 3) -> p = (0.5, 0.75); label class 1, so targets (0, 1).
    #   class 0 (t = 0): (1 - 0.25) * 0.5^2 * -ln(1 - 0.5)  = 0.75 * 0.25 * ln 2     = 0.1299651
    #   class 1 (t = 1): 0.25 * (1 - 0.75)^2 * -ln(0.75)    = 0.25 * 0.0625 * ln 4/3 = 0.0044950
    #   sum = 0.1344601
    logits = torch.tensor([[[0.0, LN3]]])
    expected = 0.75 * 0.25 * math.log(2) + 0.25 * 0.0625 * math.log(4 / 3)
    assert expected == pytest.approx(0.1344601, abs=1e-7)
    assert focal_loss_sum(logits, torch.tensor([[1]])).item() == pytest.approx(expected, rel=1e-6)
    # As background (label -1) both classifiers have t = 0:
    #   0.75 * 0.25 * ln 2 + 0.75 * 0.75^2 * ln 4 = 0.1299651 + 0.5848267
    background = 0.75 * 0.25 * math.log(2) + 0.75 * 0.5625 * math.log(4)
    assert focal_loss_sum(logits, torch.tensor([[-1]])).item() == pytest.approx(background, rel=1e-6)
    # gamma = 0, alpha = 0.5 is half the binary cross-entropy: 0.5 * (ln 2 + ln 4/3).
    plain = focal_loss_sum(logits, torch.tensor([[1]]), alpha=0.5, gamma=0.0).item()
    assert plain == pytest.approx(0.5 * (math.log(2) + math.log(4 / 3)), rel=1e-6)


def test_box_losses_by_hand():
    pred, target = torch.tensor(PRED), torch.tensor(TARGET)
    assert box_loss_per_location(pred, target, "iou").item() == pytest.approx(IOU_LOSS, rel=1e-6)
    assert box_loss_per_location(pred, target, "giou").item() == pytest.approx(GIOU_LOSS, rel=1e-6)
    # Official code's smoothing: -ln((4 + 1) / (17 + 1)) = ln 3.6.
    assert box_loss_per_location(pred, target, "iou", smooth=1.0).item() == pytest.approx(math.log(3.6), rel=1e-6)
    # A perfect prediction costs nothing under both.
    assert box_loss_per_location(target, target, "iou").item() == pytest.approx(0.0, abs=1e-6)
    assert box_loss_per_location(target, target, "giou").item() == pytest.approx(0.0, abs=1e-6)
    # Disjoint-looking extremes stay finite: IoU is clamped at 1e-7 -> -ln(1e-7) = 16.118.
    tiny = box_loss_per_location(torch.tensor([1e-9, 1e-9, 1e-9, 1e-9]), target, "iou").item()
    assert math.isfinite(tiny) and tiny <= -math.log(1e-7) + 1e-3


def test_smooth_l1_by_hand():
    # Stride 8, beta = 1/9, compared on ltrb / stride: pred (8, 8, 8, 8) / 8 = (1, 1, 1, 1),
    # target (16, 8, 8.4, 8) / 8 = (2, 1, 1.05, 1). |d| = (1, 0, 0.05, 0):
    #   |d| = 1 >= beta:  1 - beta/2 = 1 - 1/18 = 0.944444
    #   |d| = 0.05 < beta: 0.5 * 0.05^2 / beta = 0.5 * 0.0025 * 9 = 0.01125
    # sum = 0.955694
    pred = torch.tensor([[8.0, 8.0, 8.0, 8.0]])
    target = torch.tensor([[16.0, 8.0, 8.4, 8.0]])
    got = box_loss_per_location(pred, target, "smooth_l1", strides=torch.tensor([8.0]))
    assert got.item() == pytest.approx(1 - 1 / 18 + 0.01125, rel=1e-5)
    # Without strides the distances are compared in pixels: |d| = (8, 0, 0.4, 0) -> (8 - 1/18) + (0.4 - 1/18).
    assert box_loss_per_location(pred, target, "smooth_l1").item() == pytest.approx(8.4 - 2 / 18, rel=1e-5)


def test_unknown_box_loss():
    with pytest.raises(ValueError, match="iou, giou, smooth_l1"):
        box_loss_per_location(torch.ones(4), torch.ones(4), "l2")


def _two_location_inputs(**overrides) -> LossInputs:
    # B = 1, P = 2, C = 2. Location 0 is positive (class 1) with PRED/TARGET and center-ness logit ln 3
    # (p = 0.75) against target 0.5 (Eq. 3 of TARGET: sqrt(1/2 * 1/2)). Location 1 is background with
    # logits (-ln 3, 0) -> p = (0.25, 0.5), and garbage box / center-ness predictions that must be ignored.
    values = dict(
        cls_logits=torch.tensor([[[0.0, LN3], [-LN3, 0.0]]]),
        box_regression=torch.tensor([[PRED, [1e4, 1e-4, 3.0, 7.0]]]),
        centerness_logits=torch.tensor([[LN3, -5.0]]),
        labels=torch.tensor([[1, -1]]),
        box_targets=torch.tensor([[TARGET, [0.0, 0.0, 0.0, 0.0]]]),
        centerness_targets=torch.tensor([[0.5, 0.0]]),
        positive=torch.tensor([[True, False]]),
        strides=torch.tensor([[8.0, 8.0]]),
    )
    values.update(overrides)
    return LossInputs(**values)


# Location 0: 0.75 * 0.25 * ln 2 + 0.25 * 0.0625 * ln 4/3 (see the focal test);
# location 1 (all t = 0): 0.75 * 0.25^2 * ln 4/3 + 0.75 * 0.5^2 * ln 2.
FOCAL_SUM = (
    _focal_term(0.5, 0) + _focal_term(0.75, 1) + _focal_term(0.25, 0) + _focal_term(0.5, 0)
)
CTR_BCE = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))  # 0.836988


def test_fcos_loss_single_positive_by_hand():
    # N_pos = 1, lambda = 1: Eq. (2) plus the center-ness BCE of Section 3.3.
    assert FOCAL_SUM == pytest.approx(0.1344601 + 0.0134851 + 0.1299651, abs=1e-6)
    losses = fcos_loss(_two_location_inputs())
    assert losses["loss_cls"].item() == pytest.approx(FOCAL_SUM, rel=1e-6)
    assert losses["loss_box"].item() == pytest.approx(IOU_LOSS, rel=1e-6)
    assert losses["loss_centerness"].item() == pytest.approx(CTR_BCE, rel=1e-6)
    assert losses["loss"].item() == pytest.approx(FOCAL_SUM + IOU_LOSS + CTR_BCE, rel=1e-6)
    giou = fcos_loss(_two_location_inputs(), box_loss="giou", box_loss_weight=2.0)
    assert giou["loss_box"].item() == pytest.approx(GIOU_LOSS, rel=1e-6)
    assert giou["loss"].item() == pytest.approx(FOCAL_SUM + 2 * GIOU_LOSS + CTR_BCE, rel=1e-6)


def test_normalization_by_num_positives():
    # Make location 1 a second positive (class 0) whose box is predicted perfectly (IoU loss 0) and whose
    # center-ness logit 0 (p = 0.5) meets target 1 (BCE ln 2). N_pos = 2:
    #   loss_cls = (focal at 0 + focal at 1 with targets (1, 0)) / 2
    #   loss_box = (IOU_LOSS + 0) / 2, loss_centerness = (CTR_BCE + ln 2) / 2
    inputs = _two_location_inputs(
        labels=torch.tensor([[1, 0]]),
        positive=torch.tensor([[True, True]]),
        box_regression=torch.tensor([[PRED, [5.0, 5.0, 5.0, 5.0]]]),
        box_targets=torch.tensor([[TARGET, [5.0, 5.0, 5.0, 5.0]]]),
        centerness_logits=torch.tensor([[LN3, 0.0]]),
        centerness_targets=torch.tensor([[0.5, 1.0]]),
    )
    focal = _focal_term(0.5, 0) + _focal_term(0.75, 1) + _focal_term(0.25, 1) + _focal_term(0.5, 0)
    losses = fcos_loss(inputs)
    assert losses["loss_cls"].item() == pytest.approx(focal / 2, rel=1e-6)
    assert losses["loss_box"].item() == pytest.approx(IOU_LOSS / 2, rel=1e-5)
    assert losses["loss_centerness"].item() == pytest.approx((CTR_BCE + math.log(2)) / 2, rel=1e-6)


def test_num_positives_clamped_at_one():
    # No positive: the focal sum is divided by max(0, 1) = 1, box and center-ness terms are exactly 0.
    inputs = _two_location_inputs(labels=torch.tensor([[-1, -1]]), positive=torch.tensor([[False, False]]))
    focal = _focal_term(0.5, 0) + _focal_term(0.75, 0) + _focal_term(0.25, 0) + _focal_term(0.5, 0)
    losses = fcos_loss(inputs)
    assert losses["loss_cls"].item() == pytest.approx(focal, rel=1e-6)
    assert losses["loss_box"].item() == 0.0
    assert losses["loss_centerness"].item() == 0.0


def test_centerness_weighted_box_loss():
    # Two positives: location 0 (IoU loss 1.44692, center-ness target 0.5) and location 1 (perfect box,
    # loss 0, target 1.0). Weighted: (0.5 * 1.44692 + 1.0 * 0) / (0.5 + 1.0) = 0.482306.
    # Unweighted it would be (1.44692 + 0) / 2 = 0.72346.
    inputs = _two_location_inputs(
        labels=torch.tensor([[1, 0]]),
        positive=torch.tensor([[True, True]]),
        box_regression=torch.tensor([[PRED, [5.0, 5.0, 5.0, 5.0]]]),
        box_targets=torch.tensor([[TARGET, [5.0, 5.0, 5.0, 5.0]]]),
        centerness_targets=torch.tensor([[0.5, 1.0]]),
    )
    weighted = fcos_loss(inputs, centerness_weighted_box_loss=True)["loss_box"].item()
    assert weighted == pytest.approx(0.5 * IOU_LOSS / 1.5, rel=1e-5)
    assert fcos_loss(inputs)["loss_box"].item() == pytest.approx(IOU_LOSS / 2, rel=1e-5)


def test_smooth_l1_in_fcos_loss_uses_strides():
    # Location 0 with stride 8 (see test_smooth_l1_by_hand): 0.955694 / N_pos = 1.
    inputs = _two_location_inputs(
        box_regression=torch.tensor([[[8.0, 8.0, 8.0, 8.0], [1.0, 1.0, 1.0, 1.0]]]),
        box_targets=torch.tensor([[[16.0, 8.0, 8.4, 8.0], [0.0, 0.0, 0.0, 0.0]]]),
    )
    loss_box = fcos_loss(inputs, box_loss="smooth_l1")["loss_box"].item()
    assert loss_box == pytest.approx(1 - 1 / 18 + 0.01125, rel=1e-5)


def test_no_centerness_branch():
    losses = fcos_loss(_two_location_inputs(centerness_logits=None))
    assert losses["loss_centerness"].item() == 0.0
    assert losses["loss"].item() == pytest.approx(FOCAL_SUM + IOU_LOSS, rel=1e-6)


@pytest.mark.parametrize("box_loss", ["iou", "giou", "smooth_l1"])
@pytest.mark.parametrize("weighted", [False, True])
def test_zero_box_batch_gives_exact_zero_box_and_centerness_loss(box_loss, weighted):
    # Two images without any box: every location is background, N_pos is clamped to 1.
    torch.manual_seed(0)
    loc = make_locations(((4, 4), (2, 2)), (8, 16))
    gt = pad_ground_truth([torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.int64)] * 2)
    a = assign(loc, gt, ((0, 64), (64, math.inf)))
    cls_logits = torch.randn(2, 20, 3, requires_grad=True)
    box_regression = (torch.randn(2, 20, 4) * 3).exp().requires_grad_()
    centerness_logits = torch.randn(2, 20, requires_grad=True)
    losses = fcos_loss(
        LossInputs(cls_logits, box_regression, centerness_logits, a.labels, a.box_targets, a.centerness_targets,
                   a.positive, loc.strides[None]),
        box_loss=box_loss,
        centerness_weighted_box_loss=weighted,
    )
    assert losses["loss_box"].item() == 0.0
    assert losses["loss_centerness"].item() == 0.0
    assert math.isfinite(losses["loss_cls"].item()) and losses["loss_cls"].item() > 0
    assert losses["loss"].item() == losses["loss_cls"].item()
    losses["loss"].backward()
    assert torch.count_nonzero(box_regression.grad).item() == 0
    assert torch.count_nonzero(centerness_logits.grad).item() == 0
    assert torch.isfinite(cls_logits.grad).all()


@pytest.mark.parametrize("box_loss", ["iou", "giou", "smooth_l1"])
@pytest.mark.parametrize("weighted", [False, True])
def test_huge_predictions_on_negatives_give_finite_gradients(box_loss, weighted):
    # exp() of a large raw output overflows to inf on a background location; the loss masks background
    # before the box loss (not by multiplying afterwards, which would give 0 * inf = NaN), so its
    # gradient there is exactly 0 and everything else stays finite.
    box_regression = torch.tensor([[PRED, [math.inf, 3e38, math.inf, 1.0]]], requires_grad=True)
    centerness_logits = torch.tensor([[LN3, 1e30]], requires_grad=True)
    inputs = _two_location_inputs(box_regression=box_regression, centerness_logits=centerness_logits)
    losses = fcos_loss(inputs, box_loss=box_loss, centerness_weighted_box_loss=weighted)
    assert all(math.isfinite(v.item()) for v in losses.values())
    losses["loss"].backward()
    assert torch.isfinite(box_regression.grad).all()
    assert box_regression.grad[0, 1].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert torch.count_nonzero(box_regression.grad[0, 0]).item() > 0
    assert torch.isfinite(centerness_logits.grad).all() and centerness_logits.grad[0, 1].item() == 0.0


def test_reduce_mean_is_identity_without_distributed():
    value = torch.tensor(3.5)
    assert reduce_mean(value).item() == 3.5
