"""Runs: training curves and evaluation results of run folders (every run found under ``runs/``, or typed)."""

import app_data
import fcos_app
import streamlit as st
import widgets
from widgets import kept

from fcos_lab.errors import FcosLabError
from fcos_lab.runs import read_run
from fcos_lab.viz.curves import training_curves_figure

st.title("Runs")
st.caption("Run folders written by `fcos-lab train`, `fcos-lab demo` or `fcos-lab import-weights`: metrics.jsonl "
           "(training log and evaluation rows), metrics.json (final COCO evaluation), config.json and checkpoints.")

found = fcos_app.run_folders(str(app_data.runs_root()), str(app_data.app_data_dir()))
chosen = kept(st.multiselect, f"Runs found under `{app_data.runs_root()}` and `{app_data.app_data_dir()}` "
              "(newest first)", key="runs_shown", default=found[:3], options=found, placeholder="none")
text = kept(st.text_area, "Other run folders, one per line", key="run_dirs", default="", height=70)
folders = [*chosen, *(line.strip() for line in text.splitlines() if line.strip())]
if not folders:
    st.info("No run folder chosen." if found else "No run folder found.")
    widgets.how_to_make_checkpoint()
    st.stop()

runs = []
for folder in folders:
    try:
        runs.append(read_run(folder))
    except FcosLabError as error:
        st.error(str(error))
if not runs:
    widgets.how_to_make_checkpoint()
    st.stop()

summary_keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
st.subheader("Evaluation")
st.dataframe(
    [
        {"run": str(run.path), "preset": run.config_name, "iteration": run.metrics.get("iteration", "-"),
         **{k: round(run.metrics[k], 4) if isinstance(run.metrics.get(k), (int, float)) else "-" for k in summary_keys}}
        for run in runs
    ],
    hide_index=True,
)
for i, run in enumerate(runs):
    st.subheader(f"{run.path}")
    for problem in run.problems:
        st.warning(problem)
    if run.rows:
        st.plotly_chart(training_curves_figure(run.rows), key=f"curves_{i}")
    else:
        st.info("No training log (metrics.jsonl) in this folder.")
    per_class = run.metrics.get("per_class_ap")
    if isinstance(per_class, dict) and per_class:
        st.dataframe([{"class": k, "AP": v} for k, v in per_class.items()], hide_index=True)
    st.caption("Checkpoints: " + (", ".join(p.name for p in run.checkpoints) or "none"))
