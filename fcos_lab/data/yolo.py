"""YOLO-format labels converted to a COCO detection file, so that one's own data trains like COCO (Section 4).

The YOLO layout (Ultralytics, Darknet, most labelling tools' "YOLO export"): an image folder and a label
folder holding, for each image, a text file with the same relative path and stem (``images/a/x.jpg`` ->
``labels/a/x.txt``). Each line is one box ``class cx cy w h``: a 0-based class index and the box centre and
size as fractions of the image width and height.

Conventions of the conversion (also in ``fcos-lab convert --help``):

- Image size: read from the file header without decoding the pixels, *after* EXIF orientation, i.e. the
  image as displayed. Ultralytics normalises to that image too (its ``exif_size`` and OpenCV's oriented
  read), and :func:`fcos_lab.data.coco.load_image` applies the same orientation, so the recorded size is
  the one the loader checks. Ultralytics swaps width and height for orientations 6 and 8 of JPEGs only;
  here all four transposing orientations (5 to 8) of any format PIL reads count, as ``exif_transpose``
  does. A PNG's EXIF is read only when it precedes the pixel data (where the PNG specification puts it),
  so that no PNG is decoded.
- Boxes: ``x = (cx - w / 2) * W``, ``y = (cy - h / 2) * H``, width ``w * W``, height ``h * H``, COCO
  ``[x, y, w, h]`` absolute pixels, unrounded; ``area = w * h`` in pixels; ``iscrowd = 0``.
- A line is refused (:class:`~fcos_lab.errors.DataError` naming the file and line) when it has not five
  fields, a field is not a finite number, the class is not an integer in ``0 .. C - 1``, the width or
  height is not positive, or the box leaves ``[0, 1]`` by more than ``tolerance`` (default
  :data:`LABEL_TOLERANCE` = 1e-6: labels written with six significant digits overshoot by up to 5e-7,
  measured on Ultralytics' 36,335 COCO val2017 boxes; Ultralytics itself accepts 0.01, and a box kept
  under a larger tolerance is clipped to the image by the loader). Blank lines are skipped; line numbers
  count them. Duplicate lines are kept (Ultralytics drops them) and counted.
- An image without a label file, or with an empty one, is an image without boxes. A label file without
  an image ("orphan") is ignored with a warning and counted, as Ultralytics ignores it.
- Images: files with a suffix in :data:`IMAGE_SUFFIXES` anywhere under the image folder (hidden files
  skipped), sorted by relative path, which becomes ``file_name``. Image ids are 1..N in that order
  (``image_ids="index"``) or the integer file stem (``"stem"``, as COCO names its files).
- Category ids are 1..C in the order of the class names (``category_ids="index"``) or the standard COCO
  ids of the 80 contiguous classes (``"coco80"``, :data:`COCO80_CATEGORY_IDS`). Annotation ids are 1..N in
  image order, then line order.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image

from fcos_lab.errors import ConfigError, DataError

logger = logging.getLogger("fcos_lab.data")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
LABEL_TOLERANCE = 1e-6
CATEGORY_ID_SCHEMES = ("index", "coco80")
IMAGE_ID_SCHEMES = ("index", "stem")
# COCO category id of each of the 80 contiguous classes in the standard order (the ids left after the
# 11 categories that COCO 2014/2017 never annotated: 12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91).
COCO80_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
    33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
    60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations whose display swaps width and height
_MAX_LISTED = 5


def parse_yolo_labels(
    text: str, num_classes: int, *, source: str = "<labels>", tolerance: float = LABEL_TOLERANCE
) -> tuple[np.ndarray, np.ndarray]:
    """Parse and check the lines ``class cx cy w h`` of one YOLO label file.

    Args:
        text: the file's text.
        num_classes: C; class indices must lie in ``0 .. C - 1``.
        source: how errors name the file.
        tolerance: how far a box edge may leave ``[0, 1]``.

    Returns:
        ``(classes, boxes)``: ``[M]`` int64 0-based class indices and ``[M, 4]`` float64 ``cx, cy, w, h``
        normalised to the image size, in line order; M = 0 for a file without boxes.

    Raises:
        DataError: ``"{source}, line {n}: {problem}"`` for the first bad line.
    """
    numbered = [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.float64)
    line_numbers = np.array([n for n, _ in numbered])
    counts = np.array([len(fields) for _, fields in numbered])
    wrong = np.flatnonzero(counts != 5)
    if wrong.size:
        polygon = " (polygon/segment labels are not supported)" if counts[wrong[0]] > 5 else ""
        raise DataError(f"{source}, line {line_numbers[wrong[0]]}: expected 5 fields 'class cx cy w h', "
                        f"got {counts[wrong[0]]}{polygon}")
    try:
        values = np.array([fields for _, fields in numbered], dtype=np.float64)
    except ValueError:
        for n, fields in numbered:  # only on the error path: find the field numpy could not read
            for field in fields:
                try:
                    float(field)
                except ValueError:
                    raise DataError(f"{source}, line {n}: not a number: {field!r}") from None
        raise DataError(f"{source}: not numbers") from None  # unreachable: numpy parses as float() does
    with np.errstate(invalid="ignore"):  # inf - inf in a row that the finiteness check reports first
        problems = _line_problems(numbered, values, num_classes, tolerance)
    masks = np.stack([mask for mask, _ in problems])
    bad_rows = np.flatnonzero(masks.any(axis=0))
    if bad_rows.size:
        row = bad_rows[0]
        message = next(describe for (_, describe), mask in zip(problems, masks) if mask[row])(row)
        more = f" (and {bad_rows.size - 1} more bad lines)" if bad_rows.size > 1 else ""
        raise DataError(f"{source}, line {line_numbers[row]}: {message}{more}")
    return values[:, 0].astype(np.int64), values[:, 1:]


def _line_problems(
    numbered: list[tuple[int, list[str]]], values: np.ndarray, num_classes: int, tolerance: float
) -> tuple[tuple[np.ndarray, Callable[[int], str]], ...]:
    """``(bad-row mask [M], message of row i)`` per check of ``values`` ``[M, 5]``, in reporting order."""
    classes, cx, cy, w, h = values.T
    return (
        (~np.isfinite(values).all(axis=1), lambda i: f"not a finite number in {' '.join(numbered[i][1])!r}"),
        ((classes != np.round(classes)) | (classes < 0) | (classes >= num_classes),
         lambda i: f"class {numbered[i][1][0]!r} is not an integer in 0..{num_classes - 1} "
                   f"({num_classes} class names)"),
        ((w <= 0) | (h <= 0), lambda i: f"width and height must be positive, got w={w[i]:g}, h={h[i]:g}"),
        ((cx - w / 2 < -tolerance) | (cx + w / 2 > 1 + tolerance),
         lambda i: f"box x from {cx[i] - w[i] / 2:g} to {cx[i] + w[i] / 2:g} (cx -+ w/2) leaves [0, 1] by more "
                   f"than the tolerance {tolerance:g} (a larger tolerance, e.g. 0.01 as Ultralytics, accepts it)"),
        ((cy - h / 2 < -tolerance) | (cy + h / 2 > 1 + tolerance),
         lambda i: f"box y from {cy[i] - h[i] / 2:g} to {cy[i] + h[i] / 2:g} (cy -+ h/2) leaves [0, 1] by more "
                   f"than the tolerance {tolerance:g} (a larger tolerance, e.g. 0.01 as Ultralytics, accepts it)"),
    )


def read_yolo_label_file(
    path: str | Path, num_classes: int, *, tolerance: float = LABEL_TOLERANCE
) -> tuple[np.ndarray, np.ndarray]:
    """Read one label file with :func:`parse_yolo_labels`; a byte-order mark is accepted."""
    return parse_yolo_labels(_read_text(Path(path), "label file"), num_classes, source=str(path), tolerance=tolerance)


def _read_text(path: Path, what: str) -> str:
    """The UTF-8 text of ``path`` (a byte-order mark dropped); DataError naming ``what`` if unreadable."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read {what} ({error})") from error


def read_class_names(path: str | Path) -> list[str]:
    """Class names in class-index order, from a ``names.txt`` or an Ultralytics ``data.yaml``.

    Args:
        path: a text file with one name per line (trailing blank lines ignored), or a ``.yaml``/``.yml``
            file whose ``names`` is a list, or a mapping from the indices 0..C-1 to names.

    Returns:
        C names, no two equal.

    Raises:
        DataError: missing or unreadable file, no names, an empty or repeated name, or (YAML) ``names``
            that is not a list or a 0..C-1 mapping, or an ``nc`` that disagrees with it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class names file not found")
    text = _read_text(path, "class names file")
    if path.suffix.lower() in (".yaml", ".yml"):
        names, where = _yaml_names(text, path), lambda i: f"names[{i}]"
    else:
        names, where = [line.strip() for line in text.rstrip().splitlines()], lambda i: f"line {i + 1}"
    if not names:
        raise DataError(f"{path}: no class names")
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name:
            raise DataError(f"{path}, {where(i)}: empty class name")
        if name in first:
            raise DataError(f"{path}, {where(i)}: class name {name!r} repeats {where(first[name])}")
        first[name] = i
    return names


def _yaml_names(text: str, path: Path) -> list[str]:
    """The ``names`` of an Ultralytics dataset YAML as a list in class-index order."""
    import yaml  # only for data.yaml files

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise DataError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, dict) or "names" not in data:
        raise DataError(f"{path}: expected a mapping with a 'names' key")
    names = data["names"]
    if isinstance(names, dict):
        if set(names) != set(range(len(names))):
            raise DataError(f"{path}: names must map the class indices 0..C-1, got keys {sorted(names, key=str)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not all(isinstance(name, (str, int, float)) for name in names):
        raise DataError(f"{path}: names must be a list of names or a mapping from class index to name")
    if "nc" in data and data["nc"] != len(names):
        raise DataError(f"{path}: nc is {data['nc']!r} but names lists {len(names)} classes")
    return [str(name).strip() for name in names]


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image as displayed (after EXIF orientation), from its header only.

    Raises:
        DataError: the file cannot be opened as an image or is implausibly large (PIL's decompression-bomb
            limit, which :func:`fcos_lab.data.coco.load_image` also refuses).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                # A PNG's getexif() decodes the image when no eXIf chunk came before the pixel data.
                exif = img.getexif() if img.format != "PNG" or "exif" in img.info else {}
                orientation = exif.get(ExifTags.Base.Orientation, 1)
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError, ...) for bad files
        raise DataError(f"{path}: cannot read image header ({type(error).__name__}: {error})") from error
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


def yolo_to_coco_boxes(boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """Normalised ``[M, 4]`` ``cx, cy, w, h`` to ``[M, 4]`` COCO ``x, y, w, h`` absolute pixels.

    Args:
        boxes: ``[M, 4]`` YOLO boxes, fractions of the image size.
        widths: ``[M]`` width W of each box's image, pixels.
        heights: ``[M]`` height H of each box's image, pixels.
    """
    scale = np.stack([widths, heights, widths, heights], axis=1).astype(np.float64)
    absolute = boxes * scale  # cx, cy, w, h in pixels
    return np.concatenate([absolute[:, :2] - absolute[:, 2:] / 2, absolute[:, 2:]], axis=1)


@dataclass(frozen=True)
class YoloConversionSummary:
    """What a conversion found; paths relative to the image or label folder.

    Attributes:
        num_images: images in the COCO file.
        num_boxes: annotations in the COCO file.
        boxes_per_class: number of boxes of each class name, in class order (zeros included).
        images_without_label_file: images with no label file (no boxes).
        empty_label_files: label files with no box line (their images have no boxes).
        orphan_label_files: label files whose image was not found (ignored).
        num_duplicate_lines: box lines that repeat an earlier line of the same file (kept).
    """

    num_images: int
    num_boxes: int
    boxes_per_class: dict[str, int]
    images_without_label_file: list[str]
    empty_label_files: list[str]
    orphan_label_files: list[str]
    num_duplicate_lines: int


def _counted(paths: Sequence[str]) -> str:
    """``"2 (a.txt, b.txt)"``: how many, and the first few."""
    more = f", ... ({len(paths) - _MAX_LISTED} more)" if len(paths) > _MAX_LISTED else ""
    return f"{len(paths)} ({', '.join(paths[:_MAX_LISTED])}{more})" if paths else "0"


def _find_images(images_dir: Path) -> list[Path]:
    """Image files under ``images_dir`` (any depth, hidden names skipped), sorted by relative path."""
    found = [path.relative_to(images_dir) for path in images_dir.rglob("*")
             if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    return sorted((p for p in found if not any(part.startswith(".") for part in p.parts)), key=Path.as_posix)


def _image_ids(relative: list[Path], scheme: str, images_dir: Path) -> list[int]:
    if scheme == "index":
        return list(range(1, len(relative) + 1))
    ids: dict[int, Path] = {}
    for path in relative:
        if not re.fullmatch(r"\d+", path.stem):
            raise DataError(f"{images_dir / path}: image_ids='stem' needs integer file stems, got {path.stem!r}")
        if int(path.stem) in ids:
            raise DataError(f"{images_dir / path}: image id {int(path.stem)} repeats {images_dir / ids[int(path.stem)]}")
        ids[int(path.stem)] = path
    return list(ids)


def convert_yolo_to_coco(
    images_dir: str | Path,
    labels_dir: str | Path,
    class_names: Sequence[str],
    *,
    category_ids: str = "index",
    image_ids: str = "index",
    tolerance: float = LABEL_TOLERANCE,
) -> tuple[dict[str, Any], YoloConversionSummary]:
    """Convert a YOLO image and label folder to a COCO detection dict (conventions: module docstring).

    Args:
        images_dir: the image folder; ``file_name`` is relative to it.
        labels_dir: the label folder, mirroring ``images_dir`` with ``.txt`` files.
        class_names: C class names in class-index order (:func:`read_class_names`).
        category_ids: ``"index"`` (1..C in names order) or ``"coco80"`` (:data:`COCO80_CATEGORY_IDS`, C = 80).
        image_ids: ``"index"`` (1..N in sorted file-name order) or ``"stem"`` (the integer file stem).
        tolerance: how far a box edge may leave ``[0, 1]``.

    Returns:
        ``(coco, summary)``: a dict with ``info``, ``images``, ``annotations`` and ``categories`` that
        :func:`fcos_lab.data.coco_annotations.load_coco_annotations` accepts once written as JSON, and
        a :class:`YoloConversionSummary`.

    Raises:
        ConfigError: a negative or non-finite tolerance.
        DataError: a missing folder, no images, two images sharing a label file, an unreadable image or
            label file, a bad label line (naming the file and line), or ids that the schemes cannot give.
    """
    images_dir, labels_dir, num_classes = Path(images_dir), Path(labels_dir), len(class_names)
    if category_ids not in CATEGORY_ID_SCHEMES:
        raise ValueError(f"category_ids must be one of {CATEGORY_ID_SCHEMES}, got {category_ids!r}")
    if image_ids not in IMAGE_ID_SCHEMES:
        raise ValueError(f"image_ids must be one of {IMAGE_ID_SCHEMES}, got {image_ids!r}")
    if not (tolerance >= 0 and np.isfinite(tolerance)):
        raise ConfigError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if not num_classes:
        raise DataError("no class names")
    if category_ids == "coco80" and num_classes != len(COCO80_CATEGORY_IDS):
        raise DataError(f"category ids 'coco80' need the 80 COCO class names, got {num_classes}")
    for folder, what in ((images_dir, "image"), (labels_dir, "label")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {what} folder not found")
    relative = _find_images(images_dir)
    if not relative:
        raise DataError(f"{images_dir}: no images (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    label_of = {path: path.with_suffix(".txt") for path in relative}
    owner: dict[Path, Path] = {}
    for path, label in label_of.items():
        if label in owner:
            raise DataError(f"{labels_dir / label}: label file of two images, {owner[label]} and {path}")
        owner[label] = path
    ids = _image_ids(relative, image_ids, images_dir)

    sizes = np.array([image_size(images_dir / path) for path in relative], dtype=np.int64).reshape(-1, 2)
    classes_per_image, boxes_per_image, missing, empty, duplicates = [], [], [], [], 0
    for path in relative:
        label = labels_dir / label_of[path]
        if not label.is_file():
            missing.append(path.as_posix())
            image_classes, image_boxes = np.zeros(0, dtype=np.int64), np.zeros((0, 4))
        else:
            image_classes, image_boxes = read_yolo_label_file(label, num_classes, tolerance=tolerance)
            if not len(image_classes):
                empty.append(label_of[path].as_posix())
            rows = np.concatenate([image_classes[:, None], image_boxes], axis=1)
            duplicates += len(rows) - len(np.unique(rows, axis=0))
        classes_per_image.append(image_classes)
        boxes_per_image.append(image_boxes)
    orphans = sorted(path.relative_to(labels_dir).as_posix() for path in labels_dir.rglob("*.txt")
                     if path.is_file() and path.relative_to(labels_dir) not in owner)
    if orphans:
        logger.warning("%s: label files without an image, ignored: %s", labels_dir, _counted(orphans))

    counts = np.array([len(c) for c in classes_per_image])
    box_image = np.repeat(np.arange(len(relative)), counts)  # [M] index of each box's image
    classes = np.concatenate(classes_per_image)
    xywh = yolo_to_coco_boxes(np.concatenate(boxes_per_image), sizes[box_image, 0], sizes[box_image, 1])
    category_table = np.array(COCO80_CATEGORY_IDS if category_ids == "coco80" else range(1, num_classes + 1))
    coco = {
        "info": {"description": f"converted from the YOLO labels in {labels_dir} by fcos-lab convert",
                 "category_ids": category_ids, "image_ids": image_ids},
        "images": [{"id": i, "file_name": p.as_posix(), "width": int(w), "height": int(h)}
                   for i, p, (w, h) in zip(ids, relative, sizes.tolist())],
        "annotations": [
            {"id": n, "image_id": ids[image], "category_id": category, "bbox": box, "area": box[2] * box[3],
             "iscrowd": 0}
            for n, (image, category, box) in enumerate(
                zip(box_image.tolist(), category_table[classes].tolist(), xywh.tolist()), start=1)
        ],
        "categories": [{"id": c, "name": name} for c, name in zip(category_table.tolist(), class_names)],
    }
    summary = YoloConversionSummary(
        num_images=len(relative), num_boxes=len(classes),
        boxes_per_class=dict(zip(class_names, np.bincount(classes, minlength=num_classes).tolist())),
        images_without_label_file=missing, empty_label_files=empty, orphan_label_files=orphans,
        num_duplicate_lines=duplicates,
    )
    return coco, summary


def format_summary(summary: YoloConversionSummary) -> str:
    """A few lines for the terminal: images, boxes per class, images without boxes, orphan label files."""
    with_boxes = {name: n for name, n in summary.boxes_per_class.items() if n}
    num_classes = len(summary.boxes_per_class)
    lines = [
        f"{summary.num_images} images, {summary.num_boxes} boxes in {len(with_boxes)} of {num_classes} classes",
        f"images without a label file (no boxes): {_counted(summary.images_without_label_file)}",
        f"empty label files (no boxes): {_counted(summary.empty_label_files)}",
        f"label files without an image (ignored): {_counted(summary.orphan_label_files)}",
        f"duplicate box lines (kept): {summary.num_duplicate_lines}",
        "boxes per class:",
    ]
    lines += [f"  {name:24s} {n:7d}" for name, n in with_boxes.items()]
    return "\n".join(lines)
