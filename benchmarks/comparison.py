"""Rows of a timed comparison and the files they go to: ``results.md`` and ``results.json``.

Used by :mod:`benchmarks.bench_vs_torchvision`, :mod:`benchmarks.profile_train_step` and
:mod:`benchmarks.gpu_check`. A row holds the seconds of every round for both libraries; its speed-up is the
ratio of the medians, and the lowest and highest ratio within one round show how steady the machine was.
"""

from __future__ import annotations

import datetime
import json
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision

from fcos_lab.checkpoint import atomic_write_text
from fcos_lab.precision import RECORDED_FLAGS, Precision, cpu_flags, cpu_name

RESULTS = Path(__file__).with_name("results.md")
RESULTS_JSON = Path(__file__).with_name("results.json")


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


@dataclass(frozen=True)
class Row:
    """One comparison: seconds per round of each library, and the precision each ran in (None: not a model)."""

    task: str  # assignment, train_b2, train_b8, infer_b1, infer_b8, postprocess, eval
    label: str
    fcos_lab_precision: str | None
    torchvision_precision: str | None
    torchvision_s: list[float]
    fcos_lab_s: list[float]

    @property
    def per_round(self) -> list[float]:
        return [t / o for t, o in zip(self.torchvision_s, self.fcos_lab_s)]

    @property
    def speedup(self) -> float:
        return median_ms(self.torchvision_s) / median_ms(self.fcos_lab_s)

    def markdown(self) -> str:
        """A table row: the precisions, both medians, their ratio, the lowest and highest ratio of one round."""
        precisions = f"{self.fcos_lab_precision or '-'} / {self.torchvision_precision or '-'}"
        ratios = self.per_round
        return (f"| {self.label} | {precisions} | {median_ms(self.torchvision_s):.1f} | "
                f"{median_ms(self.fcos_lab_s):.1f} | **{self.speedup:.2f}x** | "
                f"{min(ratios):.2f}-{max(ratios):.2f}x ({len(ratios)}) |")

    def record(self) -> dict[str, Any]:
        """The ``results.json`` row."""
        ratios = self.per_round
        return {"task": self.task, "fcos_lab_precision": self.fcos_lab_precision,
                "torchvision_precision": self.torchvision_precision, "speedup": round(self.speedup, 4),
                "min": round(min(ratios), 4), "max": round(max(ratios), 4), "rounds": len(ratios),
                "torchvision_ms": round(median_ms(self.torchvision_s), 3),
                "fcos_lab_ms": round(median_ms(self.fcos_lab_s), 3)}


MARKDOWN_HEADER = [
    "| what | precision fcos_lab / torchvision | torchvision ms (median) | fcos_lab ms (median) | speed-up "
    "| per-round range (rounds) |",
    "|---|---|---:|---:|---:|---:|",
]


def model_rows(task: str, label: str, times: dict[str, list[float]], precision: Precision) -> list[Row]:
    """fcos_lab (``ours``) at ``precision`` against torchvision in fp32 (``tv_fp32``) and, where timed, under the
    same autocast (``tv_amp``)."""
    rows = [Row(task, label, precision.name, "fp32", times["tv_fp32"], times["ours"])]
    if "tv_amp" in times:
        rows.append(Row(task, label, precision.name, precision.name, times["tv_amp"], times["ours"]))
    return rows


def run_record(device: torch.device, command: str, size: tuple[int, int], reps: int, warmup: int,
               train_precision: Precision, infer_precision: Precision, checks: list[str]) -> dict[str, Any]:
    """What ran where: CPU model and flags, versions, threads, precisions, inputs (a JSON section's header)."""
    record = {
        "run_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "cpu": cpu_name(),
        "cpu_flags": [flag for flag in RECORDED_FLAGS if flag in cpu_flags()],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "device": device.type,
        "precision": {"train": train_precision.description, "inference": infer_precision.description},
        "size": list(size),
        "reps": reps,
        "warmup": warmup,
        "checks": checks,
    }
    if device.type == "cuda":
        record |= gpu_record(device)
    return record


def gpu_record(device: torch.device) -> dict[str, Any]:
    """The GPU and its software: name, compute capability, memory, driver, CUDA and cuDNN versions, and the
    settings that change fp32 speed (TF32 in matrix products and convolutions, cuDNN's autotuner)."""
    properties = torch.cuda.get_device_properties(device)
    return {
        "gpu": properties.name,
        "gpu_capability": f"{properties.major}.{properties.minor}",
        "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
        "gpu_driver": nvidia_driver_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver's version from ``nvidia-smi``, or None where it cannot be run."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def write_section(section: str, variant: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section of this device and flag combination in ``results.md``."""
    start, end = f"<!-- device:{variant} -->", f"<!-- /device:{variant} -->\n"
    text = path.read_text() if path.exists() else (
        "# fcos_lab vs torchvision FCOS\n\nProduced by `benchmarks/bench_vs_torchvision.py` and `benchmarks/gpu_check.py`; "
        "do not edit by hand.\n\n")
    if start in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1] if end in rest else ""
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, text)


def write_json_section(variant: str, record: dict[str, Any], path: Path = RESULTS_JSON) -> None:
    """Replace (or add) the section of this run in ``results.json``."""
    data = json.loads(path.read_text()) if path.exists() else {
        "about": "Produced by benchmarks/bench_vs_torchvision.py, benchmarks/profile_train_step.py and "
                 "benchmarks/gpu_check.py; speedup = "
                 "torchvision median / fcos_lab median; min and max = the lowest and highest ratio within one round.",
        "sections": {}}
    data["sections"][variant] = record
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
