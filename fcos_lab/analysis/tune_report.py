"""``fcos-lab tune``'s report, files and command line (see :mod:`fcos_lab.analysis.tune` for what it computes).

``fcos-lab tune --ann A.json [--preset P] [--levels p3|p2] [--max-ambiguity PCT] [--search-images N]
[--json] [--out DIR] [KEY=VALUE ...]`` prints the markdown report of :func:`format_report` (or, with
``--json``, the summary) and with ``--out`` writes ``tune.json``, ``report.md``, ``tune.html`` and
``tune.png`` (:mod:`fcos_lab.viz.tuning`) and ``box_sizes.html`` (the boxes against the recommended ranges,
:func:`fcos_lab.viz.dataset_statistics.box_size_histogram_figure`), ``plotly.min.js`` beside them; every
file is rendered first, then each is written whole.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fcos_lab.analysis.tune import LEVEL_CHOICES, TuneResult, tune
from fcos_lab.errors import FcosLabError

DEFAULT_PRESET = "fcos_r50_fpn_1x"


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _boundaries(size_ranges: Sequence[Sequence[Any]]) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in [size_ranges[0][0]]
                     + [hi for _, hi in size_ranges])


def format_report(summary: Mapping[str, Any]) -> str:
    """The markdown report of a :meth:`~fcos_lab.analysis.tune.TuneResult.summary`."""
    c, a, s = summary["counts"], summary["input_size"], summary["search"]
    levels = f"{summary['levels'][0]}-{summary['levels'][-1]}"
    lines = [
        f"# fcos-lab tune: {summary['ann_file']} (preset {summary['preset']})", "",
        (f"{c['images_with_boxes']} of {c['images']} images have usable boxes; {c['boxes']} boxes. "
         + ("The search uses all of them." if c["sample_images"] == c["images_with_boxes"] else
            f"Search sample: {c['sample_images']} images, {c['sample_boxes']} boxes.")), "",
        "## Input size", "",
        (f"`input.min_size={a['min_size']} input.max_size={a['max_size']}`"
         + (" (the preset's)" if (a["min_size"], a["max_size"]) == (a["preset_min_size"], a["preset_max_size"])
            else f" (preset: {a['preset_min_size']} / {a['preset_max_size']})")), "",
        *(f"- {reason}" for reason in a["reasons"]), "",
        f"## Size ranges ({levels})", "",
        (f"The search maximises the best possible recall (BPR, Table 1) subject to ambiguity (Table 2, share of "
         f"positive locations in several candidate boxes) <= {s['max_ambiguity']:.2f} %; recalls within "
         f"{s['bpr_tolerance']:g} points are equal, and then the setting closest to the reference's geometric "
         f"doubling wins. {len(s['candidates'])} settings tried on the sample in {s['seconds']:.1f} s; the best "
         f"few are measured on all images."), "",
        ("| setting | measured on | levels | m (range boundaries, px) | BPR % | ambiguous % | ambiguous, "
         "diff. class % | poorly covered % | boxes |"),
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        lines.append(f"| {row['setting']} | {row['measured_on']} | {row['levels'][0]}-{row['levels'][-1]} | "
                     f"{_boundaries(row['size_ranges'])} | {_number(row['best_possible_recall'])} | "
                     f"{_number(row['ambiguous'])} | {_number(row['ambiguous_diff_class'])} | "
                     f"{_number(row['poorly_covered_percent'])} | {row['num_boxes']} |")
    lines += [
        "", (f"Poorly covered: boxes no location regresses, or fewer than {summary['few_locations']} "
             "(after the minimal-area rule)."), "",
        "## P2 level (stride 4)", "", summary["p2"]["verdict"] + ".", "",
        "## Recommended overrides", "", "```",
        " ".join(summary["overrides"]), "```", "",
        (f"e.g. `fcos-lab train --preset {summary['preset']} "
         f"{' '.join([*summary['given_overrides'], *summary['overrides']])} ...`"),
        "",
    ]
    if summary["notes"]:
        lines += ["## Notes", "", *(f"- {note}" for note in summary["notes"]), ""]
    timings = ", ".join(f"{key} {value:.1f} s" for key, value in summary["seconds"].items())
    return "\n".join(lines + [f"Time: {timings}.", ""])


def write_outputs(result: TuneResult, out: str | Path) -> list[Path]:
    """``tune.json``, ``report.md``, ``tune.html``, ``tune.png``, ``box_sizes.html``, ``plotly.min.js`` into ``out``."""
    from plotly.offline import get_plotlyjs

    from fcos_lab.checkpoint import atomic_write_bytes, atomic_write_text
    from fcos_lab.viz.dataset_statistics import box_size_histogram_figure
    from fcos_lab.viz.tuning import tuning_figure, tuning_png

    out = Path(out)
    summary = result.summary()
    texts = {"tune.json": json.dumps(summary, indent=1) + "\n", "report.md": format_report(summary),
             "tune.html": tuning_figure(summary).to_html(include_plotlyjs="directory", full_html=True),
             "box_sizes.html": box_size_histogram_figure(result.box_widths, result.box_heights,
                                                         result.recommended_objective)
             .to_html(include_plotlyjs="directory", full_html=True),
             "plotly.min.js": get_plotlyjs()}
    png = tuning_png(summary)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        atomic_write_text(out / name, text)
    atomic_write_bytes(out / "tune.png", lambda handle: handle.write(png))
    return [out / name for name in [*texts, "tune.png"]]


def main(argv: Sequence[str] | None = None) -> int:
    """``fcos-lab tune --ann A.json [--preset P] [--levels p3|p2] [--json] [--out DIR] [KEY=VALUE ...]``."""
    parser = argparse.ArgumentParser(prog="fcos-lab tune", description=__doc__.split("\n")[0])
    parser.add_argument("--ann", required=True, help="COCO-format annotation JSON")
    parser.add_argument("--preset", default=DEFAULT_PRESET,
                        help="whose assignment, levels and input size to start from (default: %(default)s)")
    parser.add_argument("--levels", choices=LEVEL_CHOICES, help="search P3-P7 or P2-P7 (default: the preset's)")
    parser.add_argument("--max-ambiguity", type=float, help="ambiguity limit in percent (default: the reference's)")
    parser.add_argument("--search-images", type=int, default=500,
                        help="images in the search sample (default: %(default)s)")
    parser.add_argument("--bpr-tolerance", type=float, default=0.02,
                        help="recalls this close (points) count as equal (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--out", help="folder for tune.json, report.md and the figures (HTML, PNG)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    args = parser.parse_args(argv)
    try:
        from fcos_lab.presets import resolve

        config = resolve(args.preset, list(args.overrides))
        result = tune(args.ann, config, levels=args.levels, max_ambiguity=args.max_ambiguity,
                      search_images=args.search_images, bpr_tolerance=args.bpr_tolerance,
                      given_overrides=args.overrides)
        written = write_outputs(result, args.out) if args.out else []
    except FcosLabError as error:
        print(f"fcos-lab tune: error: {error}", file=sys.stderr)
        return 2
    summary = result.summary()
    print(json.dumps(summary, indent=1) if args.json else format_report(summary))
    if written:
        print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
