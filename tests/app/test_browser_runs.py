"""The app finds the run the README makes (issue #19): ``fcos-lab demo`` writes ``runs/demo/run``, and every
run folder under ``runs/`` (``$FCOS_LAB_RUNS``), imported weights included, is offered in Chromium.

The server here has an app folder without a demo of its own, as after ``pip install`` and ``fcos-lab demo``:
so a page without a checkpoint offers its "Run the quick demo now" button, and a missing checkpoint path
typed on the Center-ness or Detections page must be one message (with that button once), not a traceback.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.browser import plot_titles, wait_idle
from tests.app.conftest import assert_no_exception, open_page, serve

OTHER_RUN = "another folder or file ..."


@pytest.fixture(scope="module")
def runs_root(app_data: Path, demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``runs/demo/run`` as ``fcos-lab demo`` leaves it, and a folder as ``fcos-lab import-weights`` leaves it."""
    root = tmp_path_factory.mktemp("readme") / "runs"
    shutil.copytree(demo_run, root / "demo" / "run")
    imported = root / "imported"
    imported.mkdir()
    for name in ("model_final.pt", "config.json"):
        shutil.copy(demo_run / name, imported / name)
    return root


@pytest.fixture(scope="module")
def server(app_data: Path, runs_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    fresh = runs_root.parent / "app"  # the app's own folder: the synthetic images only, no demo run
    shutil.copytree(app_data / "synthetic", fresh / "synthetic")
    yield from serve(tmp_path_factory, {"FCOS_LAB_APP_DATA": str(fresh), "FCOS_LAB_RUNS": str(runs_root)})


def test_the_readme_demo_is_found_on_every_page(page, server: str, runs_root: Path) -> None:
    for path in ("detections", "centerness"):
        open_page(page, server, path)
        body = page.locator("body").inner_text()
        assert "No checkpoint yet" not in body, path
        assert "model_final.pt: preset fcos_demo_r18" in page.locator('[data-testid="stSidebar"]').inner_text()
    assert "predicted center-ness P3" in plot_titles(page)
    run = page.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text("Run", exact=True))
    run.click()
    offered = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    assert any(o.endswith("demo/run") for o in offered) and any(o.endswith("imported") for o in offered), offered

    open_page(page, server, "runs")
    assert_no_exception(page)
    assert str(runs_root / "demo" / "run") in page.locator("body").inner_text()
    page.locator(".js-plotly-plot").first.wait_for()
    wait_idle(page)


@pytest.mark.parametrize("path", ["centerness", "detections"])
def test_a_missing_checkpoint_path_is_a_message(page, server: str, tmp_path: Path, path: str) -> None:
    open_page(page, server, path)
    run = page.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text("Run", exact=True))
    if run.count():  # the run folders found are listed; a typed path is the last choice
        run.click()
        page.get_by_role("option", name=OTHER_RUN).click()
        wait_idle(page)
    box = page.get_by_label("Run folder or model_*.pt file", exact=True)
    box.fill(str(tmp_path / "no_such_run"))
    box.press("Enter")
    wait_idle(page)
    assert_no_exception(page)
    errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    assert any(re.search(r"no_such_run: no such run folder or checkpoint file", e) for e in errors), errors
    assert "fcos-lab demo --quick" in page.locator('[data-testid="stAlertContentInfo"]').last.inner_text()
    assert page.get_by_role("button", name="Run the quick demo now").count() == 1
