"""The demo preset measures what it claims: every COCO size bucket populated, several positives per box.

Issue #21: at 128 px the demo's validation split held one COCO "large" object (APl and ARl measured on it
alone), and its size ranges, divided by 4, gave a box about 3 positive locations where the paper's ranges
give COCO boxes about 9. These tests keep the preset from sliding back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fcos_lab.analysis.dataset_boxes import boxes_for_config
from fcos_lab.analysis.level_statistics import LevelStatisticsCache
from fcos_lab.data.synthetic import make_synthetic_coco
from fcos_lab.demo import demo_config
from fcos_lab.objective import Objective
from fcos_lab.presets import DEMO_PRESET, resolve

# COCO's size buckets, absolute pixels of the annotation's area (cocodataset.org, detection evaluation).
SMALL, LARGE = 32**2, 96**2


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory):
    """100 training and 100 validation images at the preset's size (about 2 s)."""
    config = resolve(DEMO_PRESET)
    return config, make_synthetic_coco(tmp_path_factory.mktemp("demo_data"), num_train=100, num_val=100,
                                       image_size=config.data.synthetic_image_size)


def test_validation_split_fills_every_coco_size_bucket(demo_data):
    _, data = demo_data
    areas = np.array([a["area"] for a in json.loads(data.val_ann.read_text())["annotations"]])
    shares = [np.mean(areas < SMALL), np.mean((areas >= SMALL) & (areas < LARGE)), np.mean(areas >= LARGE)]
    # Measured at 256 px: 43 / 37 / 20 % of 399 objects (at 128 px it was 56 / 44 / 0.3 %).
    assert min(shares) >= 0.15, shares
    assert int((areas >= LARGE).sum()) >= 40


def _positives_per_box(config, ann: Path, size_ranges) -> tuple[np.ndarray, float]:
    """Positive locations per training box summed over the levels, and the share poorly covered (percent)."""
    boxes, _ = boxes_for_config(json.loads(ann.read_text()), ann, config)
    cache = LevelStatisticsCache(boxes, Objective.from_config(config))
    strides = config.model.strides
    per_box = sum(cache.level(s, r).locations_per_box for s, r in zip(strides, size_ranges, strict=True))
    return per_box.numpy(), cache.setting(strides, size_ranges).poorly_covered_percent


def test_size_ranges_give_each_box_several_positive_locations(demo_data):
    config, data = demo_data
    per_box, poorly = _positives_per_box(config, data.train_ann, config.assign.size_ranges)
    # Measured on the 400 demo training images: median 9, 12 % of the boxes with fewer than 3 (the paper's
    # ranges on COCO val2017: median 9, 3 %).
    assert np.median(per_box) >= 7 and poorly <= 20, (np.median(per_box), poorly)
    # The former ranges (divided by 4), at the same image size: 2 strides wide, about 3 locations per box.
    quarter = ((0, 16), (16, 32), (32, 64), (64, 128), (128, math.inf))
    per_box_quarter, poorly_quarter = _positives_per_box(config, data.train_ann, quarter)
    assert np.median(per_box_quarter) <= 3 and poorly_quarter >= 30, (np.median(per_box_quarter), poorly_quarter)


def test_every_level_below_p7_receives_positives(demo_data):
    config, data = demo_data
    boxes, _ = boxes_for_config(json.loads(data.train_ann.read_text()), data.train_ann, config)
    cache = LevelStatisticsCache(boxes, Objective.from_config(config))
    positives = [cache.level(s, r).positive_locations for s, r in zip(config.model.strides, config.assign.size_ranges)]
    # P3-P6 all train on objects; P7 (256, inf) cannot: no box of a 256-px image regresses past 256 px.
    assert all(p > 0 for p in positives[:4]) and positives[4] == 0, positives


def test_quick_demo_evaluates_during_training(tmp_path):
    config = demo_config(tmp_path, quick=True)
    assert 0 < config.train.eval_every < config.train.max_iters
    full = demo_config(tmp_path, quick=False)
    # A few AP points on the curve, the evaluation a small share of the schedule.
    assert 3 <= full.train.max_iters // full.train.eval_every <= 5
