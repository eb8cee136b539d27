"""Detections: a checkpoint on one image, with the post-processing sliders (Sections 3.1 and 3.3).

The network runs once per image and input size (:func:`fcos_lab.predict.predict_dense`, cached); each
slider only post-processes again (:func:`fcos_lab.predict.detections_from`).
"""

import time

import fcos_app
import streamlit as st

from fcos_lab.predict import detections_from
from fcos_lab.presets import get_preset
from fcos_lab.viz.detections import detection_rows, detections_figure

st.title("Detections")
st.caption(
    "Locations whose classification score passes the threshold are decoded by inverting Eq. (1); the score "
    "that ranks them is classification x center-ness (Section 3.3), and class-wise NMS keeps at most 100. "
    "Each box is labelled with its class, score, FPN level and predicted center-ness; the dot marks the "
    "location that predicted it."
)

# The image's boxes are read as the checkpoint's data loader reads them, so the checkpoint comes first.
image_slot = st.sidebar.container()
loaded = fcos_app.checkpoint_picker(required=True)
picked = fcos_app.image_picker(get_preset(fcos_app.DEFAULT_PRESET) if loaded is None else loaded.config, image_slot)
if picked is None or loaded is None:
    st.stop()
sample, sample_key, image_key = picked
config = loaded.config
post = config.postprocess

columns = st.columns(4)
score_thresh = columns[0].slider(
    "Score threshold", 0.0, 1.0, max(0.3, post.score_thresh), step=0.01, key="score_thresh",
    help=f"On the {'classification score' if post.threshold_on == 'cls' else 'final score'} "
         f"(postprocess.threshold_on = {post.threshold_on}); the paper uses 0.05.",
)
nms_thresh = columns[1].slider("NMS IoU", 0.05, 0.95, float(post.nms_thresh), step=0.05, key="nms_thresh")
use_centerness = columns[2].toggle("Center-ness", value=True, key="use_centerness",
                                   help="Off: rank by the classification score alone (Table 4, w/o center-ness).",
                                   disabled=loaded.config.model.centerness_on == "none")
show_gt = columns[3].toggle("Ground truth", value=True, key="show_gt")
min_size = st.number_input("Shorter side (px)", 64, 2048, config.input.min_size, step=32,
                           key=f"det_min_size|{config.name}")

with fcos_app.guard():
    forward_started = time.perf_counter()
    dense = fcos_app.dense_prediction(fcos_app.model_key(loaded), image_key, int(min_size), loaded, sample.image)
    forward_seconds = time.perf_counter() - forward_started
    started = time.perf_counter()
    detections = detections_from(dense, score_thresh=score_thresh, nms_thresh=nms_thresh,
                                           use_centerness=use_centerness)
    figure = detections_figure(sample.image, detections, loaded.class_names,
                                         gt_boxes=sample.boxes if show_gt else None)
st.plotly_chart(figure, key="detections_figure")
rows = detection_rows(detections, loaded.class_names)
if rows:
    st.dataframe(rows, hide_index=True)
else:
    st.info("No detection passes the threshold: lower it, or train longer (`fcos-lab demo` without `--quick`).")
if set(sample.class_names) and set(sample.class_names) != set(loaded.class_names):
    st.warning(f"The checkpoint's classes ({', '.join(loaded.class_names)}) are not this dataset's "
               f"({', '.join(sample.class_names)}).")
h, w = dense.batch.image_sizes[0]
st.caption(
    f"{sample.name}: network input {w} x {h}; network {forward_seconds:.2f} s (cached per image and size), "
    f"post-processing and drawing {time.perf_counter() - started:.2f} s."
)
