"""The fields under which fcos_lab stores its objects in a FiftyOne dataset.

Shared by :mod:`fcos_lab.integrations.fiftyone`, which writes them, and
:mod:`fcos_lab.integrations.fiftyone_views`, which filters on them (a third module, so that neither
imports the other back).
"""

GT_FIELD = "ground_truth"  # fo.Detections: the boxes of the annotation file, with their assignment attributes
PRED_FIELD = "predictions"  # fo.Detections: the detections file's boxes, with level, location and scores
