"""The app in a real browser: ``streamlit run`` on localhost, driven by headless Chromium through Playwright.

Opens every page, moves sliders and checks that what is drawn changes, uploads a file that is not an
image, and saves screenshots under ``test-artifacts/app/``. Needs Debian's ``chromium`` (``.ci/run``
installs it; Playwright's own browser download is never used). With ``CI=true`` a missing browser is a
failure, elsewhere a skip that says why.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.conftest import APP_MAIN, ARTIFACTS, IN_CI
from tests.conftest import REPO

CHROMIUM_PATHS = ("/usr/bin/chromium",)  # Debian's package, when /usr/bin is not on PATH
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PAGES = {  # url path -> title shown on the page
    "": "FCOS lab",
    "assignments": "Assignments",
    "centerness": "Center-ness",
    "detections": "Detections",
    "dataset_statistics": "Dataset statistics",
    "runs": "Runs",
}


def chromium_executable() -> str:
    """Debian's chromium; skip (or fail under CI=true) when it or Playwright is missing."""
    path = shutil.which("chromium") or next((p for p in CHROMIUM_PATHS if Path(p).exists()), None)
    problem = None
    if path is None:
        problem = "the browser test needs Debian's chromium (apt-get install -y chromium); it is not installed"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the browser test needs the playwright Python package (pip install -e '.[app]')"
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true but {problem}")
        pytest.skip(problem)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(app_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``streamlit run app/main.py`` on a free localhost port; always stopped at the end."""
    chromium_executable()  # skip before starting anything when there is no browser
    port = free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = dict(os.environ, FCOS_LAB_APP_DATA=str(app_data), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP_MAIN), "--server.headless", "true",
        "--server.port", str(port), "--browser.gatherUsageStats", "false", "--server.address", "127.0.0.1",
        "--server.fileWatcherType", "none",
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start (exit code {process.poll()}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def page(server: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 2000})
            tab = context.new_page()
            tab.set_default_timeout(120_000)
            yield tab
        finally:
            browser.close()


def wait_idle(tab, settle: float = 1.0, timeout: float = 120.0) -> None:
    """Wait until Streamlit shows no "running" status and no skeleton for ``settle`` seconds."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        busy = tab.locator('[data-testid="stStatusWidget"], [data-testid="stSkeleton"]').count() > 0
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            return
        time.sleep(0.2)
    raise AssertionError("the app did not become idle")


def open_page(tab, server: str, path: str) -> None:
    tab.goto(f"{server}/{path}")
    tab.get_by_role("heading", name=PAGES[path], exact=True).first.wait_for()
    wait_idle(tab)
    assert tab.locator('[data-testid="stException"]').count() == 0, tab.locator('[data-testid="stException"]').first.inner_text()


def shoot(tab, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path))
    return path


def metric_value(tab, label: str) -> str:
    return tab.locator('[data-testid="stMetric"]', has_text=label).locator('[data-testid="stMetricValue"]').inner_text()


def wait_change(tab, read, before: str, timeout: float = 60.0) -> tuple[str, float]:
    """Poll ``read()`` until it differs from ``before``; returns the new value and the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            value = read()
        except Exception:  # noqa: BLE001 - the element is being re-rendered
            value = before
        if value != before:
            return value, time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"nothing changed within {timeout} s (still {before!r})")


def test_every_page_renders_in_chromium(page, server: str) -> None:
    for path, title in PAGES.items():
        open_page(page, server, path)
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0
        if path not in ("", "runs"):
            page.locator(".js-plotly-plot .main-svg").first.wait_for()
        shoot(page, f"page_{path or 'home'}")
    assert page.locator(".js-plotly-plot").count() >= 1  # the runs page draws the training curves


def test_moving_a_slider_changes_the_assignments(page, server: str) -> None:
    open_page(page, server, "assignments")
    without_sampling = metric_value(page, "Positive locations")
    page.get_by_text("Center sampling", exact=True).click()
    before, _ = wait_change(page, lambda: metric_value(page, "Positive locations"), without_sampling)
    wait_idle(page)
    title = page.locator(".js-plotly-plot .gtitle").first.text_content()
    shoot(page, "assignments_radius_1.5")
    slider = page.get_by_role("slider").first
    assert slider.input_value() == "1.5"
    slider.focus()
    page.keyboard.press("End")  # radius 1.5 -> 4.0 strides
    after, seconds = wait_change(page, lambda: metric_value(page, "Positive locations"), before)
    wait_idle(page)
    assert int(after) > int(before)
    assert slider.input_value() == "4"
    assert page.locator(".js-plotly-plot .gtitle").first.text_content() != title
    shoot(page, "assignments_radius_4.0")
    print(f"assignments: radius slider to redrawn metric in {seconds:.2f} s")


def test_moving_the_score_slider_changes_the_detections(page, server: str) -> None:
    open_page(page, server, "detections")
    read = lambda: page.locator(".js-plotly-plot .gtitle").first.text_content()  # noqa: E731
    before = read()
    slider = page.get_by_role("slider").first
    assert slider.input_value() == "0.3"
    slider.focus()
    page.keyboard.press("Home")  # score threshold 0.30 -> 0.00: every location is a candidate
    after, seconds = wait_change(page, read, before)
    wait_idle(page)
    assert after != before and int(after.split()[0]) > 0
    assert slider.input_value() == "0"
    shoot(page, "detections_threshold_0")
    print(f"detections: score slider to redrawn figure in {seconds:.2f} s")


def test_a_non_image_upload_is_reported_in_the_page(page, server: str, tmp_path: Path) -> None:
    open_page(page, server, "assignments")
    page.get_by_text("Upload an image", exact=True).click()
    wait_idle(page)
    notes = tmp_path / "notes.png"
    notes.write_text("this is not an image")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(notes))
    error = page.locator('[data-testid="stAlertContentError"]').first
    error.wait_for()
    assert "not an image" in error.inner_text()
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    shoot(page, "assignments_bad_upload")
    # The app keeps working: another page still renders.
    open_page(page, server, "runs")


def test_a_missing_browser_skips_here_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.app.test_browser as module

    monkeypatch.setattr(module.shutil, "which", lambda name: None)
    monkeypatch.setattr(module, "CHROMIUM_PATHS", ())
    monkeypatch.setattr(module, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="needs Debian's chromium"):
        chromium_executable()
    monkeypatch.setattr(module, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true but the browser test needs Debian's chromium"):
        chromium_executable()
