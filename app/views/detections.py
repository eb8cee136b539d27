"""Detections: a checkpoint on one image, with the post-processing sliders (Sections 3.1 and 3.3).

The network runs once per image and input size (:func:`fcos_lab.predict.predict_dense`, cached); each
slider only post-processes again (:func:`fcos_lab.predict.detections_from`).
"""

import time

import fcos_app
import streamlit as st
import widgets
from widgets import kept

from fcos_lab.predict import detections_from
from fcos_lab.presets import get_preset
from fcos_lab.viz.detections import detection_rows, detections_figure

st.title("Detections")
st.caption(
    "Locations whose score passes the threshold are decoded by inverting Eq. (1); the score that ranks them "
    "is classification x center-ness (Section 3.3), and class-wise NMS keeps at most 100. Each box is "
    "labelled with its class, score, FPN level and predicted center-ness (labels that would cover another are "
    "left out: hover the dot); the dot marks the location that predicted it."
)

# The image's boxes are read as the checkpoint's data loader reads them, so the checkpoint comes first.
image_slot = st.sidebar.container()
loaded = widgets.checkpoint_picker()
picked = widgets.image_picker(get_preset(widgets.DEFAULT_PRESET) if loaded is None else loaded.config, image_slot)
if loaded is None:
    widgets.how_to_make_checkpoint()
    st.stop()
if picked is None:
    st.stop()
sample, sample_key, image_key = picked
config = loaded.config
post = config.postprocess
has_centerness = config.model.centerness_on != "none"
widgets.follow_preset("det_config_seen", f"{config.name}|{loaded.path}", {
    "score_thresh": max(0.3, post.score_thresh), "nms_thresh": float(post.nms_thresh),
    "det_min_size": config.input.min_size,
})

columns = st.columns([1.4, 1.2, 1, 1, 1])
use_centerness = kept(columns[2].toggle, "Center-ness", key="use_centerness", default=True, disabled=not has_centerness,
                      help="Off: rank by the classification score alone (Table 4, w/o center-ness).")
combined = "sqrt(classification x center-ness)" if post.score_sqrt else "classification x center-ness"
on_final = post.threshold_on != "cls" and use_centerness and has_centerness
threshold_of = combined if on_final else "classification"
score_thresh = kept(columns[0].slider, f"Threshold on the {threshold_of} score", key="score_thresh",
                    default=max(0.3, post.score_thresh), min_value=0.0, max_value=1.0, step=0.01,
                    help=f"postprocess.threshold_on = {post.threshold_on}; the paper thresholds the classification "
                         f"score at 0.05 and ranks by {combined}.")
nms_thresh = kept(columns[1].slider, "NMS IoU", key="nms_thresh", default=float(post.nms_thresh), min_value=0.05,
                  max_value=0.95, step=0.05)
show_gt = kept(columns[3].toggle, "Ground truth", key="show_gt", default=True)
min_size = kept(columns[4].number_input, "Shorter side (px)", key="det_min_size", default=config.input.min_size,
                min_value=64, max_value=2048, step=32)

with fcos_app.guard():
    forward_started = time.perf_counter()
    dense = fcos_app.dense_prediction(fcos_app.model_key(loaded), image_key, int(min_size), loaded, sample.image)
    forward_seconds = time.perf_counter() - forward_started
    started = time.perf_counter()
    detections = detections_from(dense, score_thresh=score_thresh, nms_thresh=nms_thresh,
                                 use_centerness=use_centerness)
    figure = detections_figure(sample.image, detections, loaded.class_names,
                               gt_boxes=sample.boxes if show_gt else None)
widgets.class_mismatch_warning(sample.class_names, loaded.class_names)
st.plotly_chart(figure, key="detections_figure")
rows = detection_rows(detections, loaded.class_names)
if rows:
    with st.expander(f"The {len(rows)} detections: score, classification, center-ness, level, box"):
        st.dataframe(rows, hide_index=True)
else:
    st.info("No detection passes the threshold: lower it, or train longer (`fcos-lab demo` without `--quick`).")
h, w = dense.batch.image_sizes[0]
st.caption(
    f"{sample.name}: network input {w} x {h}; network {forward_seconds:.2f} s (cached per image and size), "
    f"post-processing and drawing {time.perf_counter() - started:.2f} s."
)
