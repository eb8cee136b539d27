"""Positive locations and ambiguous samples of one batch (fcos_lab.analysis.recall_ambiguity), by hand.

Unless a test says otherwise the grid is one 4x4 level of stride 8 with the paper's offset, so the
locations sit at x, y in {4, 12, 20, 28} (floor(8/2) + 8k), flattened row-major: index = 4 * row + col.
Grids in comments are written row by row (y = 4, 12, 20, 28), columns x = 4, 12, 20, 28.
"""

import math

import torch

from fcos_lab.analysis.recall_ambiguity import tally_assignment
from fcos_lab.points import make_locations
from fcos_lab.targets import assign, pad_ground_truth

INF = math.inf
GRID = make_locations(((4, 4),), (8,))


def _gt(boxes_per_image, labels_per_image):
    boxes = [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes_per_image]
    labels = [torch.tensor(lab, dtype=torch.int64) for lab in labels_per_image]
    return pad_ground_truth(boxes, labels)


def test_two_images_with_same_and_different_class_overlaps():
    # Image 0, one size range (0, inf), so every location strictly inside a box is a candidate:
    #   A = (0, 0, 16, 16) class 0, area 256: x, y in {4, 12}          -> points 0, 1, 4, 5
    #   B = (8, 8, 26, 26) class 0, area 324: x, y in {12, 20}         -> points 5, 6, 9, 10
    #   C = (0, 0, 30, 8)  class 1, area 240: y = 4, x in {4, ..., 28} -> points 0, 1, 2, 3
    # Candidates per location (minimal area regressed: C < A < B):
    #   C+A  C+A  C    C        ambiguous, diff. class at points 0 and 1 (A is class 0, C class 1)
    #   A    A+B  B    .        ambiguous, same class at point 5 (A and B both class 0)
    #   .    B    B    .
    #   .    .    .    .
    # 9 positive locations, 3 ambiguous, 2 of them of different classes. Pairs (location, candidate):
    # 4 + 4 + 4 = 12, of which the ambiguous locations hold 2 + 2 + 2 = 6, the different-class ones 4.
    # Image 1: E = (0, 0, 16, 16) class 2 alone (plus two padding slots): points 0, 1, 4, 5, no ambiguity.
    gt = _gt([[(0, 0, 16, 16), (8, 8, 26, 26), (0, 0, 30, 8)], [(0, 0, 16, 16)]], [[0, 0, 1], [2]])
    tally = tally_assignment(assign(GRID, gt, ((0, INF),)), GRID, gt)

    assert tally.image_index.tolist() == [0] * 9 + [1] * 4
    assert tally.point_index.tolist() == [0, 1, 2, 3, 4, 5, 6, 9, 10] + [0, 1, 4, 5]
    assert tally.matched_gt.tolist() == [2, 2, 2, 2, 0, 0, 1, 1, 1] + [0, 0, 0, 0]
    assert tally.level_index.tolist() == [0] * 13
    assert tally.counts() == {
        "positive_locations": 13,
        "ambiguous_locations": 3,
        "ambiguous_diff_class_locations": 2,
        "positive_pairs": 16,
        "ambiguous_pairs": 6,
        "ambiguous_diff_class_pairs": 4,
    }


def test_fpn_levels_separate_overlapping_boxes():
    # Table 2's point: a big box and a small box inside it, of different classes.
    #   big = (0, 0, 32, 32) class 0, small = (2, 2, 14, 14) class 1.
    # P4 alone (stride 16, locations (8, 8), (24, 8), (8, 24), (24, 24), range (0, inf)): all four are
    # in the big box, and (8, 8) is in the small one too -> 4 positive, 1 ambiguous of different classes,
    # regressing the small box (area 144 < 1024); pairs 5, ambiguous pairs 2.
    gt = _gt([[(0, 0, 32, 32), (2, 2, 14, 14)]], [[0, 1]])
    p4 = make_locations(((2, 2),), (16,))
    tally = tally_assignment(assign(p4, gt, ((0, INF),)), p4, gt)
    assert tally.matched_gt.tolist() == [1, 0, 0, 0]
    assert (tally.positive_locations, tally.ambiguous_locations, tally.ambiguous_diff_class_locations) == (4, 1, 1)
    assert (tally.positive_pairs, tally.ambiguous_pairs, tally.ambiguous_diff_class_pairs) == (5, 2, 2)

    # With two levels, stride 8 in (0, 12) and stride 16 in (12, inf): on stride 8 the big box reaches
    # max(l*, t*, r*, b*) >= 20 (at x = 12: l* = 12, r* = 20), out of range, while the small box's four
    # locations (4, 4), (12, 4), (4, 12), (12, 12) reach 10. On stride 16, the small box reaches 6 at
    # (8, 8), out of range, and the big box 24 at all four. No location is ambiguous any more.
    fpn = make_locations(((4, 4), (2, 2)), (8, 16))
    tally = tally_assignment(assign(fpn, gt, ((0, 12), (12, INF))), fpn, gt)
    assert tally.point_index.tolist() == [0, 1, 4, 5, 16, 17, 18, 19]
    assert tally.matched_gt.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert tally.level_index.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert (tally.positive_locations, tally.ambiguous_locations, tally.ambiguous_diff_class_locations) == (8, 0, 0)
    assert (tally.positive_pairs, tally.ambiguous_pairs, tally.ambiguous_diff_class_pairs) == (8, 0, 0)


def test_no_ground_truth_counts_nothing():
    gt = _gt([[]], [[]])
    tally = tally_assignment(assign(GRID, gt, ((0, INF),)), GRID, gt)
    assert tally.image_index.shape == tally.matched_gt.shape == tally.level_index.shape == (0,)
    assert set(tally.counts().values()) == {0}
