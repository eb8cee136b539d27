"""Figures and tables in the workshop notebooks that stay visible without a running kernel.

A figure is published as a display output carrying both plotly's own JSON (JupyterLab draws it with the
plotly extension) and HTML (what papermill stores and an exported HTML page shows). :func:`setup` puts
plotly.js into the notebook once (embedded: no CDN, so the workshop works offline), and every figure's HTML
draws with it. :func:`show` returns a display id; :func:`replace` redraws that output in place, which is how
the interactive views (:mod:`fcos_lab.workshop.views`) move a slider and keep the output a plain, saved
display output.

Outside IPython (tests, scripts) these functions do nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fcos_lab.viz.notebook import notebook_setup


def in_notebook() -> bool:
    """Whether an IPython kernel is running this code."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def setup() -> None:
    """Put plotly.js into the notebook (once per call: the cell that calls it holds the library).

    Figures displayed plotly's own way (a figure as a cell's last expression) also get the offline HTML:
    :func:`fcos_lab.viz.notebook.notebook_setup`, as in the paper notebooks.
    """
    if in_notebook():
        import plotly.io as pio

        notebook_setup()
        pio.renderers["notebook"].activate()


def _bundle(figure: Any) -> dict[str, Any]:
    """The display data of ``figure``: plotly's JSON mimetype and the notebook renderer's HTML (no plotly.js)."""
    import plotly.io as pio

    data = figure.to_dict()
    return {**pio.renderers["notebook"].to_mimebundle(data), **pio.renderers["plotly_mimetype"].to_mimebundle(data)}


def show(figure: Any, display_id: str | None = None) -> str | None:
    """Display ``figure`` as a new output; returns its display id (None outside IPython)."""
    if not in_notebook():
        return None
    from IPython.display import display

    display_id = display_id or uuid.uuid4().hex
    display(_bundle(figure), raw=True, display_id=display_id)
    return display_id


def replace(display_id: str | None, figure: Any) -> None:
    """Redraw the output ``display_id`` (from :func:`show`) with ``figure``."""
    if display_id is None or not in_notebook():
        return
    from IPython.display import update_display

    update_display(_bundle(figure), raw=True, display_id=display_id)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of dicts (same keys) as a Markdown table."""
    if not rows:
        return "(no rows)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(row.get(key)) for key in header) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value).replace("|", "/")


def show_table(rows: Sequence[Mapping[str, Any]]) -> None:
    """Display rows as a Markdown table (printed outside IPython)."""
    text = markdown_table(rows)
    if not in_notebook():
        print(text)
        return
    from IPython.display import Markdown, display

    display(Markdown(text))
