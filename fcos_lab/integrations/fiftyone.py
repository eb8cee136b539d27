"""FCOS predictions in FiftyOne: ambiguous locations, unrecallable boxes, errors per FPN level.

Builds a FiftyOne dataset of a COCO-format image folder with its ground truth and a detections file
written by ``fcos-lab eval`` / :func:`fcos_lab.predict.detections_to_coco`, and tags every object with
what the FCOS assignment (Sections 3.1 and 3.2) says about it, so that the questions of Section 4.1.1
("Best Possible Recalls", "Ambiguous Samples") and Appendix 10 can be asked of real errors:

- each prediction: its FPN ``level``, ``location`` (original-image pixels), ``cls_score``, ``centerness``,
  and, from the assignment of its image's ground truth at the training resize, ``num_candidates`` (how
  many boxes its location could regress), ``ambiguous`` (more than one), ``ambiguous_diff_class``
  (boxes of different classes, the only ambiguity that matters at inference) and ``target_ann_id``
  (the box the location regresses in training: the one of minimal area);
- each ground-truth box: ``levels`` (levels with at least one positive location for it),
  ``num_positive_locations``, ``recallable`` (the assignment gives it a location at all: the paper's
  BPR criterion) and ``ambiguous`` / ``ambiguous_diff_class`` (it is a candidate of an ambiguous location);
- each object's TIDE ``error_type`` (:mod:`fcos_lab.analysis.tide`): a prediction's ``tp``, ``cls``, ``loc``,
  ``both``, ``dupe`` or ``bkg`` (None after its image's 100 best), a box's ``tp``, ``miss``, ``covered`` or
  ``ignore``.

COCO-style evaluation (:meth:`fiftyone.core.collections.SampleCollection.evaluate_detections`) then marks
every prediction ``tp``/``fp`` and every box ``tp``/``fn`` under an eval key, and
:mod:`fcos_lab.integrations.fiftyone_views` saves the views of the paper's questions.

This is the only module that knows FiftyOne's box format: relative ``[x, y, w, h]`` in [0, 1] of the
image's width and height. FiftyOne is imported inside the functions that use it, so that the
database settings (``FIFTYONE_DATABASE_DIR``, ``FIFTYONE_DATABASE_URI``) can be set before it loads.
The assignment attributes (:func:`fcos_lab.analysis.ambiguous_locations.assignment_attributes`) need
no FiftyOne at all.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcos_lab.analysis.ambiguous_locations import assignment_attributes
from fcos_lab.analysis.tide import TideErrors, detection_error_types, ground_truth_error_types, tide_errors
from fcos_lab.config import Config
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.detections_file import load_detections, validate_detections
from fcos_lab.errors import DataError, FcosLabError
from fcos_lab.integrations.fiftyone_fields import GT_FIELD, PRED_FIELD
from fcos_lab.presets import resolve

if TYPE_CHECKING:
    import fiftyone as fo
    from pycocotools.coco import COCO

DEFAULT_PRESET = "fcos_r50_fpn_1x"
DEFAULT_NAME = "fcos-lab"
DEFAULT_PORT = 5151


def _relative_xywh(bbox: Sequence[float], width: int, height: int) -> list[float]:
    """COCO ``[x, y, w, h]`` in pixels -> FiftyOne's ``[x, y, w, h]`` relative to the image size.

    IoU is unchanged by scaling x and y separately, so FiftyOne's matching equals COCO's.
    """
    x, y, w, h = (float(v) for v in bbox)
    return [x / width, y / height, w / width, h / height]


def _samples(coco: COCO, images_dir: Path, detections: Sequence[dict[str, Any]],
             box_attributes: dict[int, dict[str, Any]], prediction_attributes: list[dict[str, Any]],
             errors: TideErrors) -> list[fo.Sample]:
    import fiftyone as fo

    prediction_errors, box_errors = detection_error_types(errors), ground_truth_error_types(errors)

    names = {c: coco.cats[c]["name"] for c in coco.cats}
    predictions_of: dict[int, list[int]] = defaultdict(list)
    for index, det in enumerate(detections):
        predictions_of[det["image_id"]].append(index)
    samples = []
    for image_id in sorted(coco.imgs):
        record = coco.imgs[image_id]
        width, height = int(record["width"]), int(record["height"])
        ground_truth = [
            fo.Detection(label=names[ann["category_id"]], bounding_box=_relative_xywh(ann["bbox"], width, height),
                         iscrowd=int(bool(ann.get("iscrowd", 0))), ann_id=int(ann["id"]), error_type=box_errors[ann["id"]],
                         **box_attributes[ann["id"]])
            for ann in sorted(coco.imgToAnns.get(image_id, []), key=lambda a: a["id"])
        ]
        predictions = []
        for index in predictions_of[image_id]:
            det = detections[index]
            extra = {key: det.get(key) for key in ("level", "cls_score", "centerness")}
            location = det.get("location")
            predictions.append(fo.Detection(
                label=names[det["category_id"]], bounding_box=_relative_xywh(det["bbox"], width, height),
                confidence=float(det["score"]), detection_index=index, error_type=prediction_errors[index],
                location=[float(v) for v in location] if location is not None else None,
                **extra, **prediction_attributes[index]))
        samples.append(fo.Sample(
            filepath=str(images_dir / record["file_name"]), coco_id=int(image_id),
            metadata=fo.ImageMetadata(width=width, height=height),
            **{GT_FIELD: fo.Detections(detections=ground_truth), PRED_FIELD: fo.Detections(detections=predictions)}))
    return samples


def evaluate(dataset: fo.Dataset, eval_key: str = "eval", *, iou: float = 0.5, compute_mAP: bool = True) -> Any:
    """COCO-style matching of ``predictions`` to ``ground_truth``, same class only, at IoU ``iou``.

    Marks every prediction ``<eval_key>`` = ``tp``/``fp`` and every box ``tp``/``fn`` (FiftyOne also marks
    an unmatched crowd box ``fn``; COCO would ignore it), with ``<eval_key>_iou`` and ``<eval_key>_id``,
    and counts ``<eval_key>_tp/fp/fn`` per sample. An earlier evaluation under the key is replaced.

    Returns:
        FiftyOne's ``DetectionResults`` (``.mAP()`` with ``compute_mAP``, ``.print_report()``).
    """
    from fiftyone import ViewField as F

    if eval_key in dataset.list_evaluations():
        dataset.delete_evaluation(eval_key)
    options: dict[str, Any] = {}
    if compute_mAP:
        # FiftyOne would only mark the top 100 per class and image (COCO's maxDets); every one is marked here.
        options["max_preds"] = max([100] + dataset.values(F(f"{PRED_FIELD}.detections").length()))
    return dataset.evaluate_detections(PRED_FIELD, gt_field=GT_FIELD, eval_key=eval_key, method="coco", iou=iou,
                                       classwise=True, compute_mAP=compute_mAP, **options)


def build_dataset(
    ann_file: str | Path,
    images_dir: str | Path,
    detections: str | Path | Sequence[dict[str, Any]],
    *,
    name: str = DEFAULT_NAME,
    config: Config | str = DEFAULT_PRESET,
    overrides: Sequence[str] = (),
    eval_key: str = "eval",
    iou: float = 0.5,
    compute_mAP: bool = True,
    save_views: bool = True,
    persistent: bool = True,
) -> fo.Dataset:
    """A FiftyOne dataset of the images, their ground truth and the predictions, evaluated, with saved views.

    A dataset already called ``name`` is replaced, only once the new one is complete: the new one is
    built under a temporary name and renamed, so a failed import leaves the old one untouched and a
    re-import never duplicates samples.

    Args:
        ann_file: COCO-format annotation JSON (image sizes and boxes).
        images_dir: the folder the ``file_name`` of each image is relative to.
        detections: a COCO results file (``fcos-lab eval --out``) or its records, with COCO image and
            category ids of ``ann_file``.
        name: the dataset's name.
        config: preset name or :class:`~fcos_lab.config.Config` the predictions were made with (its
            input sizes, strides and assignment settings); ``overrides`` are dotted ``KEY=VALUE``.
        eval_key: the evaluation's key (see :func:`evaluate`); iou, compute_mAP: its settings.
        save_views: save the views of :func:`fcos_lab.integrations.fiftyone_views.paper_views`.
        persistent: keep the dataset when the last FiftyOne process exits.

    Raises:
        DataError: unreadable or inconsistent annotation or detections file, missing image files.
        ConfigError: an unknown preset or override.
    """
    config = resolve(config, list(overrides))
    images_dir = Path(images_dir)
    coco = load_coco_annotations(ann_file)
    if isinstance(detections, (str, Path)):
        source = str(detections)
        detections = load_detections(detections, gt=coco)
    else:
        source = "<detections list>"
        detections = list(detections)
        validate_detections(detections, source, coco.getImgIds(), coco.getCatIds())
    missing = [r["file_name"] for r in coco.imgs.values() if not (images_dir / r["file_name"]).is_file()]
    if missing:
        raise DataError(f"{images_dir}: {len(missing)} image(s) of {ann_file} not found, e.g. {missing[:3]}")

    boxes, predictions = assignment_attributes(coco, detections, config)
    import fiftyone as fo  # after the inputs are checked: importing it takes seconds

    staging = fo.Dataset(f"{name}-importing-{uuid.uuid4().hex[:8]}")
    try:
        staging.add_samples(_samples(coco, images_dir, detections, boxes, predictions, tide_errors(coco, detections)))
        staging.add_dynamic_sample_fields()
        staging.info["fcos_lab"] = {
            "ann_file": str(ann_file), "images_dir": str(images_dir), "detections": source, "config": config.name,
            "eval_key": eval_key, "levels": [int(round(math.log2(s))) for s in config.model.strides],
        }
        staging.save()
        results = evaluate(staging, eval_key, iou=iou, compute_mAP=compute_mAP)
        if compute_mAP:
            staging.info["fcos_lab"]["mAP"] = float(results.mAP())  # FiftyOne's COCO-style mAP, IoU .50:.95
            staging.save()
        if save_views:
            from fcos_lab.integrations.fiftyone_views import save_paper_views

            save_paper_views(staging, eval_key)
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
        staging.name = name
        staging.persistent = persistent
    except BaseException:
        staging.delete()
        raise
    return staging


def launch_app(dataset: fo.Dataset, *, port: int = DEFAULT_PORT, address: str = "127.0.0.1",
               view: str | None = None) -> Any:
    """Start the FiftyOne App on ``address:port`` without opening a browser; returns the session.

    ``view`` names a saved view to open. Call ``session.close()`` to stop the App server.
    """
    import fiftyone as fo

    shown = dataset.load_saved_view(view) if view else None
    return fo.launch_app(dataset, view=shown, port=port, address=address, auto=False)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``fcos-lab fiftyone --ann FILE --images DIR --pred DETECTIONS.json [--name NAME] [--launch] [--port P]``."""
    parser = argparse.ArgumentParser(
        prog="fcos-lab fiftyone",
        description="A FiftyOne dataset of images, ground truth and FCOS predictions: TP/FP/FN, ambiguous "
                    "locations, unrecallable boxes, errors per FPN level (saved views).",
        epilog="The database is FiftyOne's own (FIFTYONE_DATABASE_DIR, default ~/.fiftyone/var/lib/mongo).",
    )
    parser.add_argument("--ann", required=True, help="COCO-format ground-truth JSON")
    parser.add_argument("--images", required=True, help="image folder")
    parser.add_argument("--pred", required=True, help="COCO results JSON with level/location/cls_score/centerness")
    parser.add_argument("--name", default=DEFAULT_NAME, help="dataset name, replaced if it exists (default: %(default)s)")
    parser.add_argument("--launch", action="store_true", help="serve the App until Ctrl-C")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="App port (default: %(default)s)")
    parser.add_argument("--address", default="127.0.0.1", help="App address (default: %(default)s)")
    parser.add_argument("--eval-key", default="eval", help="evaluation key (default: %(default)s)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU for TP/FP/FN (default: %(default)s)")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="preset the predictions were made with")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    args = parser.parse_args(argv)
    try:
        dataset = build_dataset(args.ann, args.images, args.pred, name=args.name, config=args.preset,
                                overrides=args.overrides, eval_key=args.eval_key, iou=args.iou)
    except FcosLabError as error:
        print(f"fcos-lab fiftyone: error: {error}", file=sys.stderr)
        return 2
    from fcos_lab.integrations.fiftyone_views import summary

    print(summary(dataset, args.eval_key), flush=True)
    if not args.launch:
        return 0
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # stop the App cleanly on SIGTERM too
    session = None
    try:
        session = launch_app(dataset, port=args.port, address=args.address)
        print(f"App at http://{args.address}:{args.port}/ (Ctrl-C to stop)", flush=True)
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        if session is not None:
            session.close()  # stops the App server; FiftyOne's database service stops when this process exits
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
