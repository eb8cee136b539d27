"""Errors: TIDE's error types (Bolya et al., ECCV 2020) of a detections file, by FPN level and center-ness.

The analysis is :func:`fcos_lab.analysis.tide_breakdowns.analyze_errors` (``fcos-lab errors``); the figures
are :mod:`fcos_lab.viz.errors`. Clicking a bar (Streamlit's plotly selection events) shows the images with the
most errors of that type in that group (:func:`~fcos_lab.analysis.tide_breakdowns.example_image_ids`), with
their ground truth and those errors drawn (:func:`~fcos_lab.analysis.tide_breakdowns.example_boxes`).
"""

from pathlib import Path

import app_data
import fcos_app
import streamlit as st
import widgets
from widgets import kept

from fcos_lab.analysis.tide import MAIN_ERRORS
from fcos_lab.analysis.tide_breakdowns import example_boxes, example_image_ids
from fcos_lab.viz.errors import breakdown_figure, error_example_figure, tide_summary_figure

CLICKED = "err_clicked"  # [error type, group or None, breakdown or None] of the last bar clicked
EXAMPLES = 6

st.title("Errors")
st.caption(
    "Each detection that is not a true positive at IoU 0.5 gets one TIDE type: **Cls** (right box, wrong "
    "class), **Loc** (right class, IoU 0.1-0.5), **Both**, **Dupe** (a box already matched), **Bkg** "
    "(background); boxes no detection finds are **Miss**. A bar's height is the AP gained by fixing only those "
    "errors (dAP). Click a bar to see the images with the most errors of its kind."
)

found = fcos_app.run_folders(str(app_data.runs_root()), str(app_data.app_data_dir()))
choices = [*found, widgets.OTHER_RUN]
run = kept(st.sidebar.selectbox, "Run", key="run", default=choices[0], options=choices,
           help="Its detections_val.json, annotation file and image folder are the defaults below.")
config = None if run == widgets.OTHER_RUN else app_data.run_config(run)
ann_default, images_default = app_data.run_validation_files(config)
detections_default = str(Path(run) / "detections_val.json") if run != widgets.OTHER_RUN else ""
widgets.follow_preset("err_run_seen", run, {"err_detections": detections_default, "err_ann": ann_default,
                                            "err_images": images_default})
detections_file = kept(st.sidebar.text_input, "Detections (COCO results JSON)", key="err_detections",
                       default=detections_default).strip()
ann_file = kept(st.sidebar.text_input, "Annotation file (COCO JSON)", key="err_ann", default=ann_default).strip()
image_dir = kept(st.sidebar.text_input, "Image folder (for the examples)", key="err_images", default=images_default).strip()
if not detections_file or not ann_file:
    st.info("Choose a run, or type a detections file (`fcos-lab eval --out` writes one) and its annotation file.")
    widgets.how_to_make_checkpoint()
    st.stop()
if config is not None:
    st.sidebar.caption(f"Levels and ambiguity under the run's config (`{config.name}`).")

with fcos_app.guard():
    coco, detections, analysis = fcos_app.error_analysis(
        ann_file, detections_file, (fcos_app.file_mtime(ann_file), fcos_app.file_mtime(detections_file)),
        "" if config is None else fcos_app.config_key(config), config)
summary = analysis.summary
for note in summary.get("notes", []):
    st.caption(note)


def remember_click(chart_key: str, grouping: str | None) -> None:
    """The last bar clicked in either figure: its error type and group (the bars' ``customdata``)."""
    points = st.session_state[chart_key].selection.points
    if points:
        error_type, group = points[0]["customdata"][:2]
        st.session_state[CLICKED] = [error_type, group, grouping]


st.plotly_chart(tide_summary_figure(summary), key="tide_summary", on_select=lambda: remember_click("tide_summary", None),
                selection_mode="points")
breakdowns = list(summary.get("breakdowns", {}))
left, right = st.columns([3, 1])
grouping = kept(left.radio, "Breakdown", key="err_grouping", default="level" if "level" in breakdowns else breakdowns[0],
                options=breakdowns, horizontal=True)
value = kept(right.radio, "Bars", key="err_value", default="dAP", options=["dAP", "counts"], horizontal=True)
st.plotly_chart(breakdown_figure(summary["breakdowns"][grouping], grouping, value=value), key="tide_breakdown",
                on_select=lambda: remember_click("tide_breakdown", grouping), selection_mode="points")

clicked = st.session_state.get(CLICKED)
if not clicked:
    st.info("Click a bar to see example images.")
    st.stop()
error_type, group, clicked_grouping = clicked
if error_type not in MAIN_ERRORS:  # FalsePos / FalseNeg are sums of several types
    st.info(f"{error_type} gathers several types: click one of the main errors.")
    st.stop()
where = f" in {clicked_grouping} {group}" if clicked_grouping else ""
with fcos_app.guard():
    image_ids = example_image_ids(analysis, error_type, grouping=clicked_grouping, group=group, limit=EXAMPLES)
st.subheader(f"{MAIN_ERRORS[error_type]} errors{where}: {len(image_ids)} example images")
if not image_ids:
    st.info("No such error in these detections.")
    st.stop()
if not image_dir or not Path(image_dir).is_dir():
    st.warning(f"Image folder `{image_dir}` not found: type it in the sidebar to see the images.")
    st.stop()
columns = st.columns(3)
for k, image_id in enumerate(image_ids):
    record = coco.imgs[image_id]
    path = Path(image_dir) / record["file_name"]
    with fcos_app.guard():
        image = fcos_app.image_file(str(path), fcos_app.file_mtime(path))
        example = example_boxes(analysis, coco, detections, image_id, error_type, grouping=clicked_grouping, group=group)
    title = f"{record['file_name']}: {len(example['boxes'])} {MAIN_ERRORS[error_type]}"
    columns[k % 3].plotly_chart(error_example_figure(image, example, error_type, title=title), key=f"example_{k}")
st.caption("Ground truth dashed white; the errors in the colour of their type; for Cls, Loc and Dupe the box each "
           "error points at dotted white.")
