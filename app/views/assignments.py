"""Assignments: which locations are positive, which box each regresses, level by level (Sections 3.1-3.2)."""

import time

import fcos_app
import streamlit as st

from fcos_lab.presets import get_preset
from fcos_lab.viz import assignments as viz
from fcos_lab.viz import inference

st.title("Assignments")
st.caption(
    "A location is positive when it falls inside a box and max(l*, t*, r*, b*) lies in its level's size "
    "range (Section 3.2); with center sampling (Table 3) it must also lie within radius x stride of the box "
    "center. A location inside several candidate boxes is *ambiguous* and regresses the one of minimal area. "
    "Coordinates are those of the resized input image."
)

picked = fcos_app.image_picker()
if picked is None:
    st.stop()
sample, sample_key, _ = picked

top = st.columns([2.6, 1.2, 0.9, 1.5, 2])
with top[0]:
    preset = get_preset(fcos_app.preset_picker())
assign_cfg = preset.assign
# Widget keys carry the preset, so that choosing another preset resets them to its values.
min_size = top[1].number_input("Shorter side (px)", 64, 2048, preset.input.min_size, step=32,
                               key=f"min_size|{preset.name}")
fpn = top[2].toggle("FPN", value=True, key="fpn", help="On: P3-P7 with size ranges. Off: P4 only (stride 16, "
                    "no size limit), the paper's 'w/o FPN' rows.")
center_sampling = top[3].toggle("Center sampling", value=assign_cfg.center_sampling_radius > 0,
                                key=f"center_sampling|{preset.name}", help="Table 3 'ctr. sampling'.")
radius = top[4].slider("Center-sampling radius (strides)", 0.25, 4.0,
                       float(assign_cfg.center_sampling_radius or 1.5), step=0.25,
                       key=f"radius|{preset.name}", disabled=not center_sampling)
bounds_default = [hi for _, hi in assign_cfg.size_ranges[:-1]]
bound_columns = st.columns(len(bounds_default) + 1)
bound_columns[0].markdown(r"**Size ranges** of max(l\*, t\*, r\*, b\*): m2 = 0, m7 = inf")
bounds = [
    column.number_input(f"m{i + 3} (px)", 1.0, 100000.0, float(value), step=8.0, key=f"m{i + 3}|{preset.name}",
                        disabled=not fpn)
    for i, (column, value) in enumerate(zip(bound_columns[1:], bounds_default))
]

started = time.perf_counter()
min_size, max_size = inference.input_size(preset, int(min_size))
frame = fcos_app.resized_sample(sample_key, sample, min_size, max_size)
with fcos_app.guard():
    setup = viz.level_setup(preset.model.strides, viz.ranges_from_boundaries(bounds), fpn=fpn)
    assignment = viz.assign_image(
        tuple(frame.image.shape[-2:]), frame.boxes, frame.labels, setup, crowd=frame.crowd,
        center_sampling_radius=radius if center_sampling else 0.0,
        size_range_inclusive=assign_cfg.size_range_inclusive, location_offset=assign_cfg.location_offset,
        size_divisible=preset.input.size_divisible,
    )

metrics = st.columns(4)
metrics[0].metric("Boxes", len(assignment.boxes))
metrics[1].metric("Positive locations", assignment.num_positive)
metrics[2].metric("Ambiguous locations", assignment.num_ambiguous)
metrics[3].metric("Unreachable boxes", len(assignment.unreachable))

level_options = [*setup.names, "all levels"]
left, right = st.columns([4, 1])
level_name = left.radio("Level", level_options, index=len(level_options) - 1, horizontal=True, key=f"level|{fpn}")
show_negatives = right.checkbox("Negative locations", value=False, key="negatives")
level = None if level_name == "all levels" else setup.names.index(level_name)
figure = viz.assignment_figure(frame.image, assignment, level, sample.class_names, show_negatives=show_negatives)
st.plotly_chart(figure, key="assignment_figure")

st.subheader("Per level")
st.dataframe(assignment.level_rows(), hide_index=True)
st.subheader("Per box")
st.dataframe(assignment.box_rows(sample.class_names), hide_index=True)
for m in assignment.unreachable.tolist():
    st.warning(f"Box {m}: {assignment.box_status[m]}.")
st.caption(
    f"{sample.name}: {frame.image.shape[-1]} x {frame.image.shape[-2]} input, "
    f"computed and drawn in {time.perf_counter() - started:.2f} s."
)
