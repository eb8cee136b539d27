"""What the Streamlit app computes, as plain functions (Sections 3.1-3.3 seen one image at a time).

The app in ``app/`` is widgets, cached loaders and calls into this module; everything here is
importable and testable without Streamlit:

- inputs: the app's cache folder, the synthetic demo data, COCO-format datasets, uploaded image
  bytes and typed boxes, each failing with a :class:`~fcos_lab.errors.FcosLabError` whose message
  the page shows as is;
- :func:`load_dataset_boxes` and :func:`recall_and_ambiguity`: best possible recall and ambiguous
  samples (Section 4.1.1) for any levels, size ranges and center-sampling radius;
- checkpoints and dense predictions: :func:`load_detector`, :func:`predict_dense`,
  :func:`detections_from`, :func:`detections_figure`;
- run folders: :func:`read_run`, :func:`find_runs`.

The assignment of one image and its figure are in :mod:`fcos_lab.viz.assignments`, the center-ness
heatmaps in :mod:`fcos_lab.viz.heatmaps`.

Glossary: P locations over all levels, M ground-truth boxes, L levels. Boxes are xyxy in absolute
pixels of the frame named by the function (the original image, or the resized input).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from fcos_lab.checkpoint import CHECKPOINT_PATTERN, load_checkpoint, load_model_weights
from fcos_lab.config import Config, resolve
from fcos_lab.data.coco import CocoDetection, load_coco_annotations, load_image
from fcos_lab.data.synthetic import SyntheticDataset, make_synthetic_coco
from fcos_lab.data.transforms import ImageBatch, preprocess, resize_boxes, resize_image, resize_scale
from fcos_lab.errors import CheckpointError, DataError
from fcos_lab.model import FCOS, FCOSOutput, build_model
from fcos_lab.points import make_locations
from fcos_lab.postprocess import Detections
from fcos_lab.predict import postprocess_output
from fcos_lab.targets import GroundTruth, assign
from fcos_lab.viz.assignments import LevelSetup, add_boxes, grid_shapes, image_figure
from fcos_lab.viz.draw import class_color

if TYPE_CHECKING:
    import plotly.graph_objects as go

APP_DATA_ENV = "FCOS_LAB_APP_DATA"
DEFAULT_APP_DATA = "runs/app"
# The app's own copy of the synthetic shapes: small, so that it is written in well under a second.
SYNTHETIC_ARGS = {"num_train": 8, "num_val": 24, "image_size": 320}
MAX_IMAGE_PIXELS = 40_000_000  # about 7700 x 5200: beyond this an upload is refused before decoding


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
# Inputs: images, typed boxes, COCO datasets


@dataclass(frozen=True)
class Sample:
    """One image and its ground truth.

    Attributes:
        image: ``[3, H, W]`` float in [0, 1].
        boxes: ``[M, 4]`` xyxy, pixels of ``image``.
        labels: ``[M]`` contiguous class indices.
        crowd: ``[M]`` ``iscrowd`` flags (never assigned).
        class_names: name of each class index.
        name: what the page calls the image.
    """

    image: Tensor
    boxes: Tensor
    labels: Tensor
    crowd: Tensor
    class_names: tuple[str, ...]
    name: str


def read_image_bytes(data: bytes, name: str = "upload", max_pixels: int = MAX_IMAGE_PIXELS) -> Tensor:
    """Decode uploaded bytes as :func:`fcos_lab.data.coco.load_image` decodes a file; ``[3, H, W]`` in [0, 1].

    Raises:
        DataError: empty, not an image, corrupt or truncated, or more than ``max_pixels`` pixels
            (checked from the header, before anything is decoded).
    """
    if not data:
        raise DataError(f"{name}: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError:
        raise DataError(f"{name}: the image is far too large to decode (PIL's decompression-bomb limit)") from None
    except UnidentifiedImageError:
        raise DataError(f"{name}: not an image file that can be read (not PNG, JPEG, BMP, GIF, TIFF, WebP, ...)") from None
    except Exception as error:  # noqa: BLE001 - PIL raises many types for data it cannot identify
        raise DataError(f"{name}: not an image file that can be read ({type(error).__name__}: {error})") from None
    if width * height > max_pixels:
        raise DataError(
            f"{name}: {width} x {height} is {width * height / 1e6:.1f} megapixels; the app accepts at most "
            f"{max_pixels / 1e6:.0f} megapixels (downscale the image first)"
        )
    suffix = Path(name).suffix if Path(name).suffix.isascii() else ""
    with tempfile.TemporaryDirectory(prefix="fcos_lab_upload_") as folder:
        path = Path(folder) / f"upload{suffix[:8]}"
        path.write_bytes(data)
        try:
            return load_image(path)
        except DataError as error:
            raise DataError(str(error).replace(str(path), name)) from None


def parse_typed_boxes(
    text: str, class_names: Sequence[str] = (), image_size: tuple[int, int] | None = None
) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """Boxes typed one per line as ``x0 y0 x1 y1 [class]`` (commas allowed, ``#`` starts a comment).

    The class is a name or an index into ``class_names``; new names are appended; no class means
    ``"object"``. With ``image_size`` (h, w) boxes are clipped to the image.

    Returns:
        ``boxes`` ``[M, 4]`` xyxy, ``labels`` ``[M]`` and the class names the labels index.

    Raises:
        DataError: naming the line, for a wrong number of fields, a non-number, x1 <= x0 or y1 <= y0,
            or a box outside the image.
    """
    names = list(class_names)
    boxes, labels = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) not in (4, 5):
            raise DataError(f"typed boxes, line {number}: expected 'x0 y0 x1 y1 class', got {raw.strip()!r}")
        try:
            x0, y0, x1, y1 = (float(v) for v in fields[:4])
        except ValueError:
            raise DataError(f"typed boxes, line {number}: coordinates must be numbers, got {raw.strip()!r}") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise DataError(f"typed boxes, line {number}: coordinates must be finite")
        if image_size is not None:
            height, width = image_size
            x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
            y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
        if x1 <= x0 or y1 <= y0:
            where = " inside the image" if image_size is not None else ""
            raise DataError(f"typed boxes, line {number}: need x0 < x1 and y0 < y1{where}, got {raw.strip()!r}")
        token = fields[4] if len(fields) == 5 else "object"
        if token.isdigit() and int(token) < len(names):
            label = int(token)
        else:
            if token not in names:
                names.append(token)
            label = names.index(token)
        boxes.append([x0, y0, x1, y1])
        labels.append(label)
    return (
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
        tuple(names),
    )


def parse_numbers(text: str, what: str, *, integers: bool = False) -> list[float] | list[int]:
    """Numbers typed in a box, separated by commas or spaces (``"8, 16, 32"``).

    Raises:
        DataError: naming ``what``, for anything that is not a number (an integer with ``integers``).
    """
    kind = int if integers else float
    try:
        return [kind(v) for v in text.replace(",", " ").split()]
    except ValueError:
        expected = "integers" if integers else "numbers"
        raise DataError(f"{what} must be {expected} separated by commas, got {text!r}") from None


def open_dataset(ann_file: str | Path, image_dir: str | Path) -> CocoDetection:
    """A :class:`~fcos_lab.data.coco.CocoDetection` in test mode, validated (raises :class:`DataError`)."""
    ann_file, image_dir = Path(ann_file).expanduser(), Path(image_dir).expanduser()
    if not str(ann_file).strip() or ann_file.is_dir():
        raise DataError(f"{ann_file}: give the path of a COCO-format annotation JSON file")
    return CocoDetection(ann_file, image_dir, train=False)


def dataset_sample(dataset: CocoDetection, image_id: int) -> Sample:
    """Image ``image_id`` of a :class:`~fcos_lab.data.coco.CocoDetection` with its boxes in its own pixels.

    Boxes are clipped to the image and degenerate ones dropped, as the dataset does for training.
    """
    record = dataset.coco.imgs[image_id]
    image = load_image(dataset.image_dir / record["file_name"], image_id=image_id)
    height, width = image.shape[-2:]
    boxes, labels, crowd = [], [], []
    for ann in sorted(dataset.coco.imgToAnns.get(image_id, []), key=lambda a: a["id"]):
        x, y, w, h = ann["bbox"]
        x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x1 > x0 and y1 > y0:
            boxes.append([x0, y0, x1, y1])
            labels.append(dataset.category_id_to_label[ann["category_id"]])
            crowd.append(bool(ann.get("iscrowd", 0)))
    return Sample(
        image=image,
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.int64),
        crowd=torch.tensor(crowd, dtype=torch.bool),
        class_names=tuple(dataset.class_names),
        name=f"{record['file_name']} (id {image_id})",
    )


def resize_sample(sample: Sample, min_size: float, max_size: float) -> Sample:
    """The sample in the training frame (Section 4: shorter side ``min_size``, longer at most ``max_size``)."""
    image = resize_image(sample.image, min_size, max_size)
    boxes = resize_boxes(sample.boxes, tuple(sample.image.shape[-2:]), tuple(image.shape[-2:]))
    return replace(sample, image=image, boxes=boxes)


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
    with torch.no_grad():
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


# ----------------------------------------------------------------------------------------------
# Dataset statistics: best possible recall and ambiguous samples (Section 4.1.1, Tables 1 and 2)


@dataclass(frozen=True)
class DatasetBoxes:
    """The boxes of a COCO-format file after the training resize, padded per image.

    Attributes:
        ann_file: the file.
        image_ids: ``[N]`` the images used (those with at least one usable box, at most ``max_images``).
        padded_sizes: ``[N, 2]`` (H, W) of each resized image padded to ``size_divisible``.
        boxes: ``[N, M, 4]`` xyxy in resized pixels; ``labels``, ``valid`` ``[N, M]``.
        widths, heights: ``[K]`` sizes of the K usable boxes, resized pixels.
        num_images: images in the file; ``num_crowd`` crowd boxes left out (as Detectron does);
            ``num_degenerate`` boxes with no area once clipped.
        class_names: names of the class indices.
    """

    ann_file: str
    image_ids: np.ndarray
    padded_sizes: np.ndarray
    boxes: Tensor
    labels: Tensor
    valid: Tensor
    widths: np.ndarray
    heights: np.ndarray
    num_images: int
    num_crowd: int
    num_degenerate: int
    class_names: tuple[str, ...]


def load_dataset_boxes(
    ann_file: str | Path, *, min_size: float = 800, max_size: float = 1333, size_divisible: int = 32,
    max_images: int | None = None,
) -> DatasetBoxes:
    """Read a COCO-format annotation file (no image is opened) and resize its boxes as training does.

    Raises:
        DataError: the file is missing or malformed (the message names the record).
    """
    coco = load_coco_annotations(Path(ann_file).expanduser())
    category_ids = sorted(coco.cats)
    label_of = {c: i for i, c in enumerate(category_ids)}
    per_image, crowd, degenerate = [], 0, 0
    for image_id in sorted(coco.imgs):
        record = coco.imgs[image_id]
        height, width = int(record["height"]), int(record["width"])
        scale = resize_scale(height, width, min_size, max_size)
        boxes, labels = [], []
        for ann in coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0):
                crowd += 1
                continue
            x, y, w, h = ann["bbox"]
            x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if x1 <= x0 or y1 <= y0:
                degenerate += 1
                continue
            boxes.append([x0 * scale, y0 * scale, x1 * scale, y1 * scale])
            labels.append(label_of[ann["category_id"]])
        if boxes:
            # The resized size is floor(side * scale) (F.interpolate with recompute_scale_factor).
            padded = [-(-math.floor(side * scale) // size_divisible) * size_divisible for side in (height, width)]
            per_image.append((image_id, padded, boxes, labels))
        if max_images is not None and len(per_image) >= max_images:
            break
    max_boxes = max((len(b) for _, _, b, _ in per_image), default=0)
    count = len(per_image)
    boxes_t = torch.zeros((count, max_boxes, 4), dtype=torch.float32)
    labels_t = torch.zeros((count, max_boxes), dtype=torch.int64)
    valid = torch.zeros((count, max_boxes), dtype=torch.bool)
    for i, (_, _, boxes, labels) in enumerate(per_image):
        boxes_t[i, : len(boxes)] = torch.tensor(boxes, dtype=torch.float32)
        labels_t[i, : len(labels)] = torch.tensor(labels)
        valid[i, : len(boxes)] = True
    flat = boxes_t[valid]
    return DatasetBoxes(
        ann_file=str(ann_file),
        image_ids=np.array([i for i, _, _, _ in per_image], dtype=np.int64),
        padded_sizes=np.array([p for _, p, _, _ in per_image], dtype=np.int64).reshape(-1, 2),
        boxes=boxes_t, labels=labels_t, valid=valid,
        widths=(flat[:, 2] - flat[:, 0]).numpy(), heights=(flat[:, 3] - flat[:, 1]).numpy(),
        num_images=len(coco.imgs), num_crowd=crowd, num_degenerate=degenerate,
        class_names=tuple(coco.cats[c]["name"] for c in category_ids),
    )


def recall_and_ambiguity(
    data: DatasetBoxes,
    setup: LevelSetup,
    *,
    center_sampling_radius: float = 0.0,
    size_range_inclusive: bool = True,
    location_offset: str = "half_stride",
    max_elements: int = 1 << 22,
) -> dict[str, Any]:
    """Best possible recall and ambiguous samples with :func:`fcos_lab.targets.assign` (training's code).

    Definitions as :func:`fcos_lab.analysis.statistics.compute_statistics`: a box is recalled when some
    location regresses it after the size ranges and the minimal-area rule; the ambiguity is the share
    of positive locations inside more than one candidate box (and inside boxes of different classes).

    Args:
        data: :func:`load_dataset_boxes`.
        setup: :class:`fcos_lab.viz.assignments.LevelSetup` (levels, strides, size ranges).
        center_sampling_radius, size_range_inclusive, location_offset: the assignment switches.
        max_elements: images per :func:`assign` call are limited to ``B * P * M <= max_elements``.

    Returns:
        Percentages ``best_possible_recall``, ``ambiguous``, ``ambiguous_diff_class``; counts; and
        ``per_level`` rows (positive locations and boxes regressed on each level).
    """
    start = time.perf_counter()
    num_images, max_boxes = data.valid.shape
    num_levels = len(setup.strides)
    recalled = torch.zeros((num_images, max_boxes), dtype=torch.bool)
    per_level_boxes = torch.zeros((num_images, max_boxes, num_levels), dtype=torch.bool)
    positives_per_level = torch.zeros(num_levels, dtype=torch.int64)
    counts = defaultdict(int)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, size in enumerate(data.padded_sizes.tolist()):
        groups[tuple(size)].append(i)
    for padded, members in groups.items():
        shapes = grid_shapes(padded, setup.strides)
        locations = make_locations(shapes, setup.strides, offset=location_offset)
        num_points = locations.points.shape[0]
        members_t = torch.tensor(members)
        step = max(1, max_elements // max(num_points * max(max_boxes, 1), 1))
        for chunk in members_t.split(step):
            valid = data.valid[chunk]
            m = int(valid.sum(1).max())
            valid = valid[:, :m]
            gt = GroundTruth(data.boxes[chunk, :m], data.labels[chunk, :m], valid, torch.zeros_like(valid))
            result = assign(locations, gt, setup.size_ranges, size_range_inclusive=size_range_inclusive,
                            center_sampling_radius=center_sampling_radius)
            image, point = result.positive.nonzero(as_tuple=True)
            matched = result.matched_gt[image, point]
            level = locations.level_index[point]
            recalled[chunk[image], matched] = True
            per_level_boxes[chunk[image], matched, level] = True
            positives_per_level += torch.bincount(level, minlength=num_levels)
            ambiguous = result.num_candidates > 1
            amb_image, amb_point = ambiguous.nonzero(as_tuple=True)
            candidates = result.candidates[amb_image, amb_point]
            labels = gt.labels[amb_image]
            lowest = torch.where(candidates, labels, torch.iinfo(labels.dtype).max).amin(dim=1)
            highest = torch.where(candidates, labels, -1).amax(dim=1)
            counts["positive_locations"] += len(image)
            counts["ambiguous_locations"] += len(amb_image)
            counts["ambiguous_diff_class_locations"] += int((lowest != highest).sum())
    num_boxes = int(data.valid.sum())
    num_recalled = int((recalled & data.valid).sum())

    def percent(a: int, b: int) -> float:
        return 100.0 * a / b if b else float("nan")

    return {
        "best_possible_recall": percent(num_recalled, num_boxes),
        "ambiguous": percent(counts["ambiguous_locations"], counts["positive_locations"]),
        "ambiguous_diff_class": percent(counts["ambiguous_diff_class_locations"], counts["positive_locations"]),
        "num_images": num_images,
        "num_boxes": num_boxes,
        "recalled_boxes": num_recalled,
        **{k: int(v) for k, v in counts.items()},
        "per_level": [
            {"level": name, "stride": stride, "size range": f"[{lo:g}, {hi:g}]",
             "positive locations": int(positives_per_level[i]), "boxes regressed": int(per_level_boxes[..., i].sum())}
            for i, (name, stride, (lo, hi)) in enumerate(zip(setup.names, setup.strides, setup.size_ranges))
        ],
        "seconds": time.perf_counter() - start,
    }
