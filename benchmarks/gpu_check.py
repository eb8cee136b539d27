"""The GPU check (issue #21): fcos_lab's CUDA and mixed-precision paths on one GPU, in under 8 minutes.

    python -m benchmarks.gpu_check [--device cuda|cpu] [--quick] [--out DIR] [--budget-s 420]
        [--precision auto|off|bf16|fp16] [--threads N]

Parts, in this order; each writes its results (``results.md`` and ``results.json`` sections,
:mod:`benchmarks.comparison`) before the next starts, so a run stopped by a time limit keeps what it did:

1. ``agreement``: two training steps (forward, loss, backward, SGD at lr 1e-4) of the R-50 FCOS with the
   same weights on the same batch of 2, fp32 with TF32 off, on the CPU and on the GPU; every loss of both
   steps must agree to 1e-3 relative. With ``--device cpu`` both sides run on the CPU: the code runs, and
   the result is trivially equal (the section says so).
2. ``demo``: 200 iterations of the demo preset (:data:`fcos_lab.presets.DEMO_PRESET`, synthetic data in a
   temporary folder, no evaluation) through :func:`fcos_lab.train.train` at ``train.amp=auto`` (bf16 on a
   GPU with bf16, fp16 and a gradient scaler on older ones); every logged loss finite and the mean of the
   last 50 below the mean of the first 50. On CUDA it must have run under autocast.
3. ``train``: the R-50 training step at 800x1333, batch 8, against torchvision's FCOS with the same weights
   on the same GPU (:func:`benchmarks.bench_vs_torchvision.training_steps`), and the peak memory of each.
4. ``infer``: inference end to end (preprocess, forward, post-processing) at batch 1, likewise.
5. ``demo_fp16``: 50 demo iterations at ``train.amp=fp16``, the gradient scaler's path; on CUDA only (fp16
   on a CPU is emulated and slow), and not when part 2 already ran in fp16.

cuDNN and TF32, set on purpose: timing uses ``cudnn.benchmark=True`` (fixed input sizes; the warm-up calls
absorb the autotuning; both libraries alike) and PyTorch's default TF32 (off in matrix products, on in cuDNN
convolutions, so "fp32" convolutions run in TF32 on both sides); the agreement check turns TF32 off and the
autotuner off; the demo runs as a user's training does, autotuner off (its multi-scale input sizes would
re-tune at each new size).

Estimated cost on one H200 (not measured yet): start and model building ~30 s, agreement 30-60 s (the CPU
side's two R-50 steps at 800x1333), demo ~30 s, training rows ~60 s, inference rows ~15 s, fp16 demo ~15 s.
``--budget-s`` (default 420 s) caps the timed rounds from the measured duration of the first one, and a part
that no longer fits is skipped and reported. ``--quick`` keeps every code path at tiny sizes (128x160 inputs,
batch 2, 10 demo iterations) so that the test suite runs it on a CPU in seconds (``tests/test_gpu_check.py``).
Exit status 0 when every check passed, 1 when one failed or a part did not run, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torchvision

from benchmarks.bench_assignment import random_targets
from benchmarks.bench_vs_torchvision import build_models, fcos_lab_step, same_detections, training_steps
from benchmarks.comparison import (
    MARKDOWN_HEADER,
    RESULTS,
    RESULTS_JSON,
    Row,
    model_rows,
    run_record,
    write_json_section,
    write_section,
)
from benchmarks.timing import Budget, cuda_settings, peak_memory, timed_rounds
from fcos_lab.demo import demo_config
from fcos_lab.errors import FcosLabError
from fcos_lab.precision import SETTINGS, Precision, resolve_precision
from fcos_lab.predict import detect
from fcos_lab.train import train

AGREEMENT_RTOL = 1e-3
# A step that changes the loss (1562 -> 669 at 800x1333) and keeps the random-weight R-50 finite: at the paper's
# 0.01 the second loss was NaN at 384x640. Measured on the CPU, NHWC against NCHW (another summation order) at
# 800x1333, this step's losses differed by at most 8.6e-6 relative.
AGREEMENT_LR = 1e-4


@dataclass(frozen=True)
class Plan:
    """Sizes, batches, iterations and timed rounds of one run."""

    size: tuple[int, int]  # (H, W) of the random images; the models keep them (min/max size from them)
    train_batch: int
    infer_batch: int
    agreement_batch: int
    demo_iters: int
    fp16_iters: int
    train_rounds: int
    infer_rounds: int
    warmup: int


FULL = Plan((800, 1333), 8, 1, 2, 200, 50, 10, 20, 2)
QUICK = Plan((128, 160), 2, 1, 2, 10, 4, 2, 3, 1)


def random_images(count: int, size: tuple[int, int], seed: int) -> list[torch.Tensor]:
    """``count`` images ``[3, H, W]`` of uniform noise in [0, 1] on the CPU, the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, *size, generator=generator) for _ in range(count)]


def relative_difference(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def decreasing(losses: list[float]) -> tuple[bool, int, float, float]:
    """Whether the mean of the last ``k`` losses is below the mean of the first ``k`` (k = 50, or a quarter of
    a shorter log); returns the verdict, ``k`` and both means."""
    k = min(50, max(1, len(losses) // 4))
    first, last = statistics.fmean(losses[:k]), statistics.fmean(losses[-k:])
    return last < first, k, first, last


class Report:
    """The section of one run in ``results.md`` and ``results.json``, rewritten after each part."""

    def __init__(self, variant: str, title: str, description: list[str], record: dict[str, Any],
                 out_dir: Path | None) -> None:
        self.variant, self.title, self.description, self.record = variant, title, description, record
        self.paths = (out_dir / "results.md", out_dir / "results.json") if out_dir else (RESULTS, RESULTS_JSON)
        self.rows: list[Row] = []
        self.memory: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.parts: dict[str, Any] = {}

    def check(self, part: str, passed: bool | None, text: str) -> None:
        """A check's result: True or False, or None for a recorded fact that decides nothing."""
        self.checks.append({"part": part, "passed": passed, "text": text})
        print(f"[{part}] {'info' if passed is None else 'PASS' if passed else 'FAIL'}: {text}", flush=True)

    @property
    def failed(self) -> bool:
        return any(c["passed"] is False for c in self.checks)

    def markdown(self, status: str) -> str:
        lines = [f"<!-- device:{self.variant} -->", f"## {self.title}", "", f"- Status: {status}",
                 *[f"- {line}" for line in self.description]]
        for c in self.checks:
            verdict = "info" if c["passed"] is None else "**pass**" if c["passed"] else "**FAIL**"
            lines.append(f"- Check ({c['part']}, {verdict}): {c['text']}")
        if self.rows:
            lines += ["", *MARKDOWN_HEADER, *[row.markdown() for row in self.rows]]
        if self.memory:
            lines += ["", ("| peak GPU memory of one call | precision | allocated before (GiB) | peak (GiB) "
                           "| peak above before (GiB) |"), "|---|---|---:|---:|---:|"]
            lines += [f"| {m['what']} | {m['precision']} | {m['before_gib']:.2f} | {m['peak_gib']:.2f} | "
                      f"{m['peak_gib'] - m['before_gib']:.2f} |" for m in self.memory]
        return "\n".join(lines) + f"\n<!-- /device:{self.variant} -->\n"

    def write(self, status: str) -> str:
        """Write the section with this status line into both files; returns its Markdown."""
        section = self.markdown(status)
        write_section(section, self.variant, self.paths[0])
        write_json_section(self.variant, {**self.record, "status": status, "checks": self.checks,
                                          "rows": [row.record() for row in self.rows], "memory": self.memory,
                                          "parts": self.parts}, self.paths[1])
        return section


def agreement_part(report: Report, model: torch.nn.Module, config, plan: Plan, device: torch.device) -> None:
    """Part 1: the losses of two fp32 training steps on the CPU and on ``device`` agree to 1e-3 relative."""
    images = random_images(plan.agreement_batch, plan.size, 6)
    targets = random_targets(plan.agreement_batch, 20, plan.size, 7)
    sides = []
    for side in (torch.device("cpu"), device):
        started = time.perf_counter()
        replica = copy.deepcopy(model).to(side)
        optimizer = torch.optim.SGD([p for p in replica.parameters() if p.requires_grad], lr=AGREEMENT_LR,
                                    momentum=0.9)
        fp32 = resolve_precision("off", side)
        side_images = [image.to(side) for image in images]
        side_targets = [{k: v.to(side) for k, v in t.items()} for t in targets]
        with cuda_settings(tf32=False, benchmark=False):
            steps = [{k: float(v.detach()) for k, v in
                      fcos_lab_step(replica, config, side_images, side_targets, fp32, optimizer).items()}
                     for _ in range(2)]
        sides.append({"device": str(side), "losses": steps, "seconds": round(time.perf_counter() - started, 2)})
        del replica, optimizer
    differences = [relative_difference(a[key], b[key]) for a, b in zip(sides[0]["losses"], sides[1]["losses"])
                   for key in a]
    worst = max(differences) if all(map(math.isfinite, differences)) else math.inf  # a NaN loss fails
    report.parts["agreement"] = {"sides": sides, "worst_relative_difference": worst, "rtol": AGREEMENT_RTOL}
    what = "CPU and CUDA" if device.type == "cuda" else "CPU and CPU (no GPU: the code path only, trivially equal)"
    report.check("agreement", worst <= AGREEMENT_RTOL,
                 f"losses of two fp32 training steps (TF32 off), R-50, batch {plan.agreement_batch}, "
                 f"{plan.size[0]}x{plan.size[1]}, on {what}: largest relative difference {worst:.2e} "
                 f"(limit {AGREEMENT_RTOL:g}); step 1 loss {sides[0]['losses'][0]['loss']:.5f} vs "
                 f"{sides[1]['losses'][0]['loss']:.5f}")


def demo_part(report: Report, part: str, device: torch.device, iterations: int, amp: str, quick: bool) -> None:
    """Parts 2 and 5: the demo preset trained ``iterations`` steps at ``train.amp=amp``; losses finite and falling."""
    with tempfile.TemporaryDirectory(prefix="fcos_gpu_check_") as folder:
        overrides = [f"train.max_iters={iterations}", "train.eval_every=0", "train.log_every=1", f"train.amp={amp}"]
        config = demo_config(Path(folder), quick, overrides)
        run_dir = Path(folder) / "run"
        try:
            with cuda_settings(tf32=None, benchmark=False):
                result = train(config, run_dir, device=device.type, evaluate_at_end=False, progress=False)
        except FcosLabError as error:  # NonFiniteLossError among them
            report.check(part, False, f"demo training at train.amp={amp} stopped: {error}")
            return
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        runtime = json.loads((run_dir / "config.json").read_text())["runtime"]["train"]
    losses = [row["loss"] for row in rows if "loss" in row]
    finite = len(losses) == iterations and all(math.isfinite(v) for v in losses)
    falling, k, first, last = decreasing(losses) if losses else (False, 0, math.nan, math.nan)
    report.parts[part] = {"preset": config.name, "amp": amp, "precision": runtime["description"],
                          "iterations": result.iterations, "seconds": round(result.seconds, 2),
                          "losses": [round(v, 5) for v in losses],
                          "components_first_last": {key: [rows[0][key], rows[-1][key]] for key in
                                                    ("loss_cls", "loss_box", "loss_centerness") if key in rows[0]}}
    summary = (f"demo preset {config.name}, {result.iterations} iterations at batch {config.train.batch_size} in "
               f"{result.seconds:.1f} s, {runtime['description']}")
    report.check(part, finite, f"{summary}: {len(losses)} logged losses, all finite: {finite}")
    report.check(part, falling, f"mean loss of the first {k} logged iterations {first:.4f}, of the last {k} {last:.4f}")
    if device.type == "cuda" and amp != "off":
        report.check(part, runtime["precision"] != "fp32", f"ran under autocast on CUDA: {runtime['precision']}")


def timing_part(report: Report, task: str, label: str, functions: dict[str, Callable[[], object]],
                precision: Precision, device: torch.device, plan: Plan, wanted: int, budget: Budget) -> None:
    """Parts 3 and 4: the functions timed in turns, rows against torchvision, then the peak memory of each."""
    with cuda_settings(tf32=None, benchmark=True):
        times = timed_rounds(functions, device, plan.warmup, wanted, budget, share=0.5)
        peaks = peak_memory(functions, device)
    rows = model_rows(task, label, times, precision)
    if "ours_fp32" in times:
        rows.append(Row(task, label, "fp32", "fp32", times["tv_fp32"], times["ours_fp32"]))
    report.rows += rows
    print("\n".join(row.markdown() for row in rows), flush=True)
    names = {"tv_fp32": ("torchvision", "fp32"), "tv_amp": ("torchvision", precision.name),
             "ours": ("fcos_lab", precision.name), "ours_fp32": ("fcos_lab", "fp32")}
    report.memory += [{"task": task, "what": f"{label}: {names[name][0]}", "precision": names[name][1],
                       "before_gib": round(before, 3), "peak_gib": round(peak, 3)}
                      for name, (before, peak) in peaks.items()]
    for m in report.memory[len(report.memory) - len(peaks):]:
        print(f"peak memory, {m['what']} {m['precision']}: {m['peak_gib']:.2f} GiB ({m['before_gib']:.2f} before)")


def train_part(report: Report, tv: torch.nn.Module, ours: torch.nn.Module, config, plan: Plan,
               precision: Precision, device: torch.device, budget: Budget) -> None:
    """Part 3: the training step of both libraries at ``plan.train_batch`` (random images and boxes)."""
    tv.to(device)  # the agreement part, before this one, copies the models from the CPU
    ours.to(device)
    images = [image.to(device) for image in random_images(plan.train_batch, plan.size, 2)]
    targets = [{k: v.to(device) for k, v in t.items()} for t in random_targets(plan.train_batch, 20, plan.size, 3)]
    steps = training_steps(tv, ours, config, images, targets, precision)
    timing_part(report, f"train_b{plan.train_batch}", f"training step, batch {plan.train_batch}", steps,
                precision, device, plan, plan.train_rounds, budget)


def infer_part(report: Report, tv: torch.nn.Module, ours: torch.nn.Module, config, fp32_config, plan: Plan,
               precision: Precision, device: torch.device, budget: Budget) -> None:
    """Part 4: inference end to end of both libraries at ``plan.infer_batch``; first, whether their fp32
    detections agree (a recorded fact: cuDNN's algorithms for NHWC and NCHW may order sums differently)."""
    tv.to(device).eval()
    ours.to(device).eval()
    images = [image.to(device) for image in random_images(plan.infer_batch, plan.size, 4)]
    fp32 = resolve_precision("off", device)

    @torch.no_grad()
    def tv_infer(tv_precision: Precision) -> list[dict[str, torch.Tensor]]:
        with tv_precision.autocast():
            return tv(images)

    with cuda_settings(tf32=False, benchmark=False):
        same = all(same_detections(e, d) for e, d in zip(tv_infer(fp32), detect(ours, fp32_config, images)))
    report.check("infer", None, f"fp32 (TF32 off) detections identical to torchvision's at batch {plan.infer_batch}: "
                                f"{same}")
    functions = {"tv_fp32": functools.partial(tv_infer, fp32), "ours": functools.partial(detect, ours, config, images)}
    if precision.enabled:
        functions |= {"tv_amp": functools.partial(tv_infer, precision),
                      "ours_fp32": functools.partial(detect, ours, fp32_config, images)}
    timing_part(report, f"infer_b{plan.infer_batch}", f"inference end to end, batch {plan.infer_batch}", functions,
                precision, device, plan, plan.infer_rounds, budget)


def describe(record: dict[str, Any], plan: Plan, precision: Precision, budget_s: float) -> list[str]:
    """The section's lines about the machine, the software, the settings and the inputs."""
    if record["device"] == "cuda":
        device_line = (f"GPU: {record['gpu']} (compute capability {record['gpu_capability']}, "
                       f"{record['gpu_memory_gib']} GiB, driver {record['gpu_driver'] or 'unknown'}); CUDA "
                       f"{record['cuda']}, cuDNN {record['cudnn']}")
    else:
        device_line = "No GPU (--device cpu): every part runs on the CPU; the agreement compares the CPU with itself"
    height, width = plan.size
    return [
        device_line,
        (f"CPU: {record['cpu']} ({', '.join(record['cpu_flags'])}), {record['threads']} torch threads; "
         f"{platform.system()} {platform.release()}; Python {record['python']}"),
        f"torch {torch.__version__}, torchvision {torchvision.__version__}",
        f"fcos_lab precision (training and inference): {precision.description}",
        ("Settings: timing with cudnn.benchmark=True and PyTorch's default TF32 (matrix products "
         f"{torch.backends.cuda.matmul.allow_tf32}, cuDNN convolutions {torch.backends.cudnn.allow_tf32}: 'fp32' "
         "convolutions are TF32 on a GPU, both libraries alike); the agreement with TF32 off and "
         "cudnn.benchmark=False; the demo with cudnn.benchmark=False"),
        (f"Inputs: random images of {height}x{width} (both models keep the size); up to {plan.train_rounds} timed "
         f"training rounds at batch {plan.train_batch} and {plan.infer_rounds} inference rounds at batch "
         f"{plan.infer_batch} after {plan.warmup} warm-up calls, the libraries in turns, the order alternating by "
         f"round, fewer where the {budget_s:g} s budget runs short"),
        f"Command: `{record['command']}`",
        f"Run at: {record['run_at']}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few iterations (the test suite's run)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for results.md and results.json (default: the committed benchmarks/results.*)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="time budget in seconds (default %(default)s)")
    parser.add_argument("--precision", choices=SETTINGS, default="auto",
                        help="fcos_lab's train.amp and model.inference_amp (default %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's own)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: --device cuda, but torch {torch.__version__} sees no CUDA device; "
              "--device cpu --quick runs the code path alone", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget_s)
    device = torch.device(args.device)
    plan = QUICK if args.quick else FULL
    tv, ours, fp32_config = build_models(torch.device("cpu"), min(plan.size), max(plan.size))
    config = replace(fp32_config, train=replace(fp32_config.train, amp=args.precision),
                     model=replace(fp32_config.model, inference_amp=args.precision))
    precision = resolve_precision(args.precision, device)  # train.amp and model.inference_amp alike
    command = " ".join(["python -m benchmarks.gpu_check", f"--device {args.device}", f"--precision {args.precision}",
                        *(["--quick"] if args.quick else []), f"--budget-s {args.budget_s:g}"])
    record = run_record(device, command, plan.size, plan.train_rounds, plan.warmup, precision, precision, [])
    record |= {"plan": plan.__dict__ | {"size": list(plan.size)}, "python": platform.python_version()}
    where, quick = record.get("gpu", "cpu"), " quick" if args.quick else ""
    report = Report(f"gpu-check {where} {args.precision}{quick}", f"GPU check: {where}, precision {args.precision}"
                    f"{quick}", describe(record, plan, precision, args.budget_s), record, args.out)

    # fp16 on a CPU is emulated (~9 s an iteration of the quick demo on 2 EPYC cores): the part is the GPU's.
    fp16_demo = device.type == "cuda" and precision.name != "fp16"
    parts: list[tuple[str, float, Callable[[], None]]] = [  # (name, seconds it needs at least, what it does)
        ("agreement", 20, lambda: agreement_part(report, ours, fp32_config, plan, device)),
        ("demo", 20, lambda: demo_part(report, "demo", device, plan.demo_iters, args.precision, args.quick)),
        ("train", 20, lambda: train_part(report, tv, ours, config, plan, precision, device, budget)),
        ("infer", 10, lambda: infer_part(report, tv, ours, config, fp32_config, plan, precision, device, budget)),
        *([("demo_fp16", 15, lambda: demo_part(report, "demo_fp16", device, plan.fp16_iters, "fp16", args.quick))]
          if fp16_demo else []),
    ]
    done = []
    for index, (name, needs, run) in enumerate(parts):
        if budget.left() < needs * (0.05 if args.quick else 1.0):
            report.check(name, False, f"not run: {budget.left():.0f} s of the {args.budget_s:g} s budget left")
            continue
        print(f"== {name} ({budget.left():.0f} s of the budget left)", flush=True)
        started = time.perf_counter()
        try:
            run()
        except Exception as error:  # noqa: BLE001 - a part that breaks is reported and the next one still runs
            traceback.print_exc()
            report.check(name, False, f"raised {type(error).__name__}: {error}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report.parts.setdefault("seconds", {})[name] = round(time.perf_counter() - started, 1)
        done.append(name)
        if index + 1 < len(parts):
            report.write(f"partial: done {', '.join(done)}; next {', '.join(p[0] for p in parts[index + 1:])}")
    if not fp16_demo:
        report.check("demo_fp16", None, "not run: " + ("part 2 ran in fp16" if precision.name == "fp16" else
                                                       "fp16 is emulated on a CPU and slow; it runs on CUDA"))
    section = report.write(f"finished in {args.budget_s - budget.left():.0f} s; "
                           + ("a check FAILED or a part did not run" if report.failed else "every check passed"))
    print(section, f"written to {report.paths[0]} and {report.paths[1]}", sep="\n")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
