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
    resize_scale,
)
from fcos_lab.errors import InputError


@pytest.mark.parametrize(
    "height, width, numerator, denominator",
    [
        # Shorter side to 800 unless the longer side would pass 1333:
        (480, 640, 800, 480),  # 1.6667; the longer side becomes 1066.7 < 1333
        (600, 2000, 1333, 2000),  # 800/600 = 1.333 would make 2667 > 1333: 0.6665 instead
        (800, 800, 800, 800),  # 1
        (1000, 500, 1333, 1000),  # portrait: 800/500 = 1.6 would make 1600 > 1333: 1.333 instead
    ],
)
def test_resize_scale(height, width, numerator, denominator):
    got = resize_scale(height, width, 800, 1333)
    assert got == pytest.approx(numerator / denominator, rel=1e-6)
    # Bit for bit torchvision's eager arithmetic: Python floats (its float32 branch is for TorchScript only).
    assert got == numerator / denominator


def test_resize_image_sizes():
    # 480x640 * 1.6667 -> 800x1066 (floor of 1066.67); 600x2000 * 0.6665 -> 399x1333.
    assert resize_image(torch.rand(3, 480, 640), 800, 1333).shape == (3, 800, 1066)
    assert resize_image(torch.rand(3, 600, 2000), 800, 1333).shape == (3, 399, 1333)


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
    batch = preprocess(images, 800, 1333, 32)
    _, channels, height, width = batch.tensors.shape
    assert channels == 3 and height % 32 == 0 and width % 32 == 0
    assert batch.original_sizes == tuple(sizes)
    for (h, w), (rh, rw) in zip(sizes, batch.image_sizes):
        scale = resize_scale(h, w, 800, 1333)
        assert (rh, rw) == (int(h * scale), int(w * scale))
        assert min(rh, rw) <= 800 and max(rh, rw) <= 1333
    # Padded to the largest image, rounded up to the next multiple of 32.
    max_h = max(h for h, _ in batch.image_sizes)
    max_w = max(w for _, w in batch.image_sizes)
    assert max_h <= height < max_h + 32 and max_w <= width < max_w + 32


def test_preprocess_matches_torchvision_transform():
    # The resize is torchvision's GeneralizedRCNNTransform bit for bit (same sizes, same pixels).
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 97, 131, generator=generator), torch.rand(3, 140, 90, generator=generator)]
    transform = GeneralizedRCNNTransform(200, 333, list(IMAGENET_MEAN), list(IMAGENET_STD)).eval()
    expected, _ = transform(images)
    batch = preprocess(images, 200, 333, 32)
    assert list(batch.image_sizes) == [tuple(s) for s in expected.image_sizes]
    torch.testing.assert_close(batch.tensors, expected.tensors)
    # COCO val2017 000000000285 is 640x586: 586 * (800 / 586) reaches 800 in double precision (torchvision
    # in eager mode) but 799.99996 in float32, which once made fcos_lab's image one column narrower.
    image = [torch.rand(3, 640, 586, generator=generator)]
    expected, _ = GeneralizedRCNNTransform(800, 1333, list(IMAGENET_MEAN), list(IMAGENET_STD)).eval()(image)
    batch = preprocess(image, 800, 1333, 32)
    assert batch.image_sizes == ((873, 800),) and expected.image_sizes == [(873, 800)]
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
