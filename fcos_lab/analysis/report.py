"""Measured-vs-paper results: what a notebook records and what the reproduction pipeline tabulates.

A notebook collects :class:`Measurement` rows in a :class:`Results` and writes ``results.json``
(every number with the paper's value, the scale, the hardware and the wall time). The pipeline reads
those files back and renders every table as Markdown and HTML.

A trained number trained over several seeds is their mean with a *spread* (the standard deviation over
seeds). Each row is compared with the row the paper compares it with (:func:`fcos_lab.paper.reference_row`),
and :func:`verdict` says whether the measured change goes the paper's way, the other way, or is too small
to tell from the spread.
"""

from __future__ import annotations

import html
import json
import math
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCALES = ("smoke", "workshop", "paper")
SAME = "same direction as the paper"
OPPOSITE = "opposite"
TOO_SMALL = "too small to tell at this scale"
NO_PAPER_EFFECT = "no difference in the paper"
# The paper prints one decimal: a paper difference under half of that is no difference.
PAPER_RESOLUTION = 0.05


def hardware_info() -> dict[str, Any]:
    """Machine, Python, torch and device, for the record."""
    import torch

    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.uname().processor,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@dataclass
class Measurement:
    """One measured number next to the paper's (``paper`` is None where the paper has no value).

    Attributes:
        measured: the value, or the mean over ``samples`` (one per seed).
        spread: the standard deviation over seeds; 0.0 for a deterministic number (a statistic of
            annotations, an evaluation of given weights); None when unknown (a single training).
        samples: the value of each seed, when trained over several.
        reference: the row of the same table this row is compared with ("" for none).
        weights: the given weights it was measured with ("" when trained here or not a model's number).
    """

    table: str
    row: str
    metric: str
    measured: float | None
    paper: float | None = None
    unit: str = "%"
    note: str = ""
    spread: float | None = None
    samples: list[float] | None = None
    reference: str = ""
    weights: str = ""

    @property
    def difference(self) -> float | None:
        if self.measured is None or self.paper is None:
            return None
        return self.measured - self.paper


@dataclass
class Results:
    """Everything a notebook measured, with its context."""

    notebook: str
    scale: str
    measurements: list[Measurement] = field(default_factory=list)
    hardware: dict[str, Any] = field(default_factory=hardware_info)
    parameters: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    wall_time_s: float | None = None
    complete: bool = False

    def add(self, table: str, row: str, metric: str, measured: float | None, paper: float | None = None,
            unit: str = "%", note: str = "", *, spread: float | None = None, samples: list[float] | None = None,
            reference: str = "", weights: str = "") -> None:
        """Record one number (NaN becomes None); see :class:`Measurement` for the keyword fields."""
        value = None if measured is None or (isinstance(measured, float) and math.isnan(measured)) else float(measured)
        self.measurements.append(Measurement(table, row, metric, value, paper, unit, note, spread,
                                             None if samples is None else [float(v) for v in samples],
                                             reference, weights))

    def add_metrics(self, table: str, row: str, measured: dict[str, float], paper: dict[str, float],
                    scale_to_percent: bool = True, note: str = "", *,
                    per_seed: list[dict[str, float]] | None = None, deterministic: bool = False,
                    reference: str = "", weights: str = "") -> None:
        """Add every metric of ``paper`` (and of ``measured`` not in it), fractions turned into percent.

        With ``per_seed`` (the metrics of each seed's training), each number is their mean with its
        spread and ``measured`` is not read; ``deterministic`` marks numbers without randomness (spread 0).
        """
        factor = 100.0 if scale_to_percent else 1.0
        keys = (per_seed[0] if per_seed else measured)
        for metric in list(paper) + [m for m in keys if m not in paper]:
            if per_seed:
                samples = [None if run.get(metric) is None else run[metric] * factor for run in per_seed]
                value, spread = seed_summary(samples)
                kept = None if value is None else [v for v in samples if v is not None]
            else:
                value = None if measured.get(metric) is None else measured[metric] * factor
                spread, kept = (0.0 if deterministic else None), None
            self.add(table, row, metric, value, paper.get(metric), note=note, spread=spread, samples=kept,
                     reference=reference, weights=weights)

    def save(self, out_dir: str | Path, complete: bool = True) -> Path:
        """Write ``results.json`` into ``out_dir`` (atomically) and return its path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.wall_time_s = round(time.time() - self.started, 2)
        self.complete = complete
        path = out / "results.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_clean(asdict(self)), indent=2))
        os.replace(tmp, path)
        return path

    def table(self) -> str:
        """The paper-vs-measured table of this notebook, as Markdown."""
        return markdown_table(self.measurements, scale=self.scale)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def seed_summary(samples: Iterable[float | None]) -> tuple[float | None, float | None]:
    """The mean of a number over seeds and its spread (sample standard deviation; None for one seed).

    A seed without the number (a NaN metric) makes the whole number unknown: ``(None, None)``.
    """
    values = list(samples)
    if not values or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def difference_spread(spread: float | None, reference_spread: float | None) -> float | None:
    """The spread a difference of two rows must exceed: the sum of their spreads (None when one is unknown).

    The sum, not the root of the sum of squares: an effect is claimed only when the two rows' mean ± spread
    intervals do not overlap, which is the conservative reading of "outside the seed spread".
    """
    if spread is None or reference_spread is None:
        return None
    return spread + reference_spread


def paired_spread(samples: list[float] | None, reference_samples: list[float] | None) -> float | None:
    """The spread of a difference measured seed by seed: the standard deviation of the per-seed differences.

    Both rows must hold one value per seed of the same seeds (as :func:`fcos_lab.analysis.experiments.run_rows`
    records them); otherwise None. Pairing removes what the two rows share within a seed (the same trained
    model, for Table 4's test-time variants), which the sum of their spreads would count twice.
    """
    if not samples or not reference_samples or len(samples) != len(reference_samples) or len(samples) < 2:
        return None
    return seed_summary([a - b for a, b in zip(samples, reference_samples)])[1]


def verdict(paper_difference: float | None, measured_difference: float | None, spread: float | None) -> str:
    """Whether a measured change goes the paper's way.

    Args:
        paper_difference: row minus its reference row in the paper (points).
        measured_difference: the same, measured (means over seeds).
        spread: :func:`difference_spread` of the two rows; None when unknown (single trainings).

    Returns:
        "" when there is nothing to compare (a value missing); :data:`NO_PAPER_EFFECT` when the paper's
        difference rounds to zero; :data:`TOO_SMALL` when the spread is unknown or the measured difference
        is within it; else :data:`SAME` or :data:`OPPOSITE`.
    """
    if paper_difference is None or measured_difference is None:
        return ""
    if abs(paper_difference) < PAPER_RESOLUTION:
        return NO_PAPER_EFFECT
    if spread is None or abs(measured_difference) <= spread:
        return TOO_SMALL
    return SAME if (paper_difference > 0) == (measured_difference > 0) else OPPOSITE


@dataclass(frozen=True)
class Comparison:
    """A row against its reference row, for one metric (``None`` fields: a value is missing)."""

    reference: str
    paper_difference: float | None
    measured_difference: float | None
    spread: float | None
    verdict: str


def compare_rows(measurements: list[Measurement]) -> list[Comparison | None]:
    """For each measurement, its :class:`Comparison` with its reference row (same table and metric), or None.

    The reference is looked up among ``measurements``; a reference row that was not recorded gives None.
    The spread of the difference is :func:`paired_spread` when both rows were measured seed by seed, else
    :func:`difference_spread`.
    """
    index = {(m.table, m.row, m.metric): m for m in measurements}
    out: list[Comparison | None] = []
    for m in measurements:
        ref = index.get((m.table, m.reference, m.metric)) if m.reference else None
        if ref is None:
            out.append(None)
            continue
        paper = None if m.paper is None or ref.paper is None else m.paper - ref.paper
        measured = None if m.measured is None or ref.measured is None else m.measured - ref.measured
        spread = paired_spread(m.samples, ref.samples)
        if spread is None:
            spread = difference_spread(m.spread, ref.spread)
        out.append(Comparison(m.reference, paper, measured, spread, verdict(paper, measured, spread)))
    return out


def load_results(path: str | Path) -> Results:
    """Read a ``results.json`` back."""
    data = json.loads(Path(path).read_text())
    measurements = [Measurement(**m) for m in data.pop("measurements", [])]
    return Results(measurements=measurements, **data)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def format_measured(m: Measurement) -> str:
    """The measured value, as ``mean ± spread (N seeds)`` when trained over several seeds."""
    if m.measured is not None and m.spread is not None and m.samples and len(m.samples) > 1:
        return f"{m.measured:.2f} ± {m.spread:.2f} ({len(m.samples)} seeds)"
    return _fmt(m.measured)


def format_change(comparison: Comparison | None) -> str:
    """``reference: paper change / measured change ± spread`` (points), or — without a reference."""
    if comparison is None:
        return "—"
    spread = "" if comparison.spread is None or comparison.measured_difference is None else f" ± {comparison.spread:.2f}"
    return (f"vs {comparison.reference}: {_signed(comparison.paper_difference)} / "
            f"{_signed(comparison.measured_difference)}{spread}")


TABLE_COLUMNS = ("row", "metric", "paper", "measured", "difference", "change (paper / measured)", "verdict")


def table_cells(measurements: list[Measurement]) -> list[list[str]]:
    """The cells of :data:`TABLE_COLUMNS` for each measurement (verdicts against rows among ``measurements``)."""
    return [[m.row, m.metric, _fmt(m.paper), format_measured(m), _signed(m.difference), format_change(c),
             c.verdict if c is not None and c.verdict else "—"]
            for m, c in zip(measurements, compare_rows(measurements))]


def markdown_table(measurements: Iterable[Measurement], scale: str = "", hardware: str = "") -> str:
    """A Markdown table: table, the :data:`TABLE_COLUMNS`, scale and hardware."""
    measurements = list(measurements)
    lines = ["| table | " + " | ".join(TABLE_COLUMNS) + " | scale | hardware |",
             "|---|---|---|---:|---:|---:|---|---|---|---|"]
    for m, cells in zip(measurements, table_cells(measurements)):
        lines.append("| " + " | ".join([m.table, *cells, _scale_cell(scale, m), hardware]) + " |")
    return "\n".join(lines)


def _scale_cell(scale: str, m: Measurement) -> str:
    return f"{scale}, given weights" if m.weights else scale


def hardware_label(hardware: dict[str, Any]) -> str:
    return hardware.get("gpu") or f"{hardware.get('cpus', '?')}-core CPU ({hardware.get('machine', '')})"


def weights_summary(results: list[Results]) -> list[str]:
    """Markdown lines naming, for each given weights file, the rows measured with it (no training)."""
    by_weights: dict[str, dict[str, list[str]]] = {}
    for res in results:
        for m in res.measurements:
            rows = by_weights.setdefault(m.weights, {}).setdefault(m.table, []) if m.weights else None
            if rows is not None and m.row not in rows:
                rows.append(m.row)
    lines = []
    for weights, tables in by_weights.items():
        listed = "; ".join(f"{table}: {', '.join(rows)}" for table, rows in sorted(tables.items(), key=lambda t: _table_order(t[0])))
        lines.append(f"- {weights}: {listed}")
    return lines


def reproduction_report(results: list[Results], failed: dict[str, str] | None = None) -> tuple[str, str]:
    """Every table of the paper across notebooks: ``(markdown, html)``.

    Each row carries its change against its reference row (paper and measured) and the :func:`verdict`;
    rows measured with given weights rather than trained here are marked and listed with the weights.

    Args:
        results: the notebooks' results.
        failed: notebook name -> error summary, listed at the top.
    """
    by_table: dict[str, list[tuple[Measurement, Results]]] = {}
    for res in results:
        for m in res.measurements:
            by_table.setdefault(m.table, []).append((m, res))
    md = ["# FCOS reproduction: paper vs measured", ""]
    if failed:
        md += ["**Failed notebooks:** " + ", ".join(f"`{k}` ({v})" for k, v in sorted(failed.items())), ""]
    md += ["| notebook | scale | hardware | wall time (s) | complete |", "|---|---|---|---:|---|"]
    md += [f"| {r.notebook} | {r.scale} | {hardware_label(r.hardware)} | {_fmt(r.wall_time_s, 1)} | {r.complete} |"
           for r in results]
    weights = weights_summary(results)
    if weights:
        md += ["", "**Rows measured with given weights** (evaluated, not trained here):", "", *weights]
    md += ["", f"Verdicts compare each row's change against the row the paper compares it with: \"{SAME}\", "
           f"\"{OPPOSITE}\", or \"{TOO_SMALL}\" when the measured change is within its seed spread (the standard "
           "deviation of the per-seed changes; the sum of the two rows' spreads when not paired by seed) or the "
           "spread is unknown (one seed). Statistics and given weights have no randomness (spread 0)."]
    body = ["<h1>FCOS reproduction: paper vs measured</h1>"]
    if failed:
        body.append("<p><b>Failed notebooks:</b> " + html.escape(", ".join(sorted(failed))) + "</p>")
    if weights:
        body.append("<p><b>Rows measured with given weights:</b></p><ul>"
                    + "".join(f"<li>{html.escape(line[2:])}</li>" for line in weights) + "</ul>")
    header = (*TABLE_COLUMNS, "scale", "hardware")
    for table in sorted(by_table, key=_table_order):
        rows = by_table[table]
        md += ["", f"## {table}", "", "| " + " | ".join(header) + " |", "|---|---|---:|---:|---:|---|---|---|---|"]
        body.append(f"<h2>{html.escape(table)}</h2><table border='1' cellpadding='4'><tr>"
                    + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        for (m, res), cells in zip(rows, table_cells([m for m, _ in rows])):
            cells = [*cells, _scale_cell(res.scale, m), hardware_label(res.hardware)]
            md.append("| " + " | ".join(cells) + " |")
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        body.append("</table>")
    page = "<!doctype html><html><head><meta charset='utf-8'><title>FCOS reproduction</title></head><body>" + \
        "\n".join(body) + "</body></html>"
    return "\n".join(md) + "\n", page


def _table_order(name: str) -> tuple[int, str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 99, name)
