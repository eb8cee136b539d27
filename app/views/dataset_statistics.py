"""Dataset statistics: box sizes against the size ranges, best possible recall and ambiguity (Tables 1-2).

The numbers are :func:`fcos_lab.analysis.recall_ambiguity.recall_and_ambiguity` (the statistics of
``fcos-lab stats``) under the preset's :class:`~fcos_lab.objective.Objective` with the levels, ranges and
radius typed here, on the file's boxes resized as the preset trains (:mod:`fcos_lab.analysis.dataset_boxes`).
"""

import time

import app_data
import fcos_app
import inputs
import streamlit as st
import widgets
from widgets import kept

from fcos_lab.analysis.image_assignment import objective_variant, ranges_from_boundaries
from fcos_lab.analysis.recall_ambiguity import recall_and_ambiguity
from fcos_lab.paper import CENTER_SAMPLING_RADIUS, STATISTICS_VALUES
from fcos_lab.predict import with_input_size
from fcos_lab.presets import get_preset
from fcos_lab.viz.dataset_statistics import box_size_histogram_figure

st.title("Dataset statistics")
st.caption(
    "Best possible recall (BPR): the share of boxes that at least one location regresses after the size "
    "ranges and the minimal-area rule. Ambiguous samples: the share of positive locations inside more than "
    "one candidate box (Section 4.1.1, Tables 1 and 2). Both come from the training assignment code, on "
    "the boxes of the annotation file resized as in training; no image is read."
)

source = kept(st.radio, "Annotations", key="stats_source", default="Synthetic demo data",
              options=["Synthetic demo data", "COCO-format file"], horizontal=True)
if source == "COCO-format file":
    ann_file = kept(st.text_input, "Annotation file (COCO JSON)", key="stats_ann", default="").strip()
    if not ann_file:
        st.info("Type the path of a COCO-format annotation file.")
        st.stop()
else:
    ann_file = str(fcos_app.synthetic_dataset(str(app_data.app_data_dir())).val_ann)

preset = get_preset(widgets.preset_picker("Preset (input size, strides, size ranges)", key="stats_preset"))
widgets.follow_preset("stats_preset_seen", preset.name, {
    "stats_min": preset.input.min_size,
    "stats_strides": ", ".join(map(str, preset.model.strides)),
    "stats_bounds": ", ".join(f"{hi:g}" for _, hi in preset.assign.size_ranges[:-1]),
    "stats_cs": preset.assign.center_sampling_radius > 0,
    "stats_radius": float(preset.assign.center_sampling_radius or CENTER_SAMPLING_RADIUS),
})
left, middle, right = st.columns(3)
min_size = kept(left.number_input, "Shorter side (px)", key="stats_min", default=preset.input.min_size,
                min_value=64, max_value=2048, step=32)
max_images = kept(left.number_input, "At most this many images", key="stats_max_images", default=500,
                  min_value=1, max_value=100000, step=100,
                  help="The recomputation is live; large files are cut to their first images.")
strides_text = kept(middle.text_input, "Strides", key="stats_strides", default="")
bounds_text = kept(middle.text_input, "Size range boundaries m3 ... (m2 = 0, last = inf)", key="stats_bounds",
                   default="")
fpn = kept(right.toggle, "FPN; off: P4 only (stride 16, no size limit)", key="stats_fpn", default=True)
center_sampling = kept(right.toggle, "Center sampling", key="stats_cs", default=False)
radius = kept(right.slider, "Radius (strides)", key="stats_radius", default=CENTER_SAMPLING_RADIUS, min_value=0.25,
              max_value=4.0, step=0.25, disabled=not center_sampling)

with fcos_app.guard():
    strides = inputs.parse_numbers(strides_text, "strides", integers=True)
    bounds = inputs.parse_numbers(bounds_text, "size range boundaries")
    config = with_input_size(preset, int(min_size))
    objective = objective_variant(config, fpn=fpn, strides=strides, size_ranges=ranges_from_boundaries(bounds),
                                  center_sampling_radius=radius if center_sampling else 0.0)
    data = fcos_app.dataset_boxes(ann_file, fcos_app.file_mtime(ann_file), fcos_app.config_key(config),
                                  int(max_images), config)
    started = time.perf_counter()
    stats = recall_and_ambiguity(data.boxes, objective)

sampling = objective.center_sampling_radius
st.caption(
    f"Computed with: shorter side {config.input.min_size} px; strides {', '.join(map(str, objective.strides))}; "
    f"size ranges {', '.join(f'[{lo:g}, {hi:g}]' for lo, hi in objective.size_ranges)}; "
    f"center sampling {f'on, radius {sampling:g} strides' if sampling > 0 else 'off'}; at most {int(max_images)} images."
)
columns = st.columns(4)
columns[0].metric("Best possible recall", fcos_app.percent(stats["best_possible_recall"]),
                  help=f"{stats['recalled_boxes']} of {stats['num_boxes']} boxes")
columns[1].metric("Ambiguous samples", fcos_app.percent(stats["ambiguous"]),
                  help=f"{stats['ambiguous_locations']} of {stats['positive_locations']} positive locations")
columns[2].metric("Ambiguous, different classes", fcos_app.percent(stats["ambiguous_diff_class"]))
columns[3].metric("Boxes / images", f"{stats['num_boxes']} / {stats['num_images']}")
st.caption(f"Paper, COCO minival at 800 px: BPR {STATISTICS_VALUES['fcos_bpr_fpn']:.2f} % with FPN, "
           f"{STATISTICS_VALUES['fcos_bpr_p4']:.2f} % P4 only; ambiguous samples {STATISTICS_VALUES['ambiguous_fpn']:.2f} % with "
           f"FPN, {STATISTICS_VALUES['ambiguous_p4']:.2f} % P4 only ({STATISTICS_VALUES['ambiguous_diff_class_fpn']:.2f} % and "
           f"{STATISTICS_VALUES['ambiguous_diff_class_p4']:.2f} % across classes).")
st.plotly_chart(box_size_histogram_figure(data.widths, data.heights, objective), key="size_histogram")
with st.expander("Per level: boxes, positive and ambiguous locations"):  # collapsed: lighter page switches
    st.dataframe(stats["per_level"], hide_index=True)
if data.num_images > len(data.boxes.image_ids):
    st.caption(f"{len(data.boxes.image_ids)} of the file's {data.num_images} images have usable boxes or fit the limit; "
               f"{data.num_crowd} crowd boxes left out, {data.num_degenerate} degenerate boxes dropped.")
st.caption(f"`{ann_file}`: recomputed in {time.perf_counter() - started:.2f} s.")
