"""Notebook display: plotly figures that stay interactive in executed notebooks and their HTML export.

A kernel run by papermill has no front end, so plotly's default renderer writes only its own mimetype
(``application/vnd.plotly.v1+json``): JupyterLab draws it, but ``jupyter nbconvert --to html`` cannot
represent it and drops the figure with a warning. :func:`notebook_setup` adds the ``notebook`` renderer:
each figure also carries an HTML ``<div>`` with its ``Plotly.newPlot`` call, and plotly.js itself is
embedded once per notebook, so the saved notebook and its HTML need no network when viewed.
"""

from __future__ import annotations

RENDERER = "plotly_mimetype+notebook"


def notebook_setup() -> None:
    """Render plotly figures as plotly's mimetype (JupyterLab) plus offline HTML (nbconvert, classic viewers).

    Call once at the top of a notebook, before the first figure is shown.
    """
    import plotly.io as pio

    pio.renderers.default = RENDERER
