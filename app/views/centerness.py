"""Center-ness: the target of Eq. (3) per level (Figure 3) and, with a checkpoint, the predictions.

Targets come from the training assignment of the image (:func:`fcos_lab.analysis.image_assignment.assign_image`
with the config's :class:`~fcos_lab.objective.Objective`); the grids of both, and where their locations are,
from :mod:`fcos_lab.analysis.centerness_maps`. The input size can exceed the checkpoint's, for finer maps.
"""

import time

import fcos_app
import streamlit as st
import widgets
from widgets import kept

from fcos_lab.analysis.centerness_maps import prediction_maps, target_centerness_grids
from fcos_lab.analysis.image_assignment import assign_image
from fcos_lab.objective import Objective
from fcos_lab.predict import with_input_size
from fcos_lab.presets import get_preset
from fcos_lab.viz import heatmaps

st.title("Center-ness")
st.caption(
    "center-ness* = sqrt(min(l*, r*) / max(l*, r*) x min(t*, b*) / max(t*, b*)) (Eq. 3): 1 at the center of "
    "the box a location regresses, 0 on its sides (red 1, blue 0, as Figure 3; the image in grey, the "
    "ground-truth boxes outlined). At test time the predicted center-ness multiplies the classification "
    "score (Section 3.3)."
)

# The image's boxes are read as the config's data loader reads them, so the checkpoint (or preset) comes first.
image_slot = st.sidebar.container()
loaded = widgets.checkpoint_picker()
if loaded is not None:
    config = loaded.config
    st.markdown(f"Assignment switches of the checkpoint's config (`{config.name}`).")
else:
    config = get_preset(widgets.preset_picker())
widgets.follow_preset("ctr_config_seen", f"{config.name}|{loaded.path if loaded else ''}",
                      {"ctr_min_size": config.input.min_size})
min_size = kept(st.columns([1, 3])[0].number_input, "Shorter side (px)", key="ctr_min_size", default=config.input.min_size,
                min_value=64, max_value=2048, step=32,
                help=f"`{config.name}` resizes to {config.input.min_size} px. A larger input gives finer maps (one "
                     "cell per location and stride); objects then grow, and other levels' size ranges take them.")
sized = with_input_size(config, int(min_size))
picked = widgets.image_picker(sized, image_slot)
if picked is None:
    st.stop()
sample, sample_key, image_key = picked

started = time.perf_counter()
frame = fcos_app.resized_sample(sample_key, fcos_app.config_key(sized), sample, sized)
objective = Objective.from_config(config)
assignment = assign_image(objective, tuple(frame.image.shape[-2:]), frame.boxes, frame.labels, crowd=frame.crowd,
                          size_divisible=config.input.size_divisible)
st.plotly_chart(heatmaps.centerness_target_figure(frame.image, target_centerness_grids(assignment), boxes=frame.boxes),
                key="target_figure")
with st.expander("Eq. (3) inside a single box"):
    st.plotly_chart(heatmaps.centerness_function_figure(), key="equation_figure")

st.subheader("Predicted center-ness, classification score and their product")
if loaded is None:
    st.info("Choose a checkpoint in the sidebar to see the predictions beside the targets.")
    widgets.how_to_make_checkpoint()
    st.stop()
widgets.class_mismatch_warning(sample.class_names, loaded.class_names)
level_name = kept(st.radio, "Level", key="ctr_level", default=objective.level_names[0], options=objective.level_names,
                  horizontal=True)
level = objective.level_names.index(level_name)
with fcos_app.guard():
    dense = fcos_app.dense_prediction(fcos_app.model_key(loaded), image_key, int(min_size), loaded, sample.image)
output = dense.output
maps = prediction_maps(
    output.cls_logits[0], None if output.centerness_logits is None else output.centerness_logits[0],
    objective.output_locations(output), level, image_size=dense.batch.image_sizes[0], level_name=level_name,
    score_sqrt=config.postprocess.score_sqrt,
)
st.plotly_chart(heatmaps.prediction_maps_figure(frame.image, maps, boxes=frame.boxes), key="prediction_figure")
product = "sqrt(classification x center-ness)" if config.postprocess.score_sqrt else "classification x center-ness"
st.caption(
    f"Each cell is one location of {level_name}. **center-ness**: the branch's prediction of Eq. (3), sigmoid of its "
    "logit. **classification**: the highest of the location's class probabilities (sigmoid of the "
    f"{len(loaded.class_names)} class logits), whatever the class; it is high wherever the level sees an object "
    f"it is responsible for. **score**: {product}, the ranking score of Section 3.3; center-ness pulls it down "
    "away from the centers, where boxes are poor."
)
if output.centerness_logits is None:
    st.warning("This model has no center-ness branch (model.centerness_on = none): center-ness is 1 everywhere.")
st.caption(f"{sample.name}: computed and drawn in {time.perf_counter() - started:.2f} s "
           "(the network itself runs once per image and input size, then comes from the cache).")
