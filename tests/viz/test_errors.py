"""TIDE figures (fcos_lab.viz.errors): bar values, error keys in customdata for an app's clicks."""

import pytest

from fcos_lab.viz.errors import breakdown_figure, breakdown_figures, tide_summary_figure

SUMMARY = {
    "Cls": 3.0, "Loc": 2.5, "Both": 0.5, "Dupe": 0.25, "Bkg": 1.0, "Miss": 4.0, "FalsePos": 9.0, "FalseNeg": 7.5,
    "AP50": 41.0, "counts": {"tp": 10, "cls": 3, "loc": 2, "both": 1, "dupe": 1, "bkg": 4, "miss": 5},
    "breakdowns": {
        "level": [{"group": "P3", "detections": 6, "counts": {"tp": 3, "cls": 1, "loc": 1, "both": 0, "dupe": 1,
                                                              "bkg": 0, "miss": 2},
                   "dAP": {"Cls": 1.0, "Loc": 0.5, "Both": 0.0, "Dupe": 0.25, "Bkg": 0.0, "Miss": 1.5}},
                  {"group": "P4", "detections": 4, "counts": {"tp": 2, "cls": 0, "loc": 1, "both": 0, "dupe": 0,
                                                              "bkg": 1, "miss": 3},
                   "dAP": {"Cls": 0.0, "Loc": 1.0, "Both": 0.0, "Dupe": 0.0, "Bkg": 0.5, "Miss": 2.0}}],
        "centerness": [{"group": "[0.0, 0.5)", "detections": 3, "counts": {"tp": 1, "cls": 1, "loc": 1, "both": 0,
                                                                           "dupe": 0, "bkg": 0, "miss": None},
                        "dAP": {"Cls": 1.0, "Loc": 0.5, "Both": 0.0, "Dupe": 0.0, "Bkg": 0.0, "Miss": None}}],
    },
}


def test_summary_figure_bars_and_click_keys():
    figure = tide_summary_figure(SUMMARY)
    main, special = figure.data
    assert list(main.x) == ["Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"]
    assert list(main.y) == [3.0, 2.5, 0.5, 0.25, 1.0, 4.0]
    assert [c[0] for c in main.customdata] == ["cls", "loc", "both", "dupe", "bkg", "miss"]
    assert list(special.x) == ["FalsePos", "FalseNeg"] and list(special.y) == [9.0, 7.5]
    assert "AP 41.00" in figure.layout.title.text


def test_breakdown_figure_one_trace_per_error_type():
    figure = breakdown_figure(SUMMARY["breakdowns"]["level"], "level")
    assert [trace.name for trace in figure.data] == ["Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"]
    miss = figure.data[-1]
    assert list(miss.x) == ["P3", "P4"] and list(miss.y) == [1.5, 2.0]
    assert [list(c) for c in miss.customdata] == [["miss", "P3"], ["miss", "P4"]]
    counts = breakdown_figure(SUMMARY["breakdowns"]["level"], "level", value="counts")
    assert list(counts.data[0].y) == [1, 0]  # Cls counts
    # Boxes have no center-ness: no Miss trace.
    assert "Miss" not in [t.name for t in breakdown_figure(SUMMARY["breakdowns"]["centerness"], "centerness").data]
    with pytest.raises(ValueError, match="value must be"):
        breakdown_figure(SUMMARY["breakdowns"]["level"], "level", value="AP")


def test_breakdown_figures_names():
    assert set(breakdown_figures(SUMMARY)) == {"tide", "by_level_dAP", "by_level_counts", "by_centerness_dAP",
                                               "by_centerness_counts"}


def test_an_example_image_draws_the_errors_and_the_boxes_they_point_at():
    import numpy as np
    import torch

    from fcos_lab.viz.errors import ERROR_COLORS, error_example_figure

    example = {"gt_boxes": np.array([[0.0, 0, 10, 10], [20, 20, 40, 40]]), "boxes": np.array([[1.0, 1, 12, 12]]),
               "texts": ["loc: dog 0.72"], "targets": np.array([[20.0, 20, 40, 40]])}
    figure = error_example_figure(torch.rand(3, 50, 60), example, "loc")
    lines = [t for t in figure.data if t.type == "scatter"]
    assert [t.name for t in lines] == ["ground truth", "ground truth", "pointed at", "loc"]
    assert lines[-1].line.color == ERROR_COLORS["loc"] and lines[2].line.dash == "dot"
    assert [a.text for a in figure.layout.annotations] == ["loc: dog 0.72"]
    assert figure.layout.title.text == "1 Loc errors"


def test_an_example_with_many_errors_draws_the_best_scored():
    import numpy as np
    import torch

    from fcos_lab.viz.errors import error_example_figure

    boxes = np.array([[k, k, k + 10.0, k + 10.0] for k in range(30)])
    example = {"gt_boxes": np.zeros((0, 4)), "boxes": boxes, "texts": [f"bkg: cat {1 - k / 100:.2f}" for k in range(30)],
               "targets": np.full((30, 4), np.nan)}
    figure = error_example_figure(torch.rand(3, 60, 60), example, "bkg", title="a.jpg: 30 Bkg", max_boxes=4)
    (outline,) = [t for t in figure.data if t.type == "scatter"]
    assert len(outline.x) == 4 * 6  # four boxes of five corners and a gap
    assert figure.layout.title.text == "a.jpg: 30 Bkg, 4 best drawn"
