"""Fixtures of the app tests: the app's cache folder with a tiny demo run, tiny COCO-format data.

The quick demo (``fcos_lab.demo.run_demo(quick=True)``) is trained once per test session; under
pytest-xdist the workers share it through a file lock, so it is not trained once per worker.

The app's own modules (``app/app_data.py``, ``app/inputs.py``, ...) are imported as Streamlit imports
them, from the ``app/`` folder on ``sys.path``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, REPO

APP_DIR = REPO / "app"
APP_MAIN = APP_DIR / "main.py"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))
ARTIFACTS = REPO / "test-artifacts" / "app"
# The quick demo made smaller still (4 iterations of 2 images, 4 validation images): a real run folder
# with a checkpoint, a training log and an evaluation, in about a third of the quick demo's time.
TINY_DEMO = [
    "train.max_iters=4", "train.batch_size=2", "train.warmup_iters=1", "train.log_every=2",
    "train.checkpoint_every=2", "data.synthetic_num_train=4", "data.synthetic_num_val=4",
]


def _shared_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder all xdist workers of this session see (the per-session temp root), else a fresh one."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.getbasetemp().parent / "app_shared"
    return tmp_path_factory.mktemp("app_shared")


@pytest.fixture(scope="session")
def app_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``$FCOS_LAB_APP_DATA`` for the session: ``demo/run`` (quick demo), ``synthetic/``, ``coco_tiny/``."""
    import app_data as app_files
    from filelock import FileLock

    from fcos_lab.data.synthetic import make_synthetic_coco
    from fcos_lab.demo import run_demo

    base = _shared_base(tmp_path_factory)
    base.mkdir(parents=True, exist_ok=True)
    data = base / "app_data"
    previous = os.environ.get(app_files.APP_DATA_ENV)
    os.environ[app_files.APP_DATA_ENV] = str(data)
    try:
        with FileLock(str(base / "app_data.lock")):
            if not (data / "ready").is_file():
                run_demo(data / "demo", quick=True, device="cpu", progress=False, overrides=TINY_DEMO)
                app_files.ensure_synthetic_dataset()  # written here once, not raced by two workers
                make_synthetic_coco(data / "coco_tiny", num_train=4, num_val=4, image_size=256)
                (data / "ready").write_text("ok\n")
        yield data
    finally:
        if previous is None:
            os.environ.pop(app_files.APP_DATA_ENV, None)
        else:
            os.environ[app_files.APP_DATA_ENV] = previous


@pytest.fixture(scope="session")
def demo_run(app_data: Path) -> Path:
    return app_data / "demo" / "run"


@pytest.fixture(scope="session")
def coco_tiny(app_data: Path) -> Path:
    return app_data / "coco_tiny"


__all__ = ["APP_MAIN", "ARTIFACTS", "IN_CI"]
