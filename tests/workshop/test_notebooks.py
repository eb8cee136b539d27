"""The workshop notebooks, run both ways through papermill with a real Jupyter kernel.

- As committed (the participants' stubs): each notebook stops at its first check with the check's
  "not written yet" message: a stub fails its check.
- With ``solutions=True`` (the reference solutions injected): each runs to the end, every check passes,
  and the figures are saved as outputs that papermill and an exported HTML page show (plotly's JSON and
  HTML, plotly.js embedded once). The training notebooks run a few iterations here (``iterations``);
  the committed default is the workshop's real schedule.

The committed notebooks are also checked to be clean (no outputs, a ``parameters`` cell first) and to hold
each exercise's stub exactly as :mod:`fcos_lab.workshop.exercises` writes it, followed by its check.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import nbformat
import pytest

from fcos_lab.workshop import exercises
from fcos_lab.workshop.folder import make_workshop_folder, notebook_files
from fcos_lab.workshop.solutions import SOLUTIONS
from tests.conftest import REPO
from tests.workshop.conftest import SMALL_DATA

NOTEBOOK_DIR = REPO / "notebooks" / "workshop"
NAMES = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
CHECK_CALL = re.compile(r'^(\w+) = ws\.check\("(\d\.\d)", (\w+)\)$')
# CI sizes: a few training iterations (the committed default trains the preset's whole schedule).
QUICK = {"iterations": 20}


def code_cells(name: str) -> list:
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def exercises_of(name: str) -> list[str]:
    """The exercise numbers a notebook checks, in order."""
    return [m.group(2) for cell in code_cells(name) if (m := CHECK_CALL.match(cell.source.strip()))]


def test_six_notebooks_ship_with_the_package():
    assert len(NAMES) == 6 and [p.stem for p in notebook_files()] == NAMES
    assert (NOTEBOOK_DIR / "README.md").is_file()


def test_every_exercise_is_in_one_notebook_in_order():
    found = [number for name in NAMES for number in exercises_of(name)]
    assert found == list(SOLUTIONS), found
    for name in NAMES:
        assert {n[0] for n in exercises_of(name)} == {name[1]}, f"{name} checks another notebook's exercises"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean_and_holds_the_stubs(name):
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    cells = code_cells(name)
    assert "parameters" in cells[0].metadata.get("tags", []), "the first code cell is the parameters cell"
    assert sum("parameters" in c.metadata.get("tags", []) for c in cells) == 1
    defaults = {}
    exec(cells[0].source, {}, defaults)  # noqa: S102  (plain assignments only)
    assert defaults["solutions"] is False and defaults["workshop_dir"] == "." and defaults["overrides"] == []
    for cell in cells:
        assert not cell.get("outputs") and cell.get("execution_count") is None, "commit notebooks without outputs"
    for index, cell in enumerate(cells):
        match = CHECK_CALL.match(cell.source.strip())
        if not match:
            continue
        function, number, argument = match.groups()
        stub = getattr(exercises, SOLUTIONS[number].__name__)
        assert function == argument == stub.__name__
        assert cells[index - 1].source.strip() == inspect.getsource(stub).strip(), f"the stub of {number} differs"
    # The only functions a participant's notebook defines are the exercises (everything else is fcos_lab's).
    defined = [n.name for c in cells for n in ast.walk(ast.parse(c.source)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defined == [SOLUTIONS[n].__name__ for n in exercises_of(name)]


@pytest.fixture(scope="module")
def workshop_folder(tmp_path_factory) -> Path:
    """A participant's folder as ``fcos-lab workshop`` makes it, with a small dataset."""
    folder = tmp_path_factory.mktemp("ws")
    make_workshop_folder(folder, SMALL_DATA)
    return folder


def _run(name: str, folder: Path, out: Path, monkeypatch, **parameters):
    import papermill

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # kernels inherit it: one thread each under xdist
    return papermill.execute_notebook(
        str(NOTEBOOK_DIR / f"{name}.ipynb"), str(out),
        parameters={"workshop_dir": str(folder), **parameters},
        kernel_name="python3", cwd=str(folder), progress_bar=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NAMES)
def test_as_committed_the_first_check_fails_with_its_message(name, workshop_folder, tmp_path, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    first = exercises_of(name)[0]
    with pytest.raises(PapermillExecutionError) as info:
        _run(name, workshop_folder, tmp_path / f"{name}.ipynb", monkeypatch)
    assert info.value.ename == "ExerciseError"
    stub = SOLUTIONS[first].__name__
    assert info.value.evalue.startswith(f"exercise {first}: {stub} is not written yet"), info.value.evalue
    executed = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert len(errors) == 1 and errors[0]["traceback"][0].endswith(info.value.evalue), "the message, not the check's frames"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", NAMES)
def test_with_solutions_the_notebook_runs_to_the_end(name, workshop_folder, tmp_path, monkeypatch):
    defaults = {}
    exec(code_cells(name)[0].source, {}, defaults)  # noqa: S102  (the parameters cell)
    quick = {k: v for k, v in QUICK.items() if k in defaults}
    _run(name, workshop_folder, tmp_path / f"{name}.ipynb", monkeypatch, solutions=True, **quick)
    executed = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    for number in exercises_of(name):
        assert f"exercise {number} passed:" in text, f"exercise {number} did not pass:\n{text[-2000:]}"
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert figures and all("text/html" in o["data"] for o in figures), "figures visible without a kernel"
    plotly_js = [o for o in outputs if "text/html" in o.get("data", {}) and "window.Plotly = Plotly" in o["data"]["text/html"]]
    assert len(plotly_js) == 1, "plotly.js embedded once, before the figures"
    if name.startswith("04"):
        assert re.search(r"20 iterations in [\d.]+ min: AP [\d.]+, AP50 [\d.]+", text), text[-1000:]
    if name.startswith("05"):
        tables = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
        assert any("oracle" in t and "learned center-ness" in t for t in tables), "Table 4 at test time"
    if name.startswith("06"):
        assert "TIDE counts" in text and ("saved view" in text or "FiftyOne" in text)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_exported_html_page_draws_the_views_first_state(workshop_folder, tmp_path, monkeypatch):
    """nbconvert's HTML of a run notebook, opened in headless Chromium without a kernel, draws every figure
    (the views' first state included): plotly.js is embedded once, offline."""
    from nbconvert import HTMLExporter
    from playwright.sync_api import sync_playwright

    from tests.app.browser import CHROMIUM_ARGS
    from tests.app.conftest import chromium_executable

    executable = chromium_executable()  # skips (or fails under CI=true) without the browser
    name = "02-assignment"
    _run(name, workshop_folder, tmp_path / f"{name}.ipynb", monkeypatch, solutions=True)
    html, _ = HTMLExporter().from_filename(str(tmp_path / f"{name}.ipynb"))
    page_file = tmp_path / f"{name}.html"
    page_file.write_text(html)
    assert html.count("window.Plotly = Plotly") == 1  # the library, embedded once
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.route("http*://**", lambda route: route.abort())  # offline: nothing may come from the network
        page.goto(page_file.as_uri())
        page.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length >= 4", timeout=60_000)
        titles = page.locator(".plotly-graph-div .gtitle").all_text_contents()
        browser.close()
    assert any(t.startswith("all levels:") for t in titles), titles
    assert any(t.startswith("Center-ness targets") for t in titles), titles


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_moving_a_control_redraws_the_saved_output_in_place(workshop_folder, monkeypatch):
    """In a kernel, a control's change replaces the view's display outputs (update_display_data), so the
    notebook keeps showing, and saving, the current state rather than piling up figures."""
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = new_notebook(cells=[
        new_code_cell(f"from fcos_lab.workshop.session import Workshop\nws = Workshop({str(workshop_folder)!r})"),
        new_code_cell("view = ws.assignment_view()"),
        new_code_cell('view.level.value = "P3"\nview.radius.value = 0.5'),
    ])
    NotebookClient(nb, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(workshop_folder)}}).execute()
    figures = [o for o in nb.cells[1].outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 2 and not nb.cells[2].outputs
    assignment = figures[0]["data"]["application/vnd.plotly.v1+json"]
    assert assignment["layout"]["title"]["text"].startswith("P3 (stride 8)")
    centerness = figures[1]["data"]["application/vnd.plotly.v1+json"]
    assert len(centerness["data"]) == 2  # one level: the image and its heatmap
