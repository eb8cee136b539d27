"""The workshop's exercises: each is a function the participant writes, here as the stub they start from.

The workshop notebooks (``notebooks/workshop/``) hold a copy of each stub, character for character
(``tests/workshop/test_notebooks.py`` compares them). A stub raises ``NotImplementedError`` naming its
exercise, which its check (:mod:`fcos_lab.workshop.checks`) reports as "not written yet". The reference
solutions are :mod:`fcos_lab.workshop.solutions`, kept out of the participants' notebooks.

Glossary (as in the whole package): P locations, M ground-truth boxes, K detections, C classes. Boxes are
``[..., 4]`` xyxy in input-image pixels; ltrb distances are ``[..., 4]`` (l*, t*, r*, b*).
"""

from __future__ import annotations

from torch import Tensor

from fcos_lab.points import Locations

# ------------------------------------------------------------------------ 01 · the feature pyramid


def level_locations(height: int, width: int, stride: int) -> Tensor:
    """Exercise 1.1: where the locations of one feature map fall on the input image (Section 3.1).

    The location in row i, column j of a feature map of stride s sits at
    x = floor(s/2) + j*s, y = floor(s/2) + i*s on the input image: near the center of its receptive field.

    Args:
        height, width: the feature map's size H x W.
        stride: its stride s (8 for P3, 16 for P4, ..., 128 for P7).

    Returns:
        A float tensor [H*W, 2] of (x, y), row by row: (row 0, column 0), (row 0, column 1), ...
        (row 0, column W-1), (row 1, column 0), ...
    """
    # your code here
    raise NotImplementedError("exercise 1.1: write level_locations")


def feature_shapes(image_height: int, image_width: int, strides: list[int]) -> list[tuple[int, int]]:
    """Exercise 1.2: the size of each level's feature map for an input image (Section 3.2, FPN).

    Each stride-2 convolution of ResNet and of P6/P7 pads its input, so it rounds a size up: a map of
    stride s over an input of H x W pixels has ceil(H / s) rows and ceil(W / s) columns.

    Args:
        image_height, image_width: the (padded) input size in pixels.
        strides: the stride of each level, e.g. [8, 16, 32, 64, 128] for P3-P7.

    Returns:
        One (rows, columns) pair of ints per stride, in the order of ``strides``.
    """
    # your code here
    raise NotImplementedError("exercise 1.2: write feature_shapes")


# ------------------------------------------------------------------------ 02 · assignment


def ltrb_targets(points: Tensor, boxes: Tensor) -> Tensor:
    """Exercise 2.1: Eq. (1), the distances from every location to the four sides of every box.

    l* = x - x0, t* = y - y0, r* = x1 - x, b* = y1 - y for a location (x, y) and a box (x0, y0, x1, y1).

    Args:
        points: [P, 2] (x, y) of the locations.
        boxes: [M, 4] xyxy ground-truth boxes.

    Returns:
        [P, M, 4]: entry [p, m] holds (l*, t*, r*, b*) of location p and box m.
    """
    # your code here
    raise NotImplementedError("exercise 2.1: write ltrb_targets")


def inside_boxes(ltrb: Tensor) -> Tensor:
    """Exercise 2.2: which locations fall inside which boxes (Section 3.1).

    A location is inside a box when all four distances l*, t*, r*, b* are positive: a location exactly
    on a side (a distance of 0) is not inside.

    Args:
        ltrb: [P, M, 4] distances of Eq. (1) (exercise 2.1).

    Returns:
        [P, M] bool.
    """
    # your code here
    raise NotImplementedError("exercise 2.2: write inside_boxes")


def in_size_range(ltrb: Tensor, size_ranges: Tensor) -> Tensor:
    """Exercise 2.3: the size-range rule of FPN levels (Section 3.2).

    A location of level i may regress a box only when m_{i-1} <= max(l*, t*, r*, b*) <= m_i: the farthest
    side of the box decides its level.

    Args:
        ltrb: [P, M, 4] distances of Eq. (1).
        size_ranges: [P, 2] (m_{i-1}, m_i) of each location's level.

    Returns:
        [P, M] bool.
    """
    # your code here
    raise NotImplementedError("exercise 2.3: write in_size_range")


def in_center_region(points: Tensor, boxes: Tensor, strides: Tensor, radius: float) -> Tensor:
    """Exercise 2.4: center sampling (Table 3, "ctr. sampling").

    Only locations near the center (cx, cy) of a box count as its candidates: |x - cx| < radius * s and
    |y - cy| < radius * s, where s is the stride of the location's level. The radius is in strides (the
    improved FCOS uses 1.5), so the region is larger on coarser levels.

    Args:
        points: [P, 2] (x, y) of the locations.
        boxes: [M, 4] xyxy boxes.
        strides: [P] the stride of each location's level.
        radius: the radius, in strides.

    Returns:
        [P, M] bool.
    """
    # your code here
    raise NotImplementedError("exercise 2.4: write in_center_region")


def minimal_area_box(candidates: Tensor, boxes: Tensor) -> Tensor:
    """Exercise 2.5: an ambiguous location regresses the box of minimal area (Section 3.1).

    Args:
        candidates: [P, M] bool, True where box m may be regressed by location p.
        boxes: [M, 4] xyxy boxes; the area of a box is (x1 - x0) * (y1 - y0).

    Returns:
        [P] int64: for each location the index of its candidate box of smallest area, the first of them
        (smallest index) when two areas are equal, and -1 when the location has no candidate (background).
    """
    # your code here
    raise NotImplementedError("exercise 2.5: write minimal_area_box")


def assign_locations(locations: Locations, boxes: Tensor, size_ranges: list[tuple[float, float]],
                     radius: float) -> Tensor:
    """Exercise 2.6: the whole assignment, from your functions 2.1-2.5.

    A box is a candidate of a location when the location is inside it, in its level's size range and (when
    radius > 0) in its center region; among its candidates a location takes the box of minimal area.

    Args:
        locations: the locations of all levels: ``locations.points`` [P, 2], ``locations.strides`` [P],
            ``locations.level_index`` [P] (0 for the first level).
        boxes: [M, 4] xyxy boxes.
        size_ranges: (m_{i-1}, m_i) of each level, e.g. [(0, 64), (64, 128), ...].
        radius: center-sampling radius in strides; 0 turns center sampling off.

    Returns:
        [P] int64: the box each location regresses, -1 for background.
    """
    # your code here
    raise NotImplementedError("exercise 2.6: write assign_locations")


# ------------------------------------------------------------------------ 03 · targets and box losses


def centerness_target(ltrb: Tensor) -> Tensor:
    """Exercise 3.1: Eq. (3), the center-ness target of a location from its l*, t*, r*, b*.

    centerness* = sqrt( min(l*, r*) / max(l*, r*)  *  min(t*, b*) / max(t*, b*) )

    Args:
        ltrb: [..., 4] positive distances.

    Returns:
        [...] values in [0, 1]: 1 at the center of the box, towards 0 near its sides.
    """
    # your code here
    raise NotImplementedError("exercise 3.1: write centerness_target")


def iou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Exercise 3.2: the IoU loss of UnitBox, -ln(IoU), between two boxes given from the same location.

    Both boxes contain the location, so the intersection is (min(l, l*) + min(r, r*)) wide and
    (min(t, t*) + min(b, b*)) high; the union is the sum of the two areas minus the intersection.

    Args:
        pred, target: [..., 4] positive (l, t, r, b) distances from the same location.

    Returns:
        [...] the loss of each pair.
    """
    # your code here
    raise NotImplementedError("exercise 3.2: write iou_loss")


def giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Exercise 3.3: the GIoU loss (Table 3's improvements), 1 - GIoU.

    GIoU = IoU - (C - U) / C, where U is the union and C the area of the smallest box enclosing both:
    (max(l, l*) + max(r, r*)) wide and (max(t, t*) + max(b, b*)) high.

    Args:
        pred, target: [..., 4] positive (l, t, r, b) distances from the same location.

    Returns:
        [...] the loss of each pair.
    """
    # your code here
    raise NotImplementedError("exercise 3.3: write giou_loss")


# ------------------------------------------------------------------------ 04 · training


def focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Exercise 4.1: the sigmoid focal loss of RetinaNet, summed (Eq. 2's L_cls before dividing by N_pos).

    With p = sigmoid(logit): a positive (target 1) costs -alpha * (1 - p)^gamma * ln(p), a negative
    (target 0) costs -(1 - alpha) * p^gamma * ln(1 - p).

    Args:
        logits: [N, C] classification logits.
        targets: [N, C] 0/1 float targets (one-hot of the class; all zeros on background).
        alpha, gamma: the focal loss's weights.

    Returns:
        A scalar: the sum over all N x C entries.
    """
    # your code here
    raise NotImplementedError("exercise 4.1: write focal_loss")


# ------------------------------------------------------------------------ 05 · inference


def decode_boxes(points: Tensor, ltrb: Tensor) -> Tensor:
    """Exercise 5.1: the inverse of Eq. (1), boxes from a location and its predicted distances.

    Args:
        points: [P, 2] (x, y) of the locations.
        ltrb: [P, 4] predicted (l, t, r, b).

    Returns:
        [P, 4] xyxy boxes.
    """
    # your code here
    raise NotImplementedError("exercise 5.1: write decode_boxes")


def ranking_scores(cls_logits: Tensor, centerness_logits: Tensor) -> Tensor:
    """Exercise 5.2: the score that ranks detections (Section 3.3): classification x center-ness.

    Both branches output logits; their probabilities are their sigmoids.

    Args:
        cls_logits: [P, C] classification logits.
        centerness_logits: [P] center-ness logits.

    Returns:
        [P, C] scores in [0, 1].
    """
    # your code here
    raise NotImplementedError("exercise 5.2: write ranking_scores")


def class_aware_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Exercise 5.3: greedy non-maximum suppression within each class.

    Take the boxes by decreasing score; keep a box unless a kept box of the same class overlaps it with
    IoU > iou_threshold. (``torchvision.ops.box_iou`` gives the IoU of two sets of boxes.)

    Args:
        boxes: [K, 4] xyxy; scores: [K]; labels: [K] int64 class indices.
        iou_threshold: e.g. 0.6.

    Returns:
        [N] int64 indices of the kept boxes, by decreasing score.
    """
    # your code here
    raise NotImplementedError("exercise 5.3: write class_aware_nms")


# ------------------------------------------------------------------------ 06 · error analysis


def match_detections(det_boxes: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Exercise 6.1: COCO's greedy matching of one image's detections of one class to its boxes.

    The detections come sorted by decreasing score. In that order, each takes the box with the highest
    IoU among the boxes no earlier detection took, if that IoU is >= iou_threshold; otherwise it takes
    nothing and is a false positive.

    Args:
        det_boxes: [K, 4] xyxy, best score first.
        gt_boxes: [M, 4] xyxy.
        iou_threshold: 0.5 for AP50.

    Returns:
        [K] int64: the box each detection matched, -1 for none.
    """
    # your code here
    raise NotImplementedError("exercise 6.1: write match_detections")


def error_types(own_class_iou: Tensor, other_class_iou: Tensor, taken_own_class_iou: Tensor) -> list[str]:
    """Exercise 6.2: the TIDE error type of each unmatched detection (false positive).

    With t_f = 0.5 and t_b = 0.1, a detection gets the first type that applies:

    1. "loc": its highest IoU with a box of its own class is in [t_b, t_f];
    2. "cls": its highest IoU with a box of another class is >= t_f;
    3. "dupe": its highest IoU with a box of its class that another detection already matched is >= t_f;
    4. "bkg": all its IoUs are <= t_b (own class and other classes);
    5. "both": anything else.

    Args:
        own_class_iou: [K] highest IoU with a box of the detection's class.
        other_class_iou: [K] highest IoU with a box of another class.
        taken_own_class_iou: [K] highest IoU with a box of its class that was matched to another detection.

    Returns:
        K strings among "loc", "cls", "dupe", "bkg", "both".
    """
    # your code here
    raise NotImplementedError("exercise 6.2: write error_types")
