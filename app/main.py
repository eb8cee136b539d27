"""fcos_lab workbench: ``streamlit run app/main.py``.

A multipage app over ``fcos_lab``: each page is widgets (``widgets``), cached loaders (``fcos_app``) and calls
into the package. Its own files (synthetic data, a quick demo run) live under ``$FCOS_LAB_APP_DATA`` (default
``runs/app``); it lists the run folders under ``$FCOS_LAB_RUNS`` (default ``runs``) and reads the paths typed
into it. The home page needs no torch: while a person reads it, the pages' modules are imported in the
background (:func:`warm_up`), so that the first page opened does not wait for them.
"""

import importlib
import threading

import streamlit as st

PAGE_MODULES = ("widgets", "fcos_lab.analysis.image_assignment", "fcos_lab.viz.assignments", "fcos_lab.viz.heatmaps",
                "fcos_lab.viz.detections", "plotly.graph_objects", "plotly.subplots")


@st.cache_resource(show_spinner=False)
def warm_up() -> threading.Thread:
    """Import the pages' modules in a background thread, once per server."""
    thread = threading.Thread(target=lambda: [importlib.import_module(m) for m in PAGE_MODULES], daemon=True,
                              name="fcos_lab warm-up")
    thread.start()
    return thread


st.set_page_config(page_title="FCOS lab", layout="wide")
warm_up()
pages = [
    st.Page("views/home.py", title="FCOS lab", icon=":material/home:", default=True),
    st.Page("views/assignments.py", title="Assignments", icon=":material/grid_on:"),
    st.Page("views/centerness.py", title="Center-ness", icon=":material/filter_center_focus:"),
    st.Page("views/detections.py", title="Detections", icon=":material/select_all:"),
    st.Page("views/dataset_statistics.py", title="Dataset statistics", icon=":material/bar_chart:"),
    st.Page("views/runs.py", title="Runs", icon=":material/show_chart:"),
    st.Page("views/errors.py", title="Errors", icon=":material/error:"),
]
st.navigation(pages).run()
