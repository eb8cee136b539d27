"""Time ``fcos_lab``'s TIDE error breakdown against tidecv (TIDE's reference implementation) on the same files.

    .venv/bin/python benchmarks/bench_errors.py [--repeat 3] [--out benchmarks/results_errors.md]

Detections are made from the ground truth (tests/analysis/tide_reference.py: jitter, class swaps,
duplicates, background boxes, misses, random scores) on the 128-image and the 5,000-image val2017 files, and
on the 5,000 images with about 100 detections per image (what a detector keeps). Both sides run end to end
from their files: fcos_lab reads and validates both files, classifies and computes the six main and two
special dAPs; tidecv reads its copy of the annotations (box polygons added, which it needs) and does the
same. Writes a markdown section with the times, the largest |difference| of the nine numbers and the CPU
(``lscpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from fcos_lab.analysis.tide import tide_errors
from fcos_lab.analysis.tide_breakdowns import load_inputs
from tests.analysis.tide_reference import perturbed_detections, run_tidecv, write_tidecv_inputs

ROOT = Path(__file__).resolve().parents[1]
ANNOTATIONS = ROOT / ".." / "shared" / "data" / "coco" / "annotations"
CASES = [  # (name, annotation file, background boxes per image)
    ("val2017, 128 images", "instances_val2017_lightly128_bboxonly_DERIVED.json", 1.5),
    ("val2017, 5,000 images", "instances_val2017_bboxonly_DERIVED.json", 1.5),
    ("val2017, 5,000 images, ~100 detections/image", "instances_val2017_bboxonly_DERIVED.json", 90.0),
]


def cpu_model() -> str:
    """``Model name`` as lscpu prints it."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), "unknown")


def fcos_lab_errors(ann_path: Path, det_path: Path) -> dict[str, float]:
    coco, detections = load_inputs(ann_path, det_path)
    errors = tide_errors(coco, detections)
    return {"AP": errors.ap, **errors.main_errors(), **errors.special_errors()}


def best_time(function, *args, repeat: int) -> tuple[float, dict[str, float]]:
    times, result = [], {}
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_errors.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, file_name, background in CASES:
            ann_path = ANNOTATIONS / file_name
            annotations = json.loads(ann_path.read_text())
            detections = perturbed_detections(annotations, args.seed, background=background)
            tidecv_ann, det_path = write_tidecv_inputs(annotations, detections, Path(folder))
            ours_s, ours = best_time(fcos_lab_errors, ann_path, det_path, repeat=args.repeat)
            theirs_s, theirs = best_time(run_tidecv, tidecv_ann, det_path, repeat=args.repeat)
            difference = max(abs(ours[k] - theirs[k]) for k in theirs)
            rows.append((name, len(annotations["images"]), len(annotations["annotations"]), len(detections), ours_s,
                         theirs_s, difference, ours))
            print(f"{name}: fcos_lab {ours_s:.2f} s, tidecv {theirs_s:.2f} s, max |difference| {difference:.1e}",
                  flush=True)
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        "# TIDE error breakdown: fcos_lab against tidecv", "",
        (f"`.venv/bin/python benchmarks/bench_errors.py --repeat {args.repeat}` on {cpu_model()} ({os.cpu_count()} "
         f"cores, shared; load average after the runs {load}), numpy {np.__version__}; best of {args.repeat} runs "
         "each (the first run of each side also imports its modules), end to end from the files (reading, "
         "validating, matching, the six main and two special dAPs)."), "",
        (f"| detections (seed {args.seed}) | images | boxes | detections | fcos_lab (s) | tidecv (s) | speed-up | "
         "max abs. difference (AP points) |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, images, boxes, count, ours_s, theirs_s, difference, _ in rows:
        lines.append(f"| {name} | {images} | {boxes} | {count} | {ours_s:.2f} | {theirs_s:.2f} | "
                     f"{theirs_s / ours_s:.1f}x | {difference:.1e} |")
    lines += ["", "The numbers themselves (fcos_lab; tidecv agrees to the last column above):", "",
              "| detections | AP50 | Cls | Loc | Both | Dupe | Bkg | Miss | FalsePos | FalseNeg |",
              "|---|" + "---:|" * 9]
    for name, *_, ours in rows:
        keys = ("AP", "Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FalsePos", "FalseNeg")
        lines.append(f"| {name} | " + " | ".join(f"{ours[k]:.2f}" for k in keys) + " |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
