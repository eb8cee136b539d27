"""One image and its ground truth, read from a COCO-format dataset and put in a config's training frame.

The app's pages, the notebooks' one-image figures (Figure 3) and the tests look at one image at a time:
:func:`open_dataset` opens a file through :func:`fcos_lab.data.splits.coco_dataset` (the one place a
config becomes a dataset), :func:`dataset_sample` reads an image with the boxes that dataset made of its
annotations (the config's box convention, clipped, degenerate ones dropped, crowd boxes flagged), and
:func:`resize_sample` resizes image and boxes as the config's data loader does (Section 4: shorter side
``input.min_size``, longer at most ``input.max_size``, the config's resize rule, float32 box ratios).
So a page's sample in the training frame holds exactly the boxes training assigns.

Uploaded images and typed boxes (the app's other inputs) are parsed in the app (``app/inputs.py``).

Glossary: M ground-truth boxes. Boxes are xyxy in absolute pixels of the sample's image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from torch import Tensor

from fcos_lab.config import Config
from fcos_lab.data.coco import CocoDetection, load_image
from fcos_lab.data.splits import coco_dataset
from fcos_lab.data.transforms import resize_boxes, resize_image
from fcos_lab.errors import DataError


@dataclass(frozen=True)
class Sample:
    """One image and its ground truth.

    Attributes:
        image: ``[3, H, W]`` float in [0, 1].
        boxes: ``[M, 4]`` xyxy, pixels of ``image``.
        labels: ``[M]`` contiguous class indices.
        crowd: ``[M]`` ``iscrowd`` flags (never assigned).
        class_names: name of each class index.
        name: what a page calls the image.
    """

    image: Tensor
    boxes: Tensor
    labels: Tensor
    crowd: Tensor
    class_names: tuple[str, ...]
    name: str


def open_dataset(ann_file: str | Path, image_dir: str | Path, config: Config) -> CocoDetection:
    """The evaluation-mode dataset of ``config`` over a COCO-format file (validated; raises :class:`DataError`)."""
    ann_file, image_dir = Path(ann_file).expanduser(), Path(image_dir).expanduser()
    if not str(ann_file).strip() or ann_file.is_dir():
        raise DataError(f"{ann_file}: give the path of a COCO-format annotation JSON file")
    return coco_dataset(config, ann_file, image_dir, train=False)


def dataset_sample(dataset: CocoDetection, image_id: int) -> Sample:
    """Image ``image_id`` of ``dataset`` with its boxes in the image's own pixels (before any resize).

    Raises:
        DataError: the image id is not in the dataset, or its file cannot be read.
    """
    try:
        index = dataset.image_ids.index(image_id)
    except ValueError:
        raise DataError(f"{dataset.ann_file}: image id {image_id} is not in the file") from None
    record = dataset.coco.imgs[image_id]
    image = load_image(dataset.image_dir / record["file_name"], image_id=image_id)
    annotations = dataset.annotations_of(index)
    return Sample(
        image=image,
        boxes=annotations["boxes"],
        labels=annotations["labels"],
        crowd=annotations["iscrowd"],
        class_names=tuple(dataset.class_names),
        name=f"{record['file_name']} (id {image_id})",
    )


def resize_sample(sample: Sample, config: Config) -> Sample:
    """The sample in ``config``'s frame: resized as its data loader resizes (``config.input``)."""
    i = config.input
    image = resize_image(sample.image, i.min_size, i.max_size, i.resize_rule)
    boxes = resize_boxes(sample.boxes, tuple(sample.image.shape[-2:]), tuple(image.shape[-2:]))
    return replace(sample, image=image, boxes=boxes)
