"""Interactive views of the workshop notebooks: ipywidgets controls over the figures of :mod:`fcos_lab.viz`.

- :class:`AssignmentView`: the image, the size-range boundaries m_i, the center-sampling radius and the
  level; redraws the per-level assignment (:func:`fcos_lab.viz.assignments.assignment_figure`) and the
  center-ness targets (:func:`fcos_lab.viz.heatmaps.centerness_target_figure`) of
  :func:`fcos_lab.analysis.image_assignment.assign_image` under
  :func:`~fcos_lab.analysis.image_assignment.objective_variant`, exactly what training would assign.
- :class:`DetectionsView`: the image, the score threshold and center-ness on or off; redraws the detections
  (:func:`fcos_lab.viz.detections.detections_figure`) of one network run (:func:`fcos_lab.predict.predict_dense`).

Both draw their first state when shown, as ordinary display outputs (:mod:`fcos_lab.workshop.display`): a
notebook run by papermill, or exported to HTML, shows it without a kernel. Moving a control redraws those
outputs in place. ``figures()`` computes the current figures without displaying anything (tests).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import ipywidgets as widgets

from fcos_lab.analysis.centerness_maps import target_centerness_grids
from fcos_lab.analysis.image_assignment import ImageAssignment, assign_image, objective_variant, ranges_from_boundaries
from fcos_lab.config import Config
from fcos_lab.data.coco import CocoDetection
from fcos_lab.data.samples import Sample, dataset_sample, resize_sample
from fcos_lab.errors import FcosLabError
from fcos_lab.objective import Objective
from fcos_lab.predict import DensePrediction, detections_from, predict_dense
from fcos_lab.runs import LoadedModel
from fcos_lab.viz.assignments import assignment_figure
from fcos_lab.viz.detections import detections_figure
from fcos_lab.viz.heatmaps import centerness_target_figure
from fcos_lab.workshop import display

ALL_LEVELS = "all levels"


def _image_picker(dataset: CocoDetection, image_ids: Sequence[int] | None, count: int) -> widgets.Dropdown:
    ids = list(image_ids) if image_ids is not None else list(dataset.image_ids[:count])
    options = [(f"{dataset.coco.imgs[i]['file_name']} (id {i})", i) for i in ids]
    return widgets.Dropdown(options=options, value=ids[0], description="image")


class _View(ABC):
    """Controls above figures; subclasses say which controls and how to draw."""

    controls: list[widgets.Widget]

    def __init__(self) -> None:
        self.status = widgets.HTML()
        self._display_ids: list[str | None] = []

    @abstractmethod
    def figures(self) -> list[Any]:
        """The figures of the controls' current values."""

    def show(self) -> None:
        """Display the controls and the first state; redraw on every change."""
        from IPython.display import display as show_widget

        show_widget(widgets.VBox([widgets.HBox(self.controls[:3]), widgets.HBox(self.controls[3:]), self.status]))
        self._display_ids = [display.show(figure) for figure in self._safe_figures()]
        for control in self.controls:
            control.observe(self._redraw, names="value")

    def _safe_figures(self) -> list[Any]:
        """The figures, or the previous ones with the error in the status line (a bad value typed)."""
        try:
            figures = self.figures()
        except FcosLabError as error:
            self.status.value = f"<span style='color:#c00'>{error}</span>"
            return []
        self.status.value = ""
        return figures

    def _redraw(self, _change: dict) -> None:
        for display_id, figure in zip(self._display_ids, self._safe_figures()):
            display.replace(display_id, figure)


class AssignmentView(_View):
    """Which locations regress which box, and their center-ness targets, as the controls change.

    Args:
        config: the preset whose assignment is shown (levels, ranges, radius are the starting values).
        dataset: where the images come from (in their own frame; resized here as the config's loader does).
        image_ids: the images offered (default: the first ``count``).
        class_names: names of the class indices.
    """

    def __init__(self, config: Config, dataset: CocoDetection, image_ids: Sequence[int] | None = None,
                 class_names: Sequence[str] = (), count: int = 20) -> None:
        super().__init__()
        self.config, self.dataset, self.class_names = config, dataset, tuple(class_names or dataset.class_names)
        objective = Objective.from_config(config)
        boundaries = [hi for _, hi in objective.size_ranges[:-1]]
        top = max(boundaries, default=64) * 4
        self.image = _image_picker(dataset, image_ids, count)
        self.boundaries = [
            widgets.FloatSlider(value=b, min=1, max=top, step=1, description=f"m{i + 3}", continuous_update=False)
            for i, b in enumerate(boundaries)
        ]
        self.radius = widgets.FloatSlider(value=objective.center_sampling_radius, min=0, max=3, step=0.25,
                                          description="radius", continuous_update=False)
        self.level = widgets.Dropdown(options=[ALL_LEVELS, *objective.level_names], value=ALL_LEVELS, description="level")
        self.controls = [self.image, self.level, self.radius, *self.boundaries]
        self._sample = lru_cache(maxsize=8)(self._load)

    def _load(self, image_id: int) -> Sample:
        return resize_sample(dataset_sample(self.dataset, image_id), self.config)

    def sample(self) -> Sample:
        """The chosen image and its boxes, in the config's training frame."""
        return self._sample(self.image.value)

    def assignment(self) -> ImageAssignment:
        """The assignment of the chosen image under the chosen ranges and radius."""
        sample = self.sample()
        ranges = ranges_from_boundaries([s.value for s in self.boundaries]) if self.boundaries else None
        objective = objective_variant(self.config, size_ranges=ranges, center_sampling_radius=self.radius.value)
        return assign_image(objective, tuple(sample.image.shape[-2:]), sample.boxes, sample.labels, crowd=sample.crowd,
                            size_divisible=self.config.input.size_divisible)

    def figures(self) -> list[Any]:
        sample = self.sample()
        assignment = self.assignment()
        level = None if self.level.value == ALL_LEVELS else assignment.objective.level_names.index(self.level.value)
        grids = target_centerness_grids(assignment)
        if level is not None:
            grids = grids[level : level + 1]
        return [assignment_figure(sample.image, assignment, level, self.class_names, show_negatives=level is not None,
                                  height=520),
                centerness_target_figure(sample.image, grids, panel_height=260)]


class DetectionsView(_View):
    """A trained model's detections on an image as the score threshold and center-ness change.

    Args:
        loaded: the model (:func:`fcos_lab.runs.load_detector`).
        dataset: where the images come from; its boxes are drawn as ground truth.
        score_thresh: the threshold's starting value.
    """

    def __init__(self, loaded: LoadedModel, dataset: CocoDetection, image_ids: Sequence[int] | None = None,
                 score_thresh: float = 0.3, count: int = 20) -> None:
        super().__init__()
        self.loaded, self.dataset = loaded, dataset
        self.image = _image_picker(dataset, image_ids, count)
        self.score = widgets.FloatSlider(value=score_thresh, min=0.05, max=0.95, step=0.05, description="cls score >",
                                         continuous_update=False)
        self.centerness = widgets.Checkbox(value=True, description="multiply by center-ness")
        self.controls = [self.image, self.score, self.centerness]
        self._dense = lru_cache(maxsize=8)(self._predict)

    def _predict(self, image_id: int) -> tuple[Sample, DensePrediction]:
        sample = dataset_sample(self.dataset, image_id)
        return sample, predict_dense(self.loaded, sample.image)

    def figures(self) -> list[Any]:
        sample, dense = self._dense(self.image.value)
        detections = detections_from(dense, score_thresh=self.score.value,
                                     nms_thresh=self.loaded.config.postprocess.nms_thresh,
                                     use_centerness=self.centerness.value)
        return [detections_figure(sample.image, detections, self.loaded.class_names, gt_boxes=sample.boxes, height=520)]
