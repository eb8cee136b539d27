"""The README's screenshots of the app: every page of a running app, in headless Debian chromium.

    fcos-lab demo                                      # runs/demo/run, the run the pages show
    streamlit run app/main.py --server.headless true   # in another shell; then:
    .venv/bin/python docs/app/make_screenshots.py http://localhost:8501 [--coco ../shared/data/coco]

Clicks as a person would (tests/app/browser.py): the Assignments page on a COCO val2017 image (all levels,
then level by level), the Center-ness page at a 384-pixel input, Detections, Dataset statistics of the
COCO file, Runs, and Errors with the tallest TIDE bar clicked. Each shot is cropped to its content, scaled
to 80 % and stored as a 256-colour PNG in docs/app/.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.app.browser import browser_tab, find_chromium, navigate, wait_idle

OUT = Path(__file__).resolve().parent
SIDEBAR = 320  # screen pixels: content right of it decides where a shot ends


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the running app, e.g. http://localhost:8501")
    parser.add_argument("--coco", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data" / "coco",
                        help="folder with annotations/ and images/val2017 (default: ../shared/data/coco)")
    args = parser.parse_args(argv)
    chromium, problem = find_chromium()
    if chromium is None:
        raise SystemExit(problem)
    ann = str(args.coco / "annotations" / "instances_val2017_lightly128_bboxonly_DERIVED.json")
    with tempfile.TemporaryDirectory() as raw, browser_tab(chromium, width=1400, height=1700) as tab:
        def go(title: str) -> None:
            navigate(tab, title)
            tab.get_by_role("heading", name=title, exact=True).first.wait_for()
            wait_idle(tab)

        def type_in(label: str, text: str) -> None:
            box = tab.get_by_label(label, exact=True)
            box.fill(text)
            box.press("Enter")
            wait_idle(tab)

        def click(text: str) -> None:
            tab.get_by_text(text, exact=True).first.click()
            wait_idle(tab)

        def shot(name: str) -> None:
            time.sleep(1.0)
            tab.screenshot(path=f"{raw}/{name}.png")

        tab.goto(args.url)
        tab.get_by_role("heading", name="FCOS lab", exact=True).first.wait_for()
        wait_idle(tab)
        shot("home")
        go("Assignments")
        click("COCO-format dataset")
        type_in("Annotation file (COCO JSON)", ann)
        type_in("Image folder", str(args.coco / "images" / "val2017"))
        tab.locator('[data-testid="stSelectbox"]').filter(has=tab.get_by_text("Image", exact=True)).click()
        tab.keyboard.type("000000000139.jpg")
        tab.keyboard.press("Enter")
        tab.get_by_role("heading", name="Assignments", exact=True).first.click()  # no focus ring in the shot
        wait_idle(tab)
        shot("assignments")
        click("level by level")
        shot("assignments_by_level")
        click("all levels")
        click("Synthetic demo data")  # the demo checkpoint knows the synthetic shapes
        go("Center-ness")
        type_in("Shorter side (px)", "384")
        click("P4")
        shot("centerness")
        go("Detections")
        shot("detections")
        go("Dataset statistics")
        click("COCO-format file")
        type_in("Annotation file (COCO JSON)", ann)
        tab.get_by_role("heading", name="Dataset statistics", exact=True).first.click()
        wait_idle(tab)
        shot("dataset_statistics")
        go("Runs")
        shot("runs")
        go("Errors")
        click("level")
        bars = tab.locator(".js-plotly-plot").first.locator(".barlayer .point path")
        tallest = max((bars.nth(k).bounding_box() for k in range(min(bars.count(), 6))), key=lambda b: b["height"])
        tab.mouse.click(tallest["x"] + tallest["width"] / 2, tallest["y"] + tallest["height"] / 2)
        time.sleep(1.0)
        wait_idle(tab)
        shot("errors")
        for path in sorted(Path(raw).glob("*.png")):
            picture = Image.open(path).convert("RGB")
            content = np.flatnonzero((np.asarray(picture)[:, SIDEBAR:] < 245).any(axis=(1, 2)))
            picture = picture.crop((0, 0, picture.width, min(picture.height, int(content[-1]) + 30)))
            picture = picture.resize((picture.width * 4 // 5, picture.height * 4 // 5), Image.LANCZOS)
            picture.quantize(256, method=Image.Quantize.FASTOCTREE).save(OUT / path.name, optimize=True)
            print(OUT / path.name)


if __name__ == "__main__":
    main()
