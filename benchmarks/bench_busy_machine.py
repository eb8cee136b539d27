"""Speed on a busy machine: the demo's training loop and ``fcos-lab stats``, idle and beside a competitor.

The competitor is a pure-Python busy loop in its own process (one core's worth of CPU-bound work, the
situation of a shared machine); it is started right before a measured run and stopped right after, and
stops by itself after ``--competitor-limit`` seconds in any case. Every measured run is a fresh process,
because OpenMP reads its wait policy only when torch loads. Variants (``--variants``):

- ``before``: the behaviour before :mod:`fcos_lab.threads`: one intra-op thread per CPU whatever the load
  (``OMP_NUM_THREADS``) and libgomp's default spin-waiting (``GOMP_SPINCOUNT=300000``), fp32 training;
- ``after``: fcos_lab's defaults (passive waiting, threads that follow the free cores, ``train.amp=auto``);
- ``after_fp32``: the same with ``train.amp=off``, to separate the threads' share from the precision's;
- ``passive``: passive waiting alone (thread count fixed); ``governor``: the thread governor alone.

Rounds alternate the order of the variants; before each idle/busy pair the script waits (up to
``--max-wait`` seconds) until the machine's other processes use fewer than ``--quiet-below`` CPUs, and each
row reports the 1-minute load average before the run and the CPU the *other* processes used meanwhile
(``/proc/stat`` minus our children), since the machine this was written on is shared.

    python -m benchmarks.bench_busy_machine [--iters 30] [--rounds 2] [--variants before,after]
        [--tasks demo,stats] [--ann FILE] [--quiet-below 0.3] [--max-wait 600] [--no-write]

Writes ``benchmarks/results_busy_machine.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fcos_lab.checkpoint import atomic_write_text
from fcos_lab.precision import cpu_name
from fcos_lab.threads import available_cpus, busy_seconds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results_busy_machine.md")
DEFAULT_ANN = ROOT.parent / "shared" / "data" / "coco" / "annotations" / "instances_val2017_bboxonly_DERIVED.json"
TASKS = ("demo", "stats")
# A bounded CPU-bound loop: stops by itself after argv[1] seconds even if nobody stops it.
BUSY_LOOP = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def variants(cpus: int) -> dict[str, tuple[dict[str, str], list[str]]]:
    """Name -> (environment additions, demo config overrides)."""
    pinned = {"OMP_NUM_THREADS": str(cpus)}
    spinning = {"GOMP_SPINCOUNT": "300000"}  # libgomp's default when OMP_WAIT_POLICY is unset
    return {
        "before": ({**pinned, **spinning}, ["train.amp=off"]),
        "after": ({}, []),
        "after_fp32": ({}, ["train.amp=off"]),
        "passive": (pinned, ["train.amp=off"]),
        "governor": (spinning, ["train.amp=off"]),
    }


def demo_child(work_dir: Path, iters: int, overrides: list[str]) -> None:
    """Train the demo preset for ``iters`` iterations; print seconds per iteration after the first window."""
    from fcos_lab.threads import prefer_passive_wait

    prefer_passive_wait()  # as the CLI does, before torch loads
    import torch

    from fcos_lab.demo import demo_config
    from fcos_lab.train import train

    config = demo_config(work_dir / "demo_data", False, [f"train.max_iters={iters}", "train.log_every=5",
                                                         f"train.checkpoint_every={10**6}", *overrides])
    run_dir = Path(tempfile.mkdtemp(dir=work_dir))
    train(config, run_dir, evaluate_at_end=False, progress=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    span = rows[-1]["iter"] - rows[0]["iter"]
    seconds = (rows[-1]["time"] - rows[0]["time"]) / span if span else None
    print(json.dumps({"s_per_iter": seconds, "threads": sorted({r["threads"] for r in rows}),
                      "precision": config.train.amp, "torch_threads_at_end": torch.get_num_threads()}))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _busy() -> float:
    return busy_seconds(Path("/proc/stat").read_text())


def wait_for_quiet(below: float, max_wait: float, window: float = 5.0) -> float:
    """Wait (at most ``max_wait`` s) until processes other than ours use fewer than ``below`` CPUs over
    ``window`` seconds; returns the last such reading. On a shared machine a pair of runs only compares
    idle with one competitor when nothing else runs."""
    deadline = time.monotonic() + max_wait
    while True:
        start_cpu, start_busy, start = _children_cpu(), _busy(), time.perf_counter()
        time.sleep(window)
        others = max(0.0, (_busy() - start_busy) - (_children_cpu() - start_cpu)) / (time.perf_counter() - start)
        if others < below or time.monotonic() >= deadline:
            return others
        time.sleep(10)


def measure(command: list[str], env: dict[str, str], busy: bool, limit_s: float) -> dict:
    """Run ``command`` (beside a competitor when ``busy``); wall time, its JSON output, the machine's other load."""
    load_before = os.getloadavg()[0]
    start_cpu, start_busy, start = _children_cpu(), _busy(), time.perf_counter()
    competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(limit_s)]) if busy else None
    try:
        done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, cwd=ROOT)
    finally:
        if competitor is not None:
            competitor.terminate()
            competitor.wait()
    wall = time.perf_counter() - start
    others = max(0.0, (_busy() - start_busy) - (_children_cpu() - start_cpu)) / wall
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    return {**result, "wall_s": wall, "load_before": load_before, "others_cpu": others}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=30, help="demo training iterations per run (default 30)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default="before,after", help="comma-separated, of " + ", ".join(variants(1)))
    parser.add_argument("--tasks", default=",".join(TASKS), help="demo, stats or both (default)")
    parser.add_argument("--ann", default=str(DEFAULT_ANN), help="annotation file for fcos-lab stats")
    parser.add_argument("--competitor-limit", type=float, default=900.0, help="seconds after which it stops itself")
    parser.add_argument("--quiet-below", type=float, default=0.3,
                        help="before each idle/busy pair, wait until other processes use fewer CPUs than this")
    parser.add_argument("--max-wait", type=float, default=600.0, help="seconds to wait for that, then run anyway")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child-demo", metavar="WORK_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--child-overrides", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_demo:
        demo_child(Path(args.child_demo), args.iters, [o for o in args.child_overrides.split(";") if o])
        return 0
    cpus = available_cpus()
    table = variants(cpus)
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if set(chosen) - set(table) or set(tasks) - set(TASKS):
        parser.error(f"choose variants from {', '.join(table)} and tasks from {', '.join(TASKS)}")
    if "stats" in tasks and not Path(args.ann).is_file():
        parser.error(f"--ann {args.ann}: no such file")

    work_dir = Path(tempfile.mkdtemp(prefix="bench_busy_"))
    python = [sys.executable, "-m"]

    def command(task: str, name: str) -> list[str]:
        if task == "demo":
            return python + ["benchmarks.bench_busy_machine", "--child-demo", str(work_dir), "--iters",
                             str(args.iters), "--child-overrides", ";".join(table[name][1])]
        return python + ["fcos_lab.cli", "stats", "--ann", args.ann, "--out", str(work_dir / "stats")]

    if "demo" in tasks:  # writes the synthetic data once, outside the timings
        measure(command("demo", "after")[:-2] + ["--child-overrides", "train.max_iters=2"], {}, False, 60)
    results: list[dict] = []
    for round_index in range(args.rounds):
        for task in tasks:
            for name in chosen if round_index % 2 == 0 else chosen[::-1]:
                wait_for_quiet(args.quiet_below, args.max_wait)
                for busy in (False, True) if round_index % 2 == 0 else (True, False):
                    row = measure(command(task, name), table[name][0], busy, args.competitor_limit)
                    row |= {"round": round_index + 1, "task": task, "variant": name, "busy": busy}
                    results.append(row)
                    print(json.dumps(row), flush=True)

    lines = report(results, tasks, chosen, args, cpus)
    print("\n".join(lines))
    if not args.no_write:
        write_section(f"{','.join(tasks)} {','.join(chosen)}", lines)
    return 0


def write_section(key: str, lines: list[str]) -> None:
    """Replace (or append) this task and variant combination's section of ``results_busy_machine.md``."""
    start, end = f"<!-- run:{key} -->", f"<!-- /run:{key} -->"
    section = "\n".join([start, *lines, end]) + "\n"
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Speed on a busy machine: idle against one competing CPU-bound process\n\n"
        "Produced by `benchmarks/bench_busy_machine.py`; do not edit by hand.\n\n")
    if start in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end + "\n", 1)[-1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(RESULTS, text)


def report(results: list[dict], tasks: list[str], chosen: list[str], args, cpus: int) -> list[str]:
    """Markdown: per task, variant and round, idle and busy time and the share of idle speed kept."""
    def speed(row: dict) -> float:  # seconds per unit of work: per iteration (demo) or per run (stats)
        return row["s_per_iter"] if row["task"] == "demo" else row["wall_s"]

    lines = [
        f"## {', '.join(tasks)}: {', '.join(chosen)}",
        "",
        f"Produced by `python -m benchmarks.bench_busy_machine --iters {args.iters} --rounds {args.rounds} "
        f"--variants {','.join(chosen)} --tasks {','.join(tasks)}` on {cpu_name()} ({cpus} CPUs available), "
        f"{platform.system()} {platform.release()}, {datetime.datetime.now().isoformat(timespec='seconds')}.",
        "demo: seconds per training iteration of the demo preset (after the first 5); stats: wall seconds of "
        f"`fcos-lab stats --ann {Path(args.ann).name}` (imports included). An idle run and a run beside the "
        "competitor follow each other; 'kept' = idle time / busy time of that pair. 'others' = CPUs that "
        "processes other than ours kept busy during the idle / busy run (the machine is shared): a round with "
        "others near 1 compares one competitor more against one.",
        "",
        "| task | variant | round | idle | busy | kept | threads idle / busy | load avg before | others |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for task in tasks:
        for name in chosen:
            for round_number in sorted({r["round"] for r in results}):
                pair = {r["busy"]: r for r in results
                        if r["task"] == task and r["variant"] == name and r["round"] == round_number}
                idle, busy = pair[False], pair[True]
                threads = f"{idle.get('threads', '-')} / {busy.get('threads', '-')}" if task == "demo" else "-"
                lines.append(
                    f"| {task} | {name} | {round_number} | {speed(idle):.3f} s | {speed(busy):.3f} s | "
                    f"{100 * speed(idle) / speed(busy):.0f}% | {threads} | {idle['load_before']:.1f} / "
                    f"{busy['load_before']:.1f} | {idle['others_cpu']:.2f} / {busy['others_cpu']:.2f} |")
    return lines

if __name__ == "__main__":
    sys.exit(main())
