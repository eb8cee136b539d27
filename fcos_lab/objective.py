"""The training objective of a configuration: locations, assignment, loss (Sections 3.1, 3.2, 3.3).

:class:`Objective` is the one place that turns a :class:`~fcos_lab.config.Config` into what training
optimizes: where the locations of an output are (Section 3.1, ``floor(s/2) + x*s``), which box each
location regresses (Sections 3.1-3.2 and Table 3's center sampling, :func:`fcos_lab.targets.assign`),
the loss (Eq. 2 plus the center-ness BCE, :func:`fcos_lab.losses.fcos_loss`, or the anchor baselines'),
and the ground-truth center-ness that Table 4's oracle uses at test time.

It is the only reader of ``config.assign`` (and of the box convention's "+1" areas): training, the
paper's statistics (``fcos-lab stats``), FiftyOne's assignment attributes, the app and the notebooks
all call it, so a new switch reaches every one of them by construction. (detectron2's ``from_config``,
without the registry.)

Glossary: B images, P locations over all levels, M ground-truth boxes, C classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from fcos_lab import paper
from fcos_lab.anchor_based.detector import AnchorOutput
from fcos_lab.anchor_based.losses import anchor_loss, assign_anchors
from fcos_lab.config import Config, LossConfig
from fcos_lab.losses import LossInputs, fcos_loss
from fcos_lab.model.detector import FCOSOutput
from fcos_lab.points import Locations, grid_shapes, make_locations
from fcos_lab.targets import Assignment, GroundTruth, assign


@dataclass(frozen=True)
class Objective:
    """Everything a config says about locations, targets and the loss, unpacked once.

    Attributes:
        strides: stride of each level (P3..P7: 8..128).
        location_offset: ``"half_stride"`` (Section 3.1's ``floor(s/2)``) or ``"zero"`` (torchvision).
        stride_from_image: torchvision's spacing ``padded_size // grid_size`` instead of the stride.
        size_ranges: ``(m_{i-1}, m_i)`` of each level (Section 3.2).
        size_range_inclusive: ``m_{i-1} <= max <= m_i`` (paper, official code) or strict (torchvision).
        center_sampling_radius: Table 3's radius in strides; 0 turns center sampling off.
        center_sampling_rule: ``"region"`` (the authors' arithmetic) or ``"distance"`` (torchvision's).
        area_offset: 1 for the authors' "+1" areas of "legacy" boxes, else 0.
        area_tiebreak_float32: torchvision's minimal area through float32 ``1e8 - area``.
        class_agnostic: one "object" class (Section 5's proposals): the loss ignores the box classes.
        loss_config: the loss switches (focal loss, IoU / GIoU / smooth-L1, weights).
        anchor_pos_iou, anchor_neg_iou, anchor_low_quality: the anchor baselines' IoU matching.
    """

    strides: tuple[int, ...] = paper.STRIDES
    location_offset: str = "half_stride"
    stride_from_image: bool = False
    size_ranges: tuple[tuple[float, float], ...] = paper.SIZE_RANGES
    size_range_inclusive: bool = True
    center_sampling_radius: float = 0.0
    center_sampling_rule: str = "region"
    area_offset: float = 0.0
    area_tiebreak_float32: bool = False
    class_agnostic: bool = False
    loss_config: LossConfig = LossConfig()
    anchor_pos_iou: float = 0.5
    anchor_neg_iou: float = 0.4
    anchor_low_quality: str = "0.4"

    @classmethod
    def from_config(cls, config: Config) -> Objective:
        """The objective of ``config``: ``config.assign``, ``config.loss`` and the box convention."""
        a = config.assign
        return cls(
            strides=tuple(config.model.strides),
            location_offset=a.location_offset,
            stride_from_image=a.stride_from_image,
            size_ranges=tuple((float(lo), float(hi)) for lo, hi in a.size_ranges),
            size_range_inclusive=a.size_range_inclusive,
            center_sampling_radius=float(a.center_sampling_radius),
            center_sampling_rule=a.center_sampling_rule,
            area_offset=1.0 if config.data.box_convention == "legacy" else 0.0,
            area_tiebreak_float32=a.area_tiebreak_float32,
            class_agnostic=config.data.class_agnostic,
            loss_config=config.loss,
            anchor_pos_iou=a.anchor_pos_iou,
            anchor_neg_iou=a.anchor_neg_iou,
            anchor_low_quality=a.anchor_low_quality,
        )

    def without_fpn(self) -> Objective:
        """The paper's "w/o FPN" rows (Tables 1 and 2): the stride-16 map P4 alone, no size limit."""
        return replace(self, strides=(paper.P4_ONLY_STRIDE,), size_ranges=((0.0, math.inf),))

    @property
    def level_names(self) -> tuple[str, ...]:
        """``"P3"`` .. ``"P7"`` for strides 8 .. 128 (``"s<stride>"`` for a stride that is no power of two)."""
        return tuple(f"P{round(math.log2(s))}" if s & (s - 1) == 0 else f"s{s}" for s in self.strides)

    # -------------------------------------------------------------------------------------- locations

    def locations(
        self, feature_shapes: tuple[tuple[int, int], ...], image_size: tuple[int, int], device: torch.device | str = "cpu"
    ) -> Locations:
        """The locations of feature maps of ``feature_shapes`` over a padded input of ``image_size`` (H, W)."""
        return make_locations(
            feature_shapes, self.strides, offset=self.location_offset,
            image_size=tuple(image_size) if self.stride_from_image else None, device=device,
        )

    def image_locations(self, padded_size: tuple[int, int], device: torch.device | str = "cpu") -> Locations:
        """The locations of a padded input of ``padded_size`` (H, W) without running the network."""
        return self.locations(grid_shapes(padded_size, self.strides), padded_size, device)

    def output_locations(self, output: FCOSOutput | AnchorOutput) -> Locations:
        """Where the P outputs of a model output are: FCOS locations, or the anchor baselines' centers."""
        if isinstance(output, AnchorOutput):
            return output.locations
        return self.locations(output.feature_shapes, output.image_size, output.cls_logits.device)

    # -------------------------------------------------------------------------------------- targets

    def assign(self, locations: Locations, gt: GroundTruth) -> Assignment:
        """:func:`fcos_lab.targets.assign` with every switch of the config."""
        return assign(
            locations,
            gt,
            self.size_ranges,
            size_range_inclusive=self.size_range_inclusive,
            center_sampling_radius=self.center_sampling_radius,
            center_sampling_rule=self.center_sampling_rule,
            area_offset=self.area_offset,
            area_tiebreak_float32=self.area_tiebreak_float32,
        )

    def assign_output(self, output: FCOSOutput, gt: GroundTruth) -> Assignment:
        """The assignment of ``gt`` on the locations of ``output``."""
        return self.assign(self.output_locations(output), gt)

    def oracle_centerness(self, output: FCOSOutput, gt: GroundTruth) -> Tensor:
        """``[B, P]`` ground-truth center-ness (Eq. 3) at every location, 0 where no box is assigned.

        The "oracle" of Table 4's discussion: the test-time score uses the center-ness the location should
        have predicted. It needs the ground truth, so it exists for evaluation only.
        """
        return self.assign_output(output, gt.to(output.cls_logits.device)).centerness_targets

    # -------------------------------------------------------------------------------------- loss

    def loss(self, output: FCOSOutput | AnchorOutput, gt: GroundTruth) -> dict[str, Tensor]:
        """Assignment then the loss: ``{"loss_cls", "loss_box", "loss_centerness", "loss"}``.

        FCOS: Eq. (2) plus the center-ness BCE. Anchor baselines: RetinaNet's focal + smooth-L1 or RPN's
        sampled BCE + smooth-L1 (:mod:`fcos_lab.anchor_based.losses`).
        """
        l = self.loss_config
        if self.class_agnostic:
            gt = GroundTruth(gt.boxes, torch.zeros_like(gt.labels), gt.valid, gt.crowd)
        if isinstance(output, AnchorOutput):
            matched = assign_anchors(output.anchors, gt, self.anchor_pos_iou, self.anchor_neg_iou, self.anchor_low_quality)
            return anchor_loss(
                output.cls_logits, output.box_deltas, matched,
                focal_alpha=l.focal_alpha, focal_gamma=l.focal_gamma, smooth_l1_beta=l.smooth_l1_beta,
                box_loss_weight=l.box_loss_weight, sample_size=l.anchor_sample_size,
                positive_fraction=l.anchor_sample_positive_fraction,
            )
        locations = self.output_locations(output)
        assignment = self.assign(locations, gt)
        return fcos_loss(
            LossInputs(
                cls_logits=output.cls_logits,
                box_regression=output.box_regression,
                centerness_logits=output.centerness_logits,
                labels=assignment.labels,
                box_targets=assignment.box_targets,
                centerness_targets=assignment.centerness_targets,
                positive=assignment.positive,
                strides=locations.strides[None, :],
            ),
            focal_alpha=l.focal_alpha,
            focal_gamma=l.focal_gamma,
            box_loss=l.box_loss,
            box_loss_weight=l.box_loss_weight,
            centerness_weighted_box_loss=l.centerness_weighted_box_loss,
            iou_smooth=l.iou_smooth,
        )
