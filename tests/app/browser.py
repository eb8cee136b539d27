"""Driving the app in a real browser: ``streamlit run`` on localhost, Debian's chromium through Playwright.

Shared by the browser tests (``tests/app/test_browser*.py``) and the page-switch benchmark
(``benchmarks/bench_app_pages.py``). Playwright's own browser download is never used: Debian's ``chromium``
package is (``.ci/run`` installs it). With ``CI=true`` a missing browser is a failure, elsewhere a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_PATHS = ("/usr/bin/chromium",)  # Debian's package, when /usr/bin is not on PATH
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Records the time of the last change to the page, so that a measurement ends when the page last changed,
# not when a poll noticed it had stopped changing.
LAST_CHANGE_SCRIPT = """
window.__lastChange = Date.now();
new MutationObserver(() => { window.__lastChange = Date.now(); })
    .observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""


def find_chromium() -> tuple[str | None, str | None]:
    """``(path, None)`` of Debian's chromium with Playwright importable, else ``(None, what is missing)``."""
    path = shutil.which("chromium") or next((p for p in CHROMIUM_PATHS if Path(p).exists()), None)
    if path is None:
        return None, "the browser test needs Debian's chromium (apt-get install -y chromium); it is not installed"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "the browser test needs the playwright Python package (pip install -e '.[app]')"
    return path, None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def streamlit_server(repo: Path, env: Mapping[str, str], log_path: Path, timeout: float = 90) -> Iterator[str]:
    """``streamlit run app/main.py`` of ``repo`` on a free localhost port; yields its URL, always stopped.

    Raises:
        RuntimeError: the server did not answer its health check within ``timeout`` seconds (with its log).
    """
    port = free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", str(repo / "app" / "main.py"), "--server.headless", "true",
        "--server.port", str(port), "--browser.gatherUsageStats", "false", "--server.address", "127.0.0.1",
        "--server.fileWatcherType", "none",
    ]
    full_env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "PYTHONPATH": str(repo), **env}
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=repo, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start (exit code {process.poll()}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@contextmanager
def chromium_browser(chromium: str) -> Iterator:
    """Headless Debian chromium through Playwright (one per process: Playwright's sync API does not nest)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_tab(browser, width: int = 1400, height: int = 2000, timeout_ms: int = 120_000):
    """A tab of its own (its own cookies, so its own Streamlit session) that records its last DOM change."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(LAST_CHANGE_SCRIPT)
    tab = context.new_page()
    tab.set_default_timeout(timeout_ms)
    return tab


@contextmanager
def browser_tab(chromium: str, width: int = 1400, height: int = 2000, timeout_ms: int = 120_000) -> Iterator:
    """One tab of a headless Debian chromium (:func:`new_tab`)."""
    with chromium_browser(chromium) as browser:
        yield new_tab(browser, width, height, timeout_ms)


def is_busy(tab) -> bool:
    """Streamlit is running the script, or still shows a placeholder."""
    return tab.locator('[data-testid="stStatusWidget"], [data-testid="stSkeleton"]').count() > 0


def wait_idle(tab, settle: float = 1.0, timeout: float = 120.0) -> None:
    """Wait until Streamlit shows no "running" status and no skeleton for ``settle`` seconds."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        if is_busy(tab):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            return
        time.sleep(0.1)
    raise AssertionError("the app did not become idle")


def now_ms(tab) -> float:
    return float(tab.evaluate("Date.now()"))


def last_change_ms(tab) -> float:
    return float(tab.evaluate("window.__lastChange"))


def timed(tab, action: Callable[[], None], done: Callable[[], None], settle: float = 1.5) -> float:
    """Seconds from ``action`` until the page last changed, once ``done`` returned and the page has been idle
    for ``settle`` seconds (Streamlit idle and no DOM change)."""
    start = now_ms(tab)
    action()
    done()
    while True:
        wait_idle(tab, settle=settle)
        if now_ms(tab) - last_change_ms(tab) >= settle * 1000:
            return (last_change_ms(tab) - start) / 1000
        time.sleep(0.2)


def selected_option(tab, label: str) -> str:
    """The option a radio labelled ``label`` shows as chosen."""
    group = tab.locator('[data-testid="stRadio"]', has_text=label).first
    return group.locator('[data-testid="stRadioOption"][data-selected="true"]').inner_text().strip()


def radio_options(tab, label: str) -> list[str]:
    group = tab.locator('[data-testid="stRadio"]', has_text=label).first
    return [t.strip() for t in group.locator('[data-testid="stRadioOption"]').all_inner_texts()]


def is_on(tab, label: str) -> bool:
    """Whether the toggle or checkbox labelled ``label`` shows as on."""
    return tab.locator('[data-testid="stCheckbox"]', has_text=label).first.locator("input").is_checked()


def metric_value(tab, label: str) -> str:
    return tab.locator('[data-testid="stMetric"]', has_text=label).locator('[data-testid="stMetricValue"]').inner_text()


def plot_titles(tab) -> list[str]:
    """Titles of the plotly figures on the page, and their subplot titles, top to bottom."""
    return [t.strip() for t in tab.locator(".js-plotly-plot .gtitle, .js-plotly-plot .annotation-text").all_text_contents()]


def navigate(tab, title: str) -> None:
    """Click a page's link in the sidebar navigation (the session and its widget state stay)."""
    tab.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
