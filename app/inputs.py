"""The app's typed and uploaded inputs: image bytes, boxes typed one per line, numbers typed in a box.

Uploaded image bytes (:func:`read_image_bytes`), boxes typed as ``x0 y0 x1 y1 class`` (:func:`parse_typed_boxes`)
and lists of numbers (:func:`parse_numbers`). Each fails with a :class:`~fcos_lab.errors.DataError` whose
message the page shows as is; none needs Streamlit, so the tests import this file directly (Streamlit
puts ``app/`` on ``sys.path``, as ``tests/app/conftest.py`` does). An image of a COCO-format dataset is
read by :mod:`fcos_lab.data.samples`.

Glossary: M boxes. Boxes are xyxy in absolute pixels of the uploaded image.
"""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from fcos_lab.data.coco import load_image
from fcos_lab.errors import DataError

MAX_IMAGE_PIXELS = 40_000_000  # about 7700 x 5200: beyond this an upload is refused before decoding


def read_image_bytes(data: bytes, name: str = "upload", max_pixels: int = MAX_IMAGE_PIXELS) -> Tensor:
    """Decode uploaded bytes as :func:`fcos_lab.data.coco.load_image` decodes a file; ``[3, H, W]`` in [0, 1].

    Raises:
        DataError: empty, not an image, corrupt or truncated, or more than ``max_pixels`` pixels
            (checked from the header, before anything is decoded).
    """
    if not data:
        raise DataError(f"{name}: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError:
        raise DataError(f"{name}: the image is far too large to decode (PIL's decompression-bomb limit)") from None
    except UnidentifiedImageError:
        raise DataError(f"{name}: not an image file that can be read (not PNG, JPEG, BMP, GIF, TIFF, WebP, ...)") from None
    except Exception as error:  # noqa: BLE001 - PIL raises many types for data it cannot identify
        raise DataError(f"{name}: not an image file that can be read ({type(error).__name__}: {error})") from None
    if width * height > max_pixels:
        raise DataError(
            f"{name}: {width} x {height} is {width * height / 1e6:.1f} megapixels; the app accepts at most "
            f"{max_pixels / 1e6:.0f} megapixels (downscale the image first)"
        )
    suffix = Path(name).suffix if Path(name).suffix.isascii() else ""
    with tempfile.TemporaryDirectory(prefix="fcos_lab_upload_") as folder:
        path = Path(folder) / f"upload{suffix[:8]}"
        path.write_bytes(data)
        try:
            return load_image(path)
        except DataError as error:
            raise DataError(str(error).replace(str(path), name)) from None


def parse_typed_boxes(
    text: str, class_names: Sequence[str] = (), image_size: tuple[int, int] | None = None
) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """Boxes typed one per line as ``x0 y0 x1 y1 [class]`` (commas allowed, ``#`` starts a comment).

    The class is a name or an index into ``class_names``; new names are appended; no class means
    ``"object"``. With ``image_size`` (h, w) boxes are clipped to the image.

    Returns:
        ``boxes`` ``[M, 4]`` xyxy, ``labels`` ``[M]`` and the class names the labels index.

    Raises:
        DataError: naming the line, for a wrong number of fields, a non-number, x1 <= x0 or y1 <= y0,
            or a box outside the image.
    """
    names = list(class_names)
    boxes, labels = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) not in (4, 5):
            raise DataError(f"typed boxes, line {number}: expected 'x0 y0 x1 y1 class', got {raw.strip()!r}")
        try:
            x0, y0, x1, y1 = (float(v) for v in fields[:4])
        except ValueError:
            raise DataError(f"typed boxes, line {number}: coordinates must be numbers, got {raw.strip()!r}") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise DataError(f"typed boxes, line {number}: coordinates must be finite")
        if image_size is not None:
            height, width = image_size
            x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
            y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
        if x1 <= x0 or y1 <= y0:
            where = " inside the image" if image_size is not None else ""
            raise DataError(f"typed boxes, line {number}: need x0 < x1 and y0 < y1{where}, got {raw.strip()!r}")
        token = fields[4] if len(fields) == 5 else "object"
        if token.isdigit() and int(token) < len(names):
            label = int(token)
        else:
            if token not in names:
                names.append(token)
            label = names.index(token)
        boxes.append([x0, y0, x1, y1])
        labels.append(label)
    return (
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
        tuple(names),
    )


def parse_numbers(text: str, what: str, *, integers: bool = False) -> list[float] | list[int]:
    """Numbers typed in a box, separated by commas or spaces (``"8, 16, 32"``).

    Raises:
        DataError: naming ``what``, for anything that is not a number (an integer with ``integers``).
    """
    kind = int if integers else float
    try:
        return [kind(v) for v in text.replace(",", " ").split()]
    except ValueError:
        expected = "integers" if integers else "numbers"
        raise DataError(f"{what} must be {expected} separated by commas, got {text!r}") from None
