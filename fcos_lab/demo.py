"""The embedded demo: synthetic data, a CPU-sized FCOS, training, evaluation, pictures.

Needs nothing outside the package: the synthetic COCO-format dataset is generated on the fly.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from fcos_lab.config import Config
from fcos_lab.presets import DEMO_PRESET, resolve

# The sample pictures are drawn enlarged to this longer side (the model still runs at the preset's size),
# so that boxes and labels read without zooming.
SAMPLE_DISPLAY_SIZE = 512
SAMPLE_SCORE_THRESH = 0.3
NUM_SAMPLES = 4
# The metrics the summary carries and the command line prints: COCO's AP, its IoU and size splits, and
# the recall of large objects (the issue that grew the demo's images, #21).
SUMMARY_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARl")


def demo_config(out_dir: Path, quick: bool, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The demo preset pointed at ``out_dir/synthetic``; ``quick`` shrinks data and schedule to seconds."""
    config = resolve(DEMO_PRESET)
    config = replace(config, data=replace(config.data, synthetic_root=str(out_dir / "synthetic")))
    if quick:
        config = resolve(
            config,
            [
                "data.synthetic_num_train=16",
                "data.synthetic_num_val=8",
                "data.synthetic_image_size=160",
                "input.min_size=160",
                "input.train_min_size=[160,160]",
                "input.max_size=256",
                "train.max_iters=12",
                "train.batch_size=4",
                "train.warmup_iters=4",
                "train.log_every=4",
                "train.checkpoint_every=6",
                "train.eval_every=6",
                "train.num_workers=0",
            ],
        )
    return resolve(config, overrides)


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    quick: bool = False,
    device: str = "auto",
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> dict:
    """Generate data, train, evaluate, render; returns a summary dict (also written as ``summary.json``)."""
    from fcos_lab.data.coco import load_image
    from fcos_lab.data.splits import build_datasets
    from fcos_lab.predict import detect
    from fcos_lab.runs import json_safe, load_detector, write_json
    from fcos_lab.train import train
    from fcos_lab.viz.curves import training_curves_figure, training_curves_png
    from fcos_lab.viz.draw import draw_detections

    out_dir = Path(out_dir)
    config = demo_config(out_dir, quick, overrides)
    run_dir = out_dir / "run"
    started = time.perf_counter()
    result = train(config, run_dir, device=device, progress=progress)

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    training_curves_figure(rows).write_html(run_dir / "training_curves.html", include_plotlyjs=True)
    training_curves_png(rows, run_dir / "training_curves.png")

    loaded = load_detector(run_dir / "model_final.pt")
    _, val = build_datasets(loaded.config, need_train=False)
    samples_dir = run_dir / "samples"
    samples_dir.mkdir(exist_ok=True)
    for image_id in val.image_ids[:NUM_SAMPLES]:
        record = val.coco.imgs[image_id]
        image = load_image(val.image_dir / record["file_name"])
        det = detect(loaded.model, loaded.config, [image])[0]
        keep = det.scores >= SAMPLE_SCORE_THRESH
        gt = torch.tensor([a["bbox"] for a in val.coco.imgToAnns[image_id]], dtype=torch.float32).reshape(-1, 4)
        gt[:, 2:] += gt[:, :2]
        picture = draw_detections(image, det.boxes[keep], det.labels[keep], det.scores[keep], list(loaded.class_names),
                                  levels=det.levels[keep], gt_boxes=gt, display_size=SAMPLE_DISPLAY_SIZE)
        picture.save(samples_dir / f"{Path(record['file_name']).stem}.png")

    summary = {
        "run_dir": str(run_dir),
        "preset": config.name,
        "quick": quick,
        "iterations": result.iterations,
        "seconds": round(time.perf_counter() - started, 1),
        **{key: result.metrics.get(key) for key in SUMMARY_METRICS},
        "files": {
            "metrics": str(run_dir / "metrics.json"),
            "training_log": str(run_dir / "metrics.jsonl"),
            "curves_html": str(run_dir / "training_curves.html"),
            "curves_png": str(run_dir / "training_curves.png"),
            "detections": str(run_dir / "detections_val.json"),
            "samples": str(samples_dir),
            "checkpoint": str(run_dir / "model_final.pt"),
            "weights": str(run_dir / "model_final.safetensors"),
        },
    }
    summary = json_safe(summary)  # a size with no ground truth (no large object in --quick) has NaN AP: null
    write_json(out_dir / "summary.json", summary)
    return summary
