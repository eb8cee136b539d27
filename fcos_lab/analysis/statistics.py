"""Best possible recall and ambiguous samples: the paper's Tables 1 and 2 (Section 4.1.1, Appendix 10).

For any COCO-format annotation file, from the image sizes in the file and the training resize (shorter
side 800, longer side <= 1333); no images are read.

- FCOS best possible recall (BPR): a box is recalled when at least one location regresses it after the
  size ranges and the minimal-area rule, i.e. ``matched_gt == m`` in the assignment of
  :class:`fcos_lab.objective.Objective`, the very code used in training. With FPN (P3-P7 and the size ranges of Section 3.2), without FPN
  (P4 only, stride 16, no size limit), and with FPN plus center sampling (Table 3) as an extra row.
- RetinaNet BPR with its 9 anchors per location (:mod:`fcos_lab.anchor_based.anchors`), positive at
  IoU >= 0.5, under the three low-quality rules of Table 1.
- Ambiguous samples (Table 2): the share of positive locations that fall into more than one box after
  the size ranges, for all boxes and for boxes of different classes only.

Every definition the paper leaves open is a config switch or a keyword of :func:`compute_statistics`,
recorded in the output under ``"definitions"``; the defaults are the choices that reproduce the paper (see
``benchmarks/results_statistics.md`` for measured values beside the paper's). The one that matters is
the box convention: the paper's numbers come from Detectron / maskrcnn-benchmark boxes
``[x, y, x + w - 1, y + h - 1]``.

Images are processed in batches of equal padded size, so the per-image work is tensor code over
``[B, P, M]`` (FCOS) and ``[B, A', M]`` (RetinaNet, ``A'`` the anchors that can matter).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fcos_lab import paper
from fcos_lab.analysis.dataset_boxes import CROWD_CHOICES, boxes_for_config
from fcos_lab.analysis.recall_ambiguity import AMBIGUITY_UNITS, accumulate, percent
from fcos_lab.anchor_based.anchors import LOW_QUALITY_CHOICES, anchor_recall, candidate_anchors, generate_anchors
from fcos_lab.boxes import BOX_CONVENTIONS
from fcos_lab.checkpoint import atomic_write_text
from fcos_lab.config import Config
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.errors import ConfigError, FcosLabError
from fcos_lab.objective import Objective
from fcos_lab.points import grid_shapes
from fcos_lab.presets import resolve
from fcos_lab.targets import GroundTruth
from fcos_lab.threads import ThreadGovernor

# Tables 1 and 2 of the paper (COCO minival), in percent, by the keys of this module's output.
PAPER_VALUES: dict[str, float] = paper.STATISTICS_VALUES
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
# The preset whose assignment Tables 1 and 2 describe: the paper's main model at the training resize.
STATISTICS_PRESET = "fcos_r50_fpn_1x"


def statistics_config(box_convention: str = "legacy", overrides: list[str] | tuple[str, ...] | dict[str, Any] = ()) -> Config:
    """:data:`STATISTICS_PRESET` with the ``box_convention`` (``data.box_convention``) and dotted overrides.

    ``"legacy"`` boxes (the authors' ``[x, y, x + w - 1, y + h - 1]`` with "+1" areas) are the default:
    they are what produced the paper's numbers.
    """
    if box_convention not in BOX_CONVENTIONS:
        raise ConfigError(f"box_convention must be one of {BOX_CONVENTIONS}, got {box_convention!r}")
    config = resolve(STATISTICS_PRESET, {"data.box_convention": box_convention})
    return resolve(config, overrides)


def compute_statistics(
    ann_file: str | Path,
    config: Config | None = None,
    *,
    box_convention: str | None = None,
    overrides: list[str] | tuple[str, ...] | dict[str, Any] = (),
    batch_images: int = 32,
    max_batch_elements: int = 1 << 22,
    include_retinanet: bool = True,
    include_center_sampling: bool = True,
    center_sampling_radius: float = paper.CENTER_SAMPLING_RADIUS,
    ambiguity_unit: str = "locations",
    crowd: str = "exclude",
    drop_degenerate: bool = True,
    anchor_offset: float = 0.5,
    anchor_detectron_rounding: bool = True,
    pos_thresh: float = 0.5,
    neg_thresh: float = 0.4,
) -> dict[str, Any]:
    """Tables 1 and 2 of the paper for a COCO-format annotation file.

    The FCOS rows assign with :class:`~fcos_lab.objective.Objective` of ``config`` (the training code, every
    switch included): "FPN" is the config's own levels and size ranges, "P4 only" its
    :meth:`~fcos_lab.objective.Objective.without_fpn`, and the extra center-sampling row the config with
    ``center_sampling_radius`` (unless the config already samples centers).

    Args:
        ann_file: COCO-format JSON; image sizes are taken from its ``images``.
        config: whose objective, resize (``input``) and box convention (``data.box_convention``) to use;
            default :func:`statistics_config` (the paper's main model with "legacy" boxes).
        box_convention: replaces ``data.box_convention`` of the config: ``"legacy"`` (Detectron's and
            maskrcnn-benchmark's ``x1 = x + w - 1`` and "+1" areas, which reproduce Tables 1 and 2 to 0.03
            points) or ``"continuous"`` (``[x, x + w]``, as fcos_lab trains by default).
        overrides: dotted overrides on the config (``assign.size_range_inclusive=false``, ...).
        batch_images, max_batch_elements: batch at most this many images, and at most this many
            ``B * P * M`` elements per assignment call (memory and cache).
        include_retinanet, include_center_sampling: compute those rows.
        center_sampling_radius: radius (in strides) of the extra center-sampling row (1.5 as Table 3).
        ambiguity_unit: ``"locations"``: ambiguous positive locations / positive locations, the paper's
            "ratio of the ambiguous samples to all positive samples" counted after the minimal-area rule
            (one sample per location). ``"pairs"``: counted before it, one sample per (location,
            candidate box) pair, so an ambiguous location in k boxes counts k times in both terms.
        crowd: ``"exclude"``: ``iscrowd`` boxes are dropped as by Detectron and maskrcnn-benchmark;
            ``"include"``: they are ordinary boxes, assigned and counted.
        drop_degenerate: boxes with no area after conversion are left out of the denominator, as
            maskrcnn-benchmark's ``remove_empty`` does; False counts them as never recalled.
        anchor_offset, anchor_detectron_rounding: the RetinaNet anchor layout (see
            :func:`fcos_lab.anchor_based.anchors.generate_anchors`); the defaults are Detectron's.
        pos_thresh, neg_thresh: RetinaNet's IoU thresholds.

    Returns:
        A JSON-serializable dict: the keys of :data:`PAPER_VALUES` and ``fcos_bpr_fpn_center_sampling``
        (percent), ``counts``, ``per_level``, ``unrecalled_box_ids`` (annotation ids per row),
        ``timings_s``, ``definitions`` and ``paper``.

    Raises:
        DataError: the file cannot be read or a record is malformed (the message names both).
        ConfigError: an unknown ``ambiguity_unit``, ``crowd`` or ``box_convention``, or a bad override.
    """
    for name, value, choices in (("ambiguity_unit", ambiguity_unit, AMBIGUITY_UNITS), ("crowd", crowd, CROWD_CHOICES)):
        if value not in choices:
            raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
    if config is None:
        config = statistics_config(box_convention or "legacy", overrides)
    else:
        config = resolve(config, ({"data.box_convention": box_convention} if box_convention else {}))
        config = resolve(config, overrides)
    objective = Objective.from_config(config)
    objectives = {"fcos_fpn": objective, "fcos_p4": objective.without_fpn()}
    if include_center_sampling:
        radius = objective.center_sampling_radius or center_sampling_radius
        objectives["fcos_fpn_center_sampling"] = replace(objective, center_sampling_radius=radius)
    a, i = config.assign, config.input
    definitions = dict(
        preset=config.name, min_size=i.min_size, max_size=i.max_size, resize_rule=i.resize_rule,
        box_convention=config.data.box_convention, size_range_inclusive=a.size_range_inclusive,
        location_offset=a.location_offset, center_sampling_radius=objectives.get("fcos_fpn_center_sampling", objective).center_sampling_radius,
        center_sampling_rule=a.center_sampling_rule, ambiguity_unit=ambiguity_unit, crowd=crowd,
        drop_degenerate=drop_degenerate, anchor_offset=anchor_offset, anchor_detectron_rounding=anchor_detectron_rounding,
        pos_thresh=pos_thresh, neg_thresh=neg_thresh,
    )
    timings: dict[str, float] = {}
    start = time.perf_counter()
    data = load_coco_annotations(ann_file).dataset
    gt_all, info = boxes_for_config(data, ann_file, config, crowd=crowd, drop_degenerate=drop_degenerate)
    timings["load"] = time.perf_counter() - start
    num_annotations = info["num_annotations"]

    rules = LOW_QUALITY_CHOICES if include_retinanet else ()
    anchor_recalled = {rule: torch.zeros(num_annotations, dtype=torch.bool) for rule in rules}
    anchor_positives = dict.fromkeys(rules, 0)
    anchor_kwargs = dict(offset=anchor_offset, detectron_rounding=anchor_detectron_rounding)
    anchors_for_size: list[tuple[tuple[int, int], Tensor]] = []
    timings["retinanet"] = 0.0

    threads = ThreadGovernor()  # a busy machine: only the cores others leave free (fcos_lab/threads.py)

    def retinanet(padded_size: tuple[int, int], index: Tensor, gt: GroundTruth, annotation_index: Tensor) -> None:
        threads.step()
        if not rules:
            return
        tick = time.perf_counter()
        shapes = grid_shapes(padded_size, paper.STRIDES)
        # Deviation from paper: anchors cover the padded image (torchvision, detectron2), not Detectron's
        # fixed 1344 x 1344 field, whose extra anchors lie outside the image.
        if not anchors_for_size or anchors_for_size[0][0] != padded_size:
            anchors_for_size[:] = [(padded_size, generate_anchors(shapes, **anchor_kwargs))]
        iou_boxes = gt_all.iou_boxes[index, : gt.boxes.shape[1]]
        image_index, anchor_index = candidate_anchors(iou_boxes, gt.valid, shapes, pos_thresh=pos_thresh, **anchor_kwargs)
        matched = anchor_recall(anchors_for_size[0][1], iou_boxes, gt.valid, image_index, anchor_index,
                                pos_thresh=pos_thresh, neg_thresh=neg_thresh, low_quality_rules=rules)
        for rule, (recalled, positives) in matched.items():
            anchor_recalled[rule][annotation_index[recalled]] = True
            anchor_positives[rule] += positives
        timings["retinanet"] += time.perf_counter() - tick

    rows = accumulate(gt_all, objectives, max_images=batch_images, max_elements=max_batch_elements,
                      num_annotations=num_annotations, on_batch=retinanet)

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
    for name, row in rows.items():
        summary = row.summary(counted, ambiguity_unit)
        suffix = name.removeprefix("fcos_")
        stats[f"fcos_bpr_{suffix}"] = summary.pop("best_possible_recall")
        stats[f"ambiguous_{suffix}"] = summary.pop("ambiguous")
        stats[f"ambiguous_diff_class_{suffix}"] = summary.pop("ambiguous_diff_class")
        per_level[name] = {
            level["level"]: {"positive_locations": level["positive locations"], "boxes": level["boxes regressed"]}
            for level in summary.pop("per_level")
        }
        timings[name] = summary.pop("seconds")
        summary.pop("num_boxes")
        counts[name] = summary
        unrecalled[name] = annotation_ids[(counted & ~row.recalled).numpy()].tolist()
    for rule in rules:
        recalled = anchor_recalled[rule] & counted
        stats[f"retinanet_bpr_{rule}"] = percent(int(recalled.sum()), num_counted)
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
    levels = list(stats.get("per_level", {}).get("fcos_fpn", {}))
    for key, label in ROW_LABELS.items():
        if key not in stats:
            continue
        if levels:  # the preset's own levels (P2-P7 with a P2 level)
            label = label.replace("P3-P7", f"{levels[0]}-{levels[-1]}")
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
    """``fcos-lab stats --ann FILE [--json] [--out DIR] [--preset P] [KEY=VALUE ...]``: the table (or JSON)."""
    parser = argparse.ArgumentParser(prog="fcos-lab stats", description=__doc__.split("\n")[0])
    parser.add_argument("--ann", required=True, help="COCO-format annotation JSON")
    parser.add_argument("--json", action="store_true", help="print the full statistics as JSON")
    parser.add_argument("--out", help="directory to write stats.json and table.md into")
    parser.add_argument("--no-retinanet", action="store_true", help="skip the RetinaNet rows")
    parser.add_argument("--preset", default=STATISTICS_PRESET, help="whose assignment (default: %(default)s)")
    parser.add_argument("--box-convention", choices=BOX_CONVENTIONS, default="legacy")
    parser.add_argument("--ambiguity-unit", choices=AMBIGUITY_UNITS, default="locations")
    parser.add_argument("--crowd", choices=CROWD_CHOICES, default="exclude")
    parser.add_argument("--strict-size-ranges", action="store_true", help="m_{i-1} < max < m_i (torchvision)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    args = parser.parse_args(argv)
    try:
        overrides = list(args.overrides) + (["assign.size_range_inclusive=false"] if args.strict_size_ranges else [])
        config = resolve(resolve(args.preset, {"data.box_convention": args.box_convention}), overrides)
        stats = compute_statistics(args.ann, config, include_retinanet=not args.no_retinanet,
                                   ambiguity_unit=args.ambiguity_unit, crowd=args.crowd)
        table = format_table(stats)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "stats.json", json.dumps(stats, indent=1) + "\n")
            atomic_write_text(out / "table.md", table)
    except FcosLabError as error:
        print(f"fcos-lab stats: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=1) if args.json else table, end="" if not args.json else "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
