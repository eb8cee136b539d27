"""Center-ness: the target of Eq. (3) per level (Figure 3) and, with a checkpoint, the predictions."""

import time

import fcos_app
import streamlit as st

from fcos_lab.presets import get_preset
from fcos_lab.viz import assignments as assign_viz
from fcos_lab.viz import heatmaps, inference

st.title("Center-ness")
st.caption(
    "center-ness* = sqrt(min(l*, r*) / max(l*, r*) x min(t*, b*) / max(t*, b*)) (Eq. 3): 1 at the center of "
    "the box a location regresses, 0 on its sides (red 1, blue 0, as Figure 3). At test time the predicted "
    "center-ness multiplies the classification score (Section 3.3)."
)

picked = fcos_app.image_picker()
loaded = fcos_app.checkpoint_picker(required=False)
if picked is None:
    st.stop()
sample, sample_key, image_key = picked

if loaded is not None:
    config = loaded.config
    st.markdown(f"Input size and assignment switches of the checkpoint's config (`{config.name}`).")
else:
    config = get_preset(fcos_app.preset_picker())
min_size = st.number_input("Shorter side (px)", 64, 2048, config.input.min_size, step=32,
                           key=f"ctr_min_size|{config.name}")
min_size, max_size = inference.input_size(config, int(min_size))

started = time.perf_counter()
frame = fcos_app.resized_sample(sample_key, sample, min_size, max_size)
setup = assign_viz.level_setup(config.model.strides, config.assign.size_ranges)
assignment = assign_viz.assign_image(
    tuple(frame.image.shape[-2:]), frame.boxes, frame.labels, setup, crowd=frame.crowd,
    center_sampling_radius=config.assign.center_sampling_radius,
    size_range_inclusive=config.assign.size_range_inclusive, location_offset=config.assign.location_offset,
    size_divisible=config.input.size_divisible,
)
st.plotly_chart(heatmaps.centerness_target_figure(frame.image, assignment, offset=config.assign.location_offset),
                key="target_figure")
with st.expander("Eq. (3) inside a single box"):
    st.plotly_chart(heatmaps.centerness_function_figure(), key="equation_figure")

st.subheader("Predicted center-ness, classification score and their product")
if loaded is None:
    st.info("Choose a checkpoint in the sidebar to see the predictions beside the targets.")
    fcos_app.how_to_make_checkpoint()
    st.stop()
level_name = st.radio("Level", setup.names, horizontal=True, key="ctr_level")
level = setup.names.index(level_name)
with fcos_app.guard():
    dense = fcos_app.dense_prediction(fcos_app.model_key(loaded), image_key, int(min_size), loaded, sample.image)
output = dense.output
image_size = dense.batch.image_sizes[0]
maps = heatmaps.prediction_maps(
    output.cls_logits[0], None if output.centerness_logits is None else output.centerness_logits[0],
    output.locations.shapes, level, stride=setup.strides[level], image_size=image_size,
    offset=config.assign.location_offset, score_sqrt=config.postprocess.score_sqrt,
)
st.plotly_chart(
    heatmaps.prediction_maps_figure(frame.image, maps, stride=setup.strides[level],
                                    offset=config.assign.location_offset, level_name=level_name),
    key="prediction_figure",
)
if output.centerness_logits is None:
    st.warning("This model has no center-ness branch (model.centerness_on = none): center-ness is 1 everywhere.")
st.caption(f"{sample.name}: computed and drawn in {time.perf_counter() - started:.2f} s "
           "(the network itself runs once per image and input size, then comes from the cache).")
