"""fcos_lab workbench: ``streamlit run app/main.py``.

A multipage app over ``fcos_lab``: each page is widgets, cached loaders (``fcos_app``) and calls into
the package. Its own files (synthetic data, a default demo run) live under ``$FCOS_LAB_APP_DATA``
(default ``runs/app``); otherwise it reads only the paths typed into it.
"""

import streamlit as st

st.set_page_config(page_title="FCOS lab", layout="wide")

pages = [
    st.Page("views/home.py", title="FCOS lab", icon=":material/home:", default=True),
    st.Page("views/assignments.py", title="Assignments", icon=":material/grid_on:"),
    st.Page("views/centerness.py", title="Center-ness", icon=":material/filter_center_focus:"),
    st.Page("views/detections.py", title="Detections", icon=":material/select_all:"),
    st.Page("views/dataset_statistics.py", title="Dataset statistics", icon=":material/bar_chart:"),
    st.Page("views/runs.py", title="Runs", icon=":material/show_chart:"),
]
st.navigation(pages).run()
