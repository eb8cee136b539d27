"""Analyses of the paper's claims.

- :mod:`fcos_lab.analysis.statistics`: best possible recall (Table 1) and ambiguous samples (Table 2)
  of any COCO-format annotation file, no model or images needed; ``fcos-lab stats``. Built on
  :mod:`fcos_lab.analysis.dataset_boxes` (a file's boxes at the training resize) and
  :mod:`fcos_lab.analysis.recall_ambiguity` (the counts under an :class:`~fcos_lab.objective.Objective`).
- :mod:`fcos_lab.analysis.image_assignment`: the training assignment of one image, for figures and tables;
  :mod:`fcos_lab.analysis.centerness_maps`: its center-ness targets and a model's predictions as grids.
- :mod:`fcos_lab.analysis.ambiguous_locations`, :mod:`fcos_lab.analysis.centerness_iou`,
  :mod:`fcos_lab.analysis.qualitative`: detections at ambiguous locations, Figure 7, Figures 3 and 8.
- :mod:`fcos_lab.analysis.report`: measured-vs-paper result records and tables. RetinaNet's anchors and
  IoU matching (Table 1's anchor-based rows) are :mod:`fcos_lab.anchor_based.anchors`.
- :mod:`fcos_lab.analysis.tide` (with :mod:`~fcos_lab.analysis.tide_matching`): TIDE's error types and dAPs
  (tidecv's definitions); :mod:`~fcos_lab.analysis.tide_breakdowns`: the errors by FPN level, center-ness,
  ambiguous location and size; :mod:`~fcos_lab.analysis.tide_report`: ``fcos-lab errors``.
"""
