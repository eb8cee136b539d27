"""Training, evaluating and recording the paper's rows: what the notebooks in ``notebooks/`` call (Section 4).

A row of :mod:`fcos_lab.paper` (Tables 3-8) is trained at a scale (:mod:`fcos_lab.analysis.scales`),
evaluated with COCO's protocol (:mod:`fcos_lab.evaluate`) and recorded beside the paper's value in a
:class:`~fcos_lab.analysis.report.Results`; Tables 1 and 2 record statistics instead of trained rows.
The notebook plumbing at the end creates, fills and saves a notebook's ``results.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from fcos_lab.analysis.report import Results
from fcos_lab.analysis.scales import SCALE_NOTES, ScaleSettings, scale_settings
from fcos_lab.config import Config
from fcos_lab.errors import ConfigError
from fcos_lab.paper import PaperRow
from fcos_lab.presets import resolve

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
    from fcos_lab.data.splits import build_datasets
    from fcos_lab.detections_file import save_detections
    from fcos_lab.evaluate import evaluate_detections
    from fcos_lab.predict import predict_dataset
    from fcos_lab.runs import load_detector

    started = time.perf_counter()
    loaded = load_detector(checkpoint, device=device)
    config = loaded.config
    if postprocess_from is not None:
        config = replace(config, postprocess=postprocess_from.postprocess)
    if data_from is not None:
        config = resolve(config, {k: v for k, v in data_from.overrides_for(config).items() if k.startswith("data.")})
    _, val_set = build_datasets(config, need_train=False)
    detections = predict_dataset(loaded.model, config, val_set, device=loaded.device, batch_size=batch_size,
                                 category_ids=list(loaded.category_ids) or None)
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


def record_detection_share(results: Results, row: PaperRow, share: dict[str, Any], note: str) -> None:
    """Record :func:`fcos_lab.analysis.qualitative.detections_from_ambiguous_locations` as Table 2's text row (2.3 % / 1.5 %)."""
    for metric in ("detections_ambiguous", "detections_ambiguous_diff_class"):
        results.add(row.table, row.row, metric, share[metric], row.values.get(metric),
                    note=f"{note}; {share['detections']} detections with score >= {share['min_score']:g}")


# ----------------------------------------------------------------------------------------------
# Notebook plumbing


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
