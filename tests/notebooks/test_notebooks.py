"""Every notebook in notebooks/ runs through papermill with a real Jupyter kernel at the smoke scale.

The committed notebooks are also checked to be clean (no outputs, a ``parameters`` cell, the python3
kernel) and thin (no ``def`` or ``class``: such code belongs in ``fcos_lab``). The evaluation-only
notebooks also run from given weights (seeded random torchvision weights, imported), training nothing;
an executed notebook exported to HTML keeps its interactive plotly figures.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from fcos_lab.analysis.report import load_results
from pipelines.reproduce import NOTEBOOKS, WEIGHTS_NOTEBOOKS, parameters_for
from tests.torchvision_weights import SMALL_INPUT, imported_torchvision_fcos

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
    every = parameters_for(name, "smoke", Path("x"), "cpu", "root", work_dir=Path("w"), weights="w.pt",
                           val_max_images=2, overrides=["a.b=1"])
    for key in every:
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


# What each notebook measures from given weights: (table, rows measured with them).
FROM_WEIGHTS = {
    "02-ambiguous-samples": ("Table 2", {"detections from ambiguous locations (text, Section 4.1.1)"}),
    "04-centerness": ("Table 4", {"None", "center-ness† (from the predicted box)", "center-ness (learned branch)",
                                  "oracle (ground-truth center-ness at test time)"}),
    "07-class-agnostic-pr": ("Table 7", {"FCOS"}),
    "09-centerness-vs-iou": ("Figure 7", None),
    "10-qualitative": ("Figure 8", {"detections per image with score >= 0.3"}),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory, shared_coco):
    """Seeded random torchvision FCOS weights (91 COCO classes) imported as a run folder, and its provenance."""
    folder = imported_torchvision_fcos(tmp_path_factory.mktemp("weights"))
    return folder, json.loads((folder / "imported.json").read_text())


def test_the_weights_notebooks_are_listed():
    assert set(FROM_WEIGHTS) == set(WEIGHTS_NOTEBOOKS)


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", WEIGHTS_NOTEBOOKS)
def test_notebook_runs_from_given_weights_without_training(name, imported, tmp_path, monkeypatch):
    import papermill

    if os.environ.get("PYTEST_XDIST_WORKER"):
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
    folder, provenance = imported
    out = tmp_path / name
    parameters = {"scale": "smoke", "output_dir": str(out), "device": "cpu", "weights": str(folder),
                  "overrides": SMALL_INPUT, "use_fiftyone": False, "max_images": 50, "num_images": 2}
    if name != "10-qualitative":
        parameters["val_max_images"] = 3  # three real val2017 images: the plumbing, at a second each
    papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                               parameters=parameters, kernel_name="python3", cwd=str(REPO), progress_bar=False)
    results = load_results(out / "results.json")
    assert results.complete and results.parameters["weights"] == str(folder)
    assert not list(out.rglob("model_*.pt")) and not (out / "runs").exists(), "nothing is trained"
    table, rows = FROM_WEIGHTS[name]
    from_weights = [m for m in results.measurements if m.weights]
    assert {m.table for m in from_weights} == {table}
    assert rows is None or {m.row for m in from_weights} == rows
    label = from_weights[0].weights
    assert label.startswith("fcos_resnet50_fpn_random.pth") and provenance["sha256"] in label and "torchvision" in label
    assert all(m.measured is not None or m.metric == "spearman" for m in from_weights)
    if name == "07-class-agnostic-pr":  # FCOS weights cannot stand for the RetinaNet rows: shown, not invented
        retinanet = [m for m in results.measurements if m.row.endswith("RetinaNet") or m.row == "RetinaNet w/ GN"]
        assert retinanet and all(m.measured is None and "not measured" in m.note for m in retinanet)
        assert json.loads((out / "pr_curves.json").read_text()).keys() == {"FCOS"}
    if name == "04-centerness":
        # One model, four test-time variants; exact numbers (no seeds), so each compares with "None" directly.
        assert all(m.spread == 0.0 for m in from_weights)
        assert list(out.glob("figure3_*.png"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_executed_notebook_exports_its_interactive_figures_to_html(tmp_path):
    import papermill

    executed = tmp_path / "01.ipynb"
    papermill.execute_notebook(str(NOTEBOOK_DIR / "01-best-possible-recall.ipynb"), str(executed),
                               parameters={"scale": "smoke", "output_dir": str(tmp_path / "out"), "max_images": 20},
                               kernel_name="python3", cwd=str(REPO), progress_bar=False)
    converted = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(executed)],
                               capture_output=True, text=True, timeout=300)
    assert converted.returncode == 0, converted.stderr
    assert "not able to be represented" not in converted.stderr + converted.stdout, converted.stderr
    page = (tmp_path / "01.html").read_text()
    figures = sum(1 for cell in nbformat.read(executed, as_version=4).cells if cell.cell_type == "code"
                  for output in cell.get("outputs", []) if "application/vnd.plotly.v1+json" in output.get("data", {}))
    assert figures >= 1 and page.count("Plotly.newPlot") >= figures  # every figure drawn in the HTML
    assert "plotly.js v" in page  # plotly.js itself is embedded: no network needed to view the page
