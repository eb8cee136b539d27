"""Run folders and checkpoints as a person meets them: find runs, read them, load a trained detector.

A run folder (written by :func:`fcos_lab.train.train`, ``fcos-lab demo`` or ``fcos-lab import-weights``)
holds ``config.json``, ``metrics.jsonl`` (training log and evaluation rows), ``metrics.json`` (the last
evaluation) and checkpoints ``model_NNNNNNN.pt`` / ``model_final.pt``. This module is the one home of
"checkpoint -> model" (:func:`load_detector`), used by the command line, the demo, the experiments, the
app and the notebooks, and of reading run folders (:func:`read_run`, :func:`find_runs`).

Errors are :class:`~fcos_lab.errors.FcosLabError` whose message names the path and the problem.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcos_lab.checkpoint import CHECKPOINT_PATTERN, atomic_write_text, load_checkpoint, load_model_weights
from fcos_lab.config import Config
from fcos_lab.distributed import resolve_device
from fcos_lab.errors import CheckpointError, DataError
from fcos_lab.model.detector import build_model
from fcos_lab.presets import resolve

RUN_MARKERS = ("metrics.jsonl", "model_final.pt", "config.json")


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSON ``null``), recursively through dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (non-finite floats become null)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(json_safe(data), indent=2))
    return path


# ----------------------------------------------------------------------------------------------
# Reading run folders


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
    """Read a run folder; unreadable lines become ``problems`` rather than errors.

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
    """Run folders (holding ``metrics.jsonl`` or a checkpoint) at most ``max_depth`` below ``root``.

    Sorted by the newest modification time of their markers, newest first, so that the run a person
    just made (``fcos-lab demo`` writes ``runs/demo/run``) comes first.
    """
    root = Path(root).expanduser()
    found: list[Path] = []
    if not root.is_dir():
        return found
    frontier = [root]
    for _ in range(max_depth + 1):
        next_frontier = []
        for folder in frontier:
            if (folder / "metrics.jsonl").is_file() or checkpoint_files(folder):
                found.append(folder)
            try:
                next_frontier.extend(p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
        frontier = next_frontier

    def newest(folder: Path) -> float:
        times = [p.stat().st_mtime for p in (folder / n for n in RUN_MARKERS) if p.is_file()]
        return max(times + [p.stat().st_mtime for p in checkpoint_files(folder)] + [0.0])

    return sorted(found, key=lambda folder: (-newest(folder), str(folder)))


# ----------------------------------------------------------------------------------------------
# Checkpoint -> model


@dataclass(frozen=True)
class LoadedModel:
    """A detector ready for inference, with what its checkpoint records.

    Attributes:
        model: the network, in eval mode on ``device``.
        config: the config it was built from (the checkpoint's, or the preset asked for), with overrides.
        class_names: names of its class indices (indices as text when the checkpoint has none).
        category_ids: the dataset's category id of each class index (empty when unknown).
        path: the checkpoint file; ``iteration`` its training iteration; ``trained_preset`` the preset
            recorded in it.
        device: where the model is.
    """

    model: nn.Module
    config: Config
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    path: Path
    iteration: int
    trained_preset: str
    device: torch.device


def load_detector(
    checkpoint: str | Path,
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] | dict[str, Any] = (),
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Build the network of ``preset`` (default: the checkpoint's own config), load the weights, move it to ``device``.

    Args:
        checkpoint: a checkpoint file or a run folder (its newest checkpoint).
        preset: build another preset's network (it must fit the weights); None keeps the checkpoint's.
        overrides: dotted overrides on that config (``postprocess.nms_thresh=0.5``, ...).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device.

    Raises:
        CheckpointError: missing, corrupt or unsafe file, or weights that do not fit the network
            (a checkpoint from another preset); the message says which preset the file records.
        ConfigError: a bad override.
    """
    payload = load_checkpoint(Path(checkpoint).expanduser())
    trained = payload["config"]
    config = resolve(trained if not preset or preset == trained.name else preset, overrides)
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
    torch_device = resolve_device(device) if isinstance(device, str) else device
    model = model.to(torch_device).eval()
    names = tuple(payload.get("class_names") or (str(c) for c in range(config.model.num_classes)))
    return LoadedModel(
        model=model, config=config, class_names=names,
        category_ids=tuple(int(c) for c in payload.get("category_ids") or ()),
        path=Path(payload["path"]), iteration=int(payload.get("iteration", 0)), trained_preset=trained.name,
        device=torch_device,
    )
