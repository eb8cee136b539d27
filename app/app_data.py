"""The app's own folder: the quick demo's run and the synthetic demo data.

``$FCOS_LAB_APP_DATA`` (default ``runs/app``, relative to the working folder) holds ``demo/run`` (made by
:func:`demo_command`, found by default by the pages that need a checkpoint) and ``synthetic/`` (written on
first use by :func:`ensure_synthetic_dataset`). Run folders themselves are read by :mod:`fcos_lab.runs`.
No Streamlit here, so the tests import this file directly.
"""

from __future__ import annotations

import os
from pathlib import Path

from fcos_lab.data.synthetic import SyntheticDataset, make_synthetic_coco

APP_DATA_ENV = "FCOS_LAB_APP_DATA"
DEFAULT_APP_DATA = "runs/app"
# The app's own copy of the synthetic shapes: small, so that it is written in well under a second.
SYNTHETIC_ARGS = {"num_train": 8, "num_val": 24, "image_size": 320}


def app_data_dir() -> Path:
    """The app's cache folder: ``$FCOS_LAB_APP_DATA``, else ``runs/app`` (relative to the working folder)."""
    return Path(os.environ.get(APP_DATA_ENV) or DEFAULT_APP_DATA).expanduser()


def default_run_dir() -> Path:
    """Where ``fcos-lab demo --quick --out <app data>/demo`` leaves its run folder."""
    return app_data_dir() / "demo" / "run"


def demo_command() -> str:
    """The command that makes a checkpoint the app finds by default."""
    return f"fcos-lab demo --quick --out {app_data_dir() / 'demo'}"


def ensure_synthetic_dataset() -> SyntheticDataset:
    """The synthetic shapes in the app's cache folder, generated on first use (deterministic, < 1 s)."""
    return make_synthetic_coco(app_data_dir() / "synthetic", **SYNTHETIC_ARGS)
