"""The detections file: COCO results JSON with FCOS diagnostics, validated (FCOS paper Sec. 4).

Every evaluation in the paper (Tables 3-8, Figures 4-6) scores a list of detections in COCO's results
format; :mod:`fcos_lab.evaluate` computes the numbers, this module writes, reads and checks the records.

Detections are dicts `{"image_id", "category_id", "bbox": [x, y, w, h] absolute pixels, "score"}`
with optional FCOS diagnostics kept through save/load: `"level"` (FPN level, 3..7), `"location"`
(`[x, y]` pixel of the location that produced the box), `"cls_score"` and `"centerness"`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fcos_lab.data.coco_annotations import is_finite_number, is_json_int
from fcos_lab.errors import DataError

if TYPE_CHECKING:
    from pycocotools.coco import COCO

REQUIRED_FIELDS = ("image_id", "category_id", "bbox", "score")


def _finite_numbers(value: Any, length: int) -> bool:
    is_sequence = isinstance(value, (list, tuple, np.ndarray))
    return is_sequence and len(value) == length and all(map(is_finite_number, value))


# Checks of the required fields, then of the optional FCOS fields when present: (test, expectation).
FIELD_CHECKS = {
    "image_id": (is_json_int, "an integer"),
    "category_id": (is_json_int, "an integer"),
    "bbox": (lambda v: _finite_numbers(v, 4) and min(v[2], v[3]) >= 0,
             "4 finite numbers [x, y, w, h] with w, h >= 0"),
    "score": (is_finite_number, "a finite number"),
    "level": (is_json_int, "an integer FPN level"),
    "location": (lambda v: _finite_numbers(v, 2), "2 finite numbers [x, y]"),
    "cls_score": (is_finite_number, "a finite number"),
    "centerness": (is_finite_number, "a finite number"),
}


def _detection_problem(
    detection: Any, image_ids: set[int] | None, category_ids: set[int] | None
) -> str | None:
    """Returns what is wrong with one detection record, or None when it is usable."""
    if not isinstance(detection, dict):
        return f"must be an object, got {type(detection).__name__}"
    missing = [key for key in REQUIRED_FIELDS if key not in detection]
    if missing:
        return f"missing field(s) {missing}; required: {list(REQUIRED_FIELDS)}"
    for key, (is_valid, expected) in FIELD_CHECKS.items():
        if key in detection and not is_valid(detection[key]):
            return f"field '{key}' must be {expected}, got {detection[key]!r}"
    if image_ids is not None and detection["image_id"] not in image_ids:
        return f"field 'image_id' {detection['image_id']} is not an image of the ground truth"
    if category_ids is not None and detection["category_id"] not in category_ids:
        return (
            f"field 'category_id' {detection['category_id']} is not a category of the ground truth "
            f"(valid: {sorted(category_ids)})"
        )
    return None


def validate_detections(
    detections: Any,
    source: str,
    image_ids: Iterable[int] | None = None,
    category_ids: Iterable[int] | None = None,
) -> None:
    """Checks a detections list, raising on the first bad record.

    Args:
        detections: The parsed detections (expected: a list of dicts).
        source: The file (or a description) named in error messages.
        image_ids: When given, every `image_id` must be one of these.
        category_ids: When given, every `category_id` must be one of these.

    Raises:
        DataError: Naming `source`, the record (`detections[12]`) and the field.
    """
    if not isinstance(detections, list):
        raise DataError(f"{source}: detections must be a JSON list, got {type(detections).__name__}")
    image_set = None if image_ids is None else set(image_ids)
    category_set = None if category_ids is None else set(category_ids)
    for index, detection in enumerate(detections):
        problem = _detection_problem(detection, image_set, category_set)
        if problem is not None:
            raise DataError(f"{source}: detections[{index}]: {problem}")


def _json_default(value: Any) -> Any:
    # Detections usually come straight from tensors: numpy scalars and arrays are not JSON types.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def save_detections(path: str | Path, detections: Sequence[dict]) -> Path:
    """Writes detections as a COCO results JSON file, keeping the optional FCOS fields.

    The file is written to a temporary sibling and moved into place, so a crash mid-write never
    leaves a truncated results file that a later evaluation would read.

    Args:
        path: Destination `.json` file; parent directories are created.
        detections: Records in the format described in the module docstring.

    Returns:
        The written path.

    Raises:
        DataError: A record is malformed (nothing is written).
    """
    path = Path(path)
    detections = list(detections)
    validate_detections(detections, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as tmp:
            json.dump(detections, tmp, default=_json_default, allow_nan=False)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return path


def _read_json(path: str | Path, what: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a valid JSON {what} file: {error}") from None


def load_detections(path: str | Path, gt: COCO | None = None) -> list[dict]:
    """Reads and validates a COCO results JSON file.

    Args:
        path: A file written by `save_detections` or any COCO results file.
        gt: When given (a pycocotools or faster-coco-eval COCO), image and category ids are checked
            against it.

    Returns:
        The detection dicts, extra fields included.

    Raises:
        DataError: The file is missing, not JSON, or has a bad record (named by index and field).
    """
    detections = _read_json(path, "detections")
    image_ids = None if gt is None else gt.getImgIds()
    category_ids = None if gt is None else gt.getCatIds()
    validate_detections(detections, str(path), image_ids, category_ids)
    return detections
