"""Home: what each page shows, and where the app keeps and finds its files. Loads without torch (see main.py)."""

import app_data
import streamlit as st

st.title("FCOS lab")
st.markdown(
    "A workbench for **FCOS: Fully Convolutional One-Stage Object Detection** (Tian et al., ICCV 2019). "
    "Every number on these pages comes from the code that trains and runs the detector in `fcos_lab`."
)
st.page_link("views/assignments.py", label="Assignments: which location regresses which box, level by level "
             "(Sections 3.1-3.2)", icon=":material/grid_on:")
st.page_link("views/centerness.py", label="Center-ness: targets (Eq. 3, Figure 3) and predictions", icon=":material/filter_center_focus:")
st.page_link("views/detections.py", label="Detections: a checkpoint on an image, with its sliders", icon=":material/select_all:")
st.page_link("views/dataset_statistics.py", label="Dataset statistics: box sizes, best possible recall, ambiguity "
             "(Tables 1-2)", icon=":material/bar_chart:")
st.page_link("views/runs.py", label="Runs: training curves and evaluation results", icon=":material/show_chart:")
st.page_link("views/errors.py", label="Errors: TIDE's error types by FPN level and center-ness, with example images",
             icon=":material/error:")

data_dir = app_data.app_data_dir()
st.subheader("Files")
st.markdown(
    f"- Run folders: every folder under `{app_data.runs_root()}` (`${app_data.RUNS_ENV}`) and `{data_dir}` that "
    "holds a training log or a checkpoint (`fcos-lab demo` writes `runs/demo/run`; `fcos-lab train`, the "
    "notebooks and `fcos-lab import-weights` write theirs); each page lists them in its sidebar, newest first.\n"
    f"- App cache folder (`${app_data.APP_DATA_ENV}`): `{data_dir}`\n"
    f"- Synthetic demo data: `{data_dir / 'synthetic'}` "
    f"({'present' if (data_dir / 'synthetic' / 'synthetic.json').is_file() else 'written on first use'})"
)
st.info("No run yet? `fcos-lab demo --quick` makes one in about a minute on a CPU (`fcos-lab demo`: the full demo).")
