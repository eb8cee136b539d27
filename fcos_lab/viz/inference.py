"""Run folders, checkpoints and inference on one image, for the app (Section 3.1 "Inference", Section 3.3).

Everything here is importable and testable without Streamlit:

- the app's cache folder (:func:`app_data_dir`), where the quick demo leaves its run and the synthetic
  demo data are written (:func:`ensure_synthetic_dataset`);
- run folders: :func:`read_run`, :func:`find_runs`, :func:`checkpoint_files`;
- checkpoints and dense predictions: :func:`load_detector`, :func:`predict_dense`,
  :func:`detections_from`, :func:`detection_rows`, :func:`detections_figure`.

Errors are :class:`~fcos_lab.errors.FcosLabError` whose message the page shows as is. The app's other
inputs are in :mod:`fcos_lab.viz.inputs`. Boxes are xyxy in absolute pixels of the original image.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from fcos_lab.checkpoint import CHECKPOINT_PATTERN, load_checkpoint, load_model_weights
from fcos_lab.config import Config
from fcos_lab.data.synthetic import SyntheticDataset, make_synthetic_coco
from fcos_lab.data.transforms import ImageBatch, preprocess
from fcos_lab.errors import CheckpointError, DataError
from fcos_lab.model import FCOS, FCOSOutput, build_model
from fcos_lab.postprocess import Detections
from fcos_lab.precision import resolve_precision
from fcos_lab.predict import postprocess_output
from fcos_lab.presets import resolve
from fcos_lab.viz.draw import class_color
from fcos_lab.viz.image_figures import add_boxes, image_figure

if TYPE_CHECKING:
    import plotly.graph_objects as go

APP_DATA_ENV = "FCOS_LAB_APP_DATA"
DEFAULT_APP_DATA = "runs/app"
# The app's own copy of the synthetic shapes: small, so that it is written in well under a second.
SYNTHETIC_ARGS = {"num_train": 8, "num_val": 24, "image_size": 320}


# ----------------------------------------------------------------------------------------------
# Cache folder, synthetic data, run folders


def app_data_dir() -> Path:
    """The app's cache folder: ``$FCOS_LAB_APP_DATA``, else ``runs/app`` (relative to the working folder)."""
    return Path(os.environ.get(APP_DATA_ENV) or DEFAULT_APP_DATA).expanduser()


def default_run_dir() -> Path:
    """Where ``fcos-lab demo --quick --out <app data>/demo`` leaves its run folder."""
    return app_data_dir() / "demo" / "run"


def demo_command() -> str:
    """The command that makes a checkpoint the app finds by default."""
    return f"fcos-lab demo --quick --out {app_data_dir() / 'demo'}"


def ensure_synthetic_dataset() -> SyntheticDataset:
    """The synthetic shapes in the app's cache folder, generated on first use (deterministic, < 1 s)."""
    return make_synthetic_coco(app_data_dir() / "synthetic", **SYNTHETIC_ARGS)


@dataclass(frozen=True)
class RunInfo:
    """What a run folder holds.

    Attributes:
        path: the folder.
        rows: the rows of ``metrics.jsonl`` (training logs and evaluation rows).
        metrics: ``metrics.json`` (final evaluation), empty when absent.
        config_name: the preset name recorded in ``config.json``, or "".
        checkpoints: ``model_final.pt`` and ``model_NNNNNNN.pt`` files, newest first.
        problems: lines that could not be read, for the page to report.
    """

    path: Path
    rows: list[dict[str, Any]]
    metrics: dict[str, Any]
    config_name: str
    checkpoints: list[Path]
    problems: list[str] = field(default_factory=list)


def read_run(run_dir: str | Path) -> RunInfo:
    """Read a run folder written by :func:`fcos_lab.train.train`; unreadable lines become ``problems``.

    Raises:
        DataError: the folder does not exist or holds neither metrics nor checkpoints.
    """
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: run folder not found")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    log = path / "metrics.jsonl"
    if log.is_file():
        for number, line in enumerate(log.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append(f"metrics.jsonl line {number}: not JSON ({error.msg})")
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                problems.append(f"metrics.jsonl line {number}: expected an object")
    metrics: dict[str, Any] = {}
    config_name = ""
    for name in ("metrics.json", "config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            problems.append(f"{name}: cannot be read ({error})")
            continue
        if name == "metrics.json" and isinstance(data, dict):
            metrics = data
        elif isinstance(data, dict):
            config_name = str(data.get("name", ""))
    checkpoints = checkpoint_files(path)
    if not rows and not metrics and not checkpoints:
        raise DataError(f"{path}: not a run folder (no metrics.jsonl, metrics.json or model_*.pt)")
    return RunInfo(path, rows, metrics, config_name, checkpoints, problems)


def checkpoint_files(run_dir: str | Path) -> list[Path]:
    """``model_final.pt`` then ``model_NNNNNNN.pt`` from the newest iteration down."""
    numbered = sorted((p for p in Path(run_dir).glob("model_*.pt") if CHECKPOINT_PATTERN.match(p.name)), reverse=True)
    final = Path(run_dir) / "model_final.pt"
    return ([final] if final.is_file() else []) + numbered


def find_runs(root: str | Path, max_depth: int = 3) -> list[Path]:
    """Run folders (holding ``metrics.jsonl`` or ``model_final.pt``) at most ``max_depth`` below ``root``."""
    root = Path(root).expanduser()
    found: list[Path] = []
    if not root.is_dir():
        return found
    frontier = [root]
    for _ in range(max_depth + 1):
        next_frontier = []
        for folder in frontier:
            if (folder / "metrics.jsonl").is_file() or (folder / "model_final.pt").is_file():
                found.append(folder)
            try:
                next_frontier.extend(p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
        frontier = next_frontier
    return found


# ----------------------------------------------------------------------------------------------
# Checkpoints and dense predictions (Section 3.1 "Inference", Section 3.3)


@dataclass(frozen=True)
class LoadedModel:
    """A detector ready for inference.

    Attributes:
        model: the network, in eval mode on the CPU.
        config: the config it was built from (the checkpoint's, or the preset asked for).
        class_names: names of its class indices (indices as text when the checkpoint has none).
        path: the checkpoint file; ``iteration`` its training iteration; ``trained_preset`` the preset
            recorded in it.
    """

    model: FCOS
    config: Config
    class_names: tuple[str, ...]
    path: Path
    iteration: int
    trained_preset: str


def load_detector(checkpoint: str | Path, preset: str | None = None) -> LoadedModel:
    """Build the network of ``preset`` (default: the checkpoint's own config) and load the weights.

    Raises:
        CheckpointError: missing, corrupt or unsafe file, or weights that do not fit the network
            (a checkpoint from another preset); the message says which preset the file records.
    """
    path = Path(checkpoint).expanduser()
    payload = load_checkpoint(path)
    trained = payload["config"]
    config = trained if not preset or preset == trained.name else resolve(preset)
    # The weights come from the checkpoint: never read (or miss) a backbone file named in the config.
    config = replace(config, model=replace(config.model, pretrained_backbone=None))
    model = build_model(config)
    try:
        load_model_weights(model, payload)
    except CheckpointError as error:
        raise CheckpointError(
            f"{error}. The file records preset {trained.name!r} ({trained.model.backbone}, "
            f"{trained.model.num_classes} classes); build it with that preset instead of {config.name!r}."
        ) from None
    model.eval()
    names = tuple(payload.get("class_names") or (str(c) for c in range(config.model.num_classes)))
    return LoadedModel(model, config, names, Path(payload["path"]), int(payload.get("iteration", 0)), trained.name)


@dataclass(frozen=True)
class DensePrediction:
    """The model's output on one image and the preprocessed batch it came from."""

    output: FCOSOutput
    batch: ImageBatch
    config: Config  # with the input size used


def input_size(config: Config, min_size: int | None = None) -> tuple[int, int]:
    """``(min_size, max_size)`` of the resize: the config's, or ``min_size`` with the longer-side limit scaled
    in proportion (800 / 1333 becomes 400 / 667, never below the config's own limit)."""
    if min_size is None or min_size == config.input.min_size:
        return config.input.min_size, config.input.max_size
    return int(min_size), int(max(config.input.max_size, round(min_size * config.input.max_size / config.input.min_size)))


def predict_dense(loaded: LoadedModel, image: Tensor, min_size: int | None = None) -> DensePrediction:
    """Run the network once on ``image`` ``[3, H, W]`` in [0, 1] (shorter side ``min_size``, default the config's)."""
    config = loaded.config
    low, high = input_size(config, min_size)
    config = replace(config, input=replace(config.input, min_size=low, max_size=high))
    batch = preprocess([image], config.input.min_size, config.input.max_size, config.input.size_divisible)
    precision = resolve_precision(config.model.inference_amp, next(loaded.model.parameters()).device)
    with torch.no_grad(), precision.autocast():
        output = loaded.model(batch.tensors)
    return DensePrediction(output, batch, config)


def detections_from(
    dense: DensePrediction, *, score_thresh: float, nms_thresh: float, use_centerness: bool = True
) -> Detections:
    """Post-process a dense prediction with the page's sliders; boxes in the original image's pixels.

    ``use_centerness=False`` ranks by the classification score alone (Table 4, "w/o center-ness").
    """
    config = dense.config
    has_branch = dense.output.centerness_logits is not None
    mode = config.postprocess.centerness_mode if use_centerness and has_branch else "none"
    if mode == "oracle":  # needs ground truth, which inference on an arbitrary image does not have
        mode = "learned"
    post = replace(config.postprocess, score_thresh=float(score_thresh), nms_thresh=float(nms_thresh),
                   centerness_mode=mode)
    return postprocess_output(dense.output, dense.batch, replace(config, postprocess=post))[0]


def detection_rows(detections: Detections, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One table row per detection: class, score, classification score, center-ness, level, box."""
    rows = []
    for box, label, score, cls, ctr, level in zip(
        detections.boxes.tolist(), detections.labels.tolist(), detections.scores.tolist(),
        detections.cls_scores.tolist(), detections.centerness.tolist(), detections.levels.tolist(),
    ):
        rows.append({
            "class": class_names[label] if 0 <= label < len(class_names) else str(label),
            "score": round(score, 3), "classification": round(cls, 3), "center-ness": round(ctr, 3),
            "level": f"P{level}", "x0, y0, x1, y1": ", ".join(f"{v:.0f}" for v in box),
        })
    return rows


def detections_figure(
    image: Tensor, detections: Detections, class_names: Sequence[str], *, gt_boxes: Tensor | None = None,
    height: int = 640, max_labels: int = 25,
) -> go.Figure:
    """Detections over the image: box, class, score, level and center-ness; ground truth dashed white.

    Only the ``max_labels`` best boxes carry a text label (a hundred would hide the image); hovering the
    dot at the location that produced a box (Section 3.1) shows all its numbers.
    """
    import plotly.graph_objects as go

    figure = image_figure(image, height=height)
    if gt_boxes is not None and len(gt_boxes):
        add_boxes(figure, gt_boxes, ["white"] * len(gt_boxes), [], dash="dash", width=2, name="ground truth")
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"ground truth ({len(gt_boxes)})",
                                    line={"color": "white", "dash": "dash"}))
    rows = detection_rows(detections, class_names)
    colors = [f"rgb{class_color(int(c))}" for c in detections.labels.tolist()]
    texts = [f"{r['class']} {r['score']:.2f} {r['level']} ctr {r['center-ness']:.2f}" for r in rows[:max_labels]]
    add_boxes(figure, detections.boxes, colors, texts, width=2, name="detections")
    if rows:
        points = detections.locations.detach().cpu().numpy()
        hover = [
            f"<b>{r['class']}</b> score {r['score']:.3f}<br>from classification {r['classification']:.3f} "
            f"and center-ness {r['center-ness']:.3f}<br>level {r['level']}, location ({x:.0f}, {y:.0f})"
            f"<br>box [{r['x0, y0, x1, y1']}]"
            for r, (x, y) in zip(rows, points.tolist())
        ]
        figure.add_trace(go.Scatter(
            x=points[:, 0], y=points[:, 1], mode="markers", name=f"detections ({len(rows)}), at their locations",
            marker={"size": 8, "color": colors, "line": {"width": 1, "color": "black"}},
            hovertext=hover, hoverinfo="text",
        ))
    figure.update_layout(title=f"{len(rows)} detections")
    return figure
