"""ONNX export for deployment: network, decoding and scoring in one graph (Section 3.1 "Inference").

The graph takes ``images`` ``[1, 3, H, W]`` float32 (RGB in [0, 1], normalised with the ImageNet mean and
std, resized by the preset's rule and zero-padded at the bottom and right to multiples of 32, exactly
what :func:`fcos_lab.data.transforms.preprocess` produces) and ``image_size`` ``[2]`` int64, the (h, w) of
the resized image inside the padding. H and W are dynamic.
The graph is float32 whatever ``model.inference_amp`` says: it matches fcos_lab run with ``inference_amp=off``.

Without NMS it returns, for the P locations of all levels (the finest first, P3 or P2; row-major inside a level):

- ``boxes`` ``[1, P, 4]`` float32 xyxy in input pixels, decoded from each location and its predicted
  l, t, r, b (inverse of Eq. 1) and clipped to ``image_size``;
- ``scores`` ``[1, P, C]`` float32: classification probability x center-ness (Section 3.3; its square root,
  or without center-ness, as the preset says), and -1 where the preset's score threshold is not met.

With NMS it also takes the preset's top-k candidates per level, class-aware NMS and the per-image limit,
and returns ``boxes`` ``[K, 4]``, ``scores`` ``[K]`` and ``labels`` ``[K]`` int64 (class indices), K at
most ``max_detections``, by decreasing score. The in-graph NMS is ONNX ``NonMaxSuppression`` in float32,
where fcos_lab's own runs in float64: a pair of boxes whose IoU lies within float32 rounding of the
threshold may be kept by one and suppressed by the other, and boxes of equal score may come out in
another order.

The wrapper reads only ``model.pyramid(images)`` (the feature maps) and ``model.head(features)``
(``[B, P, C]`` logits, ``[B, P, 4]`` ltrb pixels, ``[B, P]`` center-ness logits); the locations are computed
in the graph from the symbolic feature-map sizes with :func:`fcos_lab.points.level_points`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from fcos_lab.boxes import decode_ltrb
from fcos_lab.config import Config
from fcos_lab.errors import ConfigError, FcosLabError
from fcos_lab.points import level_points
from fcos_lab.postprocess import batched_nms_groups, clip_boxes, location_scores, top_candidates

OPSET = 18
# Example input of the export, in units of 32 px: large enough that no level (P7: ceil(units / 4)) has size
# 1, on which torch.export would specialise.
_EXAMPLE_UNITS = (5, 7)


@torch.library.custom_op("fcos_lab::class_nms", mutates_args=())
def class_nms(boxes: Tensor, scores: Tensor, labels: Tensor, num_classes: int, iou_threshold: float) -> Tensor:
    """NMS within each class; boxes of negative score are no candidates.

    Args:
        boxes: ``[N, 4]`` xyxy.
        scores: ``[N]``.
        labels: ``[N]`` int64 class indices in ``[0, num_classes)``.

    Returns:
        ``[K]`` int64 indices of the kept boxes, by decreasing score.
    """
    valid = (scores >= 0).nonzero()[:, 0]
    return valid[batched_nms_groups(boxes[valid], scores[valid], labels[valid], iou_threshold)]


@class_nms.register_fake
def _class_nms_fake(boxes: Tensor, scores: Tensor, labels: Tensor, num_classes: int, iou_threshold: float) -> Tensor:
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.int64)


def _class_nms_onnx(boxes, scores, labels, num_classes: int, iou_threshold: float):
    """``fcos_lab::class_nms`` as ONNX ``NonMaxSuppression`` with one score row per class.

    Each candidate keeps its score in its own class's row and -1 elsewhere; the score threshold -0.5
    removes those entries and the candidates below the preset's threshold (score -1).
    """
    from onnxscript import opset18 as op

    classes = op.Range(op.Constant(value_int=0), op.Constant(value_int=num_classes), op.Constant(value_int=1))
    in_class = op.Equal(op.Unsqueeze(classes, [1]), op.Unsqueeze(labels, [0]))  # [C, N]
    minus_one = op.CastLike(op.Constant(value_float=-1.0), scores)
    per_class = op.Where(in_class, op.Unsqueeze(scores, [0]), minus_one)  # [C, N]
    selected = op.NonMaxSuppression(
        op.Unsqueeze(boxes, [0]),
        op.Unsqueeze(per_class, [0]),
        op.Constant(value_ints=[2**62]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[-0.5]),
    )  # [K, 3]: batch, class, box
    index = op.Reshape(op.Slice(selected, [2], [3], [1]), [-1])
    _, order = op.TopK(op.Gather(scores, index), op.Shape(index), largest=1, sorted=1)
    return op.Gather(index, order)


class DeployableFCOS(nn.Module):
    """An FCOS with decoding and scoring (and optionally NMS) in its forward, for ONNX export.

    Args:
        model: an fcos_lab FCOS; only ``model.pyramid`` and ``model.head`` are called.
        config: the config it was built with (strides, location rule, post-processing).
        nms: also select the final detections (top-k per level, class-aware NMS, max detections).
    """

    def __init__(self, model: nn.Module, config: Config, nms: bool = False) -> None:
        super().__init__()
        if config.model.detector != "fcos":
            raise ConfigError(f"ONNX export covers FCOS only, not the {config.model.detector!r} detector of {config.name!r}")
        if config.postprocess.centerness_mode == "oracle":
            raise ConfigError("postprocess.centerness_mode='oracle' needs ground truth and cannot be exported")
        self.model = model
        self.config = config
        self.nms = nms

    def forward(self, images: Tensor, image_size: Tensor) -> tuple[Tensor, ...]:
        """``[1, 3, H, W]`` padded image and ``[2]`` (h, w) in; see the module docstring for the outputs."""
        assign, post = self.config.assign, self.config.postprocess
        features = self.model.pyramid(images)
        cls_logits, box_regression, centerness_logits = self.model.head(features)
        padded = images.shape[-2:] if assign.stride_from_image else None
        shapes = [feature.shape[-2:] for feature in features]
        points = torch.cat([
            level_points(height, width, stride, assign.location_offset, padded, images.device)
            for (height, width), stride in zip(shapes, self.config.model.strides)
        ])
        ranked, _, _ = location_scores(
            cls_logits, box_regression, centerness_logits, score_thresh=post.score_thresh,
            threshold_on=post.threshold_on, centerness_mode=post.centerness_mode, score_sqrt=post.score_sqrt,
        )
        boxes = clip_boxes(decode_ltrb(points, box_regression.float()), image_size)
        if not self.nms:
            return boxes, ranked
        scores, location, labels = top_candidates(ranked, [h * w for h, w in shapes], post.pre_nms_topk)
        scores, location, labels = scores[0], location[0], labels[0]
        candidates = boxes[0, location]
        groups = torch.zeros_like(labels) if post.class_agnostic_nms else labels
        num_groups = 1 if post.class_agnostic_nms else ranked.shape[-1]
        keep = class_nms(candidates, scores, groups, num_groups, post.nms_thresh)[: post.max_detections]
        return candidates[keep], scores[keep], labels[keep]


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """The exporter's graph passes log every rewrite at INFO, which the CLI's logging would print."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_onnx(model: nn.Module, config: Config, path: str | Path, *, nms: bool = False) -> Path:
    """Export ``model`` (an fcos_lab FCOS built from ``config``) as one self-contained ONNX file.

    Uses torch's ``torch.onnx.export(..., dynamo=True)`` with dynamic height and width (multiples of
    ``config.input.size_divisible``); the file is written atomically.

    Returns:
        The written path.
    """
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise FcosLabError(f"ONNX export needs {', '.join(missing)}: pip install 'fcos_lab[onnx]'")
    path = Path(path)
    wrapper = DeployableFCOS(model.eval(), config, nms=nms).eval()
    unit = config.input.size_divisible
    example = (torch.zeros(1, 3, _EXAMPLE_UNITS[0] * unit, _EXAMPLE_UNITS[1] * unit),
               torch.tensor([_EXAMPLE_UNITS[0] * unit, _EXAMPLE_UNITS[1] * unit]))
    height, width = torch.export.Dim("height_units", min=1), torch.export.Dim("width_units", min=1)
    outputs = ["boxes", "scores", "labels"] if nms else ["boxes", "scores"]
    with torch.no_grad(), _quiet_loggers("onnxscript", "onnx_ir"):
        program = torch.onnx.export(
            wrapper, example, dynamo=True, opset_version=OPSET, input_names=["images", "image_size"],
            output_names=outputs, dynamic_shapes={"images": {2: unit * height, 3: unit * width}, "image_size": None},
            custom_translation_table={torch.ops.fcos_lab.class_nms.default: _class_nms_onnx}, verbose=False,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # not mkstemp: keep the umask's permissions
    try:
        program.save(str(tmp), external_data=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
