"""Where a mixed-precision training step spends its time: fp32 against autocast, and the top operators.

One batch-2 training step (forward, assignment, loss, backward, SGD step) of torchvision's FCOS and of
fcos_lab with the same weights (:func:`benchmarks.bench_vs_torchvision.training_steps`), each in fp32 and
under fcos_lab's autocast, interleaved round by round in one process; then ``torch.profiler`` on one
fcos_lab step at its precision, operators sorted by self CPU time.

    python -m benchmarks.profile_train_step [--size 512x512] [--threads 1] [--reps 3] [--precision auto]
        [--device cpu|cuda] [--no-write]

Prints a Markdown summary and writes it as a section of ``benchmarks/results.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.bench_assignment import random_targets, timed_round_robin
from benchmarks.bench_vs_torchvision import build_models, parse_size, training_steps
from benchmarks.comparison import run_record, write_json_section
from fcos_lab.config import TrainConfig
from fcos_lab.precision import SETTINGS, cpu_name, resolve_precision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=SETTINGS, default=TrainConfig().amp, help="default: %(default)s")
    parser.add_argument("--size", type=parse_size, default=(512, 512), help="images HxW (default 512x512)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3, help="timed rounds after one warm-up (default 3)")
    parser.add_argument("--top", type=int, default=15, help="operators listed (default 15)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = args.size
    tv, ours, config = build_models(device, min(size), max(size))
    config = replace(config, train=replace(config.train, amp=args.precision))
    precision = resolve_precision(config.train.amp, device)
    generator = torch.Generator().manual_seed(2)
    images = [torch.rand(3, *size, generator=generator).to(device) for _ in range(2)]
    targets = [{k: v.to(device) for k, v in t.items()} for t in random_targets(2, 20, size, 3)]

    steps = training_steps(tv, ours, config, images, targets, precision)
    times = timed_round_robin(steps, device, 1, args.reps)
    medians = {name: statistics.median(values) for name, values in times.items()}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        steps["ours"]()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 2),
            "share": round(e.self_cpu_time_total / total, 4), "calls": e.count} for e in events[: args.top]]

    name = precision.name
    lines = [f"## Training step, batch 2, {size[0]}x{size[1]}, {torch.get_num_threads()} threads, {cpu_name()}", "",
             f"fcos_lab precision: {precision.description}", "",
             f"Median of {args.reps} interleaved rounds (s): " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items())]
    if precision.enabled:
        lines.append(
            f"fp32 / {name} step time: fcos_lab {medians['ours_fp32'] / medians['ours']:.2f}x, torchvision "
            f"{medians['tv_fp32'] / medians['tv_amp']:.2f}x. fcos_lab {name} against torchvision fp32 "
            f"{medians['tv_fp32'] / medians['ours']:.2f}x, against torchvision {name} "
            f"{medians['tv_amp'] / medians['ours']:.2f}x."
        )
    lines += ["", f"fcos_lab's top operators by self CPU time in one {name} step ({total / 1000:.0f} ms in all):", "",
              "| operator | self CPU ms | share | calls |", "|---|---:|---:|---:|"]
    lines += [f"| {t['op']} | {t['self_cpu_ms']:.1f} | {100 * t['share']:.1f}% | {t['calls']} |" for t in top]
    print("\n".join(lines))
    if not args.no_write:
        variant = f"profile {device.type} {name} {size[0]}x{size[1]} threads {torch.get_num_threads()}"
        command = (f"python -m benchmarks.profile_train_step --device {device.type} --precision {args.precision} "
                   f"--size {size[0]}x{size[1]} --threads {args.threads} --reps {args.reps}")
        record = run_record(device, command, size, args.reps, 1, precision, precision, [])
        write_json_section(variant, {**record, "median_s": medians, "top_ops": top})
    return 0


if __name__ == "__main__":
    sys.exit(main())
