"""Checkpoints: written atomically, read without unpickling code.

A checkpoint is a ``torch.save`` of plain containers, tensors and numbers only (model and optimizer
state, iteration, RNG states, the resolved config as JSON, the dataset's category ids), so that
``torch.load(weights_only=True)`` reads it and a file carrying a pickled object is refused. Final
weights are also exported as ``.safetensors``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcos_lab.config import Config, config_from_dict
from fcos_lab.errors import CheckpointError

CHECKPOINT_PATTERN = re.compile(r"^model_(\d{7})\.pt$")


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, flush, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: Config,
    *,
    iteration: int,
    optimizer: torch.optim.Optimizer | None = None,
    category_ids: list[int] | None = None,
    class_names: list[str] | None = None,
    rng_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically and return its path."""
    path = Path(path)
    payload: dict[str, Any] = {
        "format": "fcos_lab/1",
        "iteration": int(iteration),
        "config": config.to_json(),
        "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "category_ids": [int(c) for c in (category_ids or [])],
        "class_names": [str(c) for c in (class_names or [])],
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if rng_state is not None:
        payload["rng"] = rng_state
    atomic_write_bytes(path, lambda handle: torch.save(payload, handle))
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; :class:`CheckpointError` for anything else.

    Returns:
        The payload, with ``"config"`` parsed into a :class:`Config`.
    """
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path}: no checkpoint (model_*.pt or model_final.pt) in this folder")
        path = found
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors have many types
        raise CheckpointError(
            f"{path}: refused to load: not a plain-tensor checkpoint (it may carry code, or be corrupt): "
            f"{str(exc).splitlines()[0][:300]}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != "fcos_lab/1" or "model" not in payload:
        raise CheckpointError(f"{path}: not an fcos_lab checkpoint (missing 'format' or 'model')")
    try:
        payload["config"] = config_from_dict(json.loads(payload["config"]))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: the stored config is malformed: {exc}") from None
    payload["path"] = path
    return payload


def load_model_weights(model: nn.Module, payload: dict[str, Any]) -> None:
    """Load a checkpoint's weights into ``model``, naming the mismatch when it was built from another preset."""
    state = payload["model"]
    own = unwrap(model).state_dict()
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if mismatched or missing or unexpected:
        raise CheckpointError(
            f"{payload.get('path', 'checkpoint')}: weights do not fit this model (another preset or class count?): "
            f"mismatched {mismatched[:3]}, missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    unwrap(model).load_state_dict(state)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """``model_final.pt`` if present, else the ``model_NNNNNNN.pt`` with the highest iteration."""
    run_dir = Path(run_dir)
    final = run_dir / "model_final.pt"
    if final.is_file():
        return final
    numbered = sorted(p for p in run_dir.glob("model_*.pt") if CHECKPOINT_PATTERN.match(p.name))
    return numbered[-1] if numbered else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest numbered checkpoints."""
    numbered = sorted(p for p in Path(run_dir).glob("model_*.pt") if CHECKPOINT_PATTERN.match(p.name))
    for old in numbered[: max(0, len(numbered) - keep)]:
        old.unlink(missing_ok=True)


def export_safetensors(path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None) -> Path:
    """Write the model's weights as ``.safetensors`` (no code can ride along)."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    atomic_write_bytes(path, lambda handle: handle.write(save(tensors, metadata=metadata or {})))
    return path
