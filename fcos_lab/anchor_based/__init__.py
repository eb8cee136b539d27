"""The anchor-based baselines the paper compares FCOS with, together: RetinaNet (Tables 1, 3, 7, 8) and RPN (Table 6).

- :mod:`fcos_lab.anchor_based.anchors`: anchor layout and IoU matching (Table 1's anchor-based rows too).
- :mod:`fcos_lab.anchor_based.detector`: the network (FCOS's backbone, FPN and towers; anchors in the head).
- :mod:`fcos_lab.anchor_based.losses`: their targets and losses, and decoding for FCOS's post-processing.

:class:`fcos_lab.objective.Objective` turns a config into their training objective, as for FCOS.
"""
