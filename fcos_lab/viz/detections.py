"""Detections of one image as a table and a figure (Section 3.1 "Inference", Section 3.3, Figure 8).

:func:`detection_rows` lists each detection's class, score, classification score, center-ness, level and
box; :func:`detections_figure` draws them over the image with the location that predicted each box. The
detections come from :func:`fcos_lab.predict.detections_from` (the app's Detections page, notebook 10)
or :func:`fcos_lab.predict.detect`. Boxes are xyxy in absolute pixels of the original image.

Arrays in, plotly figures out; plotly is imported inside the figure function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from fcos_lab.viz.draw import class_color
from fcos_lab.viz.image_figures import add_boxes, image_figure

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from fcos_lab.postprocess import Detections


PLOT_WIDTH = 800  # screen pixels: a figure beside its legend in a wide page


def detection_rows(detections: Detections, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One table row per detection: class, score, classification score, center-ness, level, box."""
    rows = []
    for box, label, score, cls, ctr, level in zip(
        detections.boxes.tolist(), detections.labels.tolist(), detections.scores.tolist(),
        detections.cls_scores.tolist(), detections.centerness.tolist(), detections.levels.tolist(),
    ):
        rows.append({
            "class": class_names[label] if 0 <= label < len(class_names) else str(label),
            "score": round(score, 3), "classification": round(cls, 3), "center-ness": round(ctr, 3),
            "level": f"P{level}", "x0, y0, x1, y1": ", ".join(f"{v:.0f}" for v in box),
        })
    return rows


def detections_figure(
    image: Tensor, detections: Detections, class_names: Sequence[str], *, gt_boxes: Tensor | None = None,
    height: int = 640, max_labels: int = 25,
) -> go.Figure:
    """Detections over the image (in grey): box, class, score, level and center-ness; ground truth dashed white.

    At most the ``max_labels`` best boxes carry a text label, placed so that no label covers another
    (:func:`fcos_lab.viz.image_figures.place_labels`; one that fits nowhere is left out); hovering the dot at
    the location that produced a box (Section 3.1) shows all its numbers. The legend has one entry per class
    drawn, in its colour.
    """
    import plotly.graph_objects as go

    figure = image_figure(image, height=height, gray=True)  # class colours stay visible on any object
    if gt_boxes is not None and len(gt_boxes):
        add_boxes(figure, gt_boxes, ["white"] * len(gt_boxes), [], dash="dash", width=2, name="ground truth")
        # The legend's swatch: grey, as white would not show on the legend's white background.
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"ground truth ({len(gt_boxes)}), dashed white",
                                    line={"color": "grey", "dash": "dash"}))
    rows = detection_rows(detections, class_names)
    colors = [f"rgb{class_color(int(c))}" for c in detections.labels.tolist()]
    texts = [f"{r['class']} {r['score']:.2f} {r['level']} ctr {r['center-ness']:.2f}" for r in rows[:max_labels]]
    # Screen pixels per image pixel, at most: the plot area is about the height less the margins, and rarely wider
    # than PLOT_WIDTH; an underestimate only leaves more room between labels.
    scale = min((height - 50) / max(image.shape[-2], 1), PLOT_WIDTH / max(image.shape[-1], 1))
    add_boxes(figure, detections.boxes, colors, texts, width=2, name="detections", screen_per_pixel=scale)
    labels = detections.labels.tolist()
    for label in sorted(set(labels), key=labels.index):  # legend: the classes drawn, best detection first
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{name} ({labels.count(label)})",
                                    marker={"size": 10, "symbol": "square", "color": f"rgb{class_color(label)}"},
                                    legendgroup="classes", legendgrouptitle_text="classes"))
    if rows:
        points = detections.locations.detach().cpu().numpy()
        hover = [
            f"<b>{r['class']}</b> score {r['score']:.3f}<br>from classification {r['classification']:.3f} "
            f"and center-ness {r['center-ness']:.3f}<br>level {r['level']}, location ({x:.0f}, {y:.0f})"
            f"<br>box [{r['x0, y0, x1, y1']}]"
            for r, (x, y) in zip(rows, points.tolist())
        ]
        figure.add_trace(go.Scatter(
            x=points[:, 0], y=points[:, 1], mode="markers", name=f"detections ({len(rows)}), at their locations",
            marker={"size": 8, "color": colors, "line": {"width": 1, "color": "black"}},
            hovertext=hover, hoverinfo="text",
        ))
    figure.update_layout(title=f"{len(rows)} detections")
    return figure
