"""``fcos-lab errors``: TIDE's error breakdown of a detections file, as a report, JSON and figures.

``fcos-lab errors --detections D.json --ann A.json [--json] [--out DIR] [--preset P] [KEY=VALUE ...]`` prints
the markdown report of :func:`format_report` (or, with ``--json``, the summary of
:func:`fcos_lab.analysis.tide_breakdowns.analyze_errors`) and with ``--out`` writes ``errors.json``,
``report.md`` and the figures of :mod:`fcos_lab.viz.errors` as HTML (``plotly.min.js`` beside them), each
file written whole or not at all. The preset (with overrides) is the configuration the detections were
made with: it places their locations on the training assignment (Section 4.1.1's ambiguous locations).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fcos_lab.analysis.tide import MAIN_ERRORS, SPECIAL_ERRORS
from fcos_lab.analysis.tide_breakdowns import ErrorAnalysis, analyze_errors, load_inputs
from fcos_lab.errors import FcosLabError
from fcos_lab.paper import TABLE_2

DEFAULT_PRESET = "fcos_r50_fpn_1x"
BREAKDOWN_HEADINGS = {"size": "object size (COCO small < 32² <= medium < 96² <= large, px²)",
                      "level": "FPN level that predicted the detection (missed boxes: levels assigned to them)",
                      "centerness": "predicted center-ness",
                      "ambiguous": "location under the training assignment (Section 3.1)"}


def _number(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    return lines + ["| " + " | ".join(_number(v) for v in row) + " |" for row in rows]


def _ambiguity_section(share: Mapping[str, Any] | None, preset: str | None) -> list[str]:
    lines = [f"## Detections from ambiguous locations (Section 4.1.1, preset {preset})", ""]
    if share is None:
        return lines + ["Not available: the records have no level/location, or no preset was given.", ""]
    paper = next(row.values for row in TABLE_2 if "detections_ambiguous" in row.values)
    d = share["detections"]
    lines += [(f"{d['ambiguous']} of {d['total']} detections ({_number(d['ambiguous_percent'])} %) come from ambiguous "
               f"locations, {d['ambiguous_diff_class']} ({_number(d['ambiguous_diff_class_percent'])} %) from "
               f"locations inside boxes of different classes (paper: {paper['detections_ambiguous']} % and "
               f"{paper['detections_ambiguous_diff_class']} %)."), ""]
    rows = [("all detections", share["detections"]), ("false positives", share["false_positives"])]
    rows += [(f"  {name}", counts) for name, counts in share["by_type"].items()]
    lines += _table(["detections", "counted", "ambiguous", "%", "diff. classes", "%"],
                    [(name, c["total"], c["ambiguous"], c["ambiguous_percent"], c["ambiguous_diff_class"],
                      c["ambiguous_diff_class_percent"]) for name, c in rows])
    if share["unplaced"]:
        lines += ["", f"{share['unplaced']} detections have no location on the preset's grid: not counted."]
    return lines + [""]


def format_report(summary: Mapping[str, Any]) -> str:
    """The markdown report of a summary from :func:`~fcos_lab.analysis.tide_breakdowns.analyze_errors`."""
    counts, inputs, settings = summary["counts"], summary["inputs"], summary["settings"]
    ap_key = next(key for key in summary if key.startswith("AP") and key[2:].isdigit())
    evaluated = sum(counts[k] for k in ("tp", "cls", "loc", "both", "dupe", "bkg"))
    lines = [
        "# TIDE error analysis", "",
        (f"- detections: {inputs.get('detections', '?')} ({inputs['detections_count']} records; {evaluated} "
         f"evaluated, {counts['not_evaluated']} after the {settings['max_dets']} best of their image, "
         f"{counts['ignored']} ignored in crowd boxes)"),
        (f"- ground truth: {inputs.get('annotations', '?')} ({inputs['images']} images, {inputs['boxes']} boxes, "
         f"{inputs['categories']} categories)"),
        (f"- tidecv's definitions: foreground IoU {settings['foreground_iou']}, background IoU "
         f"{settings['background_iou']}; {ap_key} = {summary[ap_key]:.2f} (101-point, mean over classes)"), "",
        "## Main errors", "",
        "dAP: AP points gained by the oracle fix of that error type alone (tidecv's main errors).", "",
        *_table(["", *MAIN_ERRORS.values()], [("dAP", *(summary[n] for n in MAIN_ERRORS.values())),
                                              ("count", *(counts[k] for k in MAIN_ERRORS))]),
        "", (f"Counts: detections; Miss: boxes. {counts['tp']} true positives; {counts['covered']} unmatched boxes "
             "are counted with the Cls/Loc error that points at them."), "",
        "## Special errors", "",
        "FalsePos: every false positive ranked below every true positive; FalseNeg: every missed box removed.", "",
        *_table(["", *SPECIAL_ERRORS], [("dAP", *(summary[n] for n in SPECIAL_ERRORS))]), "",
        *_ambiguity_section(summary.get("ambiguous_locations"), settings.get("preset")),
    ]
    for grouping, rows in summary["breakdowns"].items():
        lines += [f"## Breakdown by {BREAKDOWN_HEADINGS.get(grouping, grouping)}", "",
                  "Counts of each TIDE type in the group, then the dAP of fixing only the group's errors of each type.",
                  ""]
        header = ["group", "dets", "tp", *MAIN_ERRORS, *(f"d{n}" for n in MAIN_ERRORS.values())]
        lines += _table(header, [(row["group"], row["detections"], row["counts"]["tp"],
                                  *(row["counts"][k] for k in MAIN_ERRORS), *(row["dAP"][n] for n in MAIN_ERRORS.values()))
                                 for row in rows])
        lines.append("")
    if summary["notes"]:
        lines += ["## Notes", "", *(f"- {note}" for note in summary["notes"]), ""]
    return "\n".join(lines)


def write_outputs(analysis: ErrorAnalysis, out: str | Path) -> list[Path]:
    """``errors.json``, ``report.md`` and the figures (HTML, ``plotly.min.js`` beside them) into ``out``.

    Everything is rendered before the first file is written, and each file is written atomically.
    """
    from plotly.offline import get_plotlyjs

    from fcos_lab.checkpoint import atomic_write_text
    from fcos_lab.viz.errors import breakdown_figures

    out = Path(out)
    texts = {"errors.json": json.dumps(analysis.summary, indent=1) + "\n", "report.md": format_report(analysis.summary)}
    for stem, figure in breakdown_figures(analysis.summary).items():
        texts[f"{stem}.html"] = figure.to_html(include_plotlyjs="directory", full_html=True)
    texts["plotly.min.js"] = get_plotlyjs()
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        atomic_write_text(out / name, text)
    return [out / name for name in texts]


def main(argv: Sequence[str] | None = None) -> int:
    """``fcos-lab errors --detections D.json --ann A.json [--json] [--out DIR] [--preset P] [KEY=VALUE ...]``."""
    parser = argparse.ArgumentParser(prog="fcos-lab errors", description=__doc__.split("\n")[0])
    parser.add_argument("--detections", required=True, help="COCO results JSON (fcos-lab eval --out)")
    parser.add_argument("--ann", required=True, help="COCO-format ground-truth JSON")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--out", help="folder for errors.json, report.md and the figures (HTML)")
    parser.add_argument("--preset", default=DEFAULT_PRESET, help="preset the detections were made with "
                        "(places their locations on the training assignment; default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    args = parser.parse_args(argv)
    try:
        from fcos_lab.presets import resolve

        config = resolve(args.preset, list(args.overrides))
        coco, detections = load_inputs(args.ann, args.detections)
        analysis = analyze_errors(coco, detections, config,
                                  sources={"detections": str(args.detections), "annotations": str(args.ann)})
        written = write_outputs(analysis, args.out) if args.out else []
    except FcosLabError as error:
        print(f"fcos-lab errors: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(analysis.summary, indent=1) if args.json else format_report(analysis.summary))
    if written:
        print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
