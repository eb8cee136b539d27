"""The workshop's interactive views and session, without a notebook: controls in, figures of fcos_lab.viz out.

(Under a kernel the first state is a saved display output: tests/workshop/test_notebooks.py checks that.)
"""

from __future__ import annotations

import pytest

from fcos_lab.runs import load_detector
from fcos_lab.workshop.session import Workshop
from fcos_lab.workshop.views import ALL_LEVELS, AssignmentView, DetectionsView
from tests.workshop.conftest import SMALL_DATA


def test_assignment_view_redraws_as_the_controls_move(small_workshop):
    _, config, val_set = small_workshop
    view = AssignmentView(config, val_set)
    assert [c.description for c in view.controls] == ["image", "level", "radius", "m3", "m4", "m5", "m6"]
    assert view.radius.value == config.assign.center_sampling_radius
    assert [s.value for s in view.boundaries] == [hi for _, hi in config.assign.size_ranges[:-1]]
    assignment_figure, centerness_figure = view.figures()
    assert "all levels" in assignment_figure.layout.title.text and len(centerness_figure.data) == 2 * 5

    # With the paper's m_i = 8 x stride (the demo's ranges are a quarter of that, where a 1.5-stride region
    # covers most of a box), center sampling off gives more positives, never fewer.
    for slider, boundary in zip(view.boundaries, (64, 128, 256, 512)):
        slider.value = boundary
    counts = []
    for _, image_id in view.image.options:
        view.image.value, view.radius.value = image_id, 1.5
        with_sampling = view.assignment().num_positive
        view.radius.value = 0
        counts.append((with_sampling, view.assignment().num_positive))
    assert all(off >= on for on, off in counts) and any(off > on for on, off in counts), counts
    view.image.value = view.image.options[0][1]
    view.level.value = "P3"
    assignment_figure, centerness_figure = view.figures()
    assert assignment_figure.layout.title.text.startswith("P3 (stride 8)")
    assert any(trace.name == "negative" for trace in assignment_figure.data) and len(centerness_figure.data) == 2
    view.level.value = ALL_LEVELS

    view.boundaries[0].value = 1  # m3 = 1: P3 keeps only boxes within a pixel, the rest moves up
    assert view.assignment().objective.size_ranges[0] == (0.0, 1.0)
    view.image.value = view.image.options[1][1]
    assert view.sample().name.startswith(val_set.coco.imgs[view.image.value]["file_name"])


def test_a_bad_value_is_shown_in_the_status_line_not_raised(small_workshop):
    _, config, val_set = small_workshop
    view = AssignmentView(config, val_set)
    view.show()  # outside IPython: no outputs, but the controls are wired
    view.boundaries[1].value = view.boundaries[0].value  # m4 = m3: not increasing
    assert "increasing" in view.status.value
    view.boundaries[1].value = view.boundaries[0].value + 8
    assert view.status.value == ""


@pytest.fixture(scope="module")
def tiny_model(small_workshop):
    folder, _, _ = small_workshop
    ws = Workshop(folder, overrides=SMALL_DATA)
    result = ws.train("runs/tiny", iterations=3)
    return ws, load_detector(result.run_dir / "model_final.pt")


def test_detections_view_follows_the_threshold_and_centerness(tiny_model):
    ws, loaded = tiny_model
    view = DetectionsView(loaded, ws.val_set, score_thresh=0.05)
    (figure,) = view.figures()
    low = int(figure.layout.title.text.split()[0])
    view.score.value = 0.95
    (figure,) = view.figures()
    assert int(figure.layout.title.text.split()[0]) <= low
    view.centerness.value = False
    assert view.figures()[0].layout.title.text.endswith("detections")


def test_the_session_trains_evaluates_and_tabulates_table4(tiny_model):
    ws, loaded = tiny_model
    assert ws.trained_model("runs/tiny").path == loaded.path  # no second training
    rows = ws.centerness_table(loaded)
    assert [r["ranking score"] for r in rows][2:] == ["learned center-ness", "ground-truth center-ness (oracle)"]
    assert all(0.0 <= r["AP"] <= 1.0 for r in rows)
    padded, shapes = ws.network_feature_shapes(0)
    size = ws.config.input.min_size  # the demo preset's square synthetic images, a multiple of 32 and of 128
    assert padded == (size, size)
    assert shapes == tuple((size // s, size // s) for s in ws.config.model.strides)


def test_check_with_solutions_returns_the_reference(small_workshop, capsys):
    from fcos_lab.workshop import exercises, solutions

    folder, _, _ = small_workshop
    ws = Workshop(folder, solutions=True, overrides=SMALL_DATA)
    assert ws.check("2.5", exercises.minimal_area_box) is solutions.minimal_area_box
    assert "exercise 2.5 passed" in capsys.readouterr().out
    with pytest.raises(KeyError, match="no exercise '9.9'"):
        ws.check("9.9", exercises.minimal_area_box)
