"""Analyses of the paper's claims.

- :mod:`fcos_lab.analysis.statistics`: best possible recall (Table 1) and ambiguous samples (Table 2)
  of any COCO-format annotation file, no model or images needed; ``fcos-lab stats``.
- :mod:`fcos_lab.analysis.anchors`: RetinaNet anchors and IoU matching (Table 1's anchor-based rows),
  reusable by a RetinaNet baseline.
- :mod:`fcos_lab.analysis.report`: measured-vs-paper result records and tables.
- :mod:`fcos_lab.analysis.tide` (with :mod:`~fcos_lab.analysis.tide_matching`): TIDE's error types and dAPs
  (tidecv's definitions); :mod:`~fcos_lab.analysis.tide_breakdowns`: the errors by FPN level, center-ness,
  ambiguous location and size; :mod:`~fcos_lab.analysis.tide_report`: ``fcos-lab errors``.
"""
