"""Assignments: which locations are positive, which box each regresses, level by level (Sections 3.1-3.2).

The assignment is the training one (:func:`fcos_lab.analysis.image_assignment.assign_image` with the
preset's :class:`~fcos_lab.objective.Objective`, varied only in what the widgets change), on the image and
boxes resized as the preset's data loader resizes them.
"""

import math
import time

import fcos_app
import streamlit as st

from fcos_lab.analysis.image_assignment import assign_image, objective_variant, ranges_from_boundaries
from fcos_lab.predict import with_input_size
from fcos_lab.presets import get_preset
from fcos_lab.viz.assignments import assignment_figure

st.title("Assignments")
st.caption(
    "A location is positive when it falls inside a box and max(l*, t*, r*, b*) lies in its level's size "
    "range (Section 3.2); with center sampling (Table 3) it must also lie within radius x stride of the box "
    "center. A location inside several candidate boxes is *ambiguous* and regresses the one of minimal area. "
    "Coordinates are those of the resized input image."
)

top = st.columns([2.6, 1.2, 0.9, 1.5, 2])
with top[0]:
    preset = get_preset(fcos_app.preset_picker())
assign_cfg = preset.assign
# Widget keys carry the preset, so that choosing another preset resets them to its values.
min_size = top[1].number_input("Shorter side (px)", 64, 2048, preset.input.min_size, step=32,
                               key=f"min_size|{preset.name}")
first_level = round(math.log2(preset.model.strides[0]))  # 3 (P3), or 2 for a preset with a P2 level
fpn = top[2].toggle("FPN", value=True, key="fpn", help=f"On: P{first_level}-P7 with size ranges. Off: P4 only "
                    "(stride 16, no size limit), the paper's 'w/o FPN' rows.")
center_sampling = top[3].toggle("Center sampling", value=assign_cfg.center_sampling_radius > 0,
                                key=f"center_sampling|{preset.name}", help="Table 3 'ctr. sampling'.")
radius = top[4].slider("Center-sampling radius (strides)", 0.25, 4.0,
                       float(assign_cfg.center_sampling_radius or 1.5), step=0.25,
                       key=f"radius|{preset.name}", disabled=not center_sampling)
bounds_default = [hi for _, hi in assign_cfg.size_ranges[:-1]]
bound_columns = st.columns(len(bounds_default) + 1)
bound_columns[0].markdown(rf"**Size ranges** of max(l\*, t\*, r\*, b\*): m{first_level - 1} = 0, m7 = inf")
bounds = [
    column.number_input(f"m{i + first_level} (px)", 1.0, 100000.0, float(value), step=8.0,
                        key=f"m{i + 3}|{preset.name}",
                        disabled=not fpn)
    for i, (column, value) in enumerate(zip(bound_columns[1:], bounds_default))
]

config = with_input_size(preset, int(min_size))
picked = fcos_app.image_picker(config)
if picked is None:
    st.stop()
sample, sample_key, _ = picked

started = time.perf_counter()
frame = fcos_app.resized_sample(sample_key, fcos_app.config_key(config), sample, config)
with fcos_app.guard():
    objective = objective_variant(config, fpn=fpn, size_ranges=ranges_from_boundaries(bounds),
                                  center_sampling_radius=radius if center_sampling else 0.0)
    assignment = assign_image(objective, tuple(frame.image.shape[-2:]), frame.boxes, frame.labels, crowd=frame.crowd,
                              size_divisible=config.input.size_divisible)

metrics = st.columns(4)
metrics[0].metric("Boxes", len(assignment.boxes))
metrics[1].metric("Positive locations", assignment.num_positive)
metrics[2].metric("Ambiguous locations", assignment.num_ambiguous)
metrics[3].metric("Unreachable boxes", len(assignment.unreachable))

level_options = [*objective.level_names, "all levels"]
left, right = st.columns([4, 1])
level_name = left.radio("Level", level_options, index=len(level_options) - 1, horizontal=True, key=f"level|{fpn}")
show_negatives = right.checkbox("Negative locations", value=False, key="negatives")
level = None if level_name == "all levels" else objective.level_names.index(level_name)
figure = assignment_figure(frame.image, assignment, level, sample.class_names, show_negatives=show_negatives)
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
