"""Batched assignment (:func:`fcos_lab.targets.assign`) against torchvision's per-image matching loop.

torchvision's ``FCOS.compute_loss`` first matches every anchor of every image in a Python loop over
images, then hands ``matched_idxs`` to ``head.compute_loss``. Replacing ``head.compute_loss`` by a
stand-in that only records ``matched_idxs`` isolates exactly that loop, which is what we time. The
inputs are the same for both: a padded 800x1216 batch of 8 images with 50 random boxes each, anchors
from ``tv.anchor_generator`` on the feature shapes of torchvision's own backbone, and the
``fcos_r50_fpn_torchvision`` switches on our side (whose matches must be identical, checked first).
The paper's ``fcos_r50_fpn_1x`` switches are timed as well (different rules, so not compared).

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_assignment            # 9 repetitions, CPU, 2 threads
    .venv/bin/python -m benchmarks.bench_assignment --quick    # 5 repetitions
    .venv/bin/python -m benchmarks.bench_assignment --device cuda

Figures go to ``benchmarks/results_assignment.md`` (one section per device, replaced on each run).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection.image_list import ImageList

from fcos_lab.points import feature_shapes, make_locations
from fcos_lab.precision import cpu_name
from fcos_lab.presets import get_preset
from fcos_lab.targets import Assignment, GroundTruth, assign, pad_ground_truth

RESULTS = Path(__file__).with_name("results_assignment.md")
IMAGE_SIZE = (800, 1216)  # (H, W), padded: a typical COCO batch at 800 x 1333
STRIDES = (8, 16, 32, 64, 128)


def random_targets(num_images: int, num_boxes: int, size: tuple[int, int], seed: int) -> list[dict[str, torch.Tensor]]:
    """``num_boxes`` boxes per image of random position and size (4 px up to half the image), COCO labels."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    targets = []
    for _ in range(num_images):
        xy = torch.rand(num_boxes, 2, generator=generator) * torch.tensor([width * 0.9, height * 0.9])
        wh = torch.rand(num_boxes, 2, generator=generator) * torch.tensor([width * 0.5, height * 0.5]) + 4
        boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([float(width), float(height)]))], dim=1)
        targets.append({"boxes": boxes, "labels": torch.randint(1, 91, (num_boxes,), generator=generator)})
    return targets


def timed_round_robin(
    functions: dict[str, Callable[[], object]], device: torch.device, warmup: int, reps: int
) -> dict[str, list[float]]:
    """Wall-clock seconds of ``reps`` calls of each function, taken in turns (one call of each per round)
    so that a busy machine slows all of them alike; CUDA is synchronised around each call. The order
    within a round alternates, so that neither function always runs right after the other."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in functions}
    order = list(functions.items())
    for round_index in range(reps):
        for name, fn in order if round_index % 2 == 0 else order[::-1]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def assign_with(preset: str, locations, gt: GroundTruth) -> Assignment:
    a = get_preset(preset).assign
    return assign(
        locations,
        gt,
        a.size_ranges,
        size_range_inclusive=a.size_range_inclusive,
        center_sampling_radius=a.center_sampling_radius,
        area_tiebreak_float32=a.area_tiebreak_float32,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 repetitions, 1 warm-up")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--boxes", type=int, default=50)
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 9, or 5 with --quick)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results_assignment.md alone")
    args = parser.parse_args(argv)
    command_line = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--no-write"]
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    reps = args.reps or (5 if args.quick else 9)
    warmup = 1 if args.quick else 2

    # torchvision's FCOS: its backbone gives the real feature shapes, its anchor generator the anchors.
    torch.manual_seed(0)
    tv = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None).to(device).eval()
    with torch.no_grad():
        features = list(tv.backbone(torch.zeros(1, 3, *IMAGE_SIZE, device=device)).values())
    shapes = tuple((int(f.shape[-2]), int(f.shape[-1])) for f in features)
    assert shapes == feature_shapes(IMAGE_SIZE), (shapes, feature_shapes(IMAGE_SIZE))
    num_images = args.images
    padded = torch.zeros(1, 3, *IMAGE_SIZE, device=device).expand(num_images, -1, -1, -1)
    image_list = ImageList(padded, [IMAGE_SIZE] * num_images)
    anchors = tv.anchor_generator(image_list, [f.expand(num_images, -1, -1, -1) for f in features])
    num_anchors_per_level = [h * w for h, w in shapes]

    targets = random_targets(num_images, args.boxes, IMAGE_SIZE, seed=0)
    targets = [{key: value.to(device) for key, value in t.items()} for t in targets]
    captured: dict[str, list[torch.Tensor]] = {}

    def record_matches(targets, head_outputs, anchors, matched_idxs):
        captured["matched_idxs"] = matched_idxs
        return {}

    tv.head.compute_loss = record_matches  # isolates the matching loop of FCOS.compute_loss

    def torchvision_loop():
        return tv.compute_loss(targets, {}, anchors, num_anchors_per_level)

    gt = pad_ground_truth([t["boxes"] for t in targets], [t["labels"] for t in targets])
    tv_switches = get_preset("fcos_r50_fpn_torchvision").assign
    tv_locations = make_locations(
        shapes, STRIDES, tv_switches.location_offset, IMAGE_SIZE if tv_switches.stride_from_image else None, device
    )
    paper_switches = get_preset("fcos_r50_fpn_1x").assign
    paper_locations = make_locations(shapes, STRIDES, paper_switches.location_offset, None, device)

    # Correctness first: the same anchor points and the same matched box for every anchor of every image.
    anchor_centers = (anchors[0][:, :2] + anchors[0][:, 2:]) / 2
    same_points = torch.equal(anchor_centers, tv_locations.points)
    torchvision_loop()
    ours = assign_with("fcos_r50_fpn_torchvision", tv_locations, gt)
    identical = all(torch.equal(ours.matched_gt[i], m) for i, m in enumerate(captured["matched_idxs"]))
    num_positive = int(ours.positive.sum())
    print(f"anchor centers == fcos_lab locations: {same_points}")
    print(f"matched indices identical (fcos_lab matched_gt vs torchvision matched_idxs): {identical} "
          f"({num_positive} positives of {num_images * len(anchor_centers)} anchors)")
    if not (same_points and identical):
        raise SystemExit("fcos_lab and torchvision disagree; timings would be meaningless")

    def paper_assign():
        return assign_with("fcos_r50_fpn_1x", paper_locations, gt)

    def torchvision_assign():
        return assign_with("fcos_r50_fpn_torchvision", tv_locations, gt)

    def pad_and_assign():
        padded = pad_ground_truth([t["boxes"] for t in targets], [t["labels"] for t in targets])
        return assign_with("fcos_r50_fpn_torchvision", tv_locations, padded)

    load_before = os.getloadavg()[0]
    runs = timed_round_robin(
        {
            "torchvision FCOS.compute_loss matching loop (per image)": torchvision_loop,
            "fcos_lab assign, fcos_r50_fpn_torchvision switches": torchvision_assign,
            "fcos_lab pad_ground_truth + assign, same switches": pad_and_assign,
            "fcos_lab assign, fcos_r50_fpn_1x (paper) switches": paper_assign,
        },
        device,
        warmup,
        reps,
    )
    load_after = os.getloadavg()[0]
    baseline_times = next(iter(runs.values()))
    baseline_median, baseline_min = statistics.median(baseline_times), min(baseline_times)
    rows = []
    for name, times in runs.items():
        median = statistics.median(times)
        figures = f"{median * 1e3:.1f} | {min(times) * 1e3:.1f} | {max(times) * 1e3:.1f}"
        rows.append(f"| {name} | {figures} | {baseline_median / median:.1f}x | {baseline_min / min(times):.1f}x |")
    num_points = len(anchor_centers)
    machine = (
        f"{cpu_name()}, {os.cpu_count()} logical CPUs"
        + (f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
        + f"; {platform.system()} {platform.release()}; Python {platform.python_version()}"
    )
    section = "\n".join(
        [
            f"<!-- device:{device.type} -->",
            f"## Device: {device.type}",
            "",
            f"- Machine: {machine}",
            f"- torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"torch threads {torch.get_num_threads()}",
            f"- Inputs: {num_images} images of {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} (padded), {args.boxes} random boxes "
            f"each, P = {num_points} locations ({' + '.join(map(str, num_anchors_per_level))}), seed 0",
            f"- Check: matched indices identical to torchvision's: **{identical}** ({num_positive} positives); "
            f"anchor centers == fcos_lab locations: {same_points}",
            f"- Timing: {warmup} warm-up call(s), then {reps} rounds calling each method once in turn; wall clock"
            + (", CUDA synchronised" if device.type == "cuda" else "")
            + f"; 1-minute load average {load_before:.2f} before, {load_after:.2f} after (other jobs share the machine)",
            f"- Command: `{' '.join(['.venv/bin/python -m benchmarks.bench_assignment', *command_line])}`",
            f"- Run at: {time.strftime('%Y-%m-%d %H:%M:%S')}",
            "",
            "| method | median ms | min ms | max ms | speed-up (medians) | speed-up (minima) |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            f"<!-- /device:{device.type} -->",
        ]
    )
    print()
    print(section)
    if not args.no_write:
        write_section(section, device.type)
        print(f"\nwritten to {RESULTS}")


def write_section(section: str, device: str) -> None:
    """Replace this device's section of the results file (keeping the others), or add it."""
    header = (
        "# Assignment benchmark: fcos_lab.targets.assign vs torchvision's per-image matching loop\n\n"
        "Produced by `benchmarks/bench_assignment.py` (see its docstring); do not edit by hand.\n"
    )
    text = RESULTS.read_text() if RESULTS.exists() else header
    pattern = re.compile(rf"<!-- device:{device} -->.*?<!-- /device:{device} -->", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
