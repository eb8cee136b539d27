"""The app's own folder, the run folders it offers, and the synthetic demo data.

``$FCOS_LAB_APP_DATA`` (default ``runs/app``, relative to the working folder) holds ``demo/run`` (made by
:func:`demo_command` or the pages' button) and ``synthetic/`` (written on first use by
:func:`ensure_synthetic_dataset`). The pages offer every run folder under ``$FCOS_LAB_RUNS`` (default
``runs``, where ``fcos-lab demo``, ``fcos-lab train`` and the notebooks write) and under the app's folder,
newest first (:func:`find_app_runs`, through :func:`fcos_lab.runs.find_runs`). Run folders themselves are
read by :mod:`fcos_lab.runs`. No Streamlit here, so the tests import this file directly; and no torch at
import time (``fcos_lab`` is imported inside the functions), so that the home page loads at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fcos_lab.config import Config
    from fcos_lab.data.synthetic import SyntheticDataset

APP_DATA_ENV = "FCOS_LAB_APP_DATA"
DEFAULT_APP_DATA = "runs/app"
RUNS_ENV = "FCOS_LAB_RUNS"
DEFAULT_RUNS = "runs"  # fcos-lab demo writes runs/demo/run, fcos-lab train runs/<preset>
RUN_SEARCH_DEPTH = 4  # runs/notebooks/<notebook>/<row>/run is four levels down
# The app's own copy of the synthetic shapes: small, so that it is written in well under a second.
SYNTHETIC_ARGS = {"num_train": 8, "num_val": 24, "image_size": 320}


def app_data_dir() -> Path:
    """The app's cache folder: ``$FCOS_LAB_APP_DATA``, else ``runs/app`` (relative to the working folder)."""
    return Path(os.environ.get(APP_DATA_ENV) or DEFAULT_APP_DATA).expanduser()


def default_run_dir() -> Path:
    """Where ``fcos-lab demo --quick --out <app data>/demo`` leaves its run folder."""
    return app_data_dir() / "demo" / "run"


def runs_root() -> Path:
    """Where the app looks for run folders: ``$FCOS_LAB_RUNS``, else ``runs`` (relative to the working folder)."""
    return Path(os.environ.get(RUNS_ENV) or DEFAULT_RUNS).expanduser()


def find_app_runs() -> list[Path]:
    """Run folders under :func:`runs_root` and the app's folder, newest first, each once.

    A run folder holds ``metrics.jsonl`` or a checkpoint (:func:`fcos_lab.runs.find_runs`): ``fcos-lab demo``'s
    ``runs/demo/run``, ``fcos-lab train``'s, the notebooks', and ``fcos-lab import-weights``'s folders.
    """
    from fcos_lab.runs import find_runs

    found = find_runs(runs_root(), max_depth=RUN_SEARCH_DEPTH) + find_runs(app_data_dir(), max_depth=RUN_SEARCH_DEPTH)
    unique = {path.resolve(): path for path in reversed(found)}  # the first sighting wins (newest first)
    order = {path.resolve(): k for k, path in enumerate(found)}
    return sorted(unique.values(), key=lambda path: order[path.resolve()])


def run_config(run_dir: str | Path) -> Config | None:
    """The config a run was made with (its ``config.json``), or None when the folder has none that can be read."""
    from fcos_lab.config import config_from_dict
    from fcos_lab.errors import FcosLabError

    try:
        return config_from_dict(json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError, FcosLabError):
        return None


def run_validation_files(config: Config | None) -> tuple[str, str]:
    """``(annotation file, image folder)`` a run of ``config`` was evaluated on; ``("", "")`` if unknown.

    A run on the synthetic demo data (``data.val_ann`` unset) was evaluated on ``<synthetic_root>/annotations/
    instances_val.json`` and ``<synthetic_root>/val`` (:func:`fcos_lab.data.synthetic.make_synthetic_coco`).
    """
    if config is None:
        return "", ""
    data = config.data
    if data.val_ann:
        return data.val_ann, data.val_images
    if data.synthetic_root:
        root = Path(data.synthetic_root)
        return str(root / "annotations" / "instances_val.json"), str(root / "val")
    return "", ""


def demo_command() -> str:
    """The command that makes a checkpoint the app finds by default."""
    return f"fcos-lab demo --quick --out {app_data_dir() / 'demo'}"


def ensure_synthetic_dataset() -> SyntheticDataset:
    """The synthetic shapes in the app's cache folder, generated on first use (deterministic, < 1 s)."""
    from fcos_lab.data.synthetic import make_synthetic_coco

    return make_synthetic_coco(app_data_dir() / "synthetic", **SYNTHETIC_ARGS)
