"""Published detector weights in, an fcos_lab run folder out (``fcos-lab import-weights``).

A weights file is read with ``torch.load(weights_only=True)``, so a file that carries pickled code is
refused; a ``{"model": ...}`` or ``{"state_dict": ...}`` wrapper and DataParallel's ``module.`` prefix are
looked through. Files of other detection code bases are recognised by their key names and named in the
error (the official FCOS code, AdelaiDet, detectron2, mmdetection, other torchvision detectors).

The run folder holds ``model_final.pt`` (an fcos_lab checkpoint with the class names and category
ids), ``model_final.safetensors``, ``config.json`` and ``imported.json`` (where the weights came
from). It is written in a temporary folder beside the destination and renamed into place, so a bad
file never leaves a half-written folder. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fcos_lab.checkpoint import atomic_write_text, export_safetensors, save_checkpoint
from fcos_lab.config import Config
from fcos_lab.errors import CheckpointError, DataError, InputError
from fcos_lab.interop.torchvision import check_torchvision_state_dict, from_torchvision_state_dict

SOURCES = ("torchvision",)
TORCHVISION_FCOS = "a torchvision FCOS state dict"
TORCHVISION_COCO_CLASSES = 91

# (format, keys that identify it): the first format whose every key pattern matches some key wins.
# A pattern is a key prefix, or a substring when it starts with "*".
_KNOWN_FORMATS = (
    (TORCHVISION_FCOS, ("head.classification_head.cls_logits.", "head.regression_head.bbox_ctrness.")),
    ("a torchvision RetinaNet state dict", ("head.classification_head.cls_logits.", "head.regression_head.bbox_reg.")),
    ("a torchvision Faster/Mask/Keypoint R-CNN state dict", ("backbone.body.conv1.", "roi_heads.")),
    ("an official FCOS (tianzhi0549/FCOS, maskrcnn-benchmark) checkpoint", ("rpn.head.", "*centerness")),
    ("a maskrcnn-benchmark checkpoint", ("backbone.body.stem.",)),
    ("an AdelaiDet FCOS (detectron2) checkpoint", ("proposal_generator.fcos_head.",)),
    ("a detectron2 checkpoint", ("backbone.bottom_up.",)),
    ("an mmdetection FCOS checkpoint", ("bbox_head.conv_centerness.",)),
    ("an mmdetection checkpoint", ("bbox_head.",)),
    ("a raw fcos_lab state dict (use fcos_lab's model_final.pt checkpoint instead)", ("head.cls_tower.", "fpn.lateral.")),
    ("an ImageNet classification ResNet (a backbone, not a detector)", ("layer1.0.conv1.", "fc.weight")),
)


def identify_format(keys: list[str]) -> str:
    """A description of the weights format that ``keys`` (state-dict keys) belong to."""
    for name, patterns in _KNOWN_FORMATS:
        if all(any(p[1:] in k if p.startswith("*") else k.startswith(p) for k in keys) for p in patterns):
            return name
    return "an unknown format"


def _describe_load_failure(path: Path, exc: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in the user's terms."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    message = str(exc)
    if not head:
        return "the file is empty"
    if head.lstrip()[:1] in (b"{", b"["):
        return "it is a JSON/text file, not a PyTorch weights file"
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        hint = " (numpy arrays: a detectron2 model-zoo .pkl?)" if found.group(1).startswith("numpy") else ""
        return (f"refused: it carries the pickled Python object {found.group(1)}{hint}, which loading with "
                "weights_only=True does not run; only plain state dicts of tensors are read")
    first_line = (message.strip().splitlines() or [type(exc).__name__])[0][:200]
    reason = "corrupt or not a pickle" if "Unsupported operand" in message else first_line
    return f"not a readable PyTorch weights file ({type(exc).__name__}: {reason})"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict of tensors from a ``.pth``/``.pt`` file without running code.

    A top level of ``{"model": state_dict}`` or ``{"state_dict": state_dict}`` (training checkpoints) is
    unwrapped, and a ``module.`` prefix on every key (DataParallel) is removed.

    Raises:
        CheckpointError: the file is missing, empty, not a PyTorch file, carries code, or holds no
            state dict of tensors; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise CheckpointError(f"{path}: {_describe_load_failure(path, exc)}") from None
    if isinstance(payload, dict) and payload.get("format") == "fcos_lab/1":
        raise CheckpointError(f"{path}: already an fcos_lab checkpoint; use it directly (--checkpoint)")
    if isinstance(payload, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(payload.get(wrapper), dict):
                payload = payload[wrapper]
                break
    if not isinstance(payload, dict) or not payload or not all(isinstance(k, str) for k in payload):
        raise CheckpointError(f"{path}: holds no state dict (got {type(payload).__name__}{' (empty)' if payload == {} else ''})")
    not_tensors = [k for k, v in payload.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: not a state dict of tensors; non-tensor entries: {not_tensors[:4]}")
    if all(k.startswith("module.") for k in payload):
        payload = {k[len("module."):]: v for k, v in payload.items()}
    return payload


def read_class_names(path: str | Path, num_classes: int) -> list[str]:
    """Class names from a text file, one per line, line k naming class index k; exactly C lines.

    Raises:
        DataError: the file is missing, unreadable, or has another number of names or an empty one.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read class names ({exc})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if len(names) != num_classes:
        raise DataError(f"{path}: {len(names)} class names, but the weights have {num_classes} classes (one name a line)")
    empty = [i + 1 for i, name in enumerate(names) if not name]
    if empty:
        raise DataError(f"{path}: line {empty[0]}: empty class name")
    return names


def torchvision_classes(num_classes: int, class_names: list[str] | None) -> tuple[list[int], list[str]]:
    """Category id and name of each class index of a torchvision FCOS.

    torchvision's labels are the dataset's own category ids (for COCO, 1..90 with gaps; index 0 and the
    "N/A" ids are never a target), so label k is category id k. For C = 91 without names, the names
    are torchvision's COCO list (``FCOS_ResNet50_FPN_Weights.COCO_V1.meta["categories"]``).
    """
    if class_names is None and num_classes == TORCHVISION_COCO_CLASSES:
        from torchvision.models.detection import FCOS_ResNet50_FPN_Weights

        class_names = list(FCOS_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    return list(range(num_classes)), list(class_names or [])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_destination(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir}: already exists and is not an empty folder; choose a new --out")


def import_weights(
    path: str | Path, out_dir: str | Path, *, source: str = "torchvision", class_names_file: str | Path | None = None
) -> Path:
    """Turn a published weights file into an fcos_lab run folder; return the folder.

    Args:
        path: the weights file (for ``source="torchvision"``: a ``fcos_resnet50_fpn`` state dict of any
            number of classes, such as ``fcos_resnet50_fpn_coco-99b0c9b7.pth``).
        out_dir: the run folder to create (absent or empty).
        source: the code base the file comes from; only ``"torchvision"``.
        class_names_file: names of the class indices, one a line (default: COCO's for 91 classes).

    Raises:
        CheckpointError: the file is unreadable, unsafe, or not a torchvision FCOS state dict (the
            message says which known format it looks like).
        DataError: a bad class-names file. InputError: ``out_dir`` is taken or ``source`` unknown.
    """
    if source not in SOURCES:
        raise InputError(f"--from {source!r}: unknown source; valid: {', '.join(SOURCES)}")
    path, out_dir = Path(path), Path(out_dir)
    _check_destination(out_dir)
    state = read_state_dict(path)
    kind = identify_format(list(state))
    if kind != TORCHVISION_FCOS:
        raise CheckpointError(f"{path}: not a torchvision FCOS file: it looks like {kind}")
    num_classes = check_torchvision_state_dict(state, str(path))
    names = read_class_names(class_names_file, num_classes) if class_names_file is not None else None
    model, config = from_torchvision_state_dict(state, str(path))
    category_ids, class_names = torchvision_classes(num_classes, names)
    provenance: dict[str, Any] = {
        "source": source,
        "file": str(path.resolve()),
        "sha256": _sha256(path),
        "num_classes": num_classes,
        "category_ids": "class index k is category id k (torchvision's labels are the dataset's ids)",
    }
    _write_run_folder(out_dir, model, config, category_ids, class_names, provenance)
    return out_dir


def _write_run_folder(
    out_dir: Path, model: torch.nn.Module, config: Config, category_ids: list[int], class_names: list[str],
    provenance: Mapping[str, Any],
) -> None:
    """Write the run folder into a temporary sibling, then rename it to ``out_dir``."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir()  # not mkdtemp (mode 0700): the run folder gets the umask's permissions like any other
    try:
        save_checkpoint(tmp / "model_final.pt", model, config, iteration=0, category_ids=category_ids,
                        class_names=class_names)
        export_safetensors(tmp / "model_final.safetensors", model, {"config": config.to_json()})
        atomic_write_text(tmp / "config.json", config.to_json())
        atomic_write_text(tmp / "imported.json", json.dumps(dict(provenance), indent=2))
        _check_destination(out_dir)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked just above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
