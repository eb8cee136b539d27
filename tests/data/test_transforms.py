"""Image and box transforms (fcos_lab.data.transforms, Section 4 "Training Details")."""

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from fcos_lab.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_boxes,
    check_image,
    hflip,
    normalize,
    pad_batch,
    preprocess,
    resize_boxes,
    resize_image,
    resized_size,
)
from fcos_lab.errors import InputError


@pytest.mark.parametrize(
    "height, width, official, torchvision",
    [
        # 480x640: the shorter side to 800, the longer 800 * 640 / 480 = 1066.67 -> 1066 (both rules).
        (480, 640, (800, 1066), (800, 1066)),
        # 437x611 (the defect of issue #16): torchvision's eager scale is the double 800 / 437 =
        # 1.8306636155606408 and 437 * it = 800.0 exactly, so 800; the long side 611 * it = 1118.54 -> 1118.
        # The old float32 scale 1.83066356 gave 437 * it = 799.99998 -> 799. The authors: 800, int(1118.54).
        (437, 611, (800, 1118), (800, 1118)),
        (620, 748, (800, 965), (800, 965)),
        (640, 586, (873, 800), (873, 800)),  # val2017 image 285: the float32 scale gave 873 x 799
        (365, 354, (824, 800), (824, 800)),
        # 600x2000: 800 / 600 would make the long side 2667 > 1333. torchvision: scale 1333 / 2000 = 0.6665,
        # 600 * 0.6665 = 399.9 -> 399. The authors: size = round(1333 * 600 / 2000) = round(399.9) = 400,
        # then the long side int(400 * 2000 / 600) = int(1333.33) = 1333.
        (600, 2000, (400, 1333), (399, 1333)),
        # 1000x500 (portrait): 1600 > 1333. torchvision: scale 1.333 -> (1333, 666.5 -> 666). The authors:
        # size = round(1333 * 500 / 1000) = round(666.5) = 666 (round half to even), long int(666 * 2) = 1332.
        (1000, 500, (1332, 666), (1333, 666)),
        # Already at the target: unchanged by both.
        (800, 800, (800, 800), (800, 800)),
        (800, 1200, (800, 1200), (800, 1200)),
    ],
)
def test_resized_size_by_hand(height, width, official, torchvision):
    assert resized_size(height, width, 800, 1333, "official") == official
    assert resized_size(height, width, 800, 1333, "torchvision") == torchvision
    assert resize_image(torch.rand(3, height, width), 800, 1333, "official").shape == (3, *official)
    assert resize_image(torch.rand(3, height, width), 800, 1333, "torchvision").shape == (3, *torchvision)


def test_resized_size_rejects_an_unknown_rule():
    with pytest.raises(InputError, match="resize rule"):
        resized_size(10, 10, 8, 13, "nearest")


def _authors_get_size(width: int, height: int, min_size: int, max_size: int) -> tuple[int, int]:
    """``Resize.get_size`` of the FCOS / maskrcnn-benchmark code, restated as the reference (returns (h, w))."""
    size = min_size
    min_original, max_original = float(min(width, height)), float(max(width, height))
    if max_original / min_original * size > max_size:
        size = int(round(max_size * min_original / max_original))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _many_sizes() -> list[tuple[int, int]]:
    generator = torch.Generator().manual_seed(5)
    sizes = torch.randint(1, 3000, (300, 2), generator=generator).tolist()
    return [tuple(s) for s in sizes] + [(1, 1), (1, 4000), (4000, 1), (799, 1333), (800, 1334), (2, 3)]


def test_official_rule_is_the_authors_get_size_on_many_sizes():
    for height, width in _many_sizes():
        for min_size, max_size in ((800, 1333), (640, 1333), (128, 192)):
            expected = _authors_get_size(width, height, min_size, max_size)
            assert resized_size(height, width, min_size, max_size, "official") == expected, (height, width)


def test_torchvision_rule_is_generalized_rcnn_transform_on_many_sizes():
    # Sizes only (pixels are checked below): the resize of a tiny constant image costs little.
    transform = GeneralizedRCNNTransform(800, 1333, list(IMAGENET_MEAN), list(IMAGENET_STD)).eval()
    for height, width in _many_sizes()[:120]:
        expected = transform([torch.zeros(3, height, width)])[0].image_sizes[0]
        assert resized_size(height, width, 800, 1333, "torchvision") == tuple(expected), (height, width)


def test_resize_boxes_by_hand():
    # (h, w) 100x200 -> 200x300: x scales by 1.5, y by 2: (10, 10, 20, 20) -> (15, 20, 30, 40).
    boxes = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    assert resize_boxes(boxes, (100, 200), (200, 300)).tolist() == [[15.0, 20.0, 30.0, 40.0]]


def test_hflip_by_hand_and_twice_is_identity():
    # Width 10: x' = 10 - x, so (1, 2, 4, 5) -> (10 - 4, 2, 10 - 1, 5) = (6, 2, 9, 5).
    image = torch.rand(3, 6, 10)
    boxes = torch.tensor([[1.0, 2.0, 4.0, 5.0], [0.0, 0.0, 10.0, 6.0]])
    flipped_image, flipped_boxes = hflip(image, boxes)
    assert flipped_boxes.tolist() == [[6.0, 2.0, 9.0, 5.0], [0.0, 0.0, 10.0, 6.0]]
    assert torch.equal(flipped_image[..., 0], image[..., -1])
    twice_image, twice_boxes = hflip(flipped_image, flipped_boxes)
    assert torch.equal(twice_image, image)
    assert torch.equal(twice_boxes, boxes)
    # No boxes is fine.
    assert hflip(image, torch.zeros(0, 4))[1].shape == (0, 4)
    # "Legacy" boxes end at x + w - 1: maskrcnn-benchmark maps x to W - 1 - x, so (1, 2, 4, 5) -> (5, 2, 8, 5).
    assert hflip(image, boxes[:1], pixel_offset=1.0)[1].tolist() == [[5.0, 2.0, 8.0, 5.0]]


def test_normalize():
    image = torch.ones(3, 2, 2)
    out = normalize(image)
    for c in range(3):
        assert out[c, 0, 0].item() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rel=1e-6)


def test_pad_batch():
    # 3x5x7 and 3x33x2 -> padded to max (33, 7) rounded up to 32: (64, 32).
    a, b = torch.ones(3, 5, 7), torch.full((3, 33, 2), 2.0)
    batch = pad_batch([a, b])
    assert batch.shape == (2, 3, 64, 32)
    assert torch.equal(batch[0, :, :5, :7], a)
    assert batch[0, :, 5:].abs().sum() == 0 and batch[0, :, :, 7:].abs().sum() == 0
    assert torch.equal(batch[1, :, :33, :2], b)


@pytest.mark.parametrize("sizes", [[(480, 640)], [(480, 640), (600, 2000), (333, 517)], [(100, 150), (150, 100)]])
def test_preprocess_sizes_multiple_of_32(sizes):
    images = [torch.rand(3, h, w) for h, w in sizes]
    batch = preprocess(images, 800, 1333, 32, resize_rule="official")
    _, channels, height, width = batch.tensors.shape
    assert channels == 3 and height % 32 == 0 and width % 32 == 0
    assert batch.original_sizes == tuple(sizes)
    for (h, w), (rh, rw) in zip(sizes, batch.image_sizes):
        assert (rh, rw) == resized_size(h, w, 800, 1333, "official")
        assert min(rh, rw) <= 800 and max(rh, rw) <= 1333
    # Padded to the largest image, rounded up to the next multiple of 32.
    max_h = max(h for h, _ in batch.image_sizes)
    max_w = max(w for _, w in batch.image_sizes)
    assert max_h <= height < max_h + 32 and max_w <= width < max_w + 32


@pytest.mark.parametrize("sizes", [[(97, 131), (140, 90)], [(437 // 4, 611 // 4), (155, 187)]])
def test_preprocess_matches_torchvision_transform(sizes):
    # The "torchvision" rule is GeneralizedRCNNTransform bit for bit (same sizes, same pixels).
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, h, w, generator=generator) for h, w in sizes]
    transform = GeneralizedRCNNTransform(200, 333, list(IMAGENET_MEAN), list(IMAGENET_STD)).eval()
    expected, _ = transform(images)
    batch = preprocess(images, 200, 333, 32, resize_rule="torchvision")
    assert list(batch.image_sizes) == [tuple(s) for s in expected.image_sizes]
    torch.testing.assert_close(batch.tensors, expected.tensors)


@pytest.mark.parametrize(
    "images, match",
    [
        ([], "non-empty list"),
        (torch.rand(3, 4, 4), "non-empty list"),
        ([torch.rand(1, 4, 4)], r"\[3, H, W\]"),
        ([torch.zeros(3, 4, 4, dtype=torch.uint8)], "floating-point"),
        ([torch.rand(3, 0, 4)], "empty image"),
        (["image.png"], "torch.Tensor"),
    ],
)
def test_preprocess_rejects_bad_images(images, match):
    with pytest.raises(InputError, match=match):
        preprocess(images)


def test_check_image_and_boxes():
    check_image(torch.rand(3, 2, 2))
    check_boxes(torch.zeros(0, 4))
    with pytest.raises(InputError, match=r"\[M, 4\]"):
        check_boxes(torch.zeros(2, 5))
    with pytest.raises(InputError, match="floating-point"):
        check_boxes(torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(InputError, match="box 1"):
        check_boxes(torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, float("nan"), 1.0, 1.0]]))


def test_official_rule_gives_the_paper_sizes_on_every_val2017_image():
    # Section 4: shorter side 800, longer side <= 1333. The authors' rule gives exactly that on val2017, except
    # that where the longer side would pass 1333 the shorter becomes round(1333 * short / long), and rounding
    # up can put the longer side one pixel over: 189 x 640 -> round(393.66) = 394, int(394 * 640 / 189) = 1334.
    import json

    from tests.conftest import require_shared

    captions = require_shared("coco", "annotations", "captions_val2017.json")
    images = json.loads(captions.read_text())["images"]
    for image in images:
        height, width = image["height"], image["width"]
        new_h, new_w = resized_size(height, width, 800, 1333, "official")
        short, long = min(height, width), max(height, width)
        if long / short * 800 > 1333:
            assert min(new_h, new_w) == round(1333 * short / long) and max(new_h, new_w) <= 1334, image
        else:
            assert min(new_h, new_w) == 800 and max(new_h, new_w) <= 1333, image
    assert resized_size(189, 640, 800, 1333, "official") == (394, 1334)
    differ = sum(resized_size(i["height"], i["width"], 800, 1333, "official")
                 != resized_size(i["height"], i["width"], 800, 1333, "torchvision") for i in images)
    assert differ == 344  # the images on which torchvision's floor(side * scale) differs (module docstring)
