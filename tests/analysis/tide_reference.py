"""tidecv (TIDE's reference implementation) on the same files, and synthetic detections made from ground truth.

Used by ``tests/analysis/test_tide.py`` and ``benchmarks/bench_errors.py``; tidecv is a test-only
dependency (the ``test`` extra).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import IN_CI


def require_tidecv() -> None:
    """Skip when tidecv is not installed (``pip install -e '.[test]'``); fail instead when CI=true."""
    if importlib.util.find_spec("tidecv") is None:
        message = "tidecv is not installed (pip install -e '.[test]')"
        if IN_CI:
            pytest.fail(message + " but CI=true")
        pytest.skip(message)


def with_box_polygons(annotations: dict[str, Any]) -> dict[str, Any]:
    """A copy of a COCO annotation dict in which each box is also its own polygon ``segmentation``.

    tidecv reads a mask for every annotation (even to evaluate boxes) and needs ``iscrowd``.
    """
    anns = []
    for ann in annotations["annotations"]:
        x, y, w, h = ann["bbox"]
        anns.append({**ann, "iscrowd": int(bool(ann.get("iscrowd", 0))),
                     "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    return {**annotations, "annotations": anns}


def write_tidecv_inputs(annotations: dict[str, Any], detections: list[dict[str, Any]],
                        folder: Path) -> tuple[Path, Path]:
    """The annotation file (with box polygons) and the detections file tidecv reads, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ann_path, det_path = folder / "tidecv_annotations.json", folder / "tidecv_detections.json"
    ann_path.write_text(json.dumps(with_box_polygons(annotations)))
    det_path.write_text(json.dumps(detections))
    return ann_path, det_path


def run_tidecv(ann_path: Path, det_path: Path) -> dict[str, float]:
    """tidecv's AP, main and special errors (box mode, its defaults) from its two files."""
    from tidecv import TIDE, datasets

    with contextlib.redirect_stdout(io.StringIO()):
        tide = TIDE()
        run = tide.evaluate(datasets.COCO(str(ann_path)), datasets.COCOResult(str(det_path)), mode=TIDE.BOX, name="run")
        main, special = tide.get_main_errors()["run"], tide.get_special_errors()["run"]
    return {"AP": float(run.ap), **{k: float(v) for k, v in main.items()}, **{k: float(v) for k, v in special.items()}}


def tidecv_errors(annotations: dict[str, Any], detections: list[dict[str, Any]], folder: Path) -> dict[str, float]:
    """tidecv's AP, main and special errors of ``detections`` on ``annotations`` (files written into ``folder``)."""
    return run_tidecv(*write_tidecv_inputs(annotations, detections, folder))


def perturbed_detections(annotations: dict[str, Any], seed: int, *, detect: float = 0.8, swap: float = 0.1,
                         duplicate: float = 0.15, background: float = 1.5, jitter: float = 0.25,
                         score_decimals: int | None = None) -> list[dict[str, Any]]:
    """Detections made from ground truth: every TIDE error type on purpose, with random scores.

    Each non-crowd box is detected with probability ``detect`` (else it is missed), its corners jittered by
    up to ``jitter`` of its size (some fall below IoU 0.5: Loc), its class swapped with probability ``swap``
    (Cls, or Both with a large jitter); a detected box is found twice with probability ``duplicate`` (Dupe);
    each image gets Poisson(``background``) random boxes (mostly Bkg). True detections score higher on
    average. ``score_decimals`` rounds the scores (ties).
    """
    rng = np.random.default_rng(seed)
    anns = [a for a in annotations["annotations"] if not a.get("iscrowd", 0)]
    categories = np.array([c["id"] for c in annotations["categories"]])
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    image_ids = np.array([a["image_id"] for a in anns], dtype=np.int64)
    classes = np.array([a["category_id"] for a in anns], dtype=np.int64)
    found = rng.random(len(anns)) < detect
    copies = np.concatenate([np.flatnonzero(found), np.flatnonzero(found & (rng.random(len(anns)) < duplicate))])
    size = np.repeat(boxes[copies, 2:], 2, axis=0).reshape(-1, 4)
    noise = rng.uniform(-1, 1, (len(copies), 4)) * rng.uniform(0, jitter, (len(copies), 1)) * size
    x1y1 = boxes[copies, :2] + noise[:, :2]
    x2y2 = boxes[copies, :2] + boxes[copies, 2:] + noise[:, 2:]
    det_boxes = np.concatenate([x1y1, np.maximum(x2y2 - x1y1, 0.5)], axis=1)
    det_classes = np.where(rng.random(len(copies)) < swap, rng.choice(categories, len(copies)), classes[copies])
    det_scores = rng.beta(4, 2, len(copies))
    det_images = image_ids[copies]

    images = annotations["images"]
    count = rng.poisson(background, len(images))
    owner = np.repeat(np.arange(len(images)), count)
    dims = np.array([[im["width"], im["height"]] for im in images], dtype=np.float64).reshape(-1, 2)[owner]
    wh = dims * rng.uniform(0.05, 0.5, (len(owner), 2))
    xy = (dims - wh) * rng.random((len(owner), 2))
    det_boxes = np.concatenate([det_boxes, np.concatenate([xy, wh], axis=1)])
    det_classes = np.concatenate([det_classes, rng.choice(categories, len(owner))])
    det_scores = np.concatenate([det_scores, rng.beta(2, 4, len(owner))])
    det_images = np.concatenate([det_images, np.array([im["id"] for im in images], dtype=np.int64)[owner]])
    if score_decimals is not None:
        det_scores = np.round(det_scores, score_decimals)
    shuffle = rng.permutation(len(det_scores))
    return [{"image_id": int(det_images[i]), "category_id": int(det_classes[i]),
             "bbox": [round(float(v), 2) for v in det_boxes[i]], "score": float(det_scores[i])} for i in shuffle]
