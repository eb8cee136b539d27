"""benchmarks/gpu_check.py: its pieces on hand-made cases, then the whole check as ``--device cpu --quick`` (every
part's code runs on the CPU, so the GPU check cannot rot where no GPU is), and on CUDA where there is one."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.comparison import RESULTS, RESULTS_JSON
from benchmarks.timing import Budget, cuda_settings, peak_memory, timed_rounds


def test_decreasing_compares_the_first_and_last_quarter_up_to_50():
    # 4 losses: k = 4 // 4 = 1, first 4.0, last 1.0.
    assert gpu_check.decreasing([4.0, 3.0, 2.0, 1.0]) == (True, 1, 4.0, 1.0)
    # 8 losses: k = 2, first mean (1 + 1) / 2 = 1, last mean (2 + 2) / 2 = 2: rising.
    assert gpu_check.decreasing([1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 2.0, 2.0]) == (False, 2, 1.0, 2.0)
    # 200 losses 200, 199, ..., 1: k = 50; first mean (200 + 151) / 2 = 175.5, last mean (50 + 1) / 2 = 25.5.
    assert gpu_check.decreasing([float(v) for v in range(200, 0, -1)]) == (True, 50, 175.5, 25.5)


def test_relative_difference_and_nan():
    assert gpu_check.relative_difference(1.0, 1.001) == pytest.approx(0.001 / 1.001)
    assert gpu_check.relative_difference(0.0, 0.0) == 0.0
    assert math.isnan(gpu_check.relative_difference(float("nan"), 1.0))  # the agreement part turns it into inf


def test_budget_rounds_fit_the_share_left():
    budget = Budget(100.0)
    # ~100 s left, half of it for rounds of 5 s: floor(50 / 5) = 10 (9 if a few ms have passed), capped at 8.
    assert budget.rounds(8, 5.0, 0.5) == 8
    assert budget.rounds(20, 5.0, 0.5) in (9, 10)
    assert budget.rounds(20, 30.0, 0.5) == 1  # floor(50 / 30)
    spent = Budget(0.01)
    time.sleep(0.02)
    assert spent.left() < 0 and spent.rounds(5, 0.001, 1.0) == 0


def test_timed_rounds_alternate_and_stop_at_the_budget():
    calls: list[str] = []
    functions = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = timed_rounds(functions, torch.device("cpu"), warmup=1, wanted=3, budget=Budget(60.0), share=0.5)
    # Warm-up a, b; round 1 in order a, b; then rounds 2 and 3 reversed and alternating: b, a, a, b.
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert {name: len(values) for name, values in times.items()} == {"a": 3, "b": 3}
    calls.clear()
    times = timed_rounds(functions, torch.device("cpu"), warmup=0, wanted=3, budget=Budget(0.0), share=0.5)
    assert calls == ["a", "b"] and len(times["a"]) == 1  # the measuring round always runs, then none fit


def test_cuda_settings_restored_after_an_error():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    with pytest.raises(RuntimeError), cuda_settings(tf32=not before[1], benchmark=not before[2]):
        assert torch.backends.cudnn.allow_tf32 is (not before[1])
        assert torch.backends.cudnn.benchmark is (not before[2])
        raise RuntimeError("inside")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark) == before
    assert peak_memory({"a": lambda: None}, torch.device("cpu")) == {}  # measured on CUDA only


def _section(folder):
    data = json.loads((folder / "results.json").read_text())
    assert len(data["sections"]) == 1
    return next(iter(data["sections"].items()))


@pytest.mark.slow
def test_quick_run_on_cpu_writes_every_part(tmp_path, capsys):
    committed = {path: path.read_bytes() if path.exists() else None for path in (RESULTS, RESULTS_JSON)}
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert {path: path.read_bytes() if path.exists() else None for path in committed} == committed  # untouched

    variant, section = _section(tmp_path)
    assert variant == "gpu-check cpu auto quick"
    assert section["status"].startswith("finished") and section["status"].endswith("every check passed")
    assert set(section["parts"]["seconds"]) == {"agreement", "demo", "train", "infer"}
    assert all(c["passed"] in (True, None) for c in section["checks"])
    assert section["parts"]["agreement"]["worst_relative_difference"] == 0.0  # the CPU against itself
    assert [len(side["losses"]) for side in section["parts"]["agreement"]["sides"]] == [2, 2]
    demo = section["parts"]["demo"]
    assert demo["iterations"] == 10 and len(demo["losses"]) == 10 and all(map(math.isfinite, demo["losses"]))
    assert {row["task"] for row in section["rows"]} == {"train_b2", "infer_b1"}
    assert all(row["torchvision_ms"] > 0 and row["fcos_lab_ms"] > 0 and row["rounds"] >= 1 for row in section["rows"])
    assert section["memory"] == []  # no GPU

    markdown = (tmp_path / "results.md").read_text()
    # One section, rewritten after each part rather than appended.
    assert markdown.count(f"<!-- device:{variant} -->") == 1 and markdown.count(f"<!-- /device:{variant} -->") == 1
    assert "| training step, batch 2 |" in markdown and "| inference end to end, batch 1 |" in markdown
    assert "Check (agreement, **pass**)" in markdown and "finished in" in markdown
    assert "== infer" in out


def test_an_exhausted_budget_fails_and_still_writes(tmp_path, capsys):
    assert gpu_check.main(["--device", "cpu", "--quick", "--budget-s", "0", "--out", str(tmp_path)]) == 1
    _, section = _section(tmp_path)
    assert "FAILED" in section["status"] and "seconds" not in section["parts"]
    assert [c["part"] for c in section["checks"] if c["passed"] is False] == ["agreement", "demo", "train", "infer"]
    assert "**FAIL**" in (tmp_path / "results.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error path of a machine without CUDA")
def test_cuda_requested_without_cuda_exits_2(tmp_path, capsys):
    assert gpu_check.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quick_run_on_cuda(tmp_path, capsys):
    assert gpu_check.main(["--device", "cuda", "--quick", "--out", str(tmp_path)]) == 0
    _, section = _section(tmp_path)
    assert set(section["parts"]["seconds"]) == {"agreement", "demo", "train", "infer", "demo_fp16"}
    assert section["memory"] and all(m["peak_gib"] >= m["before_gib"] > 0 for m in section["memory"])
