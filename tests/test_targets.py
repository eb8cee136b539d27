"""Target assignment (fcos_lab.targets, Sections 3.1 and 3.2) on tiny scenes computed by hand.

Unless a test says otherwise the grid is one 4x4 level of stride 8 with the paper's offset, so the
locations sit at x, y in {4, 12, 20, 28} (floor(8/2) + 8k), flattened row-major: index = 4 * row + col.
Grids in comments are written row by row (y = 4, 12, 20, 28), columns x = 4, 12, 20, 28.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from fcos_lab.errors import InputError
from fcos_lab.points import feature_shapes, make_locations
from fcos_lab.presets import get_preset
from fcos_lab.targets import GroundTruth, assign, assign_dense, pad_ground_truth, size_ranges_per_location

INF = math.inf
GRID = make_locations(((4, 4),), (8,))


def _gt(boxes, labels=None, crowd=None) -> GroundTruth:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor(labels if labels is not None else list(range(len(boxes))), dtype=torch.int64)
    crowd_t = [torch.tensor(crowd, dtype=torch.bool)] if crowd is not None else None
    return pad_ground_truth([boxes], [labels], crowd_t)


def _grid(rows) -> torch.Tensor:
    return torch.tensor(rows).reshape(1, 16)


def test_masks_on_a_small_case():
    # Boxes A = (0, 0, 32, 32), B = (2, 2, 30, 14); one size range (0, 20), inclusive; center
    # sampling radius 1 -> 1 * stride = 8 px.
    #
    # A: every location is strictly inside. max(l*,t*,r*,b*) = max(m(x), m(y)) with
    #    m(c) = max(c, 32 - c) = 28, 20, 20, 28 for c = 4, 12, 20, 28, so only the inner 2x2 has
    #    max = 20 <= 20. Center (16, 16): |x - 16| < 8 only for x in {12, 20}: the inner 2x2 again.
    # B: inside iff 2 < x < 30 (all columns) and 2 < y < 14 (rows y = 4, 12).
    #    max(l*, r*) = max(x - 2, 30 - x) = 26, 18, 18, 26; max(t*, b*) = max(y - 2, 14 - y) = 10, 10, 18, 26.
    #    In range (<= 20): columns 12, 20 of rows 4, 12, 20 (row 20 is outside B but still "in range":
    #    the masks are independent). Center (16, 8): |x - 16| < 8 -> x in {12, 20}; |y - 8| < 8 -> y in {4, 12}.
    # Candidates = inside & in range & in center region: A inner 2x2; B columns 12, 20 of rows 4, 12.
    # Row 12 is ambiguous (2 candidates); area B = 28 * 12 = 336 < area A = 1024, so B wins there.
    gt = _gt([[0, 0, 32, 32], [2, 2, 30, 14]], labels=[3, 5])
    a = assign(GRID, gt, ((0, 20),), center_sampling_radius=1.0)
    inner = [0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    assert a.inside_box[..., 0].tolist() == [[True] * 16]
    assert torch.equal(a.in_size_range[..., 0].long(), _grid(inner))
    assert torch.equal(a.in_center_region[..., 0].long(), _grid(inner))
    assert torch.equal(a.candidates[..., 0].long(), _grid(inner))
    assert torch.equal(a.inside_box[..., 1].long(), _grid([1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]))
    assert torch.equal(a.in_size_range[..., 1].long(), _grid([0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0]))
    assert torch.equal(a.in_center_region[..., 1].long(), _grid([0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
    assert torch.equal(a.candidates[..., 1].long(), _grid([0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
    assert torch.equal(a.num_candidates, _grid([0, 1, 1, 0, 0, 2, 2, 0, 0, 1, 1, 0, 0, 0, 0, 0]))
    assert torch.equal(a.matched_gt, _grid([-1, 1, 1, -1, -1, 1, 1, -1, -1, 0, 0, -1, -1, -1, -1, -1]))
    assert torch.equal(a.labels, _grid([-1, 5, 5, -1, -1, 5, 5, -1, -1, 3, 3, -1, -1, -1, -1, -1]))
    assert torch.equal(a.positive, a.matched_gt >= 0)
    # torchvision's strict bounds drop A's inner locations (max = 20 is not < 20); B is unaffected.
    strict = assign(GRID, gt, ((0, 20),), center_sampling_radius=1.0, size_range_inclusive=False)
    assert torch.equal(strict.matched_gt, _grid([-1, 1, 1, -1, -1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1, -1]))


@pytest.mark.parametrize("order", ["large_first", "small_first"])
def test_ambiguous_location_takes_smaller_box(order):
    # A = (0, 0, 32, 32) (area 1024) holds every location; B = (8, 8, 24, 24) (area 256) holds the
    # inner 2x2 (8 < x, y < 24). Those four are ambiguous and regress B (Section 3.1: minimal area).
    big, small = [0, 0, 32, 32], [8, 8, 24, 24]
    boxes = [big, small] if order == "large_first" else [small, big]
    i_big, i_small = (0, 1) if order == "large_first" else (1, 0)
    a = assign(GRID, _gt(boxes), ((0, INF),))
    expected = torch.full((16,), i_big)
    expected[[5, 6, 9, 10]] = i_small
    assert torch.equal(a.matched_gt[0], expected)
    assert torch.equal(a.num_candidates[0], torch.where(expected == i_small, 2, 1))
    # Location (12, 12) regresses B: l* = 12 - 8 = 4, t* = 4, r* = 24 - 12 = 12, b* = 12 (Eq. 1);
    # center-ness sqrt(4/12 * 4/12) = 1/3 (Eq. 3).
    assert a.box_targets[0, 5].tolist() == [4.0, 4.0, 12.0, 12.0]
    assert a.centerness_targets[0, 5].item() == pytest.approx(1 / 3)


def test_box_and_centerness_targets_by_hand():
    # Location (12, 4) (index 1) and box (2, 0, 42, 10): Eq. (1) l* = 10, t* = 4, r* = 30, b* = 6;
    # Eq. (3) sqrt(min(10,30)/max(10,30) * min(4,6)/max(4,6)) = sqrt(1/3 * 2/3) = sqrt(2/9) = 0.4714.
    # Inside the box: 2 < x < 42 holds for every column, 0 < y < 10 only for row y = 4.
    a = assign(GRID, _gt([[2, 0, 42, 10]], labels=[7]), ((0, INF),))
    assert a.positive[0].long().tolist() == [1, 1, 1, 1] + [0] * 12
    assert a.box_targets[0, 1].tolist() == [10.0, 4.0, 30.0, 6.0]
    assert a.centerness_targets[0, 1].item() == pytest.approx(math.sqrt(2 / 9))
    assert a.labels[0, 1].item() == 7
    # Location (4, 4): l* = 2, t* = 4, r* = 38, b* = 6 -> sqrt(2/38 * 4/6).
    assert a.box_targets[0, 0].tolist() == [2.0, 4.0, 38.0, 6.0]
    assert a.centerness_targets[0, 0].item() == pytest.approx(math.sqrt(2 / 38 * 4 / 6))
    # Background rows carry zeros, not the distances to box 0.
    assert torch.count_nonzero(a.box_targets[0, 4:]).item() == 0
    assert torch.count_nonzero(a.centerness_targets[0, 4:]).item() == 0

    # normalize_by_stride (Table 3 "Normalization"): l*/8 etc. = 1.25, 0.5, 3.75, 0.75; center-ness is a
    # ratio and does not change.
    n = assign(GRID, _gt([[2, 0, 42, 10]], labels=[7]), ((0, INF),), normalize_by_stride=True)
    assert n.box_targets[0, 1].tolist() == [1.25, 0.5, 3.75, 0.75]
    assert torch.equal(n.centerness_targets, a.centerness_targets)
    assert torch.equal(n.matched_gt, a.matched_gt)


def test_normalize_by_stride_uses_each_level_stride():
    # P3 location (4, 4) (stride 8) and P4 location (8, 8) (stride 16) both inside (0, 0, 40, 40):
    # P3: (4, 4, 36, 36) / 8 = (0.5, 0.5, 4.5, 4.5); P4: (8, 8, 32, 32) / 16 = (0.5, 0.5, 2, 2).
    loc = make_locations(((1, 1), (1, 1)), (8, 16))
    a = assign(loc, _gt([[0, 0, 40, 40]]), ((0, INF), (0, INF)), normalize_by_stride=True)
    assert a.box_targets[0].tolist() == [[0.5, 0.5, 4.5, 4.5], [0.5, 0.5, 2.0, 2.0]]


@pytest.fixture(scope="module")
def boundary_scene():
    # Offset "zero" so that (64, 64) is a location of both P3 (8 * 8) and P4 (16 * 4).
    # P3 17x17 covers 0..128 by 8, P4 9x9 covers 0..128 by 16; box (0, 0, 128, 128).
    # At (64, 64): l* = t* = r* = b* = 64, so max = 64 sits exactly on the P3/P4 boundary m_3 = 64.
    loc = make_locations(((17, 17), (9, 9)), (8, 16), offset="zero")
    p3_index = 8 * 17 + 8
    p4_index = 17 * 17 + 4 * 9 + 4
    assert loc.points[p3_index].tolist() == [64.0, 64.0] == loc.points[p4_index].tolist()
    return loc, p3_index, p4_index


def test_size_range_boundary_inclusive(boundary_scene):
    # Paper / official code: m_2 <= max <= m_3 on P3 and m_3 <= max <= m_4 on P4, so max = 64 is positive
    # on both. Elsewhere on P3: inside locations have x, y in 8..120, max(x, 128 - x) >= 64 with equality
    # only at 64, so (64, 64) is P3's only positive. On P4 the 7x7 inside locations (16..112) have
    # 64 <= max <= 112: all 49 positive. Total 50.
    loc, p3, p4 = boundary_scene
    a = assign(loc, _gt([[0, 0, 128, 128]]), ((0, 64), (64, 128)), size_range_inclusive=True)
    assert a.positive[0, p3] and a.positive[0, p4]
    assert a.positive[0, :289].sum().item() == 1
    assert a.positive[0, 289:].sum().item() == 49
    assert a.box_targets[0, p3].tolist() == [64.0] * 4 == a.box_targets[0, p4].tolist()
    assert a.centerness_targets[0, p3].item() == 1.0


def test_size_range_boundary_strict(boundary_scene):
    # torchvision: m_2 < max < m_3 and m_3 < max < m_4: max = 64 is on neither level. P3 has no positive,
    # P4 loses only (64, 64): 48.
    loc, p3, p4 = boundary_scene
    a = assign(loc, _gt([[0, 0, 128, 128]]), ((0, 64), (64, 128)), size_range_inclusive=False)
    assert not a.positive[0, p3] and not a.positive[0, p4]
    assert not a.in_size_range[0, p3, 0] and not a.in_size_range[0, p4, 0]
    assert a.inside_box[0, p3, 0] and a.inside_box[0, p4, 0]
    assert a.positive[0, :289].sum().item() == 0
    assert a.positive[0, 289:].sum().item() == 48


def test_center_sampling_excludes_off_center_inside_location():
    # One 8x8 level of stride 8 (locations 4, 12, ..., 60); box (0, 0, 64, 64), center (32, 32).
    # Radius 1.5 -> 12 px: |x - 32| < 12 holds for x = 28, 36 only (20 and 44 are exactly 12 away).
    # So 4 positives instead of all 64; (20, 20) and (4, 4) are inside the box but excluded.
    loc = make_locations(((8, 8),), (8,))
    gt = _gt([[0, 0, 64, 64]])
    plain = assign(loc, gt, ((0, INF),))
    sampled = assign(loc, gt, ((0, INF),), center_sampling_radius=1.5)
    assert plain.positive.sum().item() == 64
    positives = loc.points[sampled.positive[0]].tolist()
    assert sorted(positives) == [[28.0, 28.0], [28.0, 36.0], [36.0, 28.0], [36.0, 36.0]]
    index_20_20 = 2 * 8 + 2
    assert loc.points[index_20_20].tolist() == [20.0, 20.0]
    assert sampled.inside_box[0, index_20_20, 0] and not sampled.in_center_region[0, index_20_20, 0]
    assert not sampled.positive[0, index_20_20]
    # Without center sampling the center-region mask is all True.
    assert plain.in_center_region.all()


def test_center_sampling_never_leaves_the_box():
    # A thin box (0, 0, 64, 10) with radius 1.5 (12 px) around (32, 5): the region spans y in (-7, 17), but
    # location (28, 12) lies outside the box (b* = 10 - 12 < 0) and stays negative.
    loc = make_locations(((8, 8),), (8,))
    a = assign(loc, _gt([[0, 0, 64, 10]]), ((0, INF),), center_sampling_radius=1.5)
    index_28_12 = 1 * 8 + 3
    assert a.in_center_region[0, index_28_12, 0] and not a.inside_box[0, index_28_12, 0]
    assert sorted(loc.points[a.positive[0]].tolist()) == [[28.0, 4.0], [36.0, 4.0]]


def test_tiny_box_between_locations_is_unreachable():
    # Box (5, 5, 11, 11) lies between locations 4 and 12 on both axes: no location is strictly inside,
    # so the box gets no positive at all (what best possible recall counts).
    a = assign(GRID, _gt([[5, 5, 11, 11]]), ((0, INF),))
    assert not a.inside_box.any()
    assert not a.positive.any()
    assert (a.matched_gt == -1).all() and (a.labels == -1).all()
    # A location exactly on the border is not inside either: (4, 4, 12, 12) touches 4 locations only on
    # their edges (l* = 0 or r* = 0).
    assert not assign(GRID, _gt([[4, 4, 12, 12]]), ((0, INF),)).inside_box.any()


def test_crowd_boxes_are_never_assigned():
    # Crowd B = (8, 8, 24, 24) is smaller than A = (0, 0, 32, 32) and would win the inner 2x2; as a crowd
    # region it is no candidate at all, so every location regresses A.
    gt = _gt([[0, 0, 32, 32], [8, 8, 24, 24]], labels=[1, 2], crowd=[False, True])
    a = assign(GRID, gt, ((0, INF),))
    assert (a.matched_gt == 0).all()
    assert a.inside_box[0, 5, 1]  # the crowd box still reports its geometry
    assert not a.candidates[..., 1].any()
    assert (a.num_candidates == 1).all()
    # A crowd box alone: all background.
    only_crowd = assign(GRID, _gt([[0, 0, 32, 32]], crowd=[True]), ((0, INF),))
    assert not only_crowd.positive.any()


def _assert_all_background(a, num_points):
    assert a.labels.shape[-1] == num_points
    assert (a.labels == -1).all() and (a.matched_gt == -1).all()
    assert not a.positive.any()
    assert torch.count_nonzero(a.box_targets).item() == 0
    assert torch.count_nonzero(a.centerness_targets).item() == 0
    assert (a.num_candidates == 0).all()


def test_zero_boxes_gives_all_background():
    # M = 0 for the whole batch.
    gt = pad_ground_truth([torch.zeros(0, 4), torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)] * 2)
    assert gt.boxes.shape == (2, 0, 4)
    a = assign(GRID, gt, ((0, INF),))
    _assert_all_background(a, 16)
    assert a.box_targets.shape == (2, 16, 4)
    assert a.inside_box.shape == (2, 16, 0)
    # Same with the torchvision switches.
    torchvision_switches = dict(center_sampling_radius=1.5, area_tiebreak_float32=True, size_range_inclusive=False)
    _assert_all_background(assign(GRID, gt, ((0, INF),), **torchvision_switches), 16)


def test_all_padding_gives_all_background():
    # Padding slots hold coordinates that enclose every location; valid = False must still keep them out.
    gt = GroundTruth(
        boxes=torch.tensor([[[0.0, 0.0, 32.0, 32.0], [0.0, 0.0, 32.0, 32.0]]]),
        labels=torch.tensor([[1, 2]]),
        valid=torch.tensor([[False, False]]),
        crowd=torch.tensor([[False, False]]),
    )
    for tiebreak in (False, True):
        a = assign(GRID, gt, ((0, INF),), area_tiebreak_float32=tiebreak)
        _assert_all_background(a, 16)
        assert a.inside_box.all()  # geometry is still reported


def test_empty_image_next_to_non_empty_one():
    gt = pad_ground_truth(
        [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 32.0, 32.0]])],
        [torch.zeros(0, dtype=torch.int64), torch.tensor([4])],
    )
    assert gt.valid.tolist() == [[False], [True]]
    a = assign(GRID, gt, ((0, INF),))
    assert not a.positive[0].any()
    assert a.positive[1].all() and (a.labels[1] == 4).all()


def test_area_tiebreak_float32():
    # Location (4, 4) on a 1x1 grid lies inside box 0 = (0, 0, 10, 10) (area 100) and box 1 =
    # (0, 0, 8, 12) (area 96). Exact: box 1 is smaller and wins. torchvision picks max(1e8 - area) in
    # float32, whose spacing at 1e8 is 8: 1e8 - 100 = 99999900 rounds (tie, to even) to 99999904 and
    # 1e8 - 96 = 99999904 is exact, so both keys are equal and the first box (0) wins.
    assert torch.tensor(1e8 - 100, dtype=torch.float32) == torch.tensor(1e8 - 96, dtype=torch.float32)
    loc = make_locations(((1, 1),), (8,))
    gt = _gt([[0, 0, 10, 10], [0, 0, 8, 12]], labels=[1, 2])
    exact = assign(loc, gt, ((0, INF),))
    quirk = assign(loc, gt, ((0, INF),), area_tiebreak_float32=True)
    assert exact.matched_gt.item() == 1 and exact.labels.item() == 2
    assert quirk.matched_gt.item() == 0 and quirk.labels.item() == 1
    assert quirk.box_targets[0, 0].tolist() == [4.0, 4.0, 6.0, 6.0]
    # Areas far apart at float32 resolution agree with the exact rule.
    gt_far = _gt([[0, 0, 10, 10], [0, 0, 6, 6]])
    assert assign(loc, gt_far, ((0, INF),), area_tiebreak_float32=True).matched_gt.item() == 1


def _random_gt(generator, counts, size):
    h, w = size
    boxes, labels = [], []
    for m in counts:
        xy = torch.rand(m, 2, generator=generator) * torch.tensor([w * 0.8, h * 0.8])
        wh = torch.rand(m, 2, generator=generator) * torch.tensor([w * 0.6, h * 0.6]) + 4
        boxes.append(torch.cat([xy, (xy + wh).minimum(torch.tensor([w, h], dtype=torch.float32))], dim=1))
        labels.append(torch.randint(0, 5, (m,), generator=generator))
    return boxes, labels


@pytest.mark.parametrize("preset", ["fcos_r50_fpn_1x", "fcos_r50_fpn_torchvision", "fcos_imprv_r50_fpn_1x"])
def test_batch_equals_per_image(preset):
    # Two images with 7 and 2 boxes: the second is padded to M = 7, which must change nothing.
    a_cfg = get_preset(preset).assign
    size = (256, 320)
    shapes = feature_shapes(size)
    loc = make_locations(
        shapes, (8, 16, 32, 64, 128), a_cfg.location_offset, size if a_cfg.stride_from_image else None
    )
    boxes, labels = _random_gt(torch.Generator().manual_seed(0), (7, 2), size)
    crowd = [torch.zeros(7, dtype=torch.bool), torch.tensor([False, True])]
    kwargs = dict(
        size_range_inclusive=a_cfg.size_range_inclusive,
        center_sampling_radius=a_cfg.center_sampling_radius,
        area_tiebreak_float32=a_cfg.area_tiebreak_float32,
        normalize_by_stride=True,
    )
    batched = assign(loc, pad_ground_truth(boxes, labels, crowd), a_cfg.size_ranges, **kwargs)
    assert batched.positive.any(dim=1).all(), "both images need positives for the comparison to mean anything"
    for i in range(2):
        single = assign(loc, pad_ground_truth([boxes[i]], [labels[i]], [crowd[i]]), a_cfg.size_ranges, **kwargs)
        m = len(boxes[i])
        for name in ("labels", "matched_gt", "box_targets", "centerness_targets", "positive", "num_candidates"):
            assert torch.equal(getattr(batched, name)[i], getattr(single, name)[0]), name
        for name in ("inside_box", "in_size_range", "in_center_region", "candidates"):
            assert torch.equal(getattr(batched, name)[i, :, :m], getattr(single, name)[0]), name
        # The padding columns are never candidates.
        assert not batched.candidates[i, :, m:].any()


def test_matches_torchvision_matching_loop():
    # torchvision's FCOS.compute_loss computes matched_idxs per image and hands them to head.compute_loss;
    # call it unbound with a stand-in `self` whose head returns them, on anchors from its own generator.
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOS as TVFCOS
    from torchvision.models.detection.image_list import ImageList

    size = (320, 416)
    shapes = feature_shapes(size)
    generator = AnchorGenerator(tuple((8 * 2**i,) for i in range(5)), ((1.0,),) * 5)
    images = ImageList(torch.zeros(2, 3, *size), [size, size])
    features = [torch.zeros(2, 1, h, w) for h, w in shapes]
    anchors = generator(images, features)
    boxes, labels = _random_gt(torch.Generator().manual_seed(5), (12, 5), size)
    captured = {}
    stand_in = SimpleNamespace(
        center_sampling_radius=1.5,
        head=SimpleNamespace(compute_loss=lambda t, h, a, m: captured.setdefault("matched", m)),
    )
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    TVFCOS.compute_loss(stand_in, targets, {}, anchors, [h * w for h, w in shapes])

    a_cfg = get_preset("fcos_r50_fpn_torchvision").assign
    loc = make_locations(shapes, (8, 16, 32, 64, 128), a_cfg.location_offset, size)
    centers = (anchors[0][:, :2] + anchors[0][:, 2:]) / 2
    assert torch.equal(loc.points, centers)
    ours = assign(
        loc,
        pad_ground_truth(boxes, labels),
        a_cfg.size_ranges,
        size_range_inclusive=a_cfg.size_range_inclusive,
        center_sampling_radius=a_cfg.center_sampling_radius,
        area_tiebreak_float32=a_cfg.area_tiebreak_float32,
    )
    for i in range(2):
        assert torch.equal(ours.matched_gt[i], captured["matched"][i])
    assert ours.positive.sum() > 20


def test_size_ranges_per_location():
    loc = make_locations(((1, 2), (1, 1)), (8, 16))
    assert size_ranges_per_location(loc, ((0, 64), (64, INF))).tolist() == [[0, 64], [0, 64], [64, INF]]
    with pytest.raises(InputError, match="size ranges"):
        size_ranges_per_location(loc, ((0, 64),))


def test_assign_rejects_bad_boxes_shape():
    bad = GroundTruth(
        boxes=torch.zeros(4, 4),
        labels=torch.zeros(4, dtype=torch.int64),
        valid=torch.ones(4, dtype=torch.bool),
        crowd=torch.zeros(4, dtype=torch.bool),
    )
    with pytest.raises(InputError, match=r"\[B, M, 4\]"):
        assign(GRID, bad, ((0, INF),))


@pytest.mark.parametrize(
    "boxes, labels, match",
    [
        ([torch.tensor([[0.0, 0.0, float("nan"), 4.0]])], [torch.tensor([1])], "NaN"),
        ([torch.tensor([[0.0, 0.0, float("inf"), 4.0]])], [torch.tensor([1])], "infinite"),
        ([torch.zeros(2, 5)], [torch.tensor([1, 2])], r"\[M, 4\]"),
        ([torch.zeros(4)], [torch.tensor([1])], r"\[M, 4\]"),
        ([torch.zeros(2, 4, dtype=torch.int64)], [torch.tensor([1, 2])], "float"),
        ([torch.zeros(2, 4)], [torch.tensor([1])], "labels of image 0"),
        ([torch.zeros(2, 4)], [torch.tensor([1.0, 2.0])], "integer"),
        ([torch.zeros(2, 4), torch.zeros(1, 4)], [torch.tensor([1, 2])], "label tensors"),
    ],
)
def test_pad_ground_truth_rejects_bad_inputs(boxes, labels, match):
    with pytest.raises(InputError, match=match):
        pad_ground_truth(boxes, labels)


def test_pad_ground_truth_layout():
    gt = pad_ground_truth(
        [torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[5.0, 6.0, 7.0, 8.0], [0.0, 0.0, 1.0, 1.0]])],
        [torch.tensor([3]), torch.tensor([1, 2])],
        [torch.tensor([True]), torch.tensor([False, False])],
    )
    assert gt.boxes.shape == (2, 2, 4) and gt.boxes[0, 1].tolist() == [0.0] * 4
    assert gt.labels.tolist() == [[3, 0], [1, 2]]
    assert gt.valid.tolist() == [[True, False], [True, True]]
    assert gt.crowd.tolist() == [[True, False], [False, False]]


_FIELDS = ("labels", "matched_gt", "box_targets", "centerness_targets", "positive", "inside_box", "in_size_range",
           "in_center_region", "candidates", "num_candidates")


def _assert_same(fast, dense) -> None:
    for name in _FIELDS:
        assert torch.equal(getattr(fast, name), getattr(dense, name)), name


@pytest.mark.parametrize("offset, from_image", [("half_stride", False), ("zero", True)])
@pytest.mark.parametrize("inclusive", [True, False])
@pytest.mark.parametrize("radius, rule", [(0.0, "region"), (1.5, "region"), (1.5, "distance"), (0.75, "region")])
@pytest.mark.parametrize("area_offset, tiebreak", [(0.0, False), (1.0, False), (0.0, True)])
def test_matches_the_readable_dense_assignment(offset, from_image, inclusive, radius, rule, area_offset, tiebreak):
    # assign() combines per-row and per-column tests and bit sets; assign_dense() states Sections 3.1-3.2 on
    # dense [B, P, M] tensors. Equal on coordinates on the location grid and on the range boundaries
    # (multiples of 8), duplicate boxes (area ties), a box larger than 1e8 px^2, crowd boxes and padding.
    size = (136, 200)
    loc = make_locations(feature_shapes(size), (8, 16, 32, 64, 128), offset, size if from_image else None)
    generator = torch.Generator().manual_seed(11)
    boxes, labels = _random_gt(generator, (9, 4), size)
    boxes[0][:4] = (boxes[0][:4] / 8).round() * 8
    boxes[0][4] = boxes[0][3]
    boxes[0][5] = torch.tensor([-1e5, -1e5, 1e5, 1e5])
    crowd = [torch.arange(9) == 6, torch.zeros(4, dtype=torch.bool)]
    gt = pad_ground_truth(boxes, labels, crowd)
    ranges = ((0, 32), (32, 64), (64, 128), (128, 256), (256, INF))
    switches = dict(size_range_inclusive=inclusive, center_sampling_radius=radius, center_sampling_rule=rule,
                    area_offset=area_offset, area_tiebreak_float32=tiebreak)
    fast = assign(loc, gt, ranges, **switches)
    _assert_same(fast, assign_dense(loc, gt, ranges, **switches))
    assert (fast.num_candidates > 1).any(), "the scene must contain ambiguous locations"


def test_fast_equals_dense_on_real_boxes(shared_coco):
    # Every switch combination of the presets, on the boxes of 40 real val2017 images at the training resize.
    from fcos_lab.analysis.dataset_boxes import boxes_for_config
    from fcos_lab.analysis.recall_ambiguity import batches
    from fcos_lab.data.coco_annotations import load_coco_annotations
    from fcos_lab.objective import Objective
    from fcos_lab.presets import PRESETS, resolve

    ann = shared_coco / "annotations" / "instances_val2017_lightly128_bboxonly_DERIVED.json"
    data = load_coco_annotations(ann).dataset
    for name in ("fcos_r50_fpn_1x", "fcos_imprv_r50_fpn_1x", "fcos_r50_fpn_torchvision"):
        for convention in ("continuous", "legacy"):
            config = resolve(PRESETS[name], {"data.box_convention": convention})
            objective = Objective.from_config(config)
            padded, _ = boxes_for_config(data, ann, config, crowd="ignore")
            checked = 0
            for padded_size, members in batches(padded, objective.strides, max_images=4)[:10]:
                index = torch.from_numpy(members)
                m = int(padded.valid[index].sum(1).max())
                gt = GroundTruth(padded.boxes[index, :m], padded.labels[index, :m], padded.valid[index, :m],
                                 padded.crowd[index, :m])
                locations = objective.image_locations(padded_size)
                a = objective.assign(locations, gt)
                dense = assign_dense(locations, gt, objective.size_ranges,
                                     size_range_inclusive=objective.size_range_inclusive,
                                     center_sampling_radius=objective.center_sampling_radius,
                                     center_sampling_rule=objective.center_sampling_rule,
                                     area_offset=objective.area_offset,
                                     area_tiebreak_float32=objective.area_tiebreak_float32)
                _assert_same(a, dense)
                checked += len(members)
            assert checked >= 20, (name, convention)


def test_center_sampling_follows_the_authors_arithmetic_at_the_boundary():
    # A box (0, 380, 64, 580.00006103515625): cy = 480.000030517578125 in float32, radius 1.5 on a stride-32
    # level gives r*s = 48. At y = 528, |y - cy| = 47.99997 < 48: inside by torchvision's distance test. The
    # authors (get_sample_region) first round cy + 48 = 528.0000305 to float32: halfway between 528 and
    # 528 + 2^-14, ties to even, 528.0; then require ymax - y = 528 - 528 > 0: background.
    # (The same case as box 10 of val2017 image 17959 under fcos_imprv_r50_fpn_1x, where cy = 480.00003.)
    loc = make_locations(((1, 1),), (32,), offset="zero")
    loc = type(loc)(torch.tensor([[32.0, 528.0]]), loc.strides, loc.level_index, loc.num_per_level, loc.shapes)
    box = torch.tensor([[0.0, 380.0, 64.0, 580.00006103515625]])
    assert ((box[0, 1] + box[0, 3]) / 2).item() == 480.000030517578125
    gt = pad_ground_truth([box], [torch.tensor([0])])
    ranges = ((0.0, INF),)
    region = assign(loc, gt, ranges, center_sampling_radius=1.5, center_sampling_rule="region")
    distance = assign(loc, gt, ranges, center_sampling_radius=1.5, center_sampling_rule="distance")
    assert region.matched_gt.tolist() == [[-1]] and not region.in_center_region.any()
    assert distance.matched_gt.tolist() == [[0]]
    for rule, fast in (("region", region), ("distance", distance)):
        _assert_same(fast, assign_dense(loc, gt, ranges, center_sampling_radius=1.5, center_sampling_rule=rule))


def test_plus_one_areas_of_legacy_boxes_change_the_minimal_area_choice():
    # A = (0, 0, 2, 200): area 2 * 200 = 400, "+1" area 3 * 201 = 603. B = (0, 0, 20, 20.5): area 410,
    # "+1" 21 * 21.5 = 451.5. The location (1, 1) is inside both: plain areas pick A (400 < 410), the
    # authors' "+1" areas pick B (451.5 < 603).
    loc = make_locations(((1, 1),), (8,), offset="zero")
    loc = type(loc)(torch.tensor([[1.0, 1.0]]), loc.strides, loc.level_index, loc.num_per_level, loc.shapes)
    gt = pad_ground_truth([torch.tensor([[0.0, 0.0, 2.0, 200.0], [0.0, 0.0, 20.0, 20.5]])], [torch.tensor([0, 1])])
    for offset, expected in ((0.0, 0), (1.0, 1)):
        fast = assign(loc, gt, ((0.0, INF),), area_offset=offset)
        assert fast.matched_gt.tolist() == [[expected]]
        assert fast.num_candidates.tolist() == [[2]]
        _assert_same(fast, assign_dense(loc, gt, ((0.0, INF),), area_offset=offset))


def test_locations_that_are_no_grid():
    # The same locations in a shuffled order are no row-major grid any more; assign() must notice and
    # give the shuffled version of the grid's answer.
    from fcos_lab.points import Locations

    size = (96, 128)
    loc = make_locations(feature_shapes(size), (8, 16, 32, 64, 128))
    perm = torch.randperm(len(loc.points), generator=torch.Generator().manual_seed(0))
    shuffled = Locations(loc.points[perm], loc.strides[perm], loc.level_index[perm], loc.num_per_level, loc.shapes)
    boxes, labels = _random_gt(torch.Generator().manual_seed(1), (6, 3), size)
    gt = pad_ground_truth(boxes, labels)
    ranges = ((0, 32), (32, 64), (64, 128), (128, 256), (256, INF))
    kwargs = dict(center_sampling_radius=1.5, normalize_by_stride=True)
    grid, other = assign(loc, gt, ranges, **kwargs), assign(shuffled, gt, ranges, **kwargs)
    assert grid.positive.sum() > 10
    for name in ("labels", "matched_gt", "box_targets", "centerness_targets", "num_candidates", "candidates",
                 "inside_box", "in_size_range", "in_center_region"):
        assert torch.equal(getattr(grid, name)[:, perm], getattr(other, name)), name


@pytest.mark.parametrize("num_boxes", [52, 53, 300])
def test_many_boxes(num_boxes):
    # assign() keeps candidate sets as bit sets of 52 boxes per int64 word: 52 boxes fill one word, 53
    # need two, 300 need six. The answer must not depend on it. Random boxes crowd the left half of a
    # 64x96 image; the last box, (50, 2, 96, 62), is the largest (ranked last) and alone on the right half,
    # so it is the matched box there: its rank, num_boxes - 1, lies beyond the first word when M > 52.
    size = (64, 96)
    loc = make_locations(feature_shapes(size), (8, 16, 32, 64, 128))
    boxes, labels = _random_gt(torch.Generator().manual_seed(num_boxes), (num_boxes - 1,), (64, 48))
    boxes = [torch.cat([boxes[0].clamp(max=48.0), torch.tensor([[50.0, 2.0, 96.0, 62.0]])])]
    gt = pad_ground_truth(boxes, [torch.cat([labels[0], torch.tensor([4])])])
    ranges = ((0, 16), (16, 32), (32, 64), (64, 128), (128, INF))
    for tiebreak in (False, True):
        a = assign(loc, gt, ranges, area_tiebreak_float32=tiebreak)
        _assert_same(a, assign_dense(loc, gt, ranges, area_tiebreak_float32=tiebreak))
        assert a.num_candidates.max() > 3
        assert (a.matched_gt == num_boxes - 1).any()
