"""Best possible recall and ambiguous samples: the paper's Tables 1 and 2 (Section 4.1.1, Appendix 10).

For any COCO-format annotation file, from the image sizes in the file and the training resize (shorter
side 800, longer side <= 1333); no images are read.

- FCOS best possible recall (BPR): a box is recalled when at least one location regresses it after the
  size ranges and the minimal-area rule, i.e. ``matched_gt == m`` in :func:`fcos_lab.targets.assign`,
  the very code used in training. With FPN (P3-P7 and the size ranges of Section 3.2), without FPN
  (P4 only, stride 16, no size limit), and with FPN plus center sampling (Table 3) as an extra row.
- RetinaNet BPR with its 9 anchors per location (:mod:`fcos_lab.analysis.anchors`), positive at
  IoU >= 0.5, under the three low-quality rules of Table 1.
- Ambiguous samples (Table 2): the share of positive locations that fall into more than one box after
  the size ranges, for all boxes and for boxes of different classes only.

Every definition the paper leaves open is a keyword of :func:`compute_statistics`, recorded in the
output under ``"definitions"``; the defaults are the choices that reproduce the paper (see
``benchmarks/results_statistics.md`` for measured values beside the paper's). The one that matters is
the box convention: the paper's numbers come from Detectron / maskrcnn-benchmark boxes
``[x, y, x + w - 1, y + h - 1]``.

Images are processed in batches of equal padded size, so the per-image work is tensor code over
``[B, P, M]`` (FCOS) and ``[B, A', M]`` (RetinaNet, ``A'`` the anchors that can matter).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fcos_lab.analysis.anchors import LOW_QUALITY_CHOICES, anchor_recall, candidate_anchors, generate_anchors
from fcos_lab.analysis.dataset_boxes import BOX_CONVENTIONS, CROWD_CHOICES, PaddedBoxes, prepare_boxes
from fcos_lab.analysis.recall_ambiguity import tally_assignment
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.errors import ConfigError, FcosLabError
from fcos_lab.points import feature_shapes, make_locations
from fcos_lab.targets import GroundTruth, assign
from fcos_lab.threads import ThreadGovernor

INF = math.inf
FPN_STRIDES = (8, 16, 32, 64, 128)
FPN_SIZE_RANGES = ((0.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, INF))  # m_2..m_7, Sec. 3.2
LEVEL_NAMES = ("P3", "P4", "P5", "P6", "P7")

# Tables 1 and 2 of the paper (COCO minival), in percent.
PAPER_VALUES: dict[str, float] = {
    "fcos_bpr_fpn": 98.40,
    "fcos_bpr_p4": 95.55,
    "retinanet_bpr_none": 86.82,
    "retinanet_bpr_0.4": 90.92,
    "retinanet_bpr_all": 99.23,
    "ambiguous_fpn": 7.14,
    "ambiguous_p4": 23.16,
    "ambiguous_diff_class_fpn": 3.75,
    "ambiguous_diff_class_p4": 17.84,
}
ROW_LABELS: dict[str, str] = {
    "fcos_bpr_fpn": "FCOS BPR, FPN (P3-P7)",
    "fcos_bpr_p4": "FCOS BPR, P4 only",
    "fcos_bpr_fpn_center_sampling": "FCOS BPR, FPN + center sampling (extra)",
    "retinanet_bpr_none": "RetinaNet BPR, low-quality none",
    "retinanet_bpr_0.4": "RetinaNet BPR, low-quality >= 0.4",
    "retinanet_bpr_all": "RetinaNet BPR, low-quality all",
    "ambiguous_fpn": "Ambiguous samples, FPN",
    "ambiguous_p4": "Ambiguous samples, P4 only",
    "ambiguous_diff_class_fpn": "Ambiguous (diff. class), FPN",
    "ambiguous_diff_class_p4": "Ambiguous (diff. class), P4 only",
}
AMBIGUITY_UNITS = ("locations", "pairs")


def _load(ann_file: str | Path) -> dict[str, Any]:
    """The file's JSON, validated by the data module (DataError naming the file and the record)."""
    return load_coco_annotations(ann_file).dataset


def _batches(gt: PaddedBoxes, max_images: int, max_elements: int) -> list[tuple[tuple[int, int], np.ndarray]]:
    """Images with boxes grouped by padded size, each group cut into batches of at most ``max_images``
    images and ``B * P * M`` (FPN locations x padded boxes) of at most ``max_elements``."""
    num_boxes = gt.valid.sum(1).numpy()
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in np.flatnonzero(num_boxes > 0):
        groups[tuple(int(v) for v in gt.padded_sizes[i])].append(int(i))
    batches = []
    for size, members in sorted(groups.items()):
        members_arr = np.array(sorted(members, key=lambda i: -num_boxes[i]))
        num_points = sum(h * w for h, w in feature_shapes(size, len(FPN_STRIDES)))
        start = 0
        while start < len(members_arr):
            per_image = num_points * int(num_boxes[members_arr[start]])  # the first image has the most boxes
            count = max(1, min(max_images, max_elements // max(per_image, 1)))
            batches.append((size, members_arr[start : start + count]))
            start += count
    return batches


class _FcosRow:
    """Accumulates one FCOS setting (levels, size ranges, center sampling) over batches."""

    def __init__(self, name: str, strides: Sequence[int], size_ranges: Sequence[tuple[float, float]], *,
                 num_annotations: int, inclusive: bool, radius: float, location_offset: str):
        self.name, self.strides, self.size_ranges = name, tuple(strides), tuple(size_ranges)
        self.inclusive, self.radius, self.location_offset = inclusive, radius, location_offset
        self.recalled = torch.zeros(num_annotations, dtype=torch.bool)
        self.has_inside = torch.zeros(num_annotations, dtype=torch.bool)  # some location strictly inside
        self.has_candidate = torch.zeros(num_annotations, dtype=torch.bool)  # ... and in its size range
        self.boxes_per_level = torch.zeros((num_annotations, len(strides)), dtype=torch.bool)
        self.positive_per_level = torch.zeros(len(strides), dtype=torch.int64)
        self.counts = defaultdict(int)
        self.seconds = 0.0

    def update(self, padded_size: tuple[int, int], gt: GroundTruth, annotation_index: Tensor) -> None:
        start = time.perf_counter()
        shapes = feature_shapes(padded_size, 5)
        if len(self.strides) == 1:  # P4 only: the stride-16 map of the same backbone
            shapes = (shapes[int(math.log2(self.strides[0])) - 3],)
        locations = make_locations(shapes, self.strides, offset=self.location_offset)
        result = assign(locations, gt, self.size_ranges, size_range_inclusive=self.inclusive,
                        center_sampling_radius=self.radius)
        tally = tally_assignment(result, locations, gt)  # positive locations, ambiguous samples
        for key, value in tally.counts().items():
            self.counts[key] += value
        # Recall: a box is recalled when some location regresses it after the minimal-area rule.
        image_index, matched, level = tally.image_index, tally.matched_gt, tally.level_index
        hit_index = annotation_index[image_index, matched]
        self.recalled[hit_index] = True
        self.boxes_per_level[hit_index, level] = True
        self.positive_per_level += torch.bincount(level, minlength=len(self.strides))
        # Why a box is missed, looked up for the missed boxes only ([K, P] rather than [B, P, M]).
        missed = annotation_index >= 0
        missed[image_index, matched] = False
        missed_image, missed_box = missed.nonzero(as_tuple=True)
        missed_index = annotation_index[missed_image, missed_box]
        self.has_inside[missed_index[result.inside_box[missed_image, :, missed_box].any(dim=1)]] = True
        self.has_candidate[missed_index[result.candidates[missed_image, :, missed_box].any(dim=1)]] = True
        self.seconds += time.perf_counter() - start


def _percent(numerator: float, denominator: float) -> float | None:
    """``100 * numerator / denominator``, or None (JSON null) when nothing was counted."""
    return 100.0 * numerator / denominator if denominator else None


def compute_statistics(
    ann_file: str | Path,
    *,
    min_size: float = 800,
    max_size: float = 1333,
    batch_images: int = 32,
    max_batch_elements: int = 1 << 22,
    include_retinanet: bool = True,
    include_center_sampling: bool = True,
    size_range_inclusive: bool = True,
    center_sampling_radius: float = 1.5,
    ambiguity_unit: str = "locations",
    crowd: str = "exclude",
    drop_degenerate: bool = True,
    box_convention: str = "legacy",
    location_offset: str = "half_stride",
    anchor_offset: float = 0.5,
    anchor_detectron_rounding: bool = True,
    pos_thresh: float = 0.5,
    neg_thresh: float = 0.4,
) -> dict[str, Any]:
    """Tables 1 and 2 of the paper for a COCO-format annotation file.

    Args:
        ann_file: COCO-format JSON; image sizes are taken from its ``images``.
        min_size, max_size: the training resize (Section 4): shorter side 800, longer side <= 1333.
        batch_images, max_batch_elements: batch at most this many images, and at most this many
            ``B * P * M`` elements per :func:`~fcos_lab.targets.assign` call (memory and cache).
        include_retinanet, include_center_sampling: compute those rows.
        size_range_inclusive: ``m_{i-1} <= max(l*, t*, r*, b*) <= m_i`` as the official code (True), or
            strict (torchvision).
        center_sampling_radius: radius (in strides) of the extra center-sampling row (1.5 as Table 3).
        ambiguity_unit: ``"locations"``: ambiguous positive locations / positive locations, the paper's
            "ratio of the ambiguous samples to all positive samples" counted after the minimal-area rule
            (one sample per location). ``"pairs"``: counted before it, one sample per (location,
            candidate box) pair, so an ambiguous location in k boxes counts k times in both terms.
        crowd: ``"exclude"``: ``iscrowd`` boxes are dropped as by Detectron and maskrcnn-benchmark;
            ``"include"``: they are ordinary boxes, assigned and counted.
        drop_degenerate: boxes with no area after conversion are left out of the denominator, as
            maskrcnn-benchmark's ``remove_empty`` does; False counts them as never recalled.
        box_convention: ``"legacy"`` (default): Detectron's and maskrcnn-benchmark's ``x1 = x + w - 1``
            ("+1" pixel convention). FCOS assignment then sees ``[x, x + w - 1] * scale``, exactly the
            corners the official FCOS code compares locations with, and RetinaNet IoU uses Detectron's
            "+1" areas. This is what reproduces Tables 1 and 2 (to 0.03 points). ``"continuous"``:
            ``[x, x + w] * scale``, the boxes fcos_lab trains on; every box is about ``scale`` pixels
            wider and taller for FCOS, and all BPRs come out 0.1 to 1.0 points higher.
        location_offset: FCOS locations at ``floor(s/2) + x*s`` (``"half_stride"``) or ``x*s``.
        anchor_offset, anchor_detectron_rounding: the RetinaNet anchor layout (see
            :func:`fcos_lab.analysis.anchors.generate_anchors`); the defaults are Detectron's.
        pos_thresh, neg_thresh: RetinaNet's IoU thresholds.

    Returns:
        A JSON-serializable dict: the keys of :data:`PAPER_VALUES` and ``fcos_bpr_fpn_center_sampling``
        (percent), ``counts``, ``per_level``, ``unrecalled_box_ids`` (annotation ids per row),
        ``timings_s``, ``definitions`` and ``paper``.

    Raises:
        DataError: the file cannot be read or a record is malformed (the message names both).
        ConfigError: an unknown ``ambiguity_unit``, ``crowd`` or ``box_convention``.
    """
    for name, value, choices in (
        ("ambiguity_unit", ambiguity_unit, AMBIGUITY_UNITS),
        ("crowd", crowd, CROWD_CHOICES),
        ("box_convention", box_convention, BOX_CONVENTIONS),
    ):
        if value not in choices:
            raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
    definitions = dict(
        min_size=min_size, max_size=max_size, size_range_inclusive=size_range_inclusive,
        center_sampling_radius=center_sampling_radius, ambiguity_unit=ambiguity_unit, crowd=crowd,
        drop_degenerate=drop_degenerate, box_convention=box_convention, location_offset=location_offset,
        anchor_offset=anchor_offset, anchor_detectron_rounding=anchor_detectron_rounding,
        pos_thresh=pos_thresh, neg_thresh=neg_thresh,
    )
    timings: dict[str, float] = {}
    start = time.perf_counter()
    data = _load(ann_file)
    gt_all, info = prepare_boxes(data, ann_file, min_size=min_size, max_size=max_size,
                                 box_convention=box_convention, crowd=crowd, drop_degenerate=drop_degenerate)
    timings["load"] = time.perf_counter() - start
    num_annotations = info["num_annotations"]

    common = dict(num_annotations=num_annotations, inclusive=size_range_inclusive, location_offset=location_offset)
    fcos_rows = [
        _FcosRow("fcos_fpn", FPN_STRIDES, FPN_SIZE_RANGES, radius=0.0, **common),
        _FcosRow("fcos_p4", (16,), ((0.0, INF),), radius=0.0, **common),
    ]
    if include_center_sampling:
        fcos_rows.append(_FcosRow("fcos_fpn_center_sampling", FPN_STRIDES, FPN_SIZE_RANGES,
                                  radius=center_sampling_radius, **common))
    rules = LOW_QUALITY_CHOICES if include_retinanet else ()
    anchor_recalled = {rule: torch.zeros(num_annotations, dtype=torch.bool) for rule in rules}
    anchor_positives = dict.fromkeys(rules, 0)
    anchor_kwargs = dict(offset=anchor_offset, detectron_rounding=anchor_detectron_rounding)
    anchors_for_size: tuple[tuple[int, int], Tensor] | None = None
    timings["retinanet"] = 0.0

    threads = ThreadGovernor()  # a busy machine: only the cores others leave free (fcos_lab/threads.py)
    for padded_size, members in _batches(gt_all, batch_images, max_batch_elements):
        threads.step()
        index = torch.from_numpy(members)
        num_boxes = int(gt_all.valid[index].sum(1).max())
        valid = gt_all.valid[index, :num_boxes]
        gt = GroundTruth(gt_all.boxes[index, :num_boxes], gt_all.labels[index, :num_boxes], valid,
                         torch.zeros_like(valid))
        annotation_index = gt_all.annotation_index[index, :num_boxes]
        for row in fcos_rows:
            row.update(padded_size, gt, annotation_index)
        if rules:
            tick = time.perf_counter()
            shapes = feature_shapes(padded_size, 5)
            # Deviation from paper: anchors cover the padded image (torchvision, detectron2), not Detectron's
            # fixed 1344 x 1344 field, whose extra anchors lie outside the image.
            if anchors_for_size is None or anchors_for_size[0] != padded_size:
                anchors_for_size = (padded_size, generate_anchors(shapes, **anchor_kwargs))
            iou_boxes = gt_all.iou_boxes[index, :num_boxes]
            image_index, anchor_index = candidate_anchors(iou_boxes, valid, shapes, pos_thresh=pos_thresh, **anchor_kwargs)
            matched = anchor_recall(anchors_for_size[1], iou_boxes, valid, image_index, anchor_index,
                                    pos_thresh=pos_thresh, neg_thresh=neg_thresh, low_quality_rules=rules)
            for rule, (recalled, positives) in matched.items():
                anchor_recalled[rule][annotation_index[recalled]] = True
                anchor_positives[rule] += positives
            timings["retinanet"] += time.perf_counter() - tick

    counted = torch.from_numpy(info["counted"])
    annotation_ids = info["annotation_ids"]
    threads.close()
    num_counted = int(counted.sum())
    stats: dict[str, Any] = {}
    counts: dict[str, Any] = {"num_images": info["num_images"], "num_images_with_boxes": info["num_images_with_boxes"],
                              "num_annotations": num_annotations, "num_boxes": num_counted,
                              "num_crowd": info["num_crowd"], "num_degenerate": info["num_degenerate"]}
    per_level: dict[str, Any] = {}
    unrecalled: dict[str, list[int]] = {}
    for row in fcos_rows:
        recalled = row.recalled & counted
        suffix = row.name.removeprefix("fcos_")
        stats[f"fcos_bpr_{suffix}"] = _percent(int(recalled.sum()), num_counted)
        positives = row.counts[f"positive_{ambiguity_unit}"]
        stats[f"ambiguous_{suffix}"] = _percent(row.counts[f"ambiguous_{ambiguity_unit}"], positives)
        stats[f"ambiguous_diff_class_{suffix}"] = _percent(row.counts[f"ambiguous_diff_class_{ambiguity_unit}"], positives)
        missed = counted & ~row.recalled  # has_inside / has_candidate are only filled in for these
        counts[row.name] = {
            "recalled_boxes": int(recalled.sum()),
            # Why the others are missed: no location strictly inside; locations inside but none in the
            # size range (or center region); or every candidate location went to a smaller box.
            "unrecalled_no_location_inside": int((missed & ~row.has_inside).sum()),
            "unrecalled_outside_size_ranges": int((missed & row.has_inside & ~row.has_candidate).sum()),
            "unrecalled_lost_to_smaller_boxes": int((missed & row.has_candidate).sum()),
            **row.counts,
        }
        names = LEVEL_NAMES if len(row.strides) == len(LEVEL_NAMES) else ("P4",)
        per_level[row.name] = {
            name: {"positive_locations": int(row.positive_per_level[i]), "boxes": int(row.boxes_per_level[:, i].sum())}
            for i, name in enumerate(names)
        }
        unrecalled[row.name] = annotation_ids[(counted & ~row.recalled).numpy()].tolist()
        timings[row.name] = row.seconds
    for rule in rules:
        recalled = anchor_recalled[rule] & counted
        stats[f"retinanet_bpr_{rule}"] = _percent(int(recalled.sum()), num_counted)
        counts[f"retinanet_{rule}"] = {"recalled_boxes": int(recalled.sum()), "positive_anchors": anchor_positives[rule]}
        unrecalled[f"retinanet_{rule}"] = annotation_ids[(counted & ~anchor_recalled[rule]).numpy()].tolist()
    timings["total"] = time.perf_counter() - start
    return {
        "ann_file": str(ann_file),
        **stats,
        "counts": counts,
        "per_level": per_level,
        "unrecalled_box_ids": unrecalled,
        "timings_s": timings,
        "definitions": definitions,
        "paper": dict(PAPER_VALUES),
    }


def format_table(stats: dict[str, Any]) -> str:
    """A Markdown table of the paper's values beside the measured ones (percent)."""
    lines = ["| row | key | paper (%) | measured (%) | measured - paper |", "|---|---|---:|---:|---:|"]
    for key, label in ROW_LABELS.items():
        if key not in stats:
            continue
        paper, measured = PAPER_VALUES.get(key), stats[key]
        paper_text = f"{paper:.2f}" if paper is not None else "-"
        measured_text = f"{measured:.2f}" if measured is not None else "n/a"
        diff_text = f"{measured - paper:+.2f}" if paper is not None and measured is not None else "-"
        lines.append(f"| {label} | `{key}` | {paper_text} | {measured_text} | {diff_text} |")
    counts = stats.get("counts", {})
    if counts:
        lines.append("")
        lines.append(f"{counts['num_boxes']} boxes in {counts['num_images_with_boxes']} of {counts['num_images']} images "
                     f"({counts['num_crowd']} crowd, {counts['num_degenerate']} degenerate); "
                     f"{stats.get('timings_s', {}).get('total', float('nan')):.1f} s.")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``fcos-lab stats --ann FILE [--json] [--out DIR]``: print the table (or JSON); write both to DIR."""
    parser = argparse.ArgumentParser(prog="fcos-lab stats", description=__doc__.split("\n")[0])
    parser.add_argument("--ann", required=True, help="COCO-format annotation JSON")
    parser.add_argument("--json", action="store_true", help="print the full statistics as JSON")
    parser.add_argument("--out", help="directory to write stats.json and table.md into")
    parser.add_argument("--no-retinanet", action="store_true", help="skip the RetinaNet rows")
    parser.add_argument("--box-convention", choices=BOX_CONVENTIONS, default="legacy")
    parser.add_argument("--ambiguity-unit", choices=AMBIGUITY_UNITS, default="locations")
    parser.add_argument("--crowd", choices=CROWD_CHOICES, default="exclude")
    parser.add_argument("--strict-size-ranges", action="store_true", help="m_{i-1} < max < m_i (torchvision)")
    args = parser.parse_args(argv)
    try:
        stats = compute_statistics(
            args.ann, include_retinanet=not args.no_retinanet, box_convention=args.box_convention,
            ambiguity_unit=args.ambiguity_unit, crowd=args.crowd, size_range_inclusive=not args.strict_size_ranges,
        )
    except FcosLabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = format_table(stats)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
        (out / "table.md").write_text(table)
    print(json.dumps(stats, indent=1) if args.json else table, end="" if not args.json else "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
