"""Fixtures of the workshop tests: a small synthetic workshop dataset and its real scenes."""

from __future__ import annotations

import pytest

from fcos_lab.data.splits import build_datasets
from fcos_lab.workshop.scenes import real_scenes as make_real_scenes
from fcos_lab.workshop.session import workshop_config

# A small dataset of the demo preset's image size: 8 validation images give the checks their real cases.
SMALL_DATA = ["data.synthetic_num_train=8", "data.synthetic_num_val=8"]


@pytest.fixture(scope="session")
def small_workshop(tmp_path_factory):
    """``(folder, config, validation set)`` of a workshop folder with the small synthetic dataset."""
    folder = tmp_path_factory.mktemp("workshop")
    config = workshop_config(folder, SMALL_DATA)
    _, val_set = build_datasets(config, need_train=False)
    return folder, config, val_set


@pytest.fixture(scope="session")
def real_scenes(small_workshop):
    _, config, val_set = small_workshop
    scenes = make_real_scenes(config, val_set, 4)
    assert len(scenes) == 4
    return scenes
