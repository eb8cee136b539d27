"""Shared fixtures: the ../shared data (never skipped in CI), thread limits under xdist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two xdist workers on two cores: one intra-op thread each, or they fight over the cores.
    torch.set_num_threads(1)


def require_shared(*relative: str) -> Path:
    """The path under ../shared/data; skips with the reason outside CI, fails in CI (CI=true)."""
    path = SHARED_DATA.joinpath(*relative)
    if not path.exists():
        message = f"needs {path} (the ../shared/data folder beside the checkout, present in CI)"
        if IN_CI:
            pytest.fail(message + " but CI=true and it is missing")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_coco() -> Path:
    """``../shared/data/coco`` with the 128 real train2017/val2017 images and their annotations."""
    return require_shared("coco")
