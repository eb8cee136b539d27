"""Prediction: images in, detections out (Section 3.1 "Inference", Section 4 "Inference Details").

- :func:`detect`, :func:`predict_dataset`, :func:`predict_images`: a model on images, a dataset or files;
- :func:`predict_dense` and :func:`detections_from`: the network run once on one image, then
  post-processed as often as a page's sliders ask (the app's Detections and Center-ness pages, Figure 3);
- :func:`postprocess_output`, :func:`preprocess_images`: the two ends every path shares, resizing with
  the config's rule and placing the outputs with its :class:`~fcos_lab.objective.Objective`.

Checkpoints become models in :func:`fcos_lab.runs.load_detector`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from fcos_lab.anchor_based.detector import AnchorOutput
from fcos_lab.anchor_based.losses import decode_to_ltrb
from fcos_lab.config import Config
from fcos_lab.data.transforms import ImageBatch, preprocess
from fcos_lab.errors import DataError
from fcos_lab.model.detector import FCOS, FCOSOutput
from fcos_lab.objective import Objective
from fcos_lab.postprocess import Detections, postprocess
from fcos_lab.targets import ground_truth_of

if TYPE_CHECKING:
    from fcos_lab.runs import LoadedModel
from fcos_lab.precision import announce, resolve_precision
from fcos_lab.threads import ThreadGovernor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def postprocess_output(
    output: FCOSOutput | AnchorOutput, batch: ImageBatch, config: Config, oracle_centerness: Tensor | None = None
) -> list[Detections]:
    """Post-process a model output and map boxes back to each image's original size.

    Anchor-based outputs are decoded first and expressed as distances from the anchor centers, so the
    same thresholding, top-k and NMS apply (their center-ness is 1).
    """
    p = config.postprocess
    if isinstance(output, AnchorOutput):
        box_regression, centerness_logits = decode_to_ltrb(output.box_deltas, output.anchors), None
        centerness_mode = "none"
    else:
        box_regression, centerness_logits = output.box_regression, output.centerness_logits
        centerness_mode = p.centerness_mode
    detections = postprocess(
        output.cls_logits,
        box_regression,
        centerness_logits,
        Objective.from_config(config).output_locations(output),
        batch.image_sizes,
        score_thresh=p.score_thresh,
        threshold_on=p.threshold_on,
        pre_nms_topk=p.pre_nms_topk,
        nms_thresh=p.nms_thresh,
        max_detections=p.max_detections,
        centerness_mode=centerness_mode,
        score_sqrt=p.score_sqrt,
        class_agnostic_nms=p.class_agnostic_nms,
        oracle_centerness=oracle_centerness,
    )
    return [d.rescaled(size, orig) for d, size, orig in zip(detections, batch.image_sizes, batch.original_sizes)]


def preprocess_images(images: list[Tensor], config: Config) -> ImageBatch:
    """Normalize, resize (``config.input``: sizes and resize rule) and pad raw images ``[3, H, W]`` in [0, 1]."""
    i = config.input
    return preprocess(images, i.min_size, i.max_size, i.size_divisible, resize_rule=i.resize_rule)


@torch.no_grad()
def detect(model: FCOS, config: Config, images: list[Tensor]) -> list[Detections]:
    """Detect objects in raw images ``[3, H, W]`` (float in [0, 1]); boxes in each image's own pixels."""
    device = next(model.parameters()).device
    batch = preprocess_images(images, config).to(device)
    was_training = model.training
    model.eval()
    precision = resolve_precision(config.model.inference_amp, device)
    announce(precision, "inference")
    try:
        with precision.autocast():
            output = model(batch.tensors)
    finally:
        model.train(was_training)
    return postprocess_output(output, batch, config)


@dataclass(frozen=True)
class DensePrediction:
    """The model's output on one image, the preprocessed batch it came from, and the config used."""

    output: FCOSOutput | AnchorOutput
    batch: ImageBatch
    config: Config  # with the input size used


def input_size(config: Config, min_size: int | None = None) -> tuple[int, int]:
    """``(min_size, max_size)`` of the resize: the config's, or ``min_size`` with the longer-side limit scaled
    in proportion (800 / 1333 becomes 400 / 667, never below the config's own limit)."""
    i = config.input
    if min_size is None or min_size == i.min_size:
        return i.min_size, i.max_size
    return int(min_size), int(max(i.max_size, round(min_size * i.max_size / i.min_size)))


def with_input_size(config: Config, min_size: int | None = None) -> Config:
    """``config`` whose ``input.min_size`` / ``input.max_size`` are :func:`input_size`'s."""
    low, high = input_size(config, min_size)
    return replace(config, input=replace(config.input, min_size=low, max_size=high))


@torch.no_grad()
def predict_dense(loaded: LoadedModel, image: Tensor, min_size: int | None = None) -> DensePrediction:
    """Run the network once on ``image`` ``[3, H, W]`` in [0, 1] (shorter side ``min_size``, default the config's)."""
    config = with_input_size(loaded.config, min_size)
    batch = preprocess_images([image], config)
    precision = resolve_precision(config.model.inference_amp, loaded.device)
    with precision.autocast():
        output = loaded.model.eval()(batch.tensors.to(loaded.device))
    return DensePrediction(output, batch, config)


def detections_from(
    dense: DensePrediction, *, score_thresh: float, nms_thresh: float, use_centerness: bool = True
) -> Detections:
    """Post-process a dense prediction with a page's sliders; boxes in the original image's pixels, on the CPU.

    ``use_centerness=False`` ranks by the classification score alone (Table 4, "w/o center-ness").
    """
    config = dense.config
    has_branch = isinstance(dense.output, FCOSOutput) and dense.output.centerness_logits is not None
    mode = config.postprocess.centerness_mode if use_centerness and has_branch else "none"
    if mode == "oracle":  # needs ground truth, which inference on an arbitrary image does not have
        mode = "learned"
    post = replace(config.postprocess, score_thresh=float(score_thresh), nms_thresh=float(nms_thresh),
                   centerness_mode=mode)
    return postprocess_output(dense.output, dense.batch, replace(config, postprocess=post))[0].to("cpu")


def detections_to_coco(
    detections: Detections, image_id: int, category_ids: list[int] | None = None
) -> list[dict[str, Any]]:
    """COCO results records of one image, with fcos_lab's extra fields.

    Each record has ``image_id``, ``category_id`` (the file's id), ``bbox`` ``[x, y, w, h]``, ``score``,
    and ``level`` (FPN level), ``location`` ``[x, y]``, ``cls_score`` and ``centerness``.
    """
    table = category_ids or None
    boxes = detections.boxes.detach().cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    labels = detections.labels.tolist()
    return [
        {
            "image_id": int(image_id),
            "category_id": int(table[label]) if table else int(label),
            "bbox": [round(v, 3) for v in box],
            "score": round(float(score), 6),
            "level": int(level),
            "location": [round(float(v), 2) for v in location],
            "cls_score": round(float(cls), 6),
            "centerness": round(float(ctr), 6),
        }
        for box, label, score, level, location, cls, ctr in zip(
            xywh,
            labels,
            detections.scores.tolist(),
            detections.levels.tolist(),
            detections.locations.tolist(),
            detections.cls_scores.tolist(),
            detections.centerness.tolist(),
        )
    ]


@torch.no_grad()
def predict_dataset(
    model: FCOS,
    config: Config,
    dataset: Any,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    num_workers: int = 0,
    progress: bool = False,
    category_ids: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Run the model over a :class:`~fcos_lab.data.coco.CocoDetection` (test mode) and return COCO results.

    Args:
        category_ids: the category id of each class index of the model (a checkpoint's); default the
            dataset's own. Detections of a class whose id the dataset lacks (torchvision's COCO index 0 and
            its "N/A" ids) are left out: COCO evaluation ignores them anyway, and they have already taken
            their place among the ``max_detections`` of their image, as in torchvision's evaluation.
    """
    table = category_ids or dataset.category_ids
    known = set(dataset.category_ids)
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from fcos_lab.data.coco import collate

    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=functools.partial(collate, size_divisible=config.input.size_divisible),
    )
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    precision = resolve_precision(config.model.inference_amp, device)
    announce(precision, "inference")
    threads = ThreadGovernor()
    try:
        for batch, targets in tqdm(loader, disable=not progress, desc="predict"):
            threads.step()
            batch = batch.to(device)
            with precision.autocast():
                output = model(batch.tensors)
            oracle = None
            if config.postprocess.centerness_mode == "oracle":
                oracle = Objective.from_config(config).oracle_centerness(output, ground_truth_of(targets))
            for det, target in zip(postprocess_output(output, batch, config, oracle), targets):
                records = detections_to_coco(det, target["image_id"], table)
                results.extend(r for r in records if r["category_id"] in known)
    finally:
        model.train(was_training)
        threads.close()
    return results


def list_images(inputs: list[str | Path]) -> list[Path]:
    """Image files named directly or found (non-recursively) in the folders given, sorted."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError(f"{path}: no such image file or folder")
    if not paths:
        raise DataError(f"no images found in {', '.join(map(str, inputs))} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return paths


def image_ids_for_files(paths: list[Path], ann_file: str | Path | None = None) -> list[int]:
    """The COCO image id of each image file, so that ``detections.json`` can be evaluated against its dataset.

    In order: the id of the image of the same file name (base name) in ``ann_file``; else the integer file stem,
    as COCO names its images (``000000000139.jpg`` is image 139); else a running number after the largest id
    found so far, so that no two files share an id.

    Raises:
        DataError: two files would get the same id (naming both), or ``ann_file`` cannot be read.
    """
    by_name: dict[str, int] = {}
    if ann_file is not None:
        from fcos_lab.data.coco_annotations import load_coco_annotations

        coco = load_coco_annotations(ann_file, require_annotations=False)
        by_name = {Path(record["file_name"]).name: int(image_id) for image_id, record in coco.imgs.items()}
    known = [by_name.get(p.name, int(p.stem) if p.stem.isdigit() else None) for p in paths]
    next_id = max((i for i in known if i is not None), default=0)
    ids, owner = [], {}
    for path, image_id in zip(paths, known):
        if image_id is None:
            next_id += 1
            image_id = next_id
        if image_id in owner:
            raise DataError(f"{path} and {owner[image_id]} would both be image {image_id} in detections.json")
        owner[image_id] = path
        ids.append(image_id)
    return ids


@dataclass(frozen=True)
class PredictedImage:
    """What ``fcos-lab predict`` did with one image: its id, how many detections, how many drawn, the best score."""

    file_name: str
    image_id: int
    detections: int
    drawn: int
    top_score: float | None

    def describe(self, render_thresh: float) -> str:
        """One line: ``000000000139.jpg (image 139): 2 of 14 detections drawn (score >= 0.30), 12 held back; top score 0.62``."""
        top = "no detection" if self.top_score is None else f"top score {self.top_score:.3f}"
        line = (f"{self.file_name} (image {self.image_id}): {self.drawn} of {self.detections} detections drawn "
                f"(score >= {render_thresh:.2f}), {self.detections - self.drawn} held back; {top}")
        if self.detections and not self.drawn:
            line += " -> nothing drawn: lower --render-thresh to see them"
        return line


def predict_images(
    model: FCOS,
    config: Config,
    inputs: list[str | Path],
    out_dir: str | Path,
    *,
    class_names: list[str] | None = None,
    category_ids: list[int] | None = None,
    device: torch.device | str = "cpu",
    render: bool = True,
    render_thresh: float = 0.3,
    ann_file: str | Path | None = None,
) -> tuple[Path, list[PredictedImage]]:
    """Detect objects in image files or folders; write ``detections.json`` and rendered images to ``out_dir``.

    Records carry ``file_name``, the image's COCO id (:func:`image_ids_for_files`, with ``ann_file`` if given),
    ``category_id`` (the checkpoint's id of the class) and ``category_name`` (its name in ``class_names``). All
    detections are written; only those of score >= ``render_thresh`` are drawn.

    Returns:
        The path of ``detections.json`` and, per image, what was detected and drawn.
    """
    from fcos_lab.data.coco import load_image
    from fcos_lab.detections_file import save_detections
    from fcos_lab.viz.draw import draw_detections

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.to(device)
    paths = list_images(inputs)
    records: list[dict[str, Any]] = []
    threads = ThreadGovernor()
    report = []
    for image_id, path in zip(image_ids_for_files(paths, ann_file), paths):
        threads.step()
        image = load_image(path)
        det = detect(model, config, [image])[0].to("cpu")
        names = [class_names[c] if class_names and 0 <= c < len(class_names) else str(c) for c in det.labels.tolist()]
        for record, name in zip(detections_to_coco(det, image_id, category_ids), names):
            records.append({**record, "category_name": name, "file_name": path.name})
        keep = det.scores >= render_thresh
        report.append(PredictedImage(path.name, image_id, len(det.scores), int(keep.sum()),
                                     float(det.scores.max()) if len(det.scores) else None))
        if render:
            picture = draw_detections(
                image, det.boxes[keep], det.labels[keep], det.scores[keep], class_names,
                levels=det.levels[keep],
            )
            picture.save(out_dir / f"{path.stem}_detections.jpg", quality=90)
    threads.close()
    return save_detections(out_dir / "detections.json", records), report
