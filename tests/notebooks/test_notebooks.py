"""Every notebook in notebooks/ runs through papermill with a real Jupyter kernel at the smoke scale.

The committed notebooks are also checked to be clean (no outputs, a ``parameters`` cell, the python3
kernel) and thin (no ``def`` or ``class``: such code belongs in ``fcos_lab``).
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import nbformat
import pytest

from fcos_lab.analysis.report import load_results
from pipelines.reproduce import NOTEBOOKS, parameters_for

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
# What each notebook must have measured: (table, number of rows at least).
EXPECTED = {
    "01-best-possible-recall": ("Table 1", 5),
    "02-ambiguous-samples": ("Table 2", 3),
    "03-fcos-vs-retinanet": ("Table 3", 9),
    "04-centerness": ("Table 4", 4),
    "05-backbones": ("Table 5", 4),
    "06-fcos-as-rpn": ("Table 6", 3),
    "07-class-agnostic-pr": ("Table 7", 4),
    "08-ablations": ("Table 8", 7),
    "09-centerness-vs-iou": ("Figure 7", 6),
    "10-qualitative": ("Figure 8", 2),
}


def test_every_notebook_is_listed():
    assert set(EXPECTED) == set(NOTEBOOKS) == {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean_and_thin(name):
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and code[0] is tagged[0], "the first code cell must be the only `parameters` cell"
    defaults = {}
    exec(tagged[0].source, {}, defaults)  # plain assignments only
    assert defaults["scale"] == "smoke"
    for key in parameters_for(name, "smoke", Path("x"), "cpu", "root"):
        assert key in defaults, f"parameter {key!r} missing from the parameters cell"
    for cell in code:
        assert not cell.get("outputs") and cell.get("execution_count") is None, "commit notebooks without outputs"
        tree = ast.parse(cell.source)
        defined = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        assert not defined, f"{name}: a def/class/lambda in a notebook belongs in fcos_lab"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_at_smoke_scale(name, tmp_path, monkeypatch):
    import papermill

    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Kernels inherit the environment: one intra-op thread each, as for the test processes (conftest).
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / name
    papermill.execute_notebook(
        str(NOTEBOOK_DIR / f"{name}.ipynb"),
        str(tmp_path / f"{name}.ipynb"),
        parameters={"scale": "smoke", "output_dir": str(out), "device": "cpu", "seed": 0},
        kernel_name="python3",
        cwd=str(REPO),
        progress_bar=False,
    )
    results = load_results(out / "results.json")
    assert results.complete and results.scale == "smoke" and results.notebook == name
    assert results.wall_time_s and results.wall_time_s > 0
    assert results.hardware.get("torch") and results.hardware.get("cpus")
    assert results.hardware["threads"] == 1  # smoke: one intra-op thread (scales.set_threads)
    assert results.parameters["scale"] == "smoke" and "scale_settings" in results.parameters
    table, rows = EXPECTED[name]
    ours = [m for m in results.measurements if m.table == table]
    assert len({m.row for m in ours}) >= rows, f"{name}: expected {rows} rows of {table}"
    assert all(m.measured is not None for m in ours if m.metric != "spearman"), "every number measured"
    assert any(m.paper is not None for m in results.measurements) or table.startswith("Figure")
    assert list(out.glob("*.png")) and list(out.glob("*.html")), "figures for print and for hovering"
    executed = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    last = executed.cells[-1]
    assert any("text/markdown" in o.get("data", {}) for o in last.outputs), "the notebook ends with its table"
    if name == "02-ambiguous-samples":
        view = json.loads((out / "fiftyone.json").read_text())
        assert view["available"] or view["reason"], "FiftyOne ran, or the notebook said why not"
        metrics = {m.metric for m in ours}
        assert {"ambiguous", "ambiguous_diff_class", "detections_ambiguous", "detections_ambiguous_diff_class"} <= metrics
