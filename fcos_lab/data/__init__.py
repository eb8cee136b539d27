"""Data of the paper's experiments (Section 4): COCO-format datasets, transforms and the synthetic demo.

- :mod:`fcos_lab.data.transforms`: resize, flip, normalize and pad, as in the paper's training details.
- :mod:`fcos_lab.data.coco_annotations`: any COCO-format annotation file, validated and indexed.
- :mod:`fcos_lab.data.coco`: the dataset over such a file and its image folder.
- :mod:`fcos_lab.data.yolo`: YOLO-format label folders converted to such a file (``fcos-lab convert``).
- :mod:`fcos_lab.data.splits`: the training and validation datasets a config names.
- :mod:`fcos_lab.data.samples`: one image and its boxes, in a config's training frame (the app, Figure 3).
- :mod:`fcos_lab.data.synthetic`: the embedded shapes dataset that trains on a CPU in minutes. It is
  not re-exported here so that ``python -m fcos_lab.data.synthetic`` runs without a runpy warning.
"""

from fcos_lab.data.coco import CocoDetection, collate, load_image
from fcos_lab.data.coco_annotations import load_coco_annotations

__all__ = ["CocoDetection", "collate", "load_coco_annotations", "load_image"]
