"""The app's widgets show what its pages computed, after the clicks a person makes (issue #19), in Chromium.

A person switches the image source and back, switches pages while a page still runs, flips toggles: after
each step every widget must show the setting the page computed with. What the page computed is read off
the page itself (the FPN's levels in the Level radio, the center-sampling slider's state, the figure
titles, the Assignments page's "Computed with" line). Also: the COCO paths typed stay when the source
changes. (A missing checkpoint path is tested in test_browser_runs.py, on an app folder without a demo.)
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.app.browser import is_on, navigate, plot_titles, radio_options, selected_option, wait_idle
from tests.app.conftest import CHECKOUT, assert_no_exception, open_page
from tests.conftest import REPO


def computed_with(tab) -> str | None:
    """The Assignments page's "Computed with" line; None when serving an older checkout, which has none."""
    if CHECKOUT != REPO:
        return None
    return tab.locator('[data-testid="stCaptionContainer"]', has_text="Computed with").first.inner_text()

def check_assignments(tab, step: str) -> None:
    """Every widget of the Assignments page shows the setting its numbers and figure were computed with."""
    assert_no_exception(tab)
    fpn, sampling = is_on(tab, "FPN"), is_on(tab, "Center sampling")
    slider = tab.get_by_role("slider", name="Center-sampling radius (strides)")
    levels = radio_options(tab, "Level")
    computed = computed_with(tab)
    assert ("P3" in levels) == fpn, f"{step}: FPN shows {fpn}, levels computed {levels}"
    assert slider.is_enabled() == sampling, f"{step}: center sampling shows {sampling}, radius slider enabled"
    if computed is not None:
        assert computed.startswith(f"Computed with: FPN {'on' if fpn else 'off'}"), f"{step}: FPN {fpn}; {computed}"
        radius = f"on, radius {float(slider.input_value()):g} strides" if sampling else "off"
        assert f"center sampling {radius}" in computed, f"{step}: center sampling shows {sampling}; {computed}"
    view, title = selected_option(tab, "Level"), plot_titles(tab)[0]
    expected = {"all levels": "all levels", "level by level": "Level by level"}.get(view, view)
    assert title.startswith(expected), f"{step}: Level shows {view!r}, the figure is {title!r}"

def click(tab, text: str) -> None:
    tab.get_by_text(text, exact=True).first.click()

def type_in(tab, label: str, text: str) -> None:
    box = tab.get_by_label(label, exact=True)
    box.fill(text)
    box.press("Enter")

def test_switching_the_source_and_pages_keeps_the_widgets_true(page, server: str, coco_tiny: Path) -> None:
    open_page(page, server, "assignments")
    check_assignments(page, "first load")
    click(page, "FPN")  # off: P4 only
    wait_idle(page)
    check_assignments(page, "FPN off")
    click(page, "COCO-format dataset")
    wait_idle(page)
    type_in(page, "Annotation file (COCO JSON)", str(coco_tiny / "annotations" / "instances_val.json"))
    type_in(page, "Image folder", str(coco_tiny / "val"))
    wait_idle(page)
    check_assignments(page, "COCO, FPN off")
    click(page, "Synthetic demo data")
    wait_idle(page)
    check_assignments(page, "back to synthetic")
    assert not is_on(page, "FPN")  # what was chosen stays chosen
    click(page, "FPN")
    wait_idle(page)
    check_assignments(page, "FPN on again")
    assert is_on(page, "FPN")

    click(page, "Center sampling")
    wait_idle(page)
    check_assignments(page, "center sampling on")
    click(page, "P5")
    wait_idle(page)
    check_assignments(page, "level P5")
    # Clicks while the page still runs, and a page switch that does not wait for the page to finish.
    click(page, "COCO-format dataset")
    click(page, "Synthetic demo data")
    click(page, "FPN")
    wait_idle(page)
    check_assignments(page, "quick clicks")
    navigate(page, "Center-ness")
    time.sleep(0.3)
    navigate(page, "Assignments")
    page.get_by_role("heading", name="Assignments", exact=True).wait_for()
    wait_idle(page)
    check_assignments(page, "back from Center-ness")
    navigate(page, "Dataset statistics")
    wait_idle(page)
    navigate(page, "Assignments")
    wait_idle(page)
    check_assignments(page, "back from Dataset statistics")
    assert is_on(page, "Center sampling") and not is_on(page, "FPN")  # kept across pages

def test_the_coco_paths_stay_when_the_source_changes(page, server: str, coco_tiny: Path) -> None:
    open_page(page, server, "assignments")
    click(page, "COCO-format dataset")
    wait_idle(page)
    ann = str(coco_tiny / "annotations" / "instances_val.json")
    type_in(page, "Annotation file (COCO JSON)", ann)
    type_in(page, "Image folder", str(coco_tiny / "val"))
    wait_idle(page)
    click(page, "Synthetic demo data")
    wait_idle(page)
    click(page, "COCO-format dataset")
    wait_idle(page)
    assert page.get_by_label("Annotation file (COCO JSON)").input_value() == ann
    assert "256 x 256 input" not in page.locator("body").inner_text()
    check_assignments(page, "COCO again")
    navigate(page, "Center-ness")  # the same image on the next page
    page.get_by_role("heading", name="Center-ness", exact=True).wait_for()
    wait_idle(page)
    assert_no_exception(page)
    assert selected_option(page, "Image from") == "COCO-format dataset"

def test_the_centerness_level_is_the_level_drawn(page, server: str) -> None:
    open_page(page, server, "centerness")

    def check(step: str) -> None:
        assert_no_exception(page)
        level = selected_option(page, "Level")
        predicted = [t for t in plot_titles(page) if t.startswith("predicted center-ness")]
        assert predicted == [f"predicted center-ness {level}"], f"{step}: Level shows {level}, drawn {predicted}"

    check("first load")
    click(page, "P5")
    wait_idle(page)
    check("P5")
    click(page, "COCO-format dataset")
    wait_idle(page)
    click(page, "Synthetic demo data")
    wait_idle(page)
    check("COCO and back")
    navigate(page, "Assignments")
    time.sleep(0.3)
    navigate(page, "Center-ness")
    page.get_by_role("heading", name="Center-ness", exact=True).wait_for()
    wait_idle(page)
    check("back from Assignments")
    assert selected_option(page, "Level") == "P5"


def test_boxes_hidden_by_a_stopped_page_come_back_with_their_values(page, server: str, coco_tiny: Path) -> None:
    """The Dataset statistics page stops before its settings while no annotation file is typed: the settings
    come back showing what the page then computes with (the browser had forgotten them, the server not)."""
    open_page(page, server, "dataset_statistics")
    type_in(page, "Shorter side (px)", "640")
    wait_idle(page)
    click(page, "Center sampling")
    wait_idle(page)
    click(page, "COCO-format file")  # no file yet: the page stops above the settings
    wait_idle(page)
    type_in(page, "Annotation file (COCO JSON)", str(coco_tiny / "annotations" / "instances_val.json"))
    wait_idle(page)
    assert_no_exception(page)
    shown = page.get_by_label("Shorter side (px)", exact=True).input_value()
    strides = page.get_by_label("Strides", exact=True).input_value()
    assert (shown, strides, is_on(page, "Center sampling")) == ("640", "8, 16, 32, 64, 128", True)
    if CHECKOUT == REPO:  # an older checkout does not say what it computed with
        computed = page.locator('[data-testid="stCaptionContainer"]', has_text="Computed with").first.inner_text()
        assert f"shorter side {shown} px; strides {strides};" in computed, computed
        assert "center sampling on, radius 1.5 strides" in computed, computed
