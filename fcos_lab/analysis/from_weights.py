"""The paper's evaluation-only experiments from given weights, and the one model the figures need.

Table 2's detection share, Table 4 at test time (no center-ness, from the predicted box, learned, the
ground-truth oracle), Table 7 with Figures 4-6, and Figures 7 and 8 need a trained FCOS, not a training:
given weights (an fcos_lab checkpoint, or a run folder such as ``fcos-lab import-weights --from
torchvision`` writes) they are evaluated on the scale's validation data and nothing is trained. Every row
measured so names the weights (:class:`GivenWeights`: file name and sha256, from ``imported.json`` for
imported weights), and the reproduction report lists those rows.

Class indices map to the data's category ids through the checkpoint's ``category_ids`` (an imported
torchvision model's 91 labels are COCO's category ids), in :func:`fcos_lab.predict.predict_dataset`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcos_lab.analysis.experiments import (
    TABLE_EVALUATION,
    centerness_at_test_time,
    evaluate_checkpoint,
    record_not_measured,
    record_row,
    run_row,
    run_rows,
    select_rows,
)
from fcos_lab.analysis.report import Results
from fcos_lab.analysis.scales import COCO, ScaleSettings, first_images_file
from fcos_lab.errors import CheckpointError, ConfigError
from fcos_lab.paper import PaperRow
from fcos_lab.presets import resolve


@dataclass(frozen=True)
class GivenWeights:
    """Weights evaluated instead of trained.

    Attributes:
        checkpoint: the fcos_lab checkpoint file (a run folder's newest).
        name: the weights file's name (the imported file's for imported weights).
        sha256: its sha256 (as ``imported.json`` records it for imported weights).
        source: ``"torchvision"`` for imported weights, ``"fcos_lab"`` for a checkpoint.
        detector: the config's ``model.detector`` (which rows the weights can stand for).
    """

    checkpoint: Path
    name: str
    sha256: str
    source: str
    detector: str

    @property
    def label(self) -> str:
        """How reports name the weights: file name, sha256 and where they come from."""
        origin = f"imported from {self.source}" if self.source != "fcos_lab" else "fcos_lab checkpoint"
        return f"{self.name} (sha256 {self.sha256}, {origin})"


def given_weights(weights: str | Path) -> GivenWeights:
    """Read what identifies ``weights`` (a checkpoint file or a run folder).

    Raises:
        CheckpointError: no checkpoint there, or an unreadable one.
    """
    from fcos_lab.checkpoint import latest_checkpoint, load_checkpoint

    path = Path(weights).expanduser()
    checkpoint = latest_checkpoint(path) if path.is_dir() else path
    if checkpoint is None or not checkpoint.is_file():
        raise CheckpointError(f"{path}: no checkpoint (a model_*.pt file, or a run folder holding one)")
    detector = load_checkpoint(checkpoint)["config"].model.detector
    imported = checkpoint.parent / "imported.json"
    if imported.is_file():
        try:
            record = json.loads(imported.read_text(encoding="utf-8"))
            return GivenWeights(checkpoint, Path(record["file"]).name, str(record["sha256"]), str(record["source"]), detector)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(f"{imported}: unreadable provenance record ({type(error).__name__}: {error})") from None
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return GivenWeights(checkpoint, checkpoint.name, digest.hexdigest(), "fcos_lab", detector)


def validation_subset(settings: ScaleSettings, out_dir: str | Path, max_images: int | None) -> ScaleSettings:
    """``settings`` evaluating on the first ``max_images`` validation images (by id) only; None or 0: all.

    Raises:
        ConfigError: a subset of synthetic data (its size is a scale setting instead).
    """
    if not max_images:
        return settings
    if settings.dataset != COCO:
        raise ConfigError("val_max_images needs COCO-format validation files (dataset='coco'); synthetic data "
                          "has its own size setting")
    path = first_images_file(settings.val_ann, max_images, Path(out_dir) / f"val_first_{max_images}.json")
    return settings.with_files(val_ann=str(path), val_images=settings.val_images)


def _evaluation_note(settings: ScaleSettings, given: GivenWeights, overrides: Sequence[str]) -> str:
    extra = f"; overrides {list(overrides)}" if overrides else ""
    return f"{settings.scale}: evaluated on {Path(settings.val_ann).name or 'synthetic validation'}; weights {given.label}{extra}"


def evaluate_rows_from_weights(rows: Sequence[PaperRow], weights: str | Path, settings: ScaleSettings,
                               out_dir: str | Path, results: Results, *, device: str = "auto",
                               overrides: Sequence[str] = (), batch_size: int = 4) -> list[dict[str, Any]]:
    """Evaluate the rows of a table that ``weights`` can stand for, and record them; nothing is trained.

    Table 4's rows become its test-time variants (:func:`~fcos_lab.analysis.experiments.centerness_at_test_time`);
    a row whose model is another kind of detector (Table 7's RetinaNet rows for FCOS weights) is recorded as
    not measured. Each row is evaluated with the row's post-processing switches on top of ``overrides``
    (``input.min_size=320`` evaluates on smaller inputs), on the validation data of ``settings``.

    Returns:
        One dict per evaluated row, as :func:`~fcos_lab.analysis.experiments.run_row`'s (``metrics``,
        ``curves``, ``checkpoint``, ``detections``, ``config``, ``val_ann``, ``val_images``, ``note``), plus
        ``weights`` (the label) and ``load_overrides`` (``overrides``, to load the model again for figures).
    """
    from fcos_lab.evaluate import precision_recall_curves

    given = given_weights(weights)
    rows = [centerness_at_test_time(row) if row.table == "Table 4" else row for row in rows]
    usable = [row for row in rows if resolve(row.preset, list(row.overrides)).model.detector == given.detector]
    record_not_measured(results, [row for row in rows if row not in usable],
                        f"not measured: the given weights are a {given.detector} detector ({given.label})")
    outcomes = []
    for row in usable:
        switches = [o for o in (*row.overrides, *row.eval_overrides) if o.startswith("postprocess.")]
        evaluation = TABLE_EVALUATION.get(row.table, {})
        slug = hashlib.sha1(json.dumps([row.table, row.row]).encode()).hexdigest()[:8]
        scored = evaluate_checkpoint(given.checkpoint, device=device, data_from=settings, batch_size=batch_size,
                                     overrides=[*overrides, *switches], detections_path=Path(out_dir) / f"detections_{slug}.json",
                                     **evaluation)
        outcome = {**scored, "table": row.table, "row": row.row, "preset": scored["config"].name,
                   "checkpoint": str(given.checkpoint), "weights": given.label, "train_seconds": 0.0,
                   "load_overrides": list(overrides),
                   "reused_training": True, "eval_seconds": round(scored["seconds"], 2),
                   "curves": precision_recall_curves(scored["result"]) if evaluation.get("class_agnostic") else None,
                   "note": _evaluation_note(settings, given, [*overrides, *switches])}
        record_row(results, row, outcome, deterministic=True, weights=given.label)
        results.save(out_dir, complete=False)
        print(f"{row.table} | {row.row}: AP {100 * outcome['metrics'].get('AP', float('nan')):.1f} "
              f"(given weights, eval {outcome['eval_seconds']:.0f} s)", flush=True)
        outcomes.append(outcome)
    return outcomes


def measure_rows(rows: Sequence[PaperRow], settings: ScaleSettings, out_dir: str | Path, results: Results, *,
                 weights: str | Path | None = None, labels: Sequence[str] | None = None, device: str = "auto",
                 seed: int = 0, seeds: int | None = None, overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
    """A table's rows from ``weights`` (:func:`evaluate_rows_from_weights`), or trained at the scale
    (:func:`~fcos_lab.analysis.experiments.run_rows`, with ``labels``, ``seed`` and ``seeds``)."""
    if weights:
        chosen = select_rows(rows, labels) if labels is not None else list(rows)
        return evaluate_rows_from_weights(chosen, weights, settings, out_dir, results, device=device, overrides=overrides)
    return run_rows(rows, settings, out_dir, results, labels=labels, device=device, seed=seed, seeds=seeds,
                    overrides=overrides)


def model_detections(row: PaperRow, settings: ScaleSettings, out_dir: str | Path, *, weights: str | Path | None = None,
                     device: str = "auto", seed: int = 0, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Detections of one model on the scale's validation set: ``weights`` evaluated, or ``row`` trained now.

    ``overrides`` are training overrides for a trained row, evaluation overrides for given weights.

    Returns:
        The dict of :func:`~fcos_lab.analysis.experiments.run_row` (``detections``, ``config``,
        ``checkpoint``, ``metrics``, ``val_ann``, ``val_images``, ``note``, ...) with ``weights`` (the
        label of the given weights, "" when trained).
    """
    if weights is None:
        return {**run_row(row, settings, out_dir, device=device, seed=seed, overrides=overrides), "weights": ""}
    given = given_weights(weights)
    scored = evaluate_checkpoint(given.checkpoint, device=device, data_from=settings, overrides=overrides,
                                 detections_path=Path(out_dir) / "detections_weights.json")
    return {**scored, "table": row.table, "row": row.row, "preset": scored["config"].name,
            "checkpoint": str(given.checkpoint), "weights": given.label, "reused_training": True, "train_seconds": 0.0,
            "eval_seconds": round(scored["seconds"], 2), "note": _evaluation_note(settings, given, overrides)}


def figure_model(row: PaperRow, settings: ScaleSettings, out_dir: str | Path, *, weights: str | Path | None = None,
                 device: str = "auto", seed: int = 0, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The model a figure draws: ``weights`` as given (not evaluated), or ``row`` trained (and evaluated) now.

    Returns:
        ``checkpoint``, ``note``, ``val_images`` (the scale's validation images), ``weights`` (label or "")
        and ``load_overrides`` (to load the model with: the evaluation overrides for given weights, none for a
        training, whose checkpoint already holds them).
    """
    if weights is None:
        trained = run_row(row, settings, out_dir, device=device, seed=seed, overrides=overrides)
        return {"checkpoint": trained["checkpoint"], "note": trained["note"], "val_images": trained["val_images"],
                "weights": "", "load_overrides": []}
    given = given_weights(weights)
    extra = f"; overrides {list(overrides)}" if overrides else ""
    return {"checkpoint": str(given.checkpoint), "note": f"{settings.scale}: weights {given.label}{extra}",
            "val_images": settings.val_images, "weights": given.label, "load_overrides": list(overrides)}
