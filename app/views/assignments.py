"""Assignments: which locations are positive, which box each regresses, level by level (Sections 3.1-3.2).

The assignment is the training one (:func:`fcos_lab.analysis.image_assignment.assign_image` with the
preset's :class:`~fcos_lab.objective.Objective`, varied only in what the widgets change), on the image and
boxes resized as the preset's data loader resizes them. Widget values are kept by :mod:`widgets`; the
caption under the numbers states the settings they were computed with.
"""

import math
import time

import fcos_app
import streamlit as st
import widgets
from widgets import kept

from fcos_lab.analysis.image_assignment import assign_image, objective_variant, ranges_from_boundaries
from fcos_lab.paper import CENTER_SAMPLING_RADIUS
from fcos_lab.predict import with_input_size
from fcos_lab.presets import get_preset
from fcos_lab.viz.assignments import MAX_LABELS, assignment_figure, assignment_levels_figure

ALL_LEVELS, BY_LEVEL = "all levels", "level by level"

st.title("Assignments")
st.caption(
    "A location is positive when it falls inside a box and max(l*, t*, r*, b*) lies in its level's size "
    "range (Section 3.2); with center sampling (Table 3) it must also lie within radius x stride of the box "
    "center. A location inside several candidate boxes is *ambiguous* and regresses the one of minimal area. "
    "Coordinates are those of the resized input image, drawn in grey so that the colours stay visible."
)

top = st.columns([2.6, 1.2, 0.9, 1.5, 2])
with top[0]:
    preset = get_preset(widgets.preset_picker())
bounds_default = [float(hi) for _, hi in preset.assign.size_ranges[:-1]]
first_level = round(math.log2(preset.model.strides[0]))  # 3 (P3), or 2 for a preset with a P2 level
bound_keys = [f"asg_m{i + first_level}" for i in range(len(bounds_default))]
# A new preset resets what it decides; the keys themselves never change.
widgets.follow_preset("asg_preset_seen", preset.name, {
    "asg_min_size": preset.input.min_size,
    "asg_center_sampling": preset.assign.center_sampling_radius > 0,
    "asg_radius": float(preset.assign.center_sampling_radius or CENTER_SAMPLING_RADIUS),
    **dict(zip(bound_keys, bounds_default)),
})
min_size = kept(top[1].number_input, "Shorter side (px)", key="asg_min_size", default=preset.input.min_size,
                min_value=64, max_value=2048, step=32)
fpn = kept(top[2].toggle, "FPN", key="asg_fpn", default=True,
           help=f"On: P{first_level}-P7 with size ranges. Off: P4 only (stride 16, no size limit), the paper's 'w/o FPN' rows.")
center_sampling = kept(top[3].toggle, "Center sampling", key="asg_center_sampling",
                       default=preset.assign.center_sampling_radius > 0, help="Table 3 'ctr. sampling'.")
radius = kept(top[4].slider, "Center-sampling radius (strides)", key="asg_radius", default=CENTER_SAMPLING_RADIUS,
              min_value=0.25, max_value=4.0, step=0.25, disabled=not center_sampling)
bound_columns = st.columns(len(bounds_default) + 1)
bound_columns[0].markdown(rf"**Size ranges** of max(l\*, t\*, r\*, b\*): m{first_level - 1} = 0, m7 = inf")
bounds = [
    kept(column.number_input, f"m{i + first_level} (px)", key=key, default=value, min_value=1.0,
         max_value=100000.0, step=8.0, disabled=not fpn)
    for i, (column, key, value) in enumerate(zip(bound_columns[1:], bound_keys, bounds_default))
]

config = with_input_size(preset, int(min_size))
picked = widgets.image_picker(config)
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
levels_text = ", ".join(f"{n} [{lo:g}, {hi:g}]" for n, (lo, hi) in zip(objective.level_names, objective.size_ranges))
st.caption(
    f"Computed with: FPN {'on' if fpn else 'off (P4 only)'}; center sampling "
    f"{f'on, radius {objective.center_sampling_radius:g} strides' if objective.center_sampling_radius > 0 else 'off'}; "
    f"levels {levels_text}; shorter side {config.input.min_size} px."
)

view_options = [ALL_LEVELS, BY_LEVEL, *objective.level_names]
left, middle, right = st.columns([3, 3, 1])
view = kept(left.radio, "Level", key="asg_view", default=ALL_LEVELS, options=view_options, horizontal=True,
            help="All levels in one figure, each level in its own panel, or one level.")
names = [sample.class_names[c] if 0 <= c < len(sample.class_names) else str(c) for c in assignment.labels.tolist()]
box_options = [f"{m} {name} ({w:.0f} x {h:.0f})" for m, (name, (w, h)) in
               enumerate(zip(names, (assignment.boxes[:, 2:] - assignment.boxes[:, :2]).tolist()))]
chosen = kept(
    middle.multiselect, "Boxes shown", key="asg_boxes", default=[], options=box_options, placeholder="all boxes",
    help=f"Draw only these boxes and their locations (the assignment is still that of every box). With more than "
         f"{MAX_LABELS} boxes drawn, labels and legend give way to hovering.")
shown = [box_options.index(option) for option in chosen] or None
show_negatives = kept(right.checkbox, "Negative locations", key="asg_negatives", default=False)
if view == BY_LEVEL:
    figure = assignment_levels_figure(frame.image, assignment, sample.class_names, boxes=shown)
else:
    level = None if view == ALL_LEVELS else objective.level_names.index(view)
    figure = assignment_figure(frame.image, assignment, level, sample.class_names, show_negatives=show_negatives,
                               boxes=shown)
st.plotly_chart(figure, key="assignment_figure")

# Collapsed: a table costs the browser about as much as the figure, on every page switch.
with st.expander("Per level: stride, size range, positive and ambiguous locations, boxes regressed"):
    st.dataframe(assignment.level_rows(), hide_index=True)
with st.expander("Per box: size, locations on each level, status"):
    st.dataframe(assignment.box_rows(sample.class_names), hide_index=True)
for m in assignment.unreachable.tolist():
    st.warning(f"Box {m}: {assignment.box_status[m]}.")
st.caption(
    f"{sample.name}: {frame.image.shape[-1]} x {frame.image.shape[-2]} input, "
    f"computed and drawn in {time.perf_counter() - started:.2f} s."
)
