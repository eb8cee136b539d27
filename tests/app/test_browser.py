"""The app in a real browser: ``streamlit run`` on localhost, driven by headless Chromium through Playwright.

Opens every page, moves sliders and checks that what is drawn changes, uploads a file that is not an
image, clicks a bar of the Errors page, and saves screenshots under ``test-artifacts/app/``. Needs Debian's
``chromium`` (``.ci/run`` installs it; Playwright's own browser download is never used). With ``CI=true`` a
missing browser is a failure, elsewhere a skip that says why. The server, the browser and the helpers are
``tests/app/browser.py``; ``$FCOS_LAB_APP_CHECKOUT`` serves another checkout's app (an older commit, to see
a test fail before its fix).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.app import browser
from tests.app.browser import metric_value, plot_titles, wait_idle
from tests.app.conftest import ARTIFACTS, PAGES, assert_no_exception, chromium_executable, open_page


def shoot(tab, name: str, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=full_page)
    return path


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
    for path in PAGES:
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
    read = lambda: page.locator(".js-plotly-plot .gtitle").first.text_content()
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
    import tests.app.conftest as module

    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    monkeypatch.setattr(browser, "CHROMIUM_PATHS", ())
    monkeypatch.setattr(module, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="needs Debian's chromium"):
        chromium_executable()
    monkeypatch.setattr(module, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true but the browser test needs Debian's chromium"):
        chromium_executable()


def test_clicking_an_error_bar_shows_example_images(page, server: str, demo_detections: Path) -> None:
    open_page(page, server, "errors")
    box = page.get_by_label("Detections (COCO results JSON)")
    box.fill(str(demo_detections))
    box.press("Enter")
    wait_idle(page)
    assert_no_exception(page)
    page.get_by_text("counts", exact=True).click()  # the barely trained model fixes nothing: every dAP is 0
    wait_idle(page)
    bars = page.locator(".js-plotly-plot").nth(1).locator(".barlayer .point path")
    boxes = [bars.nth(k).bounding_box() for k in range(bars.count())]
    tallest = max(boxes, key=lambda b: b["height"])
    page.mouse.click(tallest["x"] + tallest["width"] / 2, tallest["y"] + tallest["height"] / 2)
    heading = page.get_by_role("heading", name=re.compile(r"errors in .*: \d+ example images"))
    heading.wait_for()
    wait_idle(page)
    assert_no_exception(page)
    assert int(heading.inner_text().split(": ")[-1].split()[0]) > 0
    titles = plot_titles(page)
    assert any(re.match(r"\d+\.jpg: \d+ (Cls|Loc|Both|Dupe|Bkg|Miss)(, 10 best drawn)?$", t)
               for t in titles), titles
    shoot(page, "errors_clicked_bar", full_page=True)
