"""pipelines/reproduce.py: the report built from results.json files, skipping, and failing notebooks.

The report tests use fixture results (no notebook runs). The failure test runs three tiny fixture
notebooks with a real kernel: one raises, and the pipeline still runs the next one, keeps the failed
one's executed copy with its error, reports the others' numbers and exits non-zero. The weights test
runs notebook 04 from imported random torchvision weights and checks the report names them.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from fcos_lab.analysis.report import SAME, Results, load_results, reproduction_report
from pipelines import reproduce
from tests.torchvision_weights import SMALL_INPUT, imported_torchvision_fcos

HARDWARE = {"machine": "x86_64", "cpus": 2, "torch": "2.x", "cuda": False}


def _results(notebook: str, scale: str = "smoke", complete: bool = True) -> Results:
    results = Results(notebook=notebook, scale=scale, hardware=dict(HARDWARE), parameters={"scale": scale})
    if notebook.startswith("01"):
        results.add("Table 1", "FCOS w/ FPN", "BPR", 98.41, 98.40, note="full val2017", spread=0.0,
                    reference="FCOS w/o FPN (P4 only)")
        results.add("Table 1", "FCOS w/o FPN (P4 only)", "BPR", 95.53, 95.55, spread=0.0)
    else:
        results.add("Table 3", "RetinaNet, C5, no GN, nms .50", "AP", 0.5, 35.9)
        results.add("Table 3", "+ GIoU", "AP", None, 38.3)
        results.add("Figure 7", "rank correlation, w/ center-ness", "spearman", 0.25, unit="rho")
    return results


def _write_fixture_results(out: Path, notebooks: dict[str, Results]) -> None:
    for name, results in notebooks.items():
        results.save(out / name)


def test_report_has_every_table_with_paper_measured_difference_scale_and_hardware(tmp_path):
    _write_fixture_results(tmp_path, {"01-best-possible-recall": _results("01-best-possible-recall"),
                                      "03-fcos-vs-retinanet": _results("03-fcos-vs-retinanet")})
    loaded = [load_results(tmp_path / n / "results.json") for n in ("01-best-possible-recall", "03-fcos-vs-retinanet")]
    markdown, page = reproduction_report(loaded)
    assert markdown.index("## Table 1") < markdown.index("## Table 3") < markdown.index("## Figure 7")
    # Paper 98.40 - 95.55 = +2.85; measured 98.41 - 95.53 = +2.88; statistics have no spread: same direction.
    assert ("| FCOS w/ FPN | BPR | 98.40 | 98.41 | +0.01 | vs FCOS w/o FPN (P4 only): +2.85 / +2.88 ± 0.00 | "
            f"{SAME} | smoke | 2-core CPU (x86_64) |") in markdown
    assert "| FCOS w/o FPN (P4 only) | BPR | 95.55 | 95.53 | -0.02 | — | — | smoke |" in markdown
    assert "| + GIoU | AP | 38.30 | — | — | — | — | smoke |" in markdown  # not measured: shown, never invented
    assert "| rank correlation, w/ center-ness | spearman | — | 0.25 | — | — | — | smoke |" in markdown
    assert "| verdict |" in markdown and "<th>verdict</th>" in page
    assert "<h2>Table 3</h2>" in page and "35.90" in page
    assert "| 01-best-possible-recall | smoke | 2-core CPU (x86_64) |" in markdown


def test_complete_results_are_skipped_and_the_report_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    _write_fixture_results(out, {name: _results(name) for name in reproduce.NOTEBOOKS})
    assert reproduce.run("smoke", out) == 0  # nothing runs: every notebook is complete at this scale
    printed = capsys.readouterr().out
    assert printed.count("[skip]") == len(reproduce.NOTEBOOKS)
    markdown = (out / "reproduction.md").read_text()
    assert "## Table 1" in markdown and "## Table 3" in markdown and "Failed" not in markdown
    assert (out / "reproduction.html").read_text().startswith("<!doctype html>")


def test_results_of_another_scale_or_incomplete_are_not_complete(tmp_path):
    _results("x", scale="workshop").save(tmp_path / "a")
    assert not reproduce.is_complete(tmp_path / "a", "smoke") and reproduce.is_complete(tmp_path / "a", "workshop")
    _results("x").save(tmp_path / "b", complete=False)
    assert not reproduce.is_complete(tmp_path / "b", "smoke")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.json").write_text("{not json")
    assert not reproduce.is_complete(tmp_path / "c", "smoke")


def test_weights_go_to_the_evaluation_only_notebooks_and_trainings_are_shared(tmp_path):
    args = dict(work_dir=tmp_path / "shared", weights="/w/run", val_max_images=3, overrides=["input.min_size=320"])
    for name in reproduce.NOTEBOOKS:
        params = reproduce.parameters_for(name, "smoke", tmp_path / name, "cpu", None, **args)
        assert ("weights" in params) == (name in reproduce.WEIGHTS_NOTEBOOKS)
        assert ("val_max_images" in params) == (name in reproduce.WEIGHTS_NOTEBOOKS and name != "10-qualitative")
        if name != "01-best-possible-recall":  # statistics only: no model, nothing to share
            assert params["work_dir"] == str(tmp_path / "shared") and params["overrides"] == ["input.min_size=320"]
    _results("02-ambiguous-samples").save(tmp_path / "02-ambiguous-samples")
    assert reproduce.is_complete(tmp_path / "02-ambiguous-samples", "smoke")
    assert not reproduce.is_complete(tmp_path / "02-ambiguous-samples", "smoke", weights="/w/run")  # not these weights


def test_unknown_notebook_is_a_usage_error(tmp_path, capsys):
    assert reproduce.run("smoke", tmp_path, only=["99"]) == 2
    assert "valid: 01, 02" in capsys.readouterr().err


# A fixture notebook: the pipeline's parameters, then either a result or an exception.
PARAMETERS = 'scale = "smoke"\noutput_dir = None\ndevice = "auto"\nseed = 0\ndata_root = None'
WRITES = '''from fcos_lab.analysis.report import Results
results = Results(notebook="{name}", scale=scale)
results.add("Table 8", "{row}", "AP", 1.5, 36.6)
results.save(output_dir)'''
RAISES = '''from fcos_lab.analysis.report import Results
partial = Results(notebook="{name}", scale=scale)
partial.add("Table 8", "{row}", "AP", 2.5, 35.7)
partial.save(output_dir, complete=False)
raise RuntimeError("deliberate failure in {name}")'''


def _fixture_notebook(folder: Path, name: str, body: str, row: str) -> None:
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    parameters = new_code_cell(PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, new_code_cell(body.format(name=name, row=row))]
    nbformat.write(nb, folder / f"{name}.ipynb")


@pytest.mark.timeout(300)
def test_a_failing_notebook_makes_the_pipeline_exit_non_zero_after_running_the_others(tmp_path, capsys):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _fixture_notebook(notebooks, "01-first", WRITES, "row of the first")
    _fixture_notebook(notebooks, "02-broken", RAISES, "row of the broken one")
    _fixture_notebook(notebooks, "03-after", WRITES, "row of the last")
    out = tmp_path / "out"
    (out / "02-broken").mkdir(parents=True)
    stale = _results("02-broken")
    stale.measurements[0].row = "stale row from an earlier run"
    stale.save(out / "02-broken")  # complete, but for the same scale: --force reruns it and must drop it

    assert reproduce.main(["--scale", "smoke", "--out", str(out), "--notebooks", str(notebooks), "--force"]) == 1

    err = capsys.readouterr().err
    assert "[fail] 02-broken" in err and "deliberate failure" in err
    markdown = (out / "reproduction.md").read_text()
    assert "**Failed notebooks:** `02-broken`" in markdown
    assert "| row of the first | AP | 36.60 | 1.50 |" in markdown
    assert "| row of the last | AP | 36.60 | 1.50 |" in markdown  # the notebook after the failure ran
    assert "| row of the broken one | AP | 35.70 | 2.50 |" in markdown  # its partial numbers are kept...
    assert "| 02-broken | smoke |" in markdown and "| False |" in markdown  # ...marked incomplete
    assert "stale row" not in markdown
    executed = nbformat.read(out / "02-broken" / "02-broken.ipynb", as_version=4)
    errors = [o for cell in executed.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "RuntimeError"
    assert json.loads((out / "01-first" / "results.json").read_text())["complete"] is True

    # A second run skips the complete notebooks and retries only the failed one.
    assert reproduce.run("smoke", out, notebook_dir=notebooks) == 1
    assert capsys.readouterr().out.count("[skip]") == 2


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.timeout(600)
def test_pipeline_with_weights_names_them_in_the_report(tmp_path, shared_coco):
    folder = imported_torchvision_fcos(tmp_path / "weights")
    sha256 = json.loads((folder / "imported.json").read_text())["sha256"]
    out = tmp_path / "out"
    assert reproduce.main(["--scale", "smoke", "--only", "04", "--out", str(out), "--device", "cpu",
                           "--weights", str(folder), "--val-max-images", "2", *SMALL_INPUT]) == 0
    markdown = (out / "reproduction.md").read_text()
    assert "**Rows measured with given weights**" in markdown
    assert (f"- fcos_resnet50_fpn_random.pth (sha256 {sha256}, imported from torchvision): Table 4: None, "
            "center-ness† (from the predicted box), center-ness (learned branch)") in markdown
    assert "| center-ness (learned branch) | AP | 37.10 |" in markdown and "| smoke, given weights |" in markdown
    assert not (out / "shared" / "runs").exists()  # nothing trained
