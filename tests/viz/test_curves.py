"""Figures from precision-recall and training curves build and write PNGs (fcos_lab.viz.curves)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fcos_lab.viz.curves import (
    pr_curves_figure,
    pr_curves_png,
    training_curves_figure,
    training_curves_png,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RECALL = np.linspace(0.0, 1.0, 101)


def fake_curves(scale: float) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    # A non-increasing envelope that drops faster at stricter IoU, like the paper's Figures 4-6.
    return {iou: (RECALL, scale * np.clip(1.0 - RECALL**2 * iou * 1.5, 0.0, 1.0))
            for iou in (0.5, 0.75, 0.9)}


TRAINING_ROWS = [
    {"iter": i, "loss_cls": 1.0 / (i + 1), "loss_box": 0.5, "loss_centerness": 0.66, "loss": 2.0,
     "lr": 0.01 * min(1.0, (i + 1) / 5)}
    for i in range(0, 40, 5)
] + [{"iter": 20, "AP": 0.1, "AP50": 0.25}, {"iter": 40, "AP": 0.2, "AP50": 0.4}]


def test_pr_curves_figure_overlays_methods_per_iou() -> None:
    figure = pr_curves_figure({"FCOS": fake_curves(1.0), "RetinaNet": fake_curves(0.9)})
    assert len(figure.data) == 6  # 2 methods x 3 IoU thresholds
    assert [a.text for a in figure.layout.annotations] == ["IoU = 0.50", "IoU = 0.75", "IoU = 0.90"]
    assert figure.data[0].name.startswith("FCOS (AP50=")
    # A single method's curves, named explicitly, also work.
    single = pr_curves_figure(fake_curves(1.0), names=["FCOS"])
    assert len(single.data) == 3 and single.data[0].name.startswith("FCOS")


def test_pr_curves_png_is_written(tmp_path: Path) -> None:
    path = pr_curves_png({"FCOS": fake_curves(1.0), "RetinaNet": fake_curves(0.9)},
                         tmp_path / "figs" / "pr.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_training_curves_figure_adds_an_ap_panel_only_with_eval_rows() -> None:
    figure = training_curves_figure(TRAINING_ROWS)
    names = [trace.name for trace in figure.data]
    assert names == ["loss_cls", "loss_box", "loss_centerness", "loss", "lr", "AP", "AP50"]
    assert [a.text for a in figure.layout.annotations] == ["loss", "learning rate", "COCO AP"]
    ap_trace = figure.data[names.index("AP")]
    assert list(ap_trace.x) == [20.0, 40.0] and list(ap_trace.y) == [0.1, 0.2]

    train_only = training_curves_figure([row for row in TRAINING_ROWS if "loss" in row])
    assert [a.text for a in train_only.layout.annotations] == ["loss", "learning rate"]


def test_training_curves_tolerate_missing_keys() -> None:
    rows = [{"iter": 1, "loss": 3.0}, {"iter": 2, "loss": 2.5, "lr": 0.01}, {"note": "no iter"}]
    figure = training_curves_figure(rows)
    assert [trace.name for trace in figure.data] == ["loss", "lr"]


@pytest.mark.parametrize("with_eval", [True, False])
def test_training_curves_png_is_written(tmp_path: Path, with_eval: bool) -> None:
    rows = TRAINING_ROWS if with_eval else TRAINING_ROWS[:-2]
    path = training_curves_png(rows, tmp_path / "train.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_import_is_cheap() -> None:
    # Plotting stacks load only when a figure is drawn.
    code = ("import sys, fcos_lab.viz.curves; "
            "print(any(m in sys.modules for m in ('plotly', 'matplotlib')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
