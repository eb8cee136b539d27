"""The paper's experiments at three scales: what the notebooks in ``notebooks/`` call (Sections 4 and 5).

A *scale* fixes the data, input size, backbone and schedule that every row of :mod:`fcos_lab.paper` is
trained with; a row is trained as ``preset + row overrides + scale overrides + user overrides``:

- ``smoke``: the synthetic shapes (32 train / 16 val images, 128 px), resnet18 with a 64-channel
  pyramid (two channels per GroupNorm group: P7 is 1 x 1 at 128 px), 20 iterations on the CPU. It
  checks that every experiment runs end to end in about a minute; its numbers say nothing about the paper.
- ``workshop``: the 128 real COCO train2017 images (evaluated on the 128 val2017 images) under
  ``data_root``, or, without them or with ``dataset="synthetic"``, 400 synthetic images at 320 px; small
  ResNets, 300 iterations: tens of minutes on a CPU, minutes on a GPU. Still far from the paper's
  90K iterations on 118K images; the numbers show trends at best.
- ``paper``: the presets unchanged (ResNet-50 and up, 90K or 180K iterations, 800 px) on COCO
  train2017 / val2017 under ``data_root``: a GPU machine with the dataset.

Below ``paper`` the input is smaller than the paper's 800 px, so every length that is tied to it (the
FPN size ranges ``m_i`` of Section 3.2 and the RetinaNet anchor sizes) is scaled by the same factor.

The statistics of Tables 1 and 2 (:mod:`fcos_lab.analysis.statistics`) need no training; they run on
the full val2017 annotations when the file is there (a documented subset at ``smoke``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from fcos_lab.analysis.report import SCALES, Results
from fcos_lab.config import Config, resolve
from fcos_lab.errors import ConfigError, DataError
from fcos_lab.paper import PaperRow

PAPER_MIN_SIZE = 800  # Section 4: shorter side 800
COCO = "coco"
SYNTHETIC = "synthetic"
# The full val2017 ground truth for Tables 1 and 2: the official file when a user has it, else the
# derived box-only file of ../shared/data (identical boxes, no crowd regions; see its README).
STATS_FILES = ("coco/annotations/instances_val2017.json", "coco/annotations/instances_val2017_bboxonly_DERIVED.json")
# (train annotations, train images, val annotations, val images) under data_root, per scale.
COCO_FILES = {
    "workshop": ("coco/annotations/instances_train2017_coco128_bboxonly_DERIVED.json", "coco/images/train2017",
                 "coco/annotations/instances_val2017_lightly128_bboxonly_DERIVED.json", "coco/images/val2017"),
    "paper": ("coco/annotations/instances_train2017.json", "coco/images/train2017",
              "coco/annotations/instances_val2017.json", "coco/images/val2017"),
}
# The metrics each table reports (fractions from fcos_lab.evaluate; Results turns them into percent).
TABLE_METRICS = {
    "Table 3": ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"),
    "Table 4": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "Table 5": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "Table 6": ("AR100", "AR1000"),
    "Table 7": ("AP", "AP50", "AP75", "AP90"),
    "Table 8": ("AP",),
}
# How each table is evaluated: Table 6 scores proposals (AR at 100 and 1000), Table 7 is class-agnostic.
TABLE_EVALUATION = {
    "Table 6": {"class_agnostic": True, "max_dets": (100, 1000)},
    "Table 7": {"class_agnostic": True, "max_dets": (1, 10, 100)},
}


# What a number measured at each scale can be compared with (shown beside every table).
SCALE_NOTES = {
    "smoke": "smoke scale: every model trained for 20 iterations on 32 synthetic 128-px images; the numbers check "
             "that the experiment runs and are not comparable with the paper (statistics of Tables 1-2 excepted: "
             "real val2017 boxes, a subset of the images).",
    "workshop": "workshop scale: small backbones, a few hundred iterations on 128 COCO images (or synthetic data); "
                "trends at best, not the paper's numbers (statistics of Tables 1-2: the full val2017 annotations).",
}


@dataclass(frozen=True)
class ScaleSettings:
    """Everything a scale changes: data, input scale, backbone, schedule, statistics subset.

    Attributes:
        scale: ``smoke``, ``workshop`` or ``paper``.
        dataset: ``"synthetic"`` or ``"coco"``; the ``train_*`` / ``val_*`` paths are set for ``"coco"``.
        synthetic_root, synthetic_num_train, synthetic_num_val, synthetic_image_size: the synthetic data.
        input_scale: input sizes, size ranges and anchor sizes are the preset's times this (1 = paper).
        max_iters, batch_size, base_lr, warmup_iters: the schedule (None: the preset's).
        backbones: preset backbone -> the one trained here (CPU-sized stand-ins below ``paper``).
        fpn_channels, frozen_stages: None keeps the preset's.
        num_workers: data-loader workers.
        stats_ann: the annotation file of Tables 1 and 2; stats_max_images: its first N images only.
        data_root: the folder holding ``coco/``.
        keep_checkpoints: False (smoke) drops optimizer state and the safetensors copy after training and
            deletes the weights when the notebook finishes: thirty smoke models would fill gigabytes.
        threads: torch intra-op threads (:func:`set_threads`); None keeps torch's default.
    """

    scale: str
    dataset: str
    train_ann: str = ""
    train_images: str = ""
    val_ann: str = ""
    val_images: str = ""
    synthetic_root: str = "runs/synthetic"
    synthetic_num_train: int = 32
    synthetic_num_val: int = 16
    synthetic_image_size: int = 128
    input_scale: float = 1.0
    max_iters: int | None = None
    batch_size: int | None = None
    base_lr: float | None = None
    warmup_iters: int | None = None
    backbones: dict[str, str] = field(default_factory=dict)
    fpn_channels: int | None = None
    frozen_stages: int | None = None
    num_workers: int | None = None
    stats_ann: str | None = None
    stats_max_images: int | None = None
    data_root: str | None = None
    keep_checkpoints: bool = True
    threads: int | None = None

    def overrides_for(self, config: Config) -> dict[str, Any]:
        """The dotted overrides (typed values) that turn ``config`` into this scale's version of it."""
        out: dict[str, Any] = {}
        if self.dataset == SYNTHETIC:
            out.update({"data.train_ann": "", "data.train_images": "", "data.val_ann": "", "data.val_images": "",
                        "data.synthetic_root": self.synthetic_root,
                        "data.synthetic_num_train": self.synthetic_num_train,
                        "data.synthetic_num_val": self.synthetic_num_val,
                        "data.synthetic_image_size": self.synthetic_image_size})
        else:
            out.update({"data.train_ann": self.train_ann, "data.train_images": self.train_images,
                        "data.val_ann": self.val_ann, "data.val_images": self.val_images})
        f = self.input_scale
        if f != 1.0:
            # Deviation from paper: smaller inputs than 800 px, so every length tied to the input size
            # (size ranges m_i of Section 3.2, RetinaNet anchor sizes) shrinks by the same factor.
            i = config.input
            out.update({
                "input.min_size": round(i.min_size * f), "input.max_size": round(i.max_size * f),
                "input.train_min_size": [round(v * f) for v in i.train_min_size],
                "assign.size_ranges": [[lo * f, hi * f] for lo, hi in config.assign.size_ranges],
                "model.anchor_sizes": [s * f for s in config.model.anchor_sizes],
            })
        if self.max_iters is not None:
            out.update({"train.max_iters": self.max_iters, "train.checkpoint_every": self.max_iters,
                        "train.log_every": max(1, self.max_iters // 10)})
        for key, value in (("train.batch_size", self.batch_size), ("train.base_lr", self.base_lr),
                           ("train.warmup_iters", self.warmup_iters), ("model.fpn_channels", self.fpn_channels),
                           ("model.frozen_stages", self.frozen_stages), ("train.num_workers", self.num_workers)):
            if value is not None:
                out[key] = value
        if config.model.backbone in self.backbones:
            out["model.backbone"] = self.backbones[config.model.backbone]
        return out

    def check_training_data(self) -> None:
        """Raise :class:`DataError` naming what is missing when this scale trains on COCO files not present."""
        if self.dataset != COCO:
            return
        paths = {"train_ann": self.train_ann, "train_images": self.train_images, "val_ann": self.val_ann,
                 "val_images": self.val_images}
        missing = [f"{key} {path!r}" for key, path in paths.items() if not path or not Path(path).exists()]
        if missing:
            raise DataError(
                f"scale {self.scale!r} trains on COCO files, but these are missing: {', '.join(missing)}; pass "
                "data_root (a folder with coco/annotations and coco/images) or the four files, or use synthetic data")

    def with_files(self, **paths: str | int | None) -> "ScaleSettings":
        """These settings with some files replaced (``train_ann``, ``val_images``, ``stats_ann``, ...; None keeps).

        Setting any of the four training/validation paths switches the data to ``"coco"``.
        """
        changes = {key: value for key, value in paths.items() if value is not None}
        unknown = set(changes) - {"train_ann", "train_images", "val_ann", "val_images", "stats_ann", "stats_max_images"}
        if unknown:
            raise ConfigError(f"unknown file setting(s) {sorted(unknown)}")
        if set(changes) & {"train_ann", "train_images", "val_ann", "val_images"}:
            changes["dataset"] = COCO
        return replace(self, **changes)

    def describe(self) -> str:
        """One line for tables and results.json: what was trained on what, and for how long."""
        data = (f"synthetic shapes ({self.synthetic_num_train} train / {self.synthetic_num_val} val, "
                f"{self.synthetic_image_size} px)" if self.dataset == SYNTHETIC else f"COCO ({Path(self.train_ann).name})")
        schedule = f"{self.max_iters} iterations" if self.max_iters else "the preset's schedule"
        size = f"inputs x{self.input_scale:g}" if self.input_scale != 1 else "800 px inputs"
        backbone = f", backbones {sorted(set(self.backbones.values()))}" if self.backbones else ""
        return f"{self.scale}: {data}, {size}, {schedule}{backbone}"


def default_data_root() -> Path | None:
    """``../shared/data`` beside the repository (or beside the working directory), if present."""
    import fcos_lab

    for base in (Path(fcos_lab.__file__).resolve().parents[1], Path.cwd()):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def scale_settings(scale: str, data_root: str | Path | None = None, *, dataset: str | None = None,
                   work_dir: str | Path = "runs") -> ScaleSettings:
    """The :class:`ScaleSettings` of ``scale``.

    Args:
        scale: ``smoke``, ``workshop`` or ``paper``.
        data_root: folder with ``coco/``; None: :func:`default_data_root`.
        dataset: ``"synthetic"`` or ``"coco"``; None: synthetic at smoke, COCO at paper, and COCO at
            workshop when the 128-image files are under ``data_root`` (synthetic otherwise).
        work_dir: where synthetic data is written (``work_dir/synthetic``).
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
    root = Path(data_root) if data_root else default_data_root()
    stats_ann = next((str(root / p) for p in STATS_FILES if root and (root / p).is_file()), None)
    # Smoke on COCO (dataset="coco") uses the 128-image files too.
    coco_files = [str((root or Path(".")) / p) for p in COCO_FILES.get(scale, COCO_FILES["workshop"])]
    if dataset is None:
        dataset = {"smoke": SYNTHETIC, "paper": COCO}.get(scale) or (
            COCO if root and all(Path(p).exists() for p in coco_files) else SYNTHETIC)
    if dataset not in (SYNTHETIC, COCO):
        raise ConfigError(f"unknown dataset {dataset!r}; valid: {SYNTHETIC}, {COCO}")
    common = dict(scale=scale, dataset=dataset, stats_ann=stats_ann, data_root=str(root) if root else None,
                  synthetic_root=str(Path(work_dir) / "synthetic"))
    if dataset == COCO:
        common.update(zip(("train_ann", "train_images", "val_ann", "val_images"), coco_files))
    small = {"resnet50": "resnet18", "resnet101": "resnet18", "resnext101_32x8d": "resnet18", "resnext101_64x4d": "resnet18"}
    if scale == "smoke":
        return ScaleSettings(**common, synthetic_num_train=32, synthetic_num_val=16, synthetic_image_size=128,
                             input_scale=128 / PAPER_MIN_SIZE if dataset == SYNTHETIC else 0.25,
                             max_iters=20, batch_size=4, base_lr=0.02, warmup_iters=5, backbones=small,
                             fpn_channels=64, frozen_stages=0, num_workers=0, stats_max_images=500,
                             keep_checkpoints=False, threads=1)
    if scale == "workshop":
        # Deeper presets keep a deeper stand-in, so Table 5's ordering can still show.
        workshop = {**small, "resnet101": "resnet34", "resnext101_32x8d": "resnet34", "resnext101_64x4d": "resnet34"}
        return ScaleSettings(**common, synthetic_num_train=400, synthetic_num_val=100, synthetic_image_size=320,
                             input_scale=320 / PAPER_MIN_SIZE if dataset == SYNTHETIC else 0.5,
                             max_iters=300, batch_size=8, base_lr=0.02, warmup_iters=50, backbones=workshop,
                             fpn_channels=64, frozen_stages=0, num_workers=2)
    return ScaleSettings(**common)


# ----------------------------------------------------------------------------------------------
# Training and evaluating one paper row


def row_config(row: PaperRow, settings: ScaleSettings, overrides: Sequence[str] = (), seed: int = 0) -> Config:
    """The training config of ``row`` at ``settings``: preset, row overrides, scale, seed, user overrides."""
    if not row.preset:
        raise ConfigError(f"{row.table} row {row.row!r} is a statistic, not a trained model")
    config = resolve(row.preset, list(row.overrides))
    config = resolve(config, {**settings.overrides_for(config), "train.seed": seed})
    return resolve(config, list(overrides))


def training_key(config: Config) -> str:
    """A folder name that changes with everything that affects training (not with post-processing)."""
    data = config.to_dict()
    data.pop("postprocess")
    digest = hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{config.name}-{digest}"


def evaluate_checkpoint(checkpoint: str | Path, postprocess_from: Config | None = None, *, device: str = "auto",
                        class_agnostic: bool = False, max_dets: tuple[int, ...] = (1, 10, 100),
                        detections_path: str | Path | None = None, batch_size: int = 8,
                        data_from: ScaleSettings | None = None) -> dict[str, Any]:
    """Predict on the checkpoint's validation set and score it with COCO's protocol.

    Args:
        checkpoint: an fcos_lab checkpoint (its config names the data).
        postprocess_from: a config whose ``postprocess`` replaces the checkpoint's (Table 4's test-time
            variants); None keeps the checkpoint's.
        class_agnostic, max_dets: as :func:`fcos_lab.evaluate.evaluate_detections`.
        detections_path: where to save the detections (COCO results with level, location, scores).
        data_from: evaluate on these settings' validation data instead of the data the checkpoint
            names (a checkpoint trained elsewhere); the model's input sizes are kept.

    Returns:
        ``metrics`` (fractions), ``result`` (the :class:`~fcos_lab.evaluate.EvalResult`), ``detections``
        (records), ``config`` (the one predicted with), ``val_ann``, ``val_images``, ``seconds``.
    """
    from fcos_lab.checkpoint import load_checkpoint, load_model_weights
    from fcos_lab.evaluate import evaluate_detections, save_detections
    from fcos_lab.model.detector import build_model
    from fcos_lab.predict import predict_dataset
    from fcos_lab.train import build_datasets, resolve_device

    started = time.perf_counter()
    payload = load_checkpoint(checkpoint)
    config = payload["config"]
    if postprocess_from is not None:
        config = replace(config, postprocess=postprocess_from.postprocess)
    if data_from is not None:
        config = resolve(config, {k: v for k, v in data_from.overrides_for(config).items() if k.startswith("data.")})
    torch_device = resolve_device(device)
    model = build_model(config)
    load_model_weights(model, payload)
    model = model.to(torch_device)
    _, val_set = build_datasets(config, need_train=False)
    detections = predict_dataset(model, config, val_set, device=torch_device, batch_size=batch_size)
    if detections_path is not None:
        save_detections(detections_path, detections)
    result = evaluate_detections(val_set.coco, detections, class_agnostic=class_agnostic, max_dets=max_dets)
    return {"metrics": dict(result.metrics), "result": result, "detections": detections, "config": config,
            "val_ann": str(val_set.ann_file), "val_images": str(val_set.image_dir),
            "seconds": time.perf_counter() - started}


def run_row(row: PaperRow, scale: str | ScaleSettings, out_dir: str | Path, device: str = "auto",
            data_root: str | Path | None = None, seed: int = 0, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train ``row`` at ``scale`` (or reuse an identical training in ``out_dir/runs``) and evaluate it.

    Rows that differ only at test time (Table 4's center-ness variants, Table 3's NMS thresholds) share
    one training: runs are keyed by :func:`training_key`.

    Returns:
        A dict: ``table``, ``row``, ``preset``, ``metrics`` (fractions; the keys of
        :data:`TABLE_METRICS` and more), ``curves`` (IoU -> (recall, precision), class-agnostic tables
        only), ``checkpoint``, ``detections`` (records), ``detections_path``, ``config`` (predicted
        with), ``val_ann``, ``val_images``, ``reused_training``, ``train_seconds``, ``eval_seconds``,
        ``note``.
    """
    from fcos_lab.evaluate import precision_recall_curves
    from fcos_lab.train import train

    settings = scale if isinstance(scale, ScaleSettings) else scale_settings(scale, data_root, work_dir=out_dir)
    settings.check_training_data()
    config = row_config(row, settings, overrides, seed)
    eval_config = resolve(config, list(row.eval_overrides))
    run_dir = Path(out_dir) / "runs" / training_key(config)
    checkpoint = run_dir / "model_final.pt"
    reused = checkpoint.is_file()
    train_seconds = 0.0
    if not reused:
        trained = train(config, run_dir, device=device, evaluate_at_end=False, progress=settings.scale != "smoke")
        train_seconds = trained.seconds
        if not settings.keep_checkpoints:
            _slim_checkpoint(checkpoint)
    evaluation = TABLE_EVALUATION.get(row.table, {})
    slug = hashlib.sha1(json.dumps(asdict(eval_config.postprocess), sort_keys=True).encode()).hexdigest()[:8]
    detections_path = run_dir / f"detections_{slug}.json"
    scored = evaluate_checkpoint(checkpoint, eval_config, device=device, detections_path=detections_path,
                                 batch_size=max(1, settings.batch_size or 8), **evaluation)
    curves = precision_recall_curves(scored["result"]) if evaluation.get("class_agnostic") else None
    trained_as = scored["config"]
    extra = f"; overrides {list(overrides)}" if overrides else ""
    return {
        "table": row.table, "row": row.row, "preset": row.preset, "metrics": scored["metrics"], "curves": curves,
        "checkpoint": str(checkpoint), "detections": scored["detections"], "detections_path": str(detections_path),
        "config": scored["config"], "val_ann": scored["val_ann"], "val_images": scored["val_images"],
        "reused_training": reused, "train_seconds": round(train_seconds, 2), "eval_seconds": round(scored["seconds"], 2),
        "note": (f"{settings.describe()}; trained {row.preset} as {trained_as.model.backbone} for "
                 f"{trained_as.train.max_iters} iterations{extra}"),
    }


def select_rows(rows: Sequence[PaperRow], labels: Sequence[str] | None = None) -> list[PaperRow]:
    """The rows whose label is in ``labels`` (all when None); an unknown label lists the valid ones."""
    if labels is None:
        return list(rows)
    known = {row.row: row for row in rows}
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ConfigError(f"unknown row(s) {unknown}; valid rows: {list(known)}")
    return [known[label] for label in labels]


def trained_detections(row: PaperRow, settings: ScaleSettings, out_dir: str | Path, *, checkpoint: str | Path | None = None,
                       device: str = "auto", seed: int = 0, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Detections of a trained model on the scale's validation set: ``checkpoint``'s, or ``row`` trained now.

    Returns:
        The dict of :func:`run_row` (``detections``, ``config``, ``checkpoint``, ``metrics``, ``val_ann``,
        ``val_images``, ``note``, ...).
    """
    if checkpoint is None:
        return run_row(row, settings, out_dir, device=device, seed=seed, overrides=overrides)
    scored = evaluate_checkpoint(checkpoint, device=device, data_from=settings,
                                 detections_path=Path(out_dir) / "detections_checkpoint.json")
    return {**scored, "table": row.table, "row": row.row, "preset": scored["config"].name, "checkpoint": str(checkpoint),
            "reused_training": True, "train_seconds": 0.0, "eval_seconds": round(scored["seconds"], 2),
            "note": f"{settings.describe()}; checkpoint {Path(checkpoint).name} ({scored['config'].name})"}


def _slim_checkpoint(checkpoint: Path) -> None:
    """Keep only what evaluation needs: the weights and config (no optimizer state, no safetensors copy)."""
    import torch

    from fcos_lab.checkpoint import atomic_write_bytes

    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for key in ("optimizer", "rng"):
        payload.pop(key, None)
    atomic_write_bytes(checkpoint, lambda handle: torch.save(payload, handle))
    checkpoint.with_suffix(".safetensors").unlink(missing_ok=True)


def record_row(results: Results, row: PaperRow, outcome: dict[str, Any]) -> None:
    """Add ``row``'s measured metrics (those its table reports) beside the paper's values to ``results``."""
    keys = TABLE_METRICS.get(row.table, tuple(row.values))
    measured = {k: outcome["metrics"][k] for k in keys if k in outcome["metrics"]}
    results.add_metrics(row.table, row.row, measured, row.values, note=outcome["note"])


def run_rows(rows: Sequence[PaperRow], settings: ScaleSettings, out_dir: str | Path, results: Results, *,
             device: str = "auto", seed: int = 0, overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
    """:func:`run_row` for each row, each recorded into ``results`` and saved (incomplete) as it finishes."""
    outcomes = []
    for index, row in enumerate(rows, start=1):
        outcome = run_row(row, settings, out_dir, device=device, seed=seed, overrides=overrides)
        record_row(results, row, outcome)
        results.save(out_dir, complete=False)
        shown = ", ".join(f"{k} {100 * outcome['metrics'][k]:.1f}" for k in TABLE_METRICS.get(row.table, ())[:3])
        reuse = " (training reused)" if outcome["reused_training"] else ""
        print(f"[{index}/{len(rows)}] {row.table} | {row.row}: {shown}; train {outcome['train_seconds']:.0f} s"
              f"{reuse}, eval {outcome['eval_seconds']:.0f} s", flush=True)
        outcomes.append(outcome)
    return outcomes


def record_difference(results: Results, table: str, row: str, minuend: str, subtrahend: str) -> None:
    """Add a ``minuend - subtrahend`` row from recorded rows, measured and paper alike (Table 7's last line)."""
    recorded = {(m.row, m.metric): m for m in results.measurements if m.table == table}

    def difference(metric: str, field: str) -> float | None:
        a, b = recorded.get((minuend, metric)), recorded.get((subtrahend, metric))
        if a is None or b is None or getattr(a, field) is None or getattr(b, field) is None:
            return None
        return getattr(a, field) - getattr(b, field)

    for metric in [metric for name, metric in recorded if name == minuend]:
        results.add(table, row, metric, difference(metric, "measured"), difference(metric, "paper"), unit="points",
                    note=f"{minuend} minus {subtrahend}")


# ----------------------------------------------------------------------------------------------
# Tables 1 and 2: statistics of the annotations; detections from ambiguous locations


def statistics_file(settings: ScaleSettings, out_dir: str | Path) -> tuple[str, str]:
    """The annotation file Tables 1 and 2 are computed on, and a sentence saying which (and why).

    The full val2017 file when present, cut to its first ``stats_max_images`` images at ``smoke``
    (written into ``out_dir``); without it, the validation annotations of the scale's own data.
    """
    if settings.stats_ann is None:
        if settings.dataset == COCO:
            return settings.val_ann, f"val2017 file not found; statistics of {settings.val_ann}"
        from fcos_lab.data.synthetic import make_synthetic_coco

        synthetic = make_synthetic_coco(settings.synthetic_root, num_train=settings.synthetic_num_train,
                                        num_val=settings.synthetic_num_val, image_size=settings.synthetic_image_size)
        return str(synthetic.val_ann), "val2017 file not found; statistics of the synthetic validation set"
    if not settings.stats_max_images:
        return settings.stats_ann, f"full {Path(settings.stats_ann).name}"
    data = json.loads(Path(settings.stats_ann).read_text())
    images = sorted(data["images"], key=lambda image: image["id"])[: settings.stats_max_images]
    keep = {image["id"] for image in images}
    subset = {**data, "images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in keep]}
    path = Path(out_dir) / f"stats_subset_{len(images)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(subset))
    return str(path), (f"first {len(images)} of {len(data['images'])} images (by id) of {Path(settings.stats_ann).name} "
                       f"at scale {settings.scale}, for time; other scales use the full file")


def record_statistics(results: Results, stats: dict[str, Any], rows: Sequence[PaperRow], note: str) -> None:
    """Record Table 1 (``BPR``) and Table 2 (``ambiguous``, ``ambiguous_diff_class``) rows from statistics.

    A row's ``note`` in :mod:`fcos_lab.paper` names its keys in the statistics (``"ambiguous_p4 /
    ambiguous_diff_class_p4"`` for a Table 2 row); rows without such keys (trained rows) are skipped.
    """
    for row in rows:
        keys = [k.strip() for k in row.note.split("/")]
        if not all(k in stats for k in keys) or row.preset:
            continue
        for metric, key in zip(row.values, keys):
            results.add(row.table, row.row, metric, stats[key], row.values[metric], note=f"{note} ({key})")


def detections_from_ambiguous_locations(ann_file: str | Path, detections: Sequence[dict[str, Any]], config: Config,
                                        *, min_score: float = 0.0) -> dict[str, Any]:
    """The share of detections made at ambiguous locations (Section 4.1.1: 2.3 %, 1.5 % for different classes).

    A detection's location is looked up in the training assignment of its image's ground truth
    (:func:`fcos_lab.integrations.fiftyone.assignment_attributes`, which runs
    :func:`fcos_lab.targets.assign`): it is ambiguous when the location is a candidate of more than one
    box after the size ranges, "diff. class" when those boxes do not all share a class.

    Args:
        ann_file: the ground truth the detections were made on.
        detections: COCO records with ``level`` and ``location`` (as :func:`fcos_lab.predict.predict_dataset` writes).
        config: the config the detections were made with (input size, strides, size ranges).
        min_score: count only detections with at least this score.

    Returns:
        ``detections`` (counted), ``ambiguous``, ``ambiguous_diff_class`` (counts),
        ``detections_ambiguous``, ``detections_ambiguous_diff_class`` (percent; None without detections)
        and ``unplaced`` (detections whose location is not on the grid).
    """
    from fcos_lab.data.coco import load_coco_annotations
    from fcos_lab.integrations.fiftyone import assignment_attributes

    _, attributes = assignment_attributes(load_coco_annotations(ann_file), list(detections), config)
    counted = [a for d, a in zip(detections, attributes) if d["score"] >= min_score and a["ambiguous"] is not None]
    ambiguous = sum(bool(a["ambiguous"]) for a in counted)
    different = sum(bool(a["ambiguous_diff_class"]) for a in counted)
    share = (lambda n: 100.0 * n / len(counted) if counted else None)
    return {"detections": len(counted), "ambiguous": ambiguous, "ambiguous_diff_class": different,
            "detections_ambiguous": share(ambiguous), "detections_ambiguous_diff_class": share(different),
            "unplaced": sum(a["ambiguous"] is None for a in attributes), "min_score": min_score}


def record_detection_share(results: Results, row: PaperRow, share: dict[str, Any], note: str) -> None:
    """Record :func:`detections_from_ambiguous_locations` as Table 2's text row (2.3 % / 1.5 %)."""
    for metric in ("detections_ambiguous", "detections_ambiguous_diff_class"):
        results.add(row.table, row.row, metric, share[metric], row.values.get(metric),
                    note=f"{note}; {share['detections']} detections with score >= {share['min_score']:g}")


def fiftyone_errors(ann_file: str | Path, images_dir: str | Path, detections: Sequence[dict[str, Any]], config: Config,
                    *, name: str = "fcos-lab-02") -> dict[str, Any]:
    """FiftyOne's view of the errors at ambiguous locations, or why it could not be built.

    Never raises: FiftyOne missing, or its database failing to start, is reported in ``reason``.

    Returns:
        ``available`` (bool), ``reason`` (None or why not), and when available ``summary`` (text),
        ``share`` (:func:`fcos_lab.integrations.fiftyone_views.ambiguous_share`), ``errors_per_level``,
        ``views`` (saved view name -> number of images) and ``dataset`` (the FiftyOne dataset).
    """
    try:
        import fiftyone as fo

        from fcos_lab.integrations.fiftyone import build_dataset
        from fcos_lab.integrations.fiftyone_views import ambiguous_share, errors_per_level, summary

        fo.config.show_progress_bars = False  # a notebook keeps every redraw of a progress bar as output
        dataset = build_dataset(ann_file, images_dir, list(detections), name=name, config=config, persistent=False)
        views = {v: len(dataset.load_saved_view(v)) for v in dataset.list_saved_views()}
        return {"available": True, "reason": None, "summary": summary(dataset), "share": ambiguous_share(dataset),
                "errors_per_level": errors_per_level(dataset), "views": views, "dataset": dataset}
    except Exception as error:  # noqa: BLE001 - import errors, database start-up, server errors: all mean "skip"
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return {"available": False, "reason": reason[:500]}


# ----------------------------------------------------------------------------------------------
# Notebook plumbing


def set_threads(settings: ScaleSettings) -> int:
    """Apply ``settings.threads`` to torch (when set) and return the number of intra-op threads in use.

    Smoke uses one: its models are tiny, and two OpenMP threads on two cores collapse as soon as another
    process takes one of them (measured here: 6 s instead of 0.35 s per smoke iteration).
    """
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    return torch.get_num_threads()


def output_folder(output_dir: str | Path | None, notebook: str) -> Path:
    """``output_dir`` (created), or ``runs/notebooks/<notebook>`` when None."""
    path = Path(output_dir) if output_dir else Path("runs") / "notebooks" / notebook
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_results(notebook: str, settings: ScaleSettings, parameters: dict[str, Any]) -> Results:
    """A :class:`Results` for ``notebook`` recording its parameters and the scale's settings."""
    record = {k: (v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v))
              for k, v in parameters.items()}
    record["scale_settings"] = asdict(settings)
    record["scale_description"] = settings.describe()
    return Results(notebook=notebook, scale=settings.scale, parameters=record)


def percent(value: float | None) -> float | None:
    """A fraction as percent, None and NaN kept as None."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else 100.0 * value


def finish(results: Results, out_dir: str | Path, settings: ScaleSettings | None = None) -> str:
    """Save ``results.json`` as complete and return the paper-vs-measured table (Markdown, with hardware).

    With ``settings.keep_checkpoints`` False (smoke), the trained weights under ``out_dir/runs`` are deleted.
    """
    from fcos_lab.analysis.report import hardware_label, markdown_table

    path = results.save(out_dir, complete=True)
    table = markdown_table(results.measurements, scale=results.scale, hardware=hardware_label(results.hardware))
    text = f"{table}\n\n{len(results.measurements)} numbers, {results.wall_time_s:.0f} s; written to {path}"
    if settings is not None and not settings.keep_checkpoints:
        weights = [p for pattern in ("model_*.pt", "model_*.safetensors") for p in Path(out_dir).glob(f"runs/*/{pattern}")]
        for weight in weights:
            weight.unlink()
        text += f"; {len(weights)} {settings.scale} checkpoint(s) deleted"
    if results.scale in SCALE_NOTES:
        text = f"*{SCALE_NOTES[results.scale]}*\n\n{text}"
    return text


def save_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` as JSON (NaN and infinities as null; numpy scalars and paths as plain values)."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if hasattr(value, "tolist"):
            return plain(value.tolist())
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain(data), indent=1))
    return path


# ----------------------------------------------------------------------------------------------
# Figures 3 and 8: one image at a time


def figure3_data(checkpoint: str | Path, val_ann: str | Path, val_images: str | Path, image_index: int = 0) -> dict[str, Any]:
    """Center-ness on one validation image (Figure 3): the Eq. (3) targets and the trained model's prediction.

    Returns:
        ``image`` (``[3, h, w]`` in the model's input frame), ``image_id``, ``assignment``
        (:class:`~fcos_lab.viz.assignments.ImageAssignment`), ``target_grids`` and ``predicted_grids``
        (``[H_l, W_l]`` per level; targets NaN on background, predictions NaN in the padding),
        ``strides``, ``names`` (P3...).
    """
    from fcos_lab.viz.app_support import dataset_sample, load_detector, open_dataset, predict_dense, resize_sample
    from fcos_lab.viz.assignments import assign_image, level_setup
    from fcos_lab.viz.heatmaps import prediction_maps, target_centerness_grids

    loaded = load_detector(checkpoint)
    config = loaded.config
    dataset = open_dataset(val_ann, val_images)
    image_id = dataset.image_ids[image_index % len(dataset.image_ids)]
    sample = dataset_sample(dataset, image_id)
    resized = resize_sample(sample, config.input.min_size, config.input.max_size)
    setup = level_setup(config.model.strides, config.assign.size_ranges)
    a = config.assign
    assignment = assign_image(tuple(resized.image.shape[-2:]), resized.boxes, resized.labels, setup, crowd=resized.crowd,
                              center_sampling_radius=a.center_sampling_radius, size_range_inclusive=a.size_range_inclusive,
                              location_offset=a.location_offset, size_divisible=config.input.size_divisible)
    dense = predict_dense(loaded, sample.image)
    output = dense.output
    shapes = output.locations.shapes
    predicted = [
        prediction_maps(output.cls_logits[0], None if output.centerness_logits is None else output.centerness_logits[0],
                        shapes, level, stride=stride, image_size=tuple(dense.batch.image_sizes[0]),
                        offset=a.location_offset)["center-ness"]
        for level, stride in enumerate(config.model.strides)
    ]
    return {"image": resized.image, "image_id": image_id, "assignment": assignment,
            "target_grids": target_centerness_grids(assignment), "predicted_grids": predicted,
            "strides": tuple(config.model.strides), "names": setup.names, "class_names": loaded.class_names}


def figure8_folder(settings: ScaleSettings, image_dir: str | Path | None, fallback: str | Path) -> Path:
    """The images of Figure 8: ``image_dir``, else the real val2017 images under ``data_root``, else ``fallback``."""
    if image_dir:
        return Path(image_dir)
    real = Path(settings.data_root) / "coco" / "images" / "val2017" if settings.data_root else None
    return real if real is not None and real.is_dir() else Path(fallback)


def detect_images(checkpoint: str | Path, image_paths: Sequence[str | Path], *, device: str = "auto") -> dict[str, Any]:
    """Detections of a checkpoint on image files (Figure 8), boxes in each image's own pixels.

    Returns:
        ``images`` (``[3, H, W]`` tensors), ``detections`` (one :class:`~fcos_lab.postprocess.Detections` per
        image, on the CPU), ``names`` (file names), ``class_names``, ``config``.
    """
    from fcos_lab.data.coco import load_image
    from fcos_lab.predict import detect
    from fcos_lab.train import resolve_device
    from fcos_lab.viz.app_support import load_detector

    loaded = load_detector(checkpoint)
    model = loaded.model.to(resolve_device(device))
    images = [load_image(path) for path in image_paths]
    detections = [detect(model, loaded.config, [image])[0].to("cpu") for image in images]
    return {"images": images, "detections": detections, "names": [Path(p).name for p in image_paths],
            "class_names": loaded.class_names, "config": loaded.config}
