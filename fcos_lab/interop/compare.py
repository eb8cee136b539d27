"""Whether two detectors gave the same detections: the check behind every parity claim of fcos_lab.

Used by the torchvision-parity tests, the weights import, the ONNX export check and the benchmarks.
With random weights many detections share a score to the last bits, and two implementations may order
such ties differently (or, at float32 noise, swap two near-equal scores), so rows are matched as a set:
each expected row to an unused row of the same label, a score within ``score_tol`` and a box within
``box_tol`` pixels. Rows tied with the lowest kept score (within ``score_tol``) are exempt: where the
per-image limit (100) cuts through a tie, either library may keep either row; their number must agree.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _rows(detections: Any) -> tuple[Tensor, Tensor, Tensor]:
    """``(boxes [K, 4], scores [K], labels [K])`` of a torchvision result dict or a Detections object."""
    if isinstance(detections, dict):
        return detections["boxes"], detections["scores"], detections["labels"]
    return detections.boxes, detections.scores, detections.labels


def detections_mismatch(expected: Any, got: Any, *, score_tol: float = 1e-5, box_tol: float = 1e-3) -> str | None:
    """None when ``got`` holds the rows of ``expected`` (in any order among near-equal scores), else why not.

    Args:
        expected, got: torchvision-style dicts (``boxes``, ``scores``, ``labels``) or
            :class:`fcos_lab.postprocess.Detections`, boxes xyxy in the same pixels.
        score_tol: the largest score difference of matched rows.
        box_tol: the largest coordinate difference of matched rows, in pixels.
    """
    exp_boxes, exp_scores, exp_labels = (t.detach().cpu() for t in _rows(expected))
    got_boxes, got_scores, got_labels = (t.detach().cpu() for t in _rows(got))
    if len(exp_scores) != len(got_scores):
        return f"{len(got_scores)} detections, expected {len(exp_scores)}"
    unused = torch.ones(len(got_scores), dtype=torch.bool)
    cut = min(float(exp_scores.min()), float(got_scores.min())) + score_tol if len(exp_scores) else 0.0
    for k, (score, label, box) in enumerate(zip(exp_scores, exp_labels, exp_boxes)):
        if float(score) <= cut:
            continue
        close = (
            unused
            & ((got_scores - score).abs() <= score_tol)
            & (got_labels == label)
            & ((got_boxes - box).abs() <= box_tol).all(dim=1)
        ).nonzero()
        if len(close) == 0:
            return (f"expected detection {k} (label {int(label)}, score {float(score):.6f}, box "
                    f"{[round(float(v), 3) for v in box]}) has no match within {score_tol} / {box_tol} px")
        unused[close[0, 0]] = False
    return None
