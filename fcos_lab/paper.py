"""The paper's reported numbers (Tables 1-8), as data, for "paper vs measured" tables.

Values are percentages as printed in the paper (minival for Tables 1-4, 6-8; test-dev for Table 5).
Each row also names the preset and overrides that reproduce it here, so a notebook or the
reproduction pipeline can train exactly that row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# The paper's constants, written once; fcos_lab.config's defaults and every analysis import them.
STRIDES = (8, 16, 32, 64, 128)  # Section 3.2: P3..P7
# Section 3.2: m_2, ..., m_7 = 0, 64, 128, 256, 512, inf; level P_i regresses m_{i-1} <= max(l*,t*,r*,b*) <= m_i.
SIZE_RANGES = ((0.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, math.inf))
P4_ONLY_STRIDE = 16  # Tables 1 and 2, "w/o FPN": the stride-16 map P4 alone, no size limit
MIN_SIZE, MAX_SIZE = 800, 1333  # Section 4: shorter side 800, longer side <= 1333
MULTI_SCALE_MIN_SIZES = (640, 800)  # Section 4.2: training shorter side sampled from 640 to 800 (test 800)
SCORE_THRESH = 0.05  # Section 3.1 "Inference": locations with p > 0.05
CENTER_SAMPLING_RADIUS = 1.5  # Table 3 "ctr. sampling" [1]: 1.5 strides
# RetinaNet's anchors (Table 1's anchor-based rows, the RetinaNet and RPN baselines): 4 x stride per level,
# 3 scales per octave and 3 aspect ratios (#A = 9).
RETINANET_ANCHOR_SIZES = (32.0, 64.0, 128.0, 256.0, 512.0)
RETINANET_ANCHOR_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
RETINANET_ANCHOR_RATIOS = (0.5, 1.0, 2.0)  # h / w


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table.

    Attributes:
        table: e.g. ``"Table 3"``.
        row: the row's label in the paper.
        values: metric name -> value in percent (``AP``, ``AP50``, ``BPR``, ``AR100``, ...).
        preset: the fcos_lab preset of this row (empty for statistics rows).
        overrides: dotted overrides on top of the preset.
        eval_overrides: overrides applied only at evaluation time (Table 4's test-time variants).
    """

    table: str
    row: str
    values: dict[str, float]
    preset: str = ""
    overrides: tuple[str, ...] = ()
    eval_overrides: tuple[str, ...] = ()
    note: str = ""
    extra: dict[str, str] = field(default_factory=dict)


_T3_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


def _t3(row: str, numbers: tuple[float, ...], preset: str, overrides: tuple[str, ...] = ()) -> PaperRow:
    return PaperRow("Table 3", row, dict(zip(_T3_KEYS, numbers)), preset, overrides)


TABLE_1 = (
    PaperRow("Table 1", "RetinaNet w/ FPN, low-quality matches: none", {"BPR": 86.82}, note="retinanet_bpr_none"),
    PaperRow("Table 1", "RetinaNet w/ FPN, low-quality matches: >= 0.4", {"BPR": 90.92}, note="retinanet_bpr_0.4"),
    PaperRow("Table 1", "RetinaNet w/ FPN, low-quality matches: all", {"BPR": 99.23}, note="retinanet_bpr_all"),
    PaperRow("Table 1", "FCOS w/o FPN (P4 only)", {"BPR": 95.55}, note="fcos_bpr_p4"),
    PaperRow("Table 1", "FCOS w/ FPN", {"BPR": 98.40}, note="fcos_bpr_fpn"),
)

TABLE_2 = (
    PaperRow("Table 2", "w/o FPN (P4 only)", {"ambiguous": 23.16, "ambiguous_diff_class": 17.84},
             note="ambiguous_p4 / ambiguous_diff_class_p4"),
    PaperRow("Table 2", "w/ FPN", {"ambiguous": 7.14, "ambiguous_diff_class": 3.75},
             note="ambiguous_fpn / ambiguous_diff_class_fpn"),
    PaperRow("Table 2", "detections from ambiguous locations (text, Section 4.1.1)",
             {"detections_ambiguous": 2.3, "detections_ambiguous_diff_class": 1.5}, preset="fcos_r50_fpn_1x"),
)

TABLE_3 = (
    _t3("RetinaNet, C5, no GN, nms .50", (35.9, 56.0, 38.2, 20.0, 39.8, 47.4, 31.0, 49.4, 52.5), "retinanet_r50_fpn_1x"),
    _t3("FCOS, C5, no GN, nms .50", (36.3, 54.8, 38.7, 20.5, 39.8, 47.8, 31.5, 50.6, 53.5), "fcos_r50_c5"),
    _t3("FCOS, P5, no GN, nms .50", (36.4, 54.9, 38.8, 19.7, 39.7, 48.8, 31.4, 50.6, 53.4), "fcos_r50_c5",
        ("model.p6p7_from=p5",)),
    _t3("FCOS, P5, no GN, nms .60", (36.5, 54.5, 39.2, 19.8, 40.0, 48.9, 31.3, 51.2, 54.5), "fcos_r50_c5",
        ("model.p6p7_from=p5", "postprocess.nms_thresh=0.6")),
    _t3("FCOS, P5, GN, nms .60", (37.1, 55.9, 39.8, 21.3, 41.0, 47.8, 31.4, 51.4, 54.9), "fcos_r50_fpn_1x"),
    _t3("+ ctr. on reg.", (37.4, 56.1, 40.3, 21.8, 41.2, 48.8, 31.5, 51.7, 55.2), "fcos_r50_fpn_1x",
        ("model.centerness_on=reg",)),
    _t3("+ ctr. sampling", (38.1, 56.7, 41.4, 22.6, 41.6, 50.4, 32.1, 52.8, 56.3), "fcos_r50_fpn_1x",
        ("model.centerness_on=reg", "assign.center_sampling_radius=1.5")),
    _t3("+ GIoU", (38.3, 57.1, 41.0, 21.9, 42.4, 49.5, 32.0, 52.9, 56.5), "fcos_r50_fpn_1x",
        ("model.centerness_on=reg", "assign.center_sampling_radius=1.5", "loss.box_loss=giou",
         "loss.centerness_weighted_box_loss=true")),
    _t3("+ Normalization", (38.6, 57.4, 41.4, 22.3, 42.5, 49.8, 32.3, 53.4, 57.1), "fcos_imprv_r50_fpn_1x"),
)

_T4_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
TABLE_4 = (
    PaperRow("Table 4", "None", dict(zip(_T4_KEYS, (33.5, 52.6, 35.2, 20.8, 38.5, 42.6))), "fcos_r50_fpn_1x",
             ("model.centerness_on=none", "postprocess.centerness_mode=none")),
    PaperRow("Table 4", "center-ness† (from the predicted box)", dict(zip(_T4_KEYS, (33.5, 52.4, 35.1, 20.8, 37.8, 42.8))),
             "fcos_r50_fpn_1x", ("model.centerness_on=none", "postprocess.centerness_mode=from_box")),
    PaperRow("Table 4", "center-ness (learned branch)", dict(zip(_T4_KEYS, (37.1, 55.9, 39.8, 21.3, 41.0, 47.8))),
             "fcos_r50_fpn_1x"),
    PaperRow("Table 4", "oracle (ground-truth center-ness at test time)", {}, "fcos_r50_fpn_1x",
             eval_overrides=("postprocess.centerness_mode=oracle",), note="not in the paper; asked for by users"),
)

TABLE_5 = (
    PaperRow("Table 5", "FCOS ResNet-101-FPN", dict(zip(_T4_KEYS, (41.5, 60.7, 45.0, 24.4, 44.8, 51.6))), "fcos_r101_fpn_2x"),
    PaperRow("Table 5", "FCOS ResNeXt-32x8d-101-FPN", dict(zip(_T4_KEYS, (42.7, 62.2, 46.1, 26.0, 45.6, 52.6))),
             "fcos_x101_32x8d_fpn_2x"),
    PaperRow("Table 5", "FCOS ResNeXt-64x4d-101-FPN", dict(zip(_T4_KEYS, (43.2, 62.8, 46.6, 26.5, 46.2, 53.3))),
             "fcos_x101_64x4d_fpn_2x"),
    PaperRow("Table 5", "FCOS w/ improvements ResNeXt-64x4d-101-FPN",
             dict(zip(_T4_KEYS, (44.7, 64.1, 48.4, 27.6, 47.5, 55.6))), "fcos_imprv_x101_64x4d_fpn_2x"),
)

TABLE_6 = (
    PaperRow("Table 6", "RPN w/ FPN & GN (ReImpl.)", {"AR100": 44.7, "AR1000": 56.9}, "rpn_r50_fpn_gn_1x"),
    PaperRow("Table 6", "FCOS w/ GN w/o center-ness", {"AR100": 48.0, "AR1000": 59.3}, "fcos_rpn_r50_fpn_1x",
             ("model.centerness_on=none", "postprocess.centerness_mode=none")),
    PaperRow("Table 6", "FCOS w/ GN", {"AR100": 52.8, "AR1000": 60.3}, "fcos_rpn_r50_fpn_1x"),
)

TABLE_7 = (
    PaperRow("Table 7", "Original RetinaNet", {"AP": 39.5, "AP50": 63.6, "AP75": 41.8, "AP90": 10.6}, "retinanet_r50_fpn_1x"),
    PaperRow("Table 7", "RetinaNet w/ GN", {"AP": 40.0, "AP50": 64.5, "AP75": 42.2, "AP90": 10.4}, "retinanet_r50_fpn_1x",
             ("model.head_norm=gn",)),
    PaperRow("Table 7", "FCOS", {"AP": 40.5, "AP50": 64.7, "AP75": 42.6, "AP90": 13.1}, "fcos_r50_fpn_1x"),
)

# Table 8 keeps the center-ness branch: without it the paper gets 33.5 (Table 4), not 35.7-36.6.
TABLE_8 = (
    PaperRow("Table 8", "RetinaNet (#A=1), C5", {"AP": 32.5}, "retinanet_r50_fpn_1x_1anchor"),
    PaperRow("Table 8", "RetinaNet (#A=9), C5", {"AP": 35.7}, "retinanet_r50_fpn_1x"),
    PaperRow("Table 8", "FCOS (pure), C5", {"AP": 35.7}, "fcos_r50_c5",
             ("loss.box_loss=smooth_l1", "model.learnable_scale=false")),
    PaperRow("Table 8", "FCOS, P5", {"AP": 35.8}, "fcos_r50_c5",
             ("model.p6p7_from=p5", "loss.box_loss=smooth_l1", "model.learnable_scale=false")),
    PaperRow("Table 8", "FCOS, P5, GN", {"AP": 36.3}, "fcos_r50_c5",
             ("model.p6p7_from=p5", "model.head_norm=gn", "train.grad_clip=0", "loss.box_loss=smooth_l1",
              "model.learnable_scale=false")),
    PaperRow("Table 8", "FCOS, P5, GN, Scalar", {"AP": 36.4}, "fcos_r50_c5",
             ("model.p6p7_from=p5", "model.head_norm=gn", "train.grad_clip=0", "loss.box_loss=smooth_l1")),
    PaperRow("Table 8", "FCOS, P5, GN, Scalar, IoU", {"AP": 36.6}, "fcos_r50_c5",
             ("model.p6p7_from=p5", "model.head_norm=gn", "train.grad_clip=0")),
)

TABLES = {
    "Table 1": TABLE_1, "Table 2": TABLE_2, "Table 3": TABLE_3, "Table 4": TABLE_4,
    "Table 5": TABLE_5, "Table 6": TABLE_6, "Table 7": TABLE_7, "Table 8": TABLE_8,
}


def table_values(rows: tuple[PaperRow, ...]) -> dict[str, float]:
    """``{note key: value}`` of the statistics rows of Tables 1 and 2 (keys of ``fcos-lab stats``)."""
    values: dict[str, float] = {}
    for row in rows:
        keys = [k.strip() for k in row.note.split("/")] if row.note else []
        for key, value in zip(keys, row.values.values()):
            values[key] = value
    return values


# Tables 1 and 2 by the keys of ``fcos-lab stats`` (fcos_bpr_fpn, ambiguous_p4, ...), in percent.
STATISTICS_VALUES: dict[str, float] = table_values(TABLE_1 + TABLE_2)

# The row each row is compared with in the paper's text: Tables 3, 5 and 8 add one change per row
# (each against the row above), Tables 4 and 6 against their first row (no center-ness, the RPN), and
# Tables 1, 2 and 7 pair the rows they discuss (FPN against P4 only, FCOS against RetinaNet w/ GN).
_AGAINST_PREVIOUS = ("Table 3", "Table 5", "Table 8")
_AGAINST_FIRST = ("Table 4", "Table 6")
_PAIRS = {
    ("Table 1", "FCOS w/ FPN"): "FCOS w/o FPN (P4 only)",
    ("Table 1", "RetinaNet w/ FPN, low-quality matches: >= 0.4"): "RetinaNet w/ FPN, low-quality matches: none",
    ("Table 1", "RetinaNet w/ FPN, low-quality matches: all"): "RetinaNet w/ FPN, low-quality matches: >= 0.4",
    ("Table 2", "w/ FPN"): "w/o FPN (P4 only)",
    ("Table 7", "RetinaNet w/ GN"): "Original RetinaNet",
    ("Table 7", "FCOS"): "RetinaNet w/ GN",
}


def reference_row(row: PaperRow) -> str:
    """The label of the row ``row`` is compared with in the paper ("" for a table's baseline)."""
    rows = TABLES.get(row.table, ())
    labels = [r.row for r in rows]
    if row.row not in labels:
        return ""
    index = labels.index(row.row)
    if row.table in _AGAINST_PREVIOUS:
        return labels[index - 1] if index else ""
    if row.table in _AGAINST_FIRST:
        return labels[0] if index else ""
    return _PAIRS.get((row.table, row.row), "")


def rows_of_preset(preset: str) -> tuple[PaperRow, ...]:
    """The rows a preset reproduces as it stands (no overrides at training or test time), in table order.

    ``fcos_r50_fpn_1x`` is Table 3's "FCOS, P5, GN, nms .60" and Table 4's learned center-ness; a preset that
    only serves as the base of rows with overrides (or none, like the demo) has no row.
    """
    return tuple(row for rows in TABLES.values() for row in rows
                 if row.preset == preset and not row.overrides and not row.eval_overrides)
