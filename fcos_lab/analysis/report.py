"""Measured-vs-paper results: what a notebook records and what the reproduction pipeline tabulates.

A notebook collects :class:`Measurement` rows in a :class:`Results` and writes ``results.json``
(every number with the paper's value, the scale, the hardware and the wall time). The pipeline reads
those files back and renders every table as Markdown and HTML.
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
    """One measured number next to the paper's (``paper`` is None where the paper has no value)."""

    table: str
    row: str
    metric: str
    measured: float | None
    paper: float | None = None
    unit: str = "%"
    note: str = ""

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
            unit: str = "%", note: str = "") -> None:
        value = None if measured is None or (isinstance(measured, float) and math.isnan(measured)) else float(measured)
        self.measurements.append(Measurement(table, row, metric, value, paper, unit, note))

    def add_metrics(self, table: str, row: str, measured: dict[str, float], paper: dict[str, float],
                    scale_to_percent: bool = True, note: str = "") -> None:
        """Add every metric of ``paper`` (and of ``measured`` not in it), fractions turned into percent."""
        for metric in list(paper) + [m for m in measured if m not in paper]:
            value = measured.get(metric)
            if value is not None and scale_to_percent:
                value = value * 100
            self.add(table, row, metric, value, paper.get(metric), note=note)

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


def load_results(path: str | Path) -> Results:
    """Read a ``results.json`` back."""
    data = json.loads(Path(path).read_text())
    measurements = [Measurement(**m) for m in data.pop("measurements", [])]
    return Results(measurements=measurements, **data)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_table(measurements: Iterable[Measurement], scale: str = "", hardware: str = "") -> str:
    """A Markdown table: table, row, metric, paper, measured, difference (and scale / hardware columns)."""
    lines = ["| table | row | metric | paper | measured | difference | scale | hardware |",
             "|---|---|---|---:|---:|---:|---|---|"]
    for m in measurements:
        diff = m.difference
        lines.append(
            f"| {m.table} | {m.row} | {m.metric} | {_fmt(m.paper)} | {_fmt(m.measured)} | "
            f"{'—' if diff is None else f'{diff:+.2f}'} | {scale} | {hardware} |"
        )
    return "\n".join(lines)


def hardware_label(hardware: dict[str, Any]) -> str:
    return hardware.get("gpu") or f"{hardware.get('cpus', '?')}-core CPU ({hardware.get('machine', '')})"


def reproduction_report(results: list[Results], failed: dict[str, str] | None = None) -> tuple[str, str]:
    """Every table of the paper across notebooks: ``(markdown, html)``.

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
    body = ["<h1>FCOS reproduction: paper vs measured</h1>"]
    if failed:
        body.append("<p><b>Failed notebooks:</b> " + html.escape(", ".join(sorted(failed))) + "</p>")
    for table in sorted(by_table, key=_table_order):
        rows = by_table[table]
        md += ["", f"## {table}", ""]
        md.append("| row | metric | paper | measured | difference | scale | hardware |")
        md.append("|---|---|---:|---:|---:|---|---|")
        body.append(f"<h2>{html.escape(table)}</h2><table border='1' cellpadding='4'><tr><th>row</th><th>metric</th>"
                    "<th>paper</th><th>measured</th><th>difference</th><th>scale</th><th>hardware</th></tr>")
        for m, res in rows:
            diff = m.difference
            cells = [m.row, m.metric, _fmt(m.paper), _fmt(m.measured), "—" if diff is None else f"{diff:+.2f}",
                     res.scale, hardware_label(res.hardware)]
            md.append("| " + " | ".join(cells) + " |")
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        body.append("</table>")
    page = "<!doctype html><html><head><meta charset='utf-8'><title>FCOS reproduction</title></head><body>" + \
        "\n".join(body) + "</body></html>"
    return "\n".join(md) + "\n", page


def _table_order(name: str) -> tuple[int, str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 99, name)
