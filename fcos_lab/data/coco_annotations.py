"""COCO annotation files, validated (Section 4 of the paper: COCO ``trainval35k`` / ``minival``).

Any COCO-style detection annotation file can be read. It is validated before pycocotools sees it, so
that a malformed file fails with a :class:`~fcos_lab.errors.DataError` naming the file, the record and
the problem instead of a ``KeyError`` deep inside pycocotools. :mod:`fcos_lab.data.coco` builds the
dataset on the returned index.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from pycocotools.coco import COCO

from fcos_lab.errors import DataError


def is_json_int(value: Any) -> bool:
    """An integer as JSON or numpy gives it; ``True`` in an id field is a bug, not the number 1."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A finite int or float (Python or numpy), not a bool."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and math.isfinite(value))


def _record_name(section: str, index: int, record: Any) -> str:
    """``annotations[17] (id 42)``: how error messages point at a record."""
    if isinstance(record, dict) and "id" in record:
        return f"{section}[{index}] (id {record['id']!r})"
    return f"{section}[{index}]"


def _records(
    data: dict,
    section: str,
    kind: str,
    keys: tuple[str, ...],
    int_keys: tuple[str, ...],
    fail: Callable[[str, str], NoReturn],
) -> Iterator[tuple[str, dict]]:
    """Yield ``(name, record)`` of ``data[section]`` once each has ``keys``, integer ``int_keys`` and a new id."""
    seen: set[int] = set()
    for i, record in enumerate(data.get(section, [])):
        where = _record_name(section, i, record)
        if not isinstance(record, dict):
            fail(where, f"expected an object, got {type(record).__name__}")
        for key in keys:
            if key not in record:
                fail(where, f"missing key {key!r}")
        for key in int_keys:
            if not is_json_int(record[key]):
                fail(where, f"{key} must be an integer, got {record[key]!r}")
        if record["id"] in seen:
            fail(where, f"duplicate {kind} id {record['id']}")
        seen.add(record["id"])
        yield where, record


def _validate(data: Any, path: Path, require_annotations: bool) -> None:
    """Raise :class:`DataError` at the first structural problem of a COCO detection dict."""

    def fail(where: str, problem: str) -> NoReturn:
        raise DataError(f"{path}: {where}: {problem}")

    if not isinstance(data, dict):
        fail("top level", f"expected a JSON object with images/annotations/categories, got {type(data).__name__}")
    for key in ["images", "categories"] + (["annotations"] if require_annotations else []):
        if key not in data:
            fail("top level", f"missing key {key!r}")
    for key in ("images", "annotations", "categories"):
        if key in data and not isinstance(data[key], list):
            fail(key, f"expected a list, got {type(data[key]).__name__}")

    image_ids: set[int] = set()
    for where, image in _records(data, "images", "image", ("id", "width", "height", "file_name"), ("id",), fail):
        for key in ("width", "height"):
            if not (is_finite_number(image[key]) and image[key] == int(image[key])):
                fail(where, f"{key} must be an integer, got {image[key]!r}")
            if image[key] <= 0:
                fail(where, f"{key} must be positive, got {image[key]!r}")
        if not isinstance(image["file_name"], str) or not image["file_name"]:
            fail(where, f"file_name must be a non-empty string, got {image['file_name']!r}")
        image_ids.add(image["id"])

    category_ids: set[int] = set()
    for where, category in _records(data, "categories", "category", ("id", "name"), ("id",), fail):
        if not isinstance(category["name"], str):
            fail(where, f"name must be a string, got {category['name']!r}")
        category_ids.add(category["id"])

    ann_keys = ("id", "image_id", "category_id", "bbox")
    for where, ann in _records(data, "annotations", "annotation", ann_keys, ann_keys[:3], fail):
        if ann["image_id"] not in image_ids:
            fail(where, f"image_id {ann['image_id']} is not in images")
        if ann["category_id"] not in category_ids:
            fail(where, f"category_id {ann['category_id']} is not in categories")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
            fail(where, f"bbox must be a list of 4 finite numbers [x, y, w, h], got {bbox!r}")
        if ann.get("iscrowd", 0) not in (0, 1):  # True/False compare equal to 1/0 and are accepted
            fail(where, f"iscrowd must be 0 or 1, got {ann['iscrowd']!r}")


def load_coco_annotations(ann_file: str | Path, *, require_annotations: bool = True) -> COCO:
    """Read, validate and index a COCO detection annotation file.

    Degenerate boxes (zero or negative width or height) and boxes that leave the image are not errors
    here; :class:`CocoDetection` clips and drops them.

    Args:
        ann_file: the JSON file.
        require_annotations: whether a missing ``annotations`` key is an error. Pass False for an
            unlabelled test set; the returned index then has an empty annotation list.

    Returns:
        A pycocotools ``COCO`` index of the file.

    Raises:
        DataError: the file is missing, empty, not JSON or not a valid COCO detection file; the message
            names the file, the record (``annotations[17] (id 42)``) and the problem.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read annotation file ({error})") from error
    if not text.strip():
        raise DataError(f"{path}: annotation file is empty")
    try:
        # NaN/Infinity are accepted by json.loads; they are rejected record by record below with a
        # message that names the record.
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from error
    _validate(data, path, require_annotations)
    data.setdefault("annotations", [])
    coco = COCO()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.dataset = data
        coco.createIndex()
    return coco
