"""Qualitative results: one image or one detection at a time (Section 4.1.1, Figures 3 and 8).

- :func:`detections_from_ambiguous_locations`: the share of detections made at ambiguous locations
  (Section 4.1.1's text beside Table 2), and :func:`fiftyone_errors`, FiftyOne's view of those errors.
- :func:`figure3_data`: center-ness targets and predictions on one validation image (Figure 3), from the
  training assignment of the checkpoint's config (:mod:`fcos_lab.analysis.image_assignment`) and the
  network's dense output (:func:`fcos_lab.predict.predict_dense`), as grids
  (:mod:`fcos_lab.analysis.centerness_maps`); the figures are :mod:`fcos_lab.viz.heatmaps`.
- :func:`figure8_folder` and :func:`detect_images`: detections on image files (Figure 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fcos_lab.analysis.scales import ScaleSettings
from fcos_lab.config import Config
from fcos_lab.errors import DataError


def detections_from_ambiguous_locations(ann_file: str | Path, detections: Sequence[dict[str, Any]], config: Config,
                                        *, min_score: float = 0.0) -> dict[str, Any]:
    """The share of detections made at ambiguous locations (Section 4.1.1: 2.3 %, 1.5 % for different classes).

    A detection's location is looked up in the training assignment of its image's ground truth
    (:func:`fcos_lab.analysis.ambiguous_locations.assignment_attributes`, which runs
    :func:`fcos_lab.targets.assign`): it is ambiguous when the location is a candidate of more than one
    box after the size ranges, "diff. class" when those boxes do not all share a class.

    Args:
        ann_file: the ground truth the detections were made on.
        detections: COCO records with ``level`` and ``location`` (as :func:`fcos_lab.predict.predict_dataset` writes).
        config: the config the detections were made with (input size, strides, size ranges).
        min_score: count only detections with at least this score.

    Returns:
        ``detections`` (counted), ``ambiguous``, ``ambiguous_diff_class`` (counts),
        ``detections_ambiguous``, ``detections_ambiguous_diff_class`` (percent; None without detections)
        and ``unplaced`` (detections whose location is not on the grid).
    """
    from fcos_lab.analysis.ambiguous_locations import assignment_attributes
    from fcos_lab.data.coco_annotations import load_coco_annotations

    _, attributes = assignment_attributes(load_coco_annotations(ann_file), list(detections), config)
    counted = [a for d, a in zip(detections, attributes) if d["score"] >= min_score and a["ambiguous"] is not None]
    ambiguous = sum(bool(a["ambiguous"]) for a in counted)
    different = sum(bool(a["ambiguous_diff_class"]) for a in counted)
    share = (lambda n: 100.0 * n / len(counted) if counted else None)
    return {"detections": len(counted), "ambiguous": ambiguous, "ambiguous_diff_class": different,
            "detections_ambiguous": share(ambiguous), "detections_ambiguous_diff_class": share(different),
            "unplaced": sum(a["ambiguous"] is None for a in attributes), "min_score": min_score}


def fiftyone_errors(ann_file: str | Path, images_dir: str | Path, detections: Sequence[dict[str, Any]], config: Config,
                    *, name: str = "fcos-lab-02") -> dict[str, Any]:
    """FiftyOne's view of the errors at ambiguous locations, or why it could not be built.

    Never raises: FiftyOne missing, or its database failing to start, is reported in ``reason``.

    Returns:
        ``available`` (bool), ``reason`` (None or why not), and when available ``summary`` (text),
        ``share`` (:func:`fcos_lab.integrations.fiftyone_views.ambiguous_share`), ``errors_per_level``,
        ``views`` (saved view name -> number of images) and ``dataset`` (the FiftyOne dataset).
    """
    try:
        import fiftyone as fo

        from fcos_lab.integrations.fiftyone import build_dataset
        from fcos_lab.integrations.fiftyone_views import ambiguous_share, errors_per_level, summary

        fo.config.show_progress_bars = False  # a notebook keeps every redraw of a progress bar as output
        dataset = build_dataset(ann_file, images_dir, list(detections), name=name, config=config, persistent=False)
        views = {v: len(dataset.load_saved_view(v)) for v in dataset.list_saved_views()}
        return {"available": True, "reason": None, "summary": summary(dataset), "share": ambiguous_share(dataset),
                "errors_per_level": errors_per_level(dataset), "views": views, "dataset": dataset}
    except Exception as error:  # noqa: BLE001 - import errors, database start-up, server errors: all mean "skip"
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return {"available": False, "reason": reason[:500]}


# ----------------------------------------------------------------------------------------------
# Figures 3 and 8: one image at a time


def figure3_image_id(val_ann: str | Path, config: Config, max_boxes: int = 15) -> int:
    """The validation image that shows Figure 3 best: objects on the most FPN levels, then the most objects (at
    most ``max_boxes`` count: beyond, a figure gets crowded), then the smallest id.

    A box's level is where the location at its center regresses it: the size range holding half its longer
    side, max(l*, t*, r*, b*) there (Section 3.2), with the boxes resized as ``config`` trains.
    """
    from fcos_lab.analysis.dataset_boxes import load_dataset_boxes

    padded = load_dataset_boxes(val_ann, config).boxes
    if not len(padded.image_ids):
        raise DataError(f"{val_ann}: no image with a usable box for Figure 3")
    sides = (padded.boxes[..., 2:] - padded.boxes[..., :2]).amax(dim=-1).numpy() / 2  # [N, M]
    ranges = np.asarray(config.assign.size_ranges, dtype=float)  # [L, 2]
    on_level = (sides[..., None] >= ranges[:, 0]) & (sides[..., None] <= ranges[:, 1])  # [N, M, L]
    on_level &= padded.valid.numpy()[..., None]
    levels = on_level.any(axis=1).sum(axis=1)
    count = np.minimum(padded.valid.sum(1).numpy(), max_boxes)
    return int(padded.image_ids[np.lexsort((padded.image_ids, -count, -levels))[0]])


def figure3_data(checkpoint: str | Path, val_ann: str | Path, val_images: str | Path,
                 image_index: int | None = None, *, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Center-ness on one validation image (Figure 3): the Eq. (3) targets and the trained model's prediction.

    The targets are the training assignment of the checkpoint's config on the image as its data loader
    resizes it; the prediction is the network on the same image. ``image_index`` picks the image in the
    file's order; None picks :func:`figure3_image_id` (objects at several scales). ``overrides`` are dotted
    overrides on the checkpoint's config (``input.min_size=320``).

    Returns:
        ``image`` (``[3, h, w]`` in the model's input frame), ``image_id``, ``boxes`` (``[M, 4]`` xyxy in that
        frame), ``assignment``
        (:class:`~fcos_lab.analysis.image_assignment.ImageAssignment`), ``target_grids`` and ``predicted_grids``
        (one :class:`~fcos_lab.analysis.centerness_maps.LevelGrid` per level; targets NaN on background,
        predictions NaN in the padding), ``names`` (P3...) and ``class_names``.
    """
    from fcos_lab.analysis.centerness_maps import prediction_maps, target_centerness_grids
    from fcos_lab.analysis.image_assignment import assign_image
    from fcos_lab.data.samples import dataset_sample, open_dataset, resize_sample
    from fcos_lab.objective import Objective
    from fcos_lab.predict import predict_dense
    from fcos_lab.runs import load_detector

    loaded = load_detector(checkpoint, overrides=list(overrides))
    config = loaded.config
    objective = Objective.from_config(config)
    dataset = open_dataset(val_ann, val_images, config)
    if image_index is None:
        image_id = figure3_image_id(val_ann, config)
    else:
        image_id = dataset.image_ids[image_index % len(dataset.image_ids)]
    sample = dataset_sample(dataset, image_id)
    resized = resize_sample(sample, config)
    assignment = assign_image(objective, tuple(resized.image.shape[-2:]), resized.boxes, resized.labels,
                              crowd=resized.crowd, size_divisible=config.input.size_divisible)
    dense = predict_dense(loaded, sample.image)
    output = dense.output
    locations = objective.output_locations(output)
    centerness = None if output.centerness_logits is None else output.centerness_logits[0]
    predicted = [
        prediction_maps(output.cls_logits[0], centerness, locations, level, image_size=dense.batch.image_sizes[0],
                        level_name=name)["center-ness"]
        for level, name in enumerate(objective.level_names)
    ]
    return {"image": resized.image, "image_id": image_id, "boxes": resized.boxes, "assignment": assignment,
            "target_grids": target_centerness_grids(assignment), "predicted_grids": predicted,
            "names": objective.level_names, "class_names": loaded.class_names}


def figure8_folder(settings: ScaleSettings, image_dir: str | Path | None, fallback: str | Path) -> Path:
    """The images of Figure 8: ``image_dir``, else the real val2017 images under ``data_root``, else ``fallback``."""
    if image_dir:
        return Path(image_dir)
    real = Path(settings.data_root) / "coco" / "images" / "val2017" if settings.data_root else None
    return real if real is not None and real.is_dir() else Path(fallback)


def detect_images(checkpoint: str | Path, image_paths: Sequence[str | Path], *, device: str = "auto",
                  overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Detections of a checkpoint on image files (Figure 8), boxes in each image's own pixels.

    ``overrides`` are dotted overrides on the checkpoint's config (``input.min_size=320``).

    Returns:
        ``images`` (``[3, H, W]`` tensors), ``detections`` (one :class:`~fcos_lab.postprocess.Detections` per
        image, on the CPU), ``names`` (file names), ``class_names``, ``config``.
    """
    from fcos_lab.data.coco import load_image
    from fcos_lab.predict import detect
    from fcos_lab.runs import load_detector

    loaded = load_detector(checkpoint, overrides=list(overrides), device=device)
    images = [load_image(path) for path in image_paths]
    detections = [detect(loaded.model, loaded.config, [image])[0].to("cpu") for image in images]
    return {"images": images, "detections": detections, "names": [Path(p).name for p in image_paths],
            "class_names": loaded.class_names, "config": loaded.config}
