"""Every preset and every paper-table row trains two iterations and evaluates on tiny synthetic data."""

from __future__ import annotations

import pytest

from fcos_lab.data.synthetic import make_synthetic_coco
from fcos_lab.paper import TABLES
from fcos_lab.presets import PRESETS, resolve
from fcos_lab.train import train

TINY = [
    "input.min_size=96", "input.train_min_size=[96,96]", "input.max_size=128", "train.max_iters=2",
    "train.batch_size=2", "train.warmup_iters=1", "train.log_every=1", "train.num_workers=0",
    "train.checkpoint_every=100", "postprocess.score_thresh=0.0",
]
SMALL_BACKBONE = ["model.backbone=resnet18", "model.fpn_channels=32", "model.pretrained_backbone=none"]
ROWS = [row for rows in TABLES.values() for row in rows if row.preset]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    data = make_synthetic_coco(root, num_train=4, num_val=2, image_size=96, seed=0)
    return [f"data.train_ann={data.train_ann}", f"data.train_images={data.train_images}",
            f"data.val_ann={data.val_ann}", f"data.val_images={data.val_images}"]


def _run(config, tmp_path):
    result = train(config, tmp_path / "run", device="cpu", progress=False)
    assert result.iterations == 2
    assert 0.0 <= result.metrics["AP"] <= 1.0
    return result


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_trains_and_evaluates(name, tiny_data, tmp_path):
    fpn = [] if PRESETS[name].model.fpn_channels <= 64 else ["model.fpn_channels=32"]
    _run(resolve(name, TINY + tiny_data + fpn), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=[f"{r.table}:{r.row}" for r in ROWS])
def test_every_paper_row_trains_and_evaluates(row, tiny_data, tmp_path):
    config = resolve(row.preset, list(row.overrides) + SMALL_BACKBONE + TINY + tiny_data + list(row.eval_overrides))
    _run(config, tmp_path)
