"""Training, evaluating and recording the paper's rows: what the notebooks in ``notebooks/`` call (Section 4).

A row of :mod:`fcos_lab.paper` (Tables 3-8) is trained at a scale (:mod:`fcos_lab.analysis.scales`),
once per seed, evaluated with COCO's protocol (:mod:`fcos_lab.evaluate`) and recorded beside the paper's
value in a :class:`~fcos_lab.analysis.report.Results` (the mean and spread over seeds, and the row the
paper compares it with); Tables 1 and 2 record statistics instead of trained rows. Rows evaluated from
given weights instead of trained are :mod:`fcos_lab.analysis.from_weights`. The notebook plumbing at the
end creates, fills and saves a notebook's ``results.json``.
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

from fcos_lab import paper
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
                        data_from: ScaleSettings | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Predict on the checkpoint's validation set and score it with COCO's protocol.

    Args:
        checkpoint: an fcos_lab checkpoint (its config names the data).
        postprocess_from: a config whose ``postprocess`` replaces the checkpoint's (Table 4's test-time
            variants); None keeps the checkpoint's.
        class_agnostic, max_dets: as :func:`fcos_lab.evaluate.evaluate_detections`.
        detections_path: where to save the detections (COCO results with level, location, scores).
        data_from: evaluate on these settings' validation data instead of the data the checkpoint
            names (a checkpoint trained elsewhere); the model's input sizes are kept.
        overrides: dotted overrides on the checkpoint's config (``input.min_size=320``, ...).

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
    loaded = load_detector(checkpoint, overrides=list(overrides), device=device)
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
    """Train ``row`` at ``scale`` (or reuse an identical training in the scale's ``trainings_dir``) and evaluate it.

    Rows that differ only at test time (Table 4's center-ness variants, Table 3's NMS thresholds) share
    one training, and so do notebooks given the same ``work_dir``: runs are keyed by :func:`training_key`.

    Returns:
        A dict: ``table``, ``row``, ``preset``, ``metrics`` (fractions; the keys of
        :data:`TABLE_METRICS` and more), ``curves`` (IoU -> (recall, precision), class-agnostic tables
        only), ``checkpoint``, ``detections`` (records), ``detections_path``, ``config`` (predicted
        with), ``val_ann``, ``val_images``, ``reused_training``, ``train_seconds``, ``eval_seconds``,
        ``load_overrides`` (none: the checkpoint holds its config) and ``note``.
    """
    from fcos_lab.evaluate import precision_recall_curves
    from fcos_lab.train import train

    settings = scale if isinstance(scale, ScaleSettings) else scale_settings(scale, data_root, work_dir=out_dir)
    settings.check_training_data()
    config = row_config(row, settings, overrides, seed)
    eval_config = resolve(config, list(row.eval_overrides))
    run_dir = Path(settings.trainings_dir) / training_key(config)
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
        "load_overrides": [],
        "note": (f"{settings.describe()}; trained {row.preset} as {trained_as.model.backbone} for "
                 f"{trained_as.train.max_iters} iterations, seed {seed}{extra}"),
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


def model_row(settings: ScaleSettings) -> PaperRow:
    """The row whose training is "the trained FCOS" at ``settings`` (Table 4's learned row unless the scale
    names another in ``test_time_model``): Table 2's detection share and Figures 7-8 are made with it."""
    if not settings.test_time_model:
        return paper.TABLE_4[2]
    table, label = settings.test_time_model
    return select_rows(paper.TABLES[table], [label])[0]


def centerness_at_test_time(row: PaperRow, model: PaperRow = paper.TABLE_4[2]) -> PaperRow:
    """Table 4's ``row`` as a test-time variant of ``model``'s training: same label and paper values.

    The row is trained as ``model`` (default: Table 4's learned row) and evaluated with its own
    ``postprocess.centerness_mode``, so the four variants need one training (or none, from given weights).
    """
    # Deviation from paper: Table 4's "None" and "center-ness†" models are trained without the branch;
    # here they are a model with a learned branch, ignored at test time (the comparison the workshop
    # scale and given weights can afford).
    modes = [o.split("=", 1)[1] for o in (*row.overrides, *row.eval_overrides) if o.startswith("postprocess.centerness_mode=")]
    note = f"{row.note + '; ' if row.note else ''}evaluated at test time on the model of {model.table} {model.row!r}"
    return replace(row, preset=model.preset, overrides=model.overrides,
                   eval_overrides=(f"postprocess.centerness_mode={modes[-1] if modes else 'learned'}",), note=note)


def rows_at_scale(rows: Sequence[PaperRow], settings: ScaleSettings,
                  labels: Sequence[str] | None = None) -> tuple[list[PaperRow], list[PaperRow]]:
    """The rows to train at ``settings`` and the rows it leaves out (``settings.trained_rows``).

    ``labels`` (a notebook's ``rows`` parameter) picks rows explicitly and overrides the scale's choice.
    With ``settings.test_time_model``, Table 4's rows become :func:`centerness_at_test_time` variants of
    :func:`model_row`.
    """
    if settings.test_time_model:
        rows = [centerness_at_test_time(row, model_row(settings)) if row.table == "Table 4" else row for row in rows]
    if labels is not None:
        return select_rows(rows, labels), []
    trained = [row for row in rows if settings.trains(row.table, row.row)]
    return trained, [row for row in rows if row not in trained]


def _slim_checkpoint(checkpoint: Path) -> None:
    """Keep only what evaluation needs: the weights and config (no optimizer state, no safetensors copy)."""
    import torch

    from fcos_lab.checkpoint import atomic_write_bytes

    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for key in ("optimizer", "rng"):
        payload.pop(key, None)
    atomic_write_bytes(checkpoint, lambda handle: torch.save(payload, handle))
    checkpoint.with_suffix(".safetensors").unlink(missing_ok=True)


def record_row(results: Results, row: PaperRow, outcomes: dict[str, Any] | Sequence[dict[str, Any]], *,
               deterministic: bool = False, weights: str = "") -> None:
    """Add ``row``'s measured metrics (those its table reports) beside the paper's values to ``results``.

    Args:
        outcomes: one :func:`run_row` result, or one per seed (recorded as mean and spread).
        deterministic: the numbers have no randomness (given weights evaluated): spread 0.
        weights: the given weights the row was measured with ("" when trained here).
    """
    runs = [outcomes] if isinstance(outcomes, dict) else list(outcomes)
    keys = TABLE_METRICS.get(row.table, tuple(row.values))
    per_seed = [{k: run["metrics"][k] for k in keys if k in run["metrics"]} for run in runs]
    note = runs[0]["note"] if len(runs) == 1 else f"{runs[0]['note']}; mean over {len(runs)} seeds"
    if deterministic:
        results.add_metrics(row.table, row.row, per_seed[0], row.values, note=note, deterministic=True,
                            reference=paper.reference_row(row), weights=weights)
    else:
        results.add_metrics(row.table, row.row, {}, row.values, note=note, per_seed=per_seed,
                            reference=paper.reference_row(row), weights=weights)


def record_not_measured(results: Results, rows: Sequence[PaperRow], reason: str) -> None:
    """Add ``rows`` with the paper's values and no measurement, saying why (shown, never invented)."""
    for row in rows:
        results.add_metrics(row.table, row.row, {}, row.values, note=reason, reference=paper.reference_row(row))


def run_rows(rows: Sequence[PaperRow], settings: ScaleSettings, out_dir: str | Path, results: Results, *,
             labels: Sequence[str] | None = None, device: str = "auto", seed: int = 0, seeds: int | None = None,
             overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Train and evaluate the rows of a table at ``settings``, over several seeds, recording each into ``results``.

    Args:
        rows: a table of :mod:`fcos_lab.paper`; :func:`rows_at_scale` picks those trained (``labels``
            overrides the scale's choice) and the others are recorded as not measured, with the reason.
        seed, seeds: seeds ``seed .. seed + seeds - 1`` (``seeds`` None: ``settings.seeds``); each number is
            recorded as their mean and spread. ``results`` is saved (incomplete) after each row.

    Returns:
        One :func:`run_row` result per trained row (its first seed's), with ``per_seed`` (each seed's metrics).
    """
    trained, untrained = rows_at_scale(rows, settings, labels)
    record_not_measured(results, untrained, settings.untrained_note())
    if untrained:
        print(f"not trained at {settings.scale} scale: {[row.row for row in untrained]}")
    count = seeds or settings.seeds
    outcomes = []
    for index, row in enumerate(trained, start=1):
        runs = [run_row(row, settings, out_dir, device=device, seed=seed + k, overrides=overrides) for k in range(count)]
        record_row(results, row, runs)
        results.save(out_dir, complete=False)
        recorded = {m.metric: m for m in results.measurements if m.table == row.table and m.row == row.row}
        shown = ", ".join(f"{k} {recorded[k].measured:.1f}" + (f" ± {recorded[k].spread:.1f}" if recorded[k].spread else "")
                          for k in TABLE_METRICS.get(row.table, ())[:3] if k in recorded and recorded[k].measured is not None)
        reused = sum(run["reused_training"] for run in runs)
        print(f"[{index}/{len(trained)}] {row.table} | {row.row}: {shown} ({count} seed(s)); train "
              f"{sum(run['train_seconds'] for run in runs):.0f} s ({reused} reused), "
              f"eval {sum(run['eval_seconds'] for run in runs):.0f} s", flush=True)
        outcomes.append({**runs[0], "per_seed": [run["metrics"] for run in runs]})
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
            # A statistic of the annotations has no randomness: spread 0, so its verdict stands alone.
            results.add(row.table, row.row, metric, stats[key], row.values[metric], note=f"{note} ({key})",
                        spread=0.0, reference=paper.reference_row(row))


def record_detection_share(results: Results, row: PaperRow, share: dict[str, Any], note: str, weights: str = "") -> None:
    """Record :func:`fcos_lab.analysis.qualitative.detections_from_ambiguous_locations` as Table 2's text row (2.3 % / 1.5 %)."""
    for metric in ("detections_ambiguous", "detections_ambiguous_diff_class"):
        results.add(row.table, row.row, metric, share[metric], row.values.get(metric),
                    note=f"{note}; {share['detections']} detections with score >= {share['min_score']:g}", weights=weights)


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

    With ``settings.keep_checkpoints`` False (smoke), the trained weights under ``settings.trainings_dir`` are deleted.
    """
    from fcos_lab.analysis.report import hardware_label, markdown_table

    path = results.save(out_dir, complete=True)
    table = markdown_table(results.measurements, scale=results.scale, hardware=hardware_label(results.hardware))
    text = f"{table}\n\n{len(results.measurements)} numbers, {results.wall_time_s:.0f} s; written to {path}"
    if settings is not None and not settings.keep_checkpoints:
        weights = [p for pattern in ("model_*.pt", "model_*.safetensors") for p in Path(settings.trainings_dir).glob(f"*/{pattern}")]
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
