"""fcos_lab with the ``fcos_r50_fpn_torchvision`` preset reproduces torchvision's FCOS exactly.

Same random weights (copied by ``from_torchvision``), same raw images of several sizes (so both resize
them), same targets: detections must agree to 1e-3 px / 1e-5 in score with equal labels, and the three
losses to 1e-5 relative.
"""

import pytest
import torch
import torchvision
from torch import nn

from fcos_lab.data.transforms import preprocess, resize_boxes
from fcos_lab.interop.torchvision import from_torchvision
from fcos_lab.predict import detect
from fcos_lab.targets import pad_ground_truth
from fcos_lab.train import compute_loss

SIZES = [(480, 640), (800, 1000), (600, 520)]


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


def test_detections_match_torchvision(models, images):
    tv, ours, config = models
    with torch.no_grad():
        expected = tv(images)
    got = detect(ours, config, images)
    total = 0
    for exp, det in zip(expected, got):
        assert len(det.scores) == len(exp["scores"])
        total += len(det.scores)
        torch.testing.assert_close(det.boxes, exp["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(det.scores, exp["scores"], atol=1e-5, rtol=0)
        assert torch.equal(det.labels, exp["labels"])
    assert total > 50, "the seeded head must produce detections for the comparison to mean anything"


def test_losses_match_torchvision(models, images):
    tv, ours, config = models
    targets = _targets(torch.Generator().manual_seed(2))
    tv.train()
    for module in tv.modules():  # same frozen statistics as fcos_lab's FrozenBatchNorm2d
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    try:
        expected = tv(images, [dict(t) for t in targets])
    finally:
        tv.eval()
    batch = preprocess(images, config.input.min_size, config.input.max_size)
    boxes = [resize_boxes(t["boxes"], o, s) for t, o, s in zip(targets, batch.original_sizes, batch.image_sizes)]
    gt = pad_ground_truth(boxes, [t["labels"] for t in targets])
    got = compute_loss(ours(batch.tensors), gt, config)
    pairs = {"loss_cls": "classification", "loss_box": "bbox_regression", "loss_centerness": "bbox_ctrness"}
    for ours_key, tv_key in pairs.items():
        torch.testing.assert_close(got[ours_key], expected[tv_key], rtol=1e-5, atol=0)
