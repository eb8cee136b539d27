"""Inference post-processing (fcos_lab.postprocess, Section 3.1 "Inference", Section 3.3, Table 4).

Every scene uses the same tiny two-level grid: P3 (stride 8) of 2x2 and P4 (stride 16) of 1x1, so the
P = 5 locations are
    0: (4, 4)   1: (12, 4)   2: (4, 12)   3: (12, 12)   [P3]      4: (8, 8)   [P4]
and C = 2 classes. Logits are set from probabilities; every entry not mentioned has p = sigmoid(-12),
far below the 0.05 threshold.
"""

import math

import pytest
import torch

from fcos_lab.points import make_locations
from fcos_lab.postprocess import Detections, batched_nms_groups, postprocess

LOC = make_locations(((2, 2), (1, 1)), (8, 16))
P, C = 5, 2


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def scene(probs: dict, ltrb: dict | None = None, batch: int = 1):
    """cls_logits [B, P, C] and box_regression [B, P, 4]; keys are (location, class) or (image, location, class)."""
    cls_logits = torch.full((batch, P, C), -12.0)
    for key, p in probs.items():
        key = key if len(key) == 3 else (0, *key)
        cls_logits[key] = logit(p)
    box_regression = torch.ones(batch, P, 4)
    for key, value in (ltrb or {}).items():
        key = key if isinstance(key, tuple) else (0, key)
        box_regression[key] = torch.tensor(value, dtype=torch.float32)
    return cls_logits, box_regression


def run(cls_logits, box_regression, centerness_logits=None, image_sizes=((32, 32),), **kwargs):
    kwargs.setdefault("centerness_mode", "none")
    return postprocess(cls_logits, box_regression, centerness_logits, LOC, list(image_sizes), **kwargs)


def test_threshold_decode_and_fields():
    # Candidates with p > 0.05: (0, class 0) p=0.9, (2, class 0) p=0.06, (4, class 1) p=0.5.
    # (1, class 1) with p=0.04 is below the threshold. Boxes by inverting Eq. (1):
    #   loc 0 (4, 4)  ltrb (1, 1, 1, 1) -> (3, 3, 5, 5)
    #   loc 2 (4, 12) ltrb (1, 1, 1, 1) -> (3, 11, 5, 13)
    #   loc 4 (8, 8)  ltrb (2, 3, 4, 5) -> (8-2, 8-3, 8+4, 8+5) = (6, 5, 12, 13)
    # No same-class overlap, so NMS keeps all three, sorted by score.
    cls_logits, box_regression = scene({(0, 0): 0.9, (1, 1): 0.04, (2, 0): 0.06, (4, 1): 0.5}, {4: [2, 3, 4, 5]})
    (det,) = run(cls_logits, box_regression)
    assert det.location_index.tolist() == [0, 4, 2]
    assert det.labels.tolist() == [0, 1, 0]
    assert det.boxes.tolist() == [[3, 3, 5, 5], [6, 5, 12, 13], [3, 11, 5, 13]]
    torch.testing.assert_close(det.scores, torch.tensor([0.9, 0.5, 0.06]))
    torch.testing.assert_close(det.cls_scores, det.scores)
    assert det.centerness.tolist() == [1.0, 1.0, 1.0]
    assert det.levels.tolist() == [3, 4, 3]
    assert det.locations.tolist() == [[4, 4], [8, 8], [4, 12]]
    # Raising the threshold to 0.1 drops the 0.06 candidate.
    (det,) = run(cls_logits, box_regression, score_thresh=0.1)
    assert det.location_index.tolist() == [0, 4]


def test_two_classes_at_one_location():
    # Top-k runs over P_l * C entries: location 0 with class 0 (0.9) and class 1 (0.8) gives two detections
    # with the same box; class-aware NMS keeps both.
    (det,) = run(*scene({(0, 0): 0.9, (0, 1): 0.8}))
    assert det.labels.tolist() == [0, 1]
    assert det.location_index.tolist() == [0, 0]


def test_clip_to_image():
    # Location 3 (12, 12) with ltrb (20, 3, 30, 40) decodes to (-8, 9, 42, 52); the image is h=20, w=24,
    # so x is clipped to [0, 24] and y to [0, 20]: (0, 9, 24, 20).
    (det,) = run(*scene({(3, 1): 0.7}, {3: [20, 3, 30, 40]}), image_sizes=[(20, 24)])
    assert det.boxes.tolist() == [[0.0, 9.0, 24.0, 20.0]]


def test_class_aware_nms():
    # Location 0 (4, 4) with ltrb (4, 4, 12, 12) -> (0, 0, 16, 16), p = 0.9;
    # location 1 (12, 4) with ltrb (12, 4, 4, 8) -> (0, 0, 16, 12), p = 0.8.
    # IoU = (16 * 12) / (16 * 16) = 0.75 > 0.6.
    ltrb = {0: [4, 4, 12, 12], 1: [12, 4, 4, 8]}
    # Same class: the lower-scored box is suppressed.
    (det,) = run(*scene({(0, 0): 0.9, (1, 0): 0.8}, ltrb))
    assert det.location_index.tolist() == [0]
    # ... unless the NMS threshold is above their IoU.
    (det,) = run(*scene({(0, 0): 0.9, (1, 0): 0.8}, ltrb), nms_thresh=0.8)
    assert det.location_index.tolist() == [0, 1]
    # Different classes: both survive.
    (det,) = run(*scene({(0, 0): 0.9, (1, 1): 0.8}, ltrb))
    assert det.location_index.tolist() == [0, 1] and det.labels.tolist() == [0, 1]
    # Class-agnostic NMS (proposals, Section 5): one survives even across classes.
    (det,) = run(*scene({(0, 0): 0.9, (1, 1): 0.8}, ltrb), class_agnostic_nms=True)
    assert det.location_index.tolist() == [0]


def test_pre_nms_topk_is_per_level():
    # P3 candidates: loc 0 (0.9), loc 2 (0.3); P4: loc 4 (0.2). With top-1 per level, loc 2 goes
    # (second on P3) but loc 4 stays (first on P4) although its score is lower than loc 2's.
    cls_logits, box_regression = scene({(0, 0): 0.9, (2, 0): 0.3, (4, 1): 0.2})
    (det,) = run(cls_logits, box_regression, pre_nms_topk=1)
    assert det.location_index.tolist() == [0, 4]
    (det,) = run(cls_logits, box_regression)
    assert det.location_index.tolist() == [0, 2, 4]


def test_max_detections():
    cls_logits, box_regression = scene({(0, 0): 0.9, (2, 0): 0.3, (4, 1): 0.2, (3, 1): 0.6})
    (det,) = run(cls_logits, box_regression, max_detections=2)
    assert det.location_index.tolist() == [0, 3]
    torch.testing.assert_close(det.scores, torch.tensor([0.9, 0.6]))


def test_images_of_a_batch_are_kept_apart():
    # Image 0: loc 0 class 0 at 0.9 with box (0, 0, 16, 16).
    # Image 1: the same box at 0.5, and loc 1 class 0 at 0.3 with box (0, 0, 16, 12) (IoU 0.75): only the
    # latter is suppressed, by image 1's own box; image 0's higher-scored box suppresses nothing there.
    # Image 1 also has loc 4 class 1 (0.4) and loc 3 class 1 (0.35), away from the rest.
    probs = {(0, 0, 0): 0.9, (1, 0, 0): 0.5, (1, 1, 0): 0.3, (1, 4, 1): 0.4, (1, 3, 1): 0.35}
    ltrb = {(0, 0): [4, 4, 12, 12], (1, 0): [4, 4, 12, 12], (1, 1): [12, 4, 4, 8]}
    cls_logits, box_regression = scene(probs, ltrb, batch=2)
    det0, det1 = run(cls_logits, box_regression, image_sizes=[(32, 32), (32, 32)])
    assert det0.location_index.tolist() == [0]
    assert det1.location_index.tolist() == [0, 4, 3]
    assert det1.boxes[0].tolist() == [0.0, 0.0, 16.0, 16.0]
    # Each image alone gives the same result.
    for i, det in enumerate((det0, det1)):
        (alone,) = run(cls_logits[i : i + 1], box_regression[i : i + 1])
        for name in Detections.__dataclass_fields__:
            assert torch.equal(getattr(alone, name), getattr(det, name)), name
    # max_detections applies per image: image 0 keeps its 1, image 1 its best 2.
    det0, det1 = run(cls_logits, box_regression, image_sizes=[(32, 32), (32, 32)], max_detections=2)
    assert det0.location_index.tolist() == [0] and det1.location_index.tolist() == [0, 4]


def test_image_without_detections_in_batch():
    cls_logits, box_regression = scene({(1, 0, 0): 0.9}, batch=2)
    det0, det1 = run(cls_logits, box_regression, image_sizes=[(32, 32), (32, 32)])
    assert det0.boxes.shape == (0, 4) and det0.scores.shape == (0,) and det0.locations.shape == (0, 2)
    assert det1.location_index.tolist() == [0]


def test_score_sqrt():
    # cls 0.64 and learned center-ness sigmoid(logit 0.25) = 0.25: product 0.16, official/torchvision
    # report sqrt(0.16) = 0.4.
    cls_logits, box_regression = scene({(0, 0): 0.64})
    centerness_logits = torch.full((1, P), logit(0.25))
    (plain,) = run(cls_logits, box_regression, centerness_logits, centerness_mode="learned")
    (rooted,) = run(cls_logits, box_regression, centerness_logits, centerness_mode="learned", score_sqrt=True)
    assert plain.scores.item() == pytest.approx(0.16, rel=1e-5)
    assert rooted.scores.item() == pytest.approx(0.4, rel=1e-5)
    assert rooted.cls_scores.item() == pytest.approx(0.64, rel=1e-5)
    assert rooted.centerness.item() == pytest.approx(0.25, rel=1e-5)


def test_threshold_on_combined():
    # cls 0.1 (> 0.05) but cls x ctr = 0.1 * 0.3 = 0.03 (< 0.05):
    #   threshold_on="cls" keeps it (score 0.03), "combined" drops it,
    #   "combined" with sqrt compares sqrt(0.03) = 0.173 > 0.05 and keeps it.
    cls_logits, box_regression = scene({(0, 0): 0.1})
    centerness_logits = torch.full((1, P), logit(0.3))
    kwargs = dict(centerness_mode="learned")
    (det,) = run(cls_logits, box_regression, centerness_logits, threshold_on="cls", **kwargs)
    assert det.scores.tolist() == pytest.approx([0.03], rel=1e-5)
    (det,) = run(cls_logits, box_regression, centerness_logits, threshold_on="combined", **kwargs)
    assert len(det.scores) == 0
    (det,) = run(cls_logits, box_regression, centerness_logits, threshold_on="combined", score_sqrt=True, **kwargs)
    assert det.scores.tolist() == pytest.approx([math.sqrt(0.03)], rel=1e-5)


@pytest.mark.parametrize(
    "mode, centerness",
    [
        ("none", 1.0),  # Table 4 "None"
        ("from_box", math.sqrt(1 / 3)),  # Eq. (3) on the predicted (1, 2, 3, 2): sqrt(1/3 * 2/2)
        ("oracle", 0.5),  # the given ground-truth target
        ("learned", 0.25),  # sigmoid of the branch's logit
    ],
)
def test_centerness_modes(mode, centerness):
    # Location 0, cls 0.8, ltrb (1, 2, 3, 2): score = 0.8 * center-ness.
    cls_logits, box_regression = scene({(0, 0): 0.8}, {0: [1, 2, 3, 2]})
    centerness_logits = torch.full((1, P), logit(0.25))
    oracle = torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.0]])
    (det,) = run(cls_logits, box_regression, centerness_logits, centerness_mode=mode, oracle_centerness=oracle)
    assert det.centerness.item() == pytest.approx(centerness, rel=1e-5)
    assert det.scores.item() == pytest.approx(0.8 * centerness, rel=1e-5)
    assert det.boxes.tolist() == [[3.0, 2.0, 7.0, 6.0]]


def test_centerness_reorders_detections():
    # Section 3.3: center-ness down-weights off-center boxes. cls 0.9 at loc 0 with center-ness 0.1 ranks
    # below cls 0.5 at loc 4 with center-ness 0.9 (0.09 < 0.45).
    cls_logits, box_regression = scene({(0, 0): 0.9, (4, 0): 0.5})
    oracle = torch.tensor([[0.1, 0.0, 0.0, 0.0, 0.9]])
    (det,) = run(cls_logits, box_regression, centerness_mode="oracle", oracle_centerness=oracle)
    assert det.location_index.tolist() == [4, 0]
    torch.testing.assert_close(det.scores, torch.tensor([0.45, 0.09]))


def test_centerness_mode_errors():
    cls_logits, box_regression = scene({(0, 0): 0.8})
    with pytest.raises(ValueError, match="center-ness branch"):
        run(cls_logits, box_regression, None, centerness_mode="learned")
    with pytest.raises(ValueError, match="oracle_centerness"):
        run(cls_logits, box_regression, None, centerness_mode="oracle")
    with pytest.raises(ValueError, match="learned, none, from_box, oracle"):
        run(cls_logits, box_regression, None, centerness_mode="sqrt")


def test_detections_rescaled():
    # From a 20x40 (h, w) input back to a 40x60 original: x scales by 60/40 = 1.5, y by 40/20 = 2.
    # Box (2, 4, 10, 8) -> (3, 8, 15, 16); location (4, 4) -> (6, 8). Scores and labels are untouched.
    det = Detections(
        boxes=torch.tensor([[2.0, 4.0, 10.0, 8.0]]),
        scores=torch.tensor([0.7]),
        labels=torch.tensor([1]),
        levels=torch.tensor([3]),
        locations=torch.tensor([[4.0, 4.0]]),
        cls_scores=torch.tensor([0.7]),
        centerness=torch.tensor([1.0]),
        location_index=torch.tensor([0]),
    )
    out = det.rescaled((20, 40), (40, 60))
    assert out.boxes.tolist() == [[3.0, 8.0, 15.0, 16.0]]
    assert out.locations.tolist() == [[6.0, 8.0]]
    assert out.scores is det.scores and out.labels is det.labels
    assert torch.equal(det.rescaled((20, 40), (20, 40)).boxes, det.boxes)


def test_batched_nms_groups():
    # Boxes 0 and 1 overlap (IoU 0.75) but sit in different groups; box 2 overlaps box 0 in its group.
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 16.0, 12.0], [0.0, 0.0, 16.0, 12.0]])
    keep = batched_nms_groups(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.6)
    assert keep.tolist() == [0, 1]
    assert batched_nms_groups(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5).numel() == 0
