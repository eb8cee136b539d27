"""The embedded demo dataset: filled shapes on textured backgrounds, in COCO format.

A stand-in for COCO (Section 4 of the paper) that a CPU can train on in minutes. It is built to
exercise what FCOS is about rather than to be easy:

- object sizes are log-uniform from ~10 px to 90% of the image side, so that with the paper's size
  ranges (Section 3.2, ``m_i`` = 0, 64, 128, 256, 512 at an 800-pixel scale) scaled to the image,
  every FPN level from P3 to P7 receives positive locations;
- about a quarter of the objects are placed over an object of another class, so that locations inside
  two boxes of different classes occur ("ambiguous samples", Section 3.2);
- category ids are not contiguous (1, 2, 3, 5, 8), so code that confuses COCO category ids with
  contiguous class indices fails loudly.

Boxes are the exact tight boxes of the drawn shape (measured on the shape's own rasterized mask, so the
box and the pixels agree to the pixel), clipped to the image, in COCO ``[x, y, w, h]`` absolute pixels.
A box is amodal: it covers the whole shape even where a later shape hides part of it, and placement
keeps at least :data:`MIN_VISIBLE_FRACTION` of every shape visible.

Run ``python -m fcos_lab.data.synthetic OUT_DIR`` to write it and print the paths.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fcos_lab.errors import DataError

# (COCO category id, name, base RGB colour). Distinct colours per class make the task learnable at the
# smallest sizes; the per-object jitter keeps colour from being a lookup table.
CATEGORIES: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (1, "circle", (215, 45, 45)),
    (2, "square", (40, 175, 65)),
    (3, "triangle", (45, 85, 220)),
    (5, "cross", (230, 200, 35)),
    (8, "ring", (195, 55, 200)),
)
MIN_OBJECT_SIZE = 10
MAX_OBJECT_FRACTION = 0.9
OVERLAP_PROB = 0.25
MIN_VISIBLE_FRACTION = 0.6
MAX_OBJECTS = 8
_MANIFEST = "synthetic.json"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SyntheticDataset:
    """Where :func:`make_synthetic_coco` wrote the dataset.

    Attributes:
        root: the dataset folder.
        train_ann: ``root/annotations/instances_train.json``.
        train_images: ``root/train``.
        val_ann: ``root/annotations/instances_val.json``.
        val_images: ``root/val``.
        class_names: names in contiguous-label order (sorted category id).
    """

    root: Path
    train_ann: Path
    train_images: Path
    val_ann: Path
    val_images: Path
    class_names: tuple[str, ...]


def _shape_mask(name: str, width: int, height: int) -> Image.Image:
    """Rasterize one filled shape into an ``L`` mask of ``width`` x ``height`` (255 inside)."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    right, bottom = width - 1, height - 1
    if name == "circle":
        draw.ellipse((0, 0, right, bottom), fill=255)
    elif name == "square":
        draw.rectangle((0, 0, right, bottom), fill=255)
    elif name == "triangle":
        draw.polygon([(0, bottom), (right, bottom), (right / 2, 0)], fill=255)
    elif name == "cross":
        # Bars 36% thick: thin enough to read as a cross, thick enough to survive at 10 px.
        tx, ty = max(1, round(width * 0.32)), max(1, round(height * 0.32))
        draw.rectangle((tx, 0, right - tx, bottom), fill=255)
        draw.rectangle((0, ty, right, bottom - ty), fill=255)
    elif name == "ring":
        # The hole is background, so the box centre of a ring is not on the object.
        t = max(2, round(min(width, height) * 0.22))
        draw.ellipse((0, 0, right, bottom), fill=255)
        if right - 2 * t > 0 and bottom - 2 * t > 0:
            draw.ellipse((t, t, right - t, bottom - t), fill=0)
    else:
        raise ValueError(f"unknown shape {name!r}")
    return mask


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-saturation gradient with faint random lines, ``[size, size, 3]`` float32 in [0, 255]."""
    base = (rng.uniform(70, 180) + rng.uniform(-20, 20, size=3)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    gradient = math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]
    tint = (rng.uniform(15, 45) * rng.uniform(0.6, 1.0, size=3)).astype(np.float32)
    image = base[None, None, :] + gradient[:, :, None] * tint
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(-0.2 * size, 1.2 * size, size=4))
        shade = tuple(int(v) for v in np.clip(base + rng.uniform(-35, 35, size=3), 0, 255))
        draw.line((x0, y0, x1, y1), fill=shade, width=int(rng.integers(1, 3)))
    return np.asarray(canvas, dtype=np.float32)


def _render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[dict]]:
    """Draw one image; returns ``[size, size, 3]`` uint8 and its objects (class index, xywh box, area)."""
    image = _background(rng, size)
    owner = np.full((size, size), -1, dtype=np.int16)  # which object each pixel shows, for visibility
    objects: list[dict] = []
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    sides = np.exp(rng.uniform(math.log(MIN_OBJECT_SIZE), math.log(MAX_OBJECT_FRACTION * size), size=count))
    # Largest first, so smaller shapes land on top of larger ones and stay visible.
    for side in sorted(sides, reverse=True):
        aspect = math.exp(rng.uniform(-0.3, 0.3))
        w = max(MIN_OBJECT_SIZE, min(size, round(side * math.sqrt(aspect))))
        h = max(MIN_OBJECT_SIZE, min(size, round(side / math.sqrt(aspect))))
        partner = objects[int(rng.integers(len(objects)))] if objects and rng.random() < OVERLAP_PROB else None
        label = int(rng.integers(len(CATEGORIES)))
        if partner is not None and label == partner["label"]:
            label = (label + 1 + int(rng.integers(len(CATEGORIES) - 1))) % len(CATEGORIES)
        mask = np.asarray(_shape_mask(CATEGORIES[label][1], w, h)) > 0
        for _ in range(20):
            if partner is not None:  # centre somewhere inside the partner's box: a guaranteed overlap
                px, py, pw, ph = partner["bbox"]
                cx, cy = rng.uniform(px, px + pw), rng.uniform(py, py + ph)
            else:  # up to 20% of the shape may leave the image, so clipped boxes occur
                cx, cy = rng.uniform(0.3 * w, size - 0.3 * w), rng.uniform(0.3 * h, size - 0.3 * h)
            placed = _try_place(mask, round(cx - w / 2), round(cy - h / 2), size, owner, objects)
            if placed is not None:
                break
        else:
            continue  # no room for this shape: the image simply has fewer objects
        x0, y0, visible = placed
        index = len(objects)
        owner[y0 : y0 + visible.shape[0], x0 : x0 + visible.shape[1]][visible] = index
        colour = np.clip(np.array(CATEGORIES[label][2]) + rng.uniform(-25, 25, size=3), 0, 255)
        image[y0 : y0 + visible.shape[0], x0 : x0 + visible.shape[1]][visible] = colour
        ys, xs = np.nonzero(visible)
        bbox = [x0 + int(xs.min()), y0 + int(ys.min()), int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1]
        objects.append({"label": label, "bbox": bbox, "area": int(visible.sum())})
    # Sensor-like noise over everything, shapes included, so edges are not perfectly clean.
    image += 6.0 * rng.standard_normal(size=image.shape, dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects


def _try_place(
    mask: np.ndarray, x0: int, y0: int, size: int, owner: np.ndarray, objects: list[dict]
) -> tuple[int, int, np.ndarray] | None:
    """Clip ``mask`` placed at (x0, y0) to the image; None if it would hide too much of another shape."""
    h, w = mask.shape
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, size), min(y0 + h, size)
    if cx1 - cx0 < MIN_OBJECT_SIZE // 2 or cy1 - cy0 < MIN_OBJECT_SIZE // 2:
        return None
    visible = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    if visible.sum() < MIN_VISIBLE_FRACTION * mask.sum():
        return None
    covered = owner[cy0:cy1, cx0:cx1][visible]
    if covered.size and (covered >= 0).any():
        hidden = np.bincount(covered[covered >= 0], minlength=len(objects))
        still_visible = np.bincount(owner[owner >= 0], minlength=len(objects)) - hidden
        if any(still_visible[i] < MIN_VISIBLE_FRACTION * obj["area"] for i, obj in enumerate(objects)):
            return None
    return cx0, cy0, visible


def _write_split(folder: Path, ann_file: Path, split: str, count: int, size: int, seed: int) -> None:
    """Render ``count`` images into ``folder`` and their COCO annotations into ``ann_file``."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        # One generator per image: the first N images do not change when ``count`` grows.
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
        pixels, objects = _render_image(rng, size)
        image_id = index + 1
        file_name = f"{image_id:06d}.jpg"
        # JPEG rather than PNG: the noisy images are ~200 KB and 15 ms each as PNG, ~40 KB and <1 ms as
        # JPEG; full-resolution chroma (subsampling=0) keeps colour edges on the box boundary.
        Image.fromarray(pixels).save(folder / file_name, quality=95, subsampling=0)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORIES[obj["label"]][0],
                    "bbox": [float(v) for v in obj["bbox"]],
                    "area": float(obj["area"]),
                    "iscrowd": 0,
                }
            )
    data = {
        "info": {"description": f"fcos_lab synthetic shapes ({split})", "version": str(_FORMAT_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "shape"} for cid, name, _ in CATEGORIES],
    }
    ann_file.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def make_synthetic_coco(
    root: str | Path,
    *,
    num_train: int = 400,
    num_val: int = 100,
    image_size: int = 320,
    seed: int = 0,
    overwrite: bool = False,
) -> SyntheticDataset:
    """Write (or reuse) the synthetic shapes dataset under ``root``.

    The output is a deterministic function of the arguments: the same arguments give byte-identical
    annotation files and identical images. A folder written earlier with the same arguments (recorded
    in ``root/synthetic.json``) is reused as is unless ``overwrite``.

    Args:
        root: output folder; created if missing. Only ``train/``, ``val/``, ``annotations/`` and
            ``synthetic.json`` are ever written or removed in it.
        num_train: number of training images.
        num_val: number of validation images.
        image_size: side of the square images, in pixels (at least 64).
        seed: random seed.
        overwrite: regenerate even when a matching dataset is already there, and write into a folder
            that holds other files.

    Returns:
        The paths of the annotation files and image folders.

    Raises:
        DataError: ``root`` holds files that are not a synthetic dataset and ``overwrite`` is False.
    """
    if num_train < 0 or num_val < 0:
        raise ValueError(f"num_train and num_val must be >= 0, got {num_train} and {num_val}")
    if image_size < 64:
        raise ValueError(f"image_size must be at least 64 pixels, got {image_size}")
    root = Path(root)
    result = SyntheticDataset(
        root=root,
        train_ann=root / "annotations" / "instances_train.json",
        train_images=root / "train",
        val_ann=root / "annotations" / "instances_val.json",
        val_images=root / "val",
        class_names=tuple(name for _, name, _ in CATEGORIES),
    )
    manifest = {
        "format_version": _FORMAT_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "seed": seed,
    }
    manifest_path = root / _MANIFEST
    ours = {"train", "val", "annotations", _MANIFEST}
    if root.exists():
        if not overwrite and manifest_path.is_file():
            try:
                previous = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                previous = None
            if previous == manifest and result.train_ann.is_file() and result.val_ann.is_file():
                return result
        foreign = sorted(p.name for p in root.iterdir() if p.name not in ours)
        if foreign and not overwrite:
            raise DataError(
                f"{root}: folder holds files that are not a synthetic dataset ({', '.join(foreign[:5])}); "
                "choose an empty folder or pass overwrite=True"
            )
        # The manifest goes first, so that an interrupted run is never mistaken for a complete one.
        manifest_path.unlink(missing_ok=True)
        for name in ("train", "val", "annotations"):
            shutil.rmtree(root / name, ignore_errors=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    _write_split(result.train_images, result.train_ann, "train", num_train, image_size, seed)
    _write_split(result.val_images, result.val_ann, "val", num_val, image_size, seed)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m fcos_lab.data.synthetic OUT_DIR``: write the dataset and print its paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    dataset = make_synthetic_coco(
        args.out_dir,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    for field in ("root", "train_ann", "train_images", "val_ann", "val_images"):
        print(f"{field}: {getattr(dataset, field)}")
    print(f"class_names: {', '.join(dataset.class_names)}")


if __name__ == "__main__":
    main()
