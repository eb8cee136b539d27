"""fcos_lab with the ``fcos_r50_fpn_torchvision`` preset reproduces torchvision's FCOS exactly.

Same random weights (copied by ``from_torchvision``), same raw images of several sizes (so both resize
them), same targets: detections must agree to 1e-2 px / 1e-5 in score with equal labels, and the three
losses to 1e-5 relative. The sizes include ones where a float32 scale made the shorter side 799
(437 x 611, 620 x 748, ...); the resized size agrees on every distinct image size of COCO val2017, and
the detections on a dozen real val2017 photographs of different sizes.
"""

import json

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from fcos_lab.data.coco import load_image
from fcos_lab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, resize_boxes, resized_size
from fcos_lab.interop.compare import detections_mismatch
from fcos_lab.interop.torchvision import from_torchvision
from fcos_lab.predict import detect, preprocess_images
from fcos_lab.targets import pad_ground_truth
from fcos_lab.train import compute_loss
from tests.conftest import require_shared

SIZES = [(480, 640), (800, 1000), (600, 520), (437, 611), (620, 748), (498, 259), (365, 354)]


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    tv = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None)
    # A random head gives every location the prior score (0.07 after sqrt), below torchvision's 0.2:
    # spread the logits so that some locations clear the threshold and the boxes vary in size.
    head = tv.head
    with torch.no_grad():
        nn.init.normal_(head.classification_head.cls_logits.weight, std=0.05)
        nn.init.uniform_(head.classification_head.cls_logits.bias, -3.0, -0.5)
        nn.init.normal_(head.regression_head.bbox_reg.weight, std=0.05)
        nn.init.constant_(head.regression_head.bbox_reg.bias, 2.0)
        nn.init.normal_(head.regression_head.bbox_ctrness.weight, std=0.05)
    tv.eval()
    ours, config = from_torchvision(tv)
    return tv, ours, config


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, h, w, generator=generator) for h, w in SIZES]


def _targets(generator: torch.Generator) -> list[dict]:
    targets = []
    for h, w in SIZES:
        n = 6
        xy = torch.rand(n, 2, generator=generator) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(n, 2, generator=generator) * torch.tensor([w * 0.5, h * 0.5]) + 8
        boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([w - 1.0, h - 1.0]))], dim=1)
        labels = torch.randint(1, 91, (n,), generator=generator)
        targets.append({"boxes": boxes, "labels": labels})
    return targets


def _assert_same_detections(expected, got, min_total: int) -> None:
    # One image at a time: a batch pads every image to the largest, and both libraries then sum GroupNorm
    # statistics over more padding, in different orders (NHWC and folded BatchNorm here, NCHW there).
    for number, (exp, det) in enumerate(zip(expected, got, strict=True)):
        problem = detections_mismatch(exp, det, score_tol=1e-5, box_tol=1e-2)
        assert problem is None, f"image {number}: {problem}"
    total = sum(len(exp["scores"]) for exp in expected)
    assert total > min_total, "the seeded head must produce detections for the comparison to mean anything"


def test_detections_match_torchvision(models, images):
    tv, ours, config = models
    with torch.no_grad():
        expected = [tv([image])[0] for image in images]
    batch = preprocess_images(images, config)
    assert list(batch.image_sizes) == [resized_size(h, w, 800, 1333, "torchvision") for h, w in SIZES]
    _assert_same_detections(expected, [detect(ours, config, [image])[0] for image in images], 50)


def test_resized_size_on_every_val2017_image_size():
    # The official image list (captions_val2017.json): 5,000 images, a few hundred distinct sizes.
    captions = require_shared("coco", "annotations", "captions_val2017.json")
    sizes = sorted({(image["height"], image["width"]) for image in json.loads(captions.read_text())["images"]})
    assert len(sizes) > 500
    transform = GeneralizedRCNNTransform(800, 1333, list(IMAGENET_MEAN), list(IMAGENET_STD)).eval()
    mismatched = []
    for height, width in sizes:
        expected = tuple(transform([torch.zeros(3, height, width)])[0].image_sizes[0])
        if resized_size(height, width, 800, 1333, "torchvision") != expected:
            mismatched.append(((height, width), expected))
    assert not mismatched, f"{len(mismatched)} of {len(sizes)} sizes differ, e.g. {mismatched[:5]}"


@pytest.mark.slow
def test_detections_match_torchvision_on_real_photographs(models):
    # A dozen val2017 photographs, each of another size, through both models end to end.
    tv, ours, config = models
    folder = require_shared("coco", "images", "val2017")
    by_size: dict[tuple[int, int], torch.Tensor] = {}
    for path in sorted(folder.glob("*.jpg")):
        image = load_image(path)
        by_size.setdefault(tuple(image.shape[-2:]), image)
        if len(by_size) == 12:
            break
    images = list(by_size.values())
    assert len(images) == 12
    with torch.no_grad():
        expected = [tv([image])[0] for image in images]
    got = [detect(ours, config, [image])[0] for image in images]
    _assert_same_detections(expected, got, 100)


def test_losses_match_torchvision(models, images):
    tv, ours, config = models
    targets = _targets(torch.Generator().manual_seed(2))
    tv.train()
    for module in tv.modules():  # same frozen statistics as fcos_lab's FrozenBatchNorm2d
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    try:
        with torch.no_grad():  # the loss values only: no activations kept for a backward pass
            expected = tv(images, [dict(t) for t in targets])
    finally:
        tv.eval()
    batch = preprocess_images(images, config)
    boxes = [resize_boxes(t["boxes"], o, s) for t, o, s in zip(targets, batch.original_sizes, batch.image_sizes)]
    gt = pad_ground_truth(boxes, [t["labels"] for t in targets])
    with torch.no_grad():
        got = compute_loss(ours(batch.tensors), gt, config)
    pairs = {"loss_cls": "classification", "loss_box": "bbox_regression", "loss_centerness": "bbox_ctrness"}
    for ours_key, tv_key in pairs.items():
        torch.testing.assert_close(got[ours_key], expected[tv_key], rtol=1e-5, atol=0)
