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

from tests.app import browser
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
    """``$FCOS_LAB_APP_DATA`` for the session: ``demo/run`` (quick demo), ``synthetic/``, ``coco_tiny/``;
    ``$FCOS_LAB_RUNS`` an empty folder beside it."""
    import app_data as app_files
    from filelock import FileLock

    from fcos_lab.data.synthetic import make_synthetic_coco
    from fcos_lab.demo import run_demo

    base = _shared_base(tmp_path_factory)
    base.mkdir(parents=True, exist_ok=True)
    data = base / "app_data"
    previous = {name: os.environ.get(name) for name in (app_files.APP_DATA_ENV, app_files.RUNS_ENV)}
    os.environ[app_files.APP_DATA_ENV] = str(data)
    # Runs are looked for in an empty folder (and the app's own), never in the checkout's runs/.
    os.environ[app_files.RUNS_ENV] = str(base / "runs")
    try:
        with FileLock(str(base / "app_data.lock")):
            if not (data / "ready").is_file():
                run_demo(data / "demo", quick=True, device="cpu", progress=False, overrides=TINY_DEMO)
                app_files.ensure_synthetic_dataset()  # written here once, not raced by two workers
                make_synthetic_coco(data / "coco_tiny", num_train=4, num_val=4, image_size=256)
                (data / "ready").write_text("ok\n")
        yield data
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def demo_run(app_data: Path) -> Path:
    return app_data / "demo" / "run"


@pytest.fixture(scope="session")
def coco_tiny(app_data: Path) -> Path:
    return app_data / "coco_tiny"




# ---------------------------------------------------------------------------------------------- the browser tests

PAGES = {  # url path -> title shown on the page
    "": "FCOS lab",
    "assignments": "Assignments",
    "centerness": "Center-ness",
    "detections": "Detections",
    "dataset_statistics": "Dataset statistics",
    "runs": "Runs",
    "errors": "Errors",
}
# The checkout whose app the browser tests serve: this one, or an older one to see a test fail before its fix.
CHECKOUT = Path(os.environ.get("FCOS_LAB_APP_CHECKOUT") or REPO)


def chromium_executable() -> str:
    """Debian's chromium; skip (or fail under CI=true) when it or Playwright is missing."""
    path, problem = browser.find_chromium()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true but {problem}")
        pytest.skip(problem)
    return path


def serve(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Iterator[str]:
    """``streamlit run`` of the checkout under test with ``env``; fails the test with its log if it does not start."""
    chromium_executable()  # skip before starting anything when there is no browser
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    try:
        with browser.streamlit_server(CHECKOUT, env, log_path) as url:
            yield url
    except RuntimeError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def server(app_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app over the session's app data (the quick demo run, synthetic images); no other run folder."""
    import app_data as app_files

    yield from serve(tmp_path_factory, {app_files.APP_DATA_ENV: str(app_data),
                                        app_files.RUNS_ENV: os.environ[app_files.RUNS_ENV]})


@pytest.fixture(scope="module")
def page(server: str):
    """A headless chromium tab (Debian's), 1400 x 2000."""
    with browser.browser_tab(chromium_executable()) as tab:
        yield tab


def open_page(tab, server: str, path: str) -> None:
    """Load a page by its URL (a new session) and wait until it has run, without a traceback."""
    tab.goto(f"{server}/{path}")
    tab.get_by_role("heading", name=PAGES[path], exact=True).first.wait_for()
    browser.wait_idle(tab)
    assert_no_exception(tab)


def assert_no_exception(tab) -> None:
    exceptions = tab.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()


@pytest.fixture(scope="session")
def demo_detections(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick demo's detections on its validation images at score threshold 0: every kind of TIDE error."""
    import app_data as app_files

    from fcos_lab.data.splits import coco_dataset
    from fcos_lab.detections_file import save_detections
    from fcos_lab.predict import predict_dataset
    from fcos_lab.runs import load_detector

    loaded = load_detector(demo_run, overrides=["postprocess.score_thresh=0.0"])
    ann, images = app_files.run_validation_files(app_files.run_config(demo_run))
    detections = predict_dataset(loaded.model, loaded.config, coco_dataset(loaded.config, ann, images),
                                 category_ids=list(loaded.category_ids) or None)
    return save_detections(tmp_path_factory.mktemp("detections") / "detections.json", detections)


__all__ = ["APP_MAIN", "ARTIFACTS", "CHECKOUT", "IN_CI", "PAGES", "assert_no_exception", "chromium_executable", "open_page",
           "serve"]
