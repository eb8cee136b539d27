"""Time the Streamlit app as a person meets it: the cold first page load and warm page switches, in a browser.

    .venv/bin/python benchmarks/bench_app_pages.py [--repo OTHER_CHECKOUT ...] [--rounds 4] [--out FILE.md]

Starts ``streamlit run app/main.py`` of each checkout given (default: this one; give an older checkout as a
second ``--repo`` to compare before and after under the same machine load), opens headless Debian chromium
through Playwright (``tests/app/browser.py``), loads the home page once (cold: the page ``streamlit run``
opens, in a server that has served nothing yet), then clicks through the pages in the sidebar for ``--rounds``
rounds. The checkouts
take turns page by page, so both see the same load. A page switch is timed from the click to the last
change of the page (a MutationObserver in the page), once Streamlit has been idle and the page unchanged
for 1.5 s: the plotly figures drawn, the tables filled. The first round visits every page for the first
time (model and dataset loads); rounds 2+ are the warm switches.

A page is also loaded by its URL (a new session) right after each switch. The app's data is a fresh ``$FCOS_LAB_APP_DATA`` with the quick demo (trained here in about 15 s) and the
synthetic images. Prints, and with ``--out`` writes, a markdown table with the CPU (``lscpu``) and the
machine load (``uptime``) before and after.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

from tests.app.browser import chromium_browser, find_chromium, navigate, new_tab, streamlit_server, timed

ROOT = Path(__file__).resolve().parents[1]
PATHS = {"Assignments": "assignments", "Center-ness": "centerness", "Detections": "detections",
         "Dataset statistics": "dataset_statistics", "Runs": "runs", "Errors": "errors", "FCOS lab": ""}
PAGES = list(PATHS)
# A click in the sidebar keeps the session; a URL typed or reloaded starts a new one (a new script run with
# the frontend reloaded, caches kept).
MODES = ("page switch in the sidebar", "page load by URL")
TINY_DEMO = [  # as tests/app/conftest.py: a real run folder with a checkpoint in seconds
    "train.max_iters=4", "train.batch_size=2", "train.warmup_iters=1", "train.log_every=2",
    "train.checkpoint_every=2", "data.synthetic_num_train=4", "data.synthetic_num_val=4",
]


def machine() -> str:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "?")


def load() -> str:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return uptime.strip().split("load average:")[-1].strip()


def make_app_data(folder: Path) -> None:
    """The quick demo run and the synthetic images, as the app's tests make them."""
    import sys

    sys.path.insert(0, str(ROOT / "app"))
    import app_data as app_files

    from fcos_lab.demo import run_demo

    run_demo(folder / "demo", quick=True, device="cpu", progress=False, overrides=TINY_DEMO)
    import os

    os.environ[app_files.APP_DATA_ENV] = str(folder)
    app_files.ensure_synthetic_dataset()


def heading(tab, title: str):
    return tab.get_by_role("heading", name=title, exact=True).first.wait_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", action="append", type=Path, help="checkout to serve (repeat to compare); default this one")
    parser.add_argument("--rounds", type=int, default=4, help="rounds through the pages (the first is cold)")
    parser.add_argument("--app-data", type=Path, help="an existing $FCOS_LAB_APP_DATA (default: made here)")
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    repos = [path.resolve() for path in (args.repo or [ROOT])]
    chromium, problem = find_chromium()
    if chromium is None:
        raise SystemExit(problem)
    load_before = load()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_app_")))
        data = args.app_data or work / "app_data"
        if args.app_data is None:
            make_app_data(data)
        env = {"FCOS_LAB_APP_DATA": str(data), "FCOS_LAB_RUNS": str(data)}
        urls = [stack.enter_context(streamlit_server(repo, env, work / f"server{k}.log")) for k, repo in enumerate(repos)]
        browser = stack.enter_context(chromium_browser(chromium))
        tabs = [new_tab(browser) for _ in repos]
        # times[mode][checkout][page]: seconds of each visit
        times: dict[str, list[dict[str, list[float]]]] = {mode: [{} for _ in repos] for mode in MODES}
        cold = []  # the page `streamlit run` opens: the home page, in a server that has served nothing yet
        for tab, url in zip(tabs, urls):
            cold.append(timed(tab, functools.partial(tab.goto, f"{url}/"), heading(tab, "FCOS lab")))
        for _ in range(args.rounds):
            for page in PAGES:
                for k, (tab, url) in enumerate(zip(tabs, urls)):
                    if not tab.locator('[data-testid="stSidebarNav"]').get_by_text(page, exact=True).count():
                        continue  # a page the older checkout does not have
                    actions = {MODES[0]: functools.partial(navigate, tab, page),
                               MODES[1]: functools.partial(tab.goto, f"{url}/{PATHS[page]}")}
                    for mode, action in actions.items():
                        times[mode][k].setdefault(page, []).append(timed(tab, action, heading(tab, page)))
    load_after = load()
    lines = [f"CPU: {machine()}; load average before {load_before}, after {load_after}.", ""]
    for mode in MODES:
        lines += [f"**{mode}** (seconds; first visit of each page, then warm: rounds 2+)", "",
                  "| checkout | cold first page | first visit, median | warm, median | warm, max |", "|---|---|---|---|---|"]
        for k, repo in enumerate(repos):
            first = [values[0] for values in times[mode][k].values()]
            warm = [v for values in times[mode][k].values() for v in values[1:]]
            lines.append(f"| `{repo}` | {cold[k]:.2f} | {statistics.median(first):.2f} | "
                         f"{statistics.median(warm) if warm else float('nan'):.2f} | {max(warm, default=float('nan')):.2f} |")
        lines += ["", "| warm, median per page | " + " | ".join(f"`{repo.name}`" for repo in repos) + " |",
                  "|---|" + "---|" * len(repos)]
        for page in PAGES:
            cells = [f"{statistics.median(times[mode][k][page][1:]):.2f}" if len(times[mode][k].get(page, [])) > 1
                     else "-" for k in range(len(repos))]
            lines.append(f"| {page} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
