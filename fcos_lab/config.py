"""Configuration: one frozen dataclass field per switch of the paper, validated dotted overrides.

:func:`apply_overrides` applies dotted overrides (``model.backbone=resnet101``, ``train.max_iters=200``):
an unknown key or a wrong type fails with a message that lists the valid choices. :func:`validate` holds
the cross-field checks and :func:`config_from_dict` reads a saved config back. The presets named after
the paper's rows, and :func:`fcos_lab.presets.resolve` (a preset plus overrides), are in
:mod:`fcos_lab.presets`.

Sections cited: 3.1 (locations, Eq. 1, Eq. 2), 3.2 (FPN, size ranges, exp(s_i x)), 3.3 (center-ness,
Eq. 3), 4 (training details), Table 3 (improvements), Table 5 (backbones), Table 8 (ablations).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from fcos_lab import paper
from fcos_lab.errors import ConfigError

INF = math.inf

# Not in the paper: autocast of the network (fcos_lab/precision.py); assignment, losses and NMS stay fp32.
AmpSetting = Literal["auto", "off", "bf16", "fp16"]
Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x8d", "resnext101_64x4d"]


@dataclass(frozen=True)
class ModelConfig:
    """Network architecture (Section 3.1, 3.2, 3.3 and Figure 2)."""

    backbone: Backbone = "resnet50"  # Section 4: ResNet-50 unless stated; Table 5 adds
    pretrained_backbone: str | None = None  # local torchvision state-dict file; never downloaded
    frozen_stages: int = 1  # Section 4 follows Detectron: stem and res2 frozen (0 = nothing frozen)
    backbone_norm: Literal["frozen_bn", "bn", "gn"] = "frozen_bn"  # frozen with ImageNet weights; bn/gn from scratch
    num_classes: int = 80  # Section 3.1: C = 80 binary classifiers on COCO
    fpn_channels: int = 256  # Figure 2: 256-channel pyramid
    p6p7_from: Literal["p5", "c5"] = "p5"  # Section 4.1.3: P6/P7 from P5 (C5 in RetinaNet, Table 3 row 1)
    head_num_convs: int = 4  # Section 3.1: four 3x3 convs per tower
    head_norm: Literal["gn", "none"] = "gn"  # Section 4.1.3: GroupNorm in the head towers
    centerness_on: Literal["cls", "reg", "none"] = "cls"  # Section 3.3 / footnote 2 / Table 3 "ctr. on reg."
    box_param: Literal["exp", "relu"] = "exp"  # Section 3.1 exp(x); "relu" = ReLU(x)*stride (Table 3 "Normalization")
    learnable_scale: bool = True  # Section 3.2: exp(s_i x) with a trainable scalar per level (Table 8 "Scalar")
    prior_prob: float = 0.01  # Section 4: classification bias init as in RetinaNet
    strides: tuple[int, ...] = paper.STRIDES  # Section 3.2: P3..P7; (4, 8, ..., 128) adds P2 (an extension)
    detector: Literal["fcos", "anchor"] = "fcos"  # "anchor": the RetinaNet / RPN baselines of Tables 3, 6, 8
    anchor_sizes: tuple[float, ...] = paper.RETINANET_ANCHOR_SIZES  # RetinaNet: 4 x stride per level
    anchor_scales: tuple[float, ...] = paper.RETINANET_ANCHOR_SCALES  # 3 per octave (#A=9 with 3 ratios)
    anchor_ratios: tuple[float, ...] = paper.RETINANET_ANCHOR_RATIOS  # h / w
    # Not in the paper: precision of prediction and evaluation; auto = bf16 where the CPU/GPU has bf16 units
    inference_amp: AmpSetting = "auto"


@dataclass(frozen=True)
class AssignConfig:
    """Which locations are positive and what they regress (Sections 3.1 and 3.2).

    Read by :class:`fcos_lab.objective.Objective` alone, which every surface calls.
    """

    size_ranges: tuple[tuple[float, float], ...] = paper.SIZE_RANGES  # Section 3.2: m_2..m_7
    size_range_inclusive: bool = True  # official code: m_{i-1} <= max(l*,t*,r*,b*) <= m_i; torchvision uses strict
    center_sampling_radius: float = 0.0  # Table 3 "ctr. sampling": 1.5 strides; 0 = off (paper's main model)
    # The center region's arithmetic (equal in exact arithmetic, not always in float32): "region" is the
    # authors' get_sample_region, the region [c - r*s, c + r*s] clamped to the box and every side distance
    # > 0; "distance" is torchvision's max(|x - cx|, |y - cy|) < r*s together with "inside the box".
    center_sampling_rule: Literal["region", "distance"] = "region"
    location_offset: Literal["half_stride", "zero"] = "half_stride"  # Section 3.1: floor(s/2) + x*s
    stride_from_image: bool = False  # torchvision quirk: stride = padded_size // grid_size for location centers
    area_tiebreak_float32: bool = False  # torchvision quirk: minimal area picked through float32 (1e8 - area)
    anchor_pos_iou: float = 0.5  # RetinaNet: positive at IoU >= 0.5 (RPN: 0.7)
    anchor_neg_iou: float = 0.4  # RetinaNet: negative below 0.4 (RPN: 0.3); ignored in between
    anchor_low_quality: Literal["none", "0.4", "all"] = "0.4"  # Table 1's rules; Detectron's RetinaNet keeps >= 0.4


@dataclass(frozen=True)
class LossConfig:
    """Training loss, Eq. (2) plus the center-ness BCE of Section 3.3."""

    focal_alpha: float = 0.25  # Section 3.1 following RetinaNet
    focal_gamma: float = 2.0
    box_loss: Literal["iou", "giou", "smooth_l1"] = "iou"  # Eq. 2: UnitBox IoU loss; Table 3 "+ GIoU"; Table 8
    box_loss_weight: float = 1.0  # Eq. 2: lambda = 1
    centerness_weighted_box_loss: bool = False  # improved version: box loss weighted by center-ness targets
    iou_smooth: float = 0.0  # official code adds 1 to intersection and union; the paper's -ln(IoU) has none
    smooth_l1_beta: float = 0.11  # anchor baselines: smooth-L1 on box deltas (Detectron RetinaNet 0.11, RPN 1/9)
    anchor_sample_size: int = 0  # RPN: anchors sampled per image for a BCE loss (256); 0 = focal loss on all
    anchor_sample_positive_fraction: float = 0.5  # RPN: at most half of the sample positive


@dataclass(frozen=True)
class PostprocessConfig:
    """Inference (Section 3.1 "Inference", Section 4 "Inference Details")."""

    score_thresh: float = paper.SCORE_THRESH  # Section 3.1: locations with p > 0.05
    threshold_on: Literal["cls", "combined"] = "cls"  # torchvision thresholds the combined score instead
    pre_nms_topk: int = 1000  # RetinaNet's 1000 candidates per level
    nms_thresh: float = 0.6  # Table 3: 0.6 with GN (0.5 in the RetinaNet-settings rows)
    max_detections: int = 100  # 100 detections per image (COCO)
    centerness_mode: Literal["learned", "none", "from_box", "oracle"] = "learned"  # Table 4 rows
    score_sqrt: bool = False  # official code reports sqrt(cls * ctr); the paper multiplies
    class_agnostic_nms: bool = False  # proposals (Section 5) use one class


@dataclass(frozen=True)
class InputConfig:
    """Image sizes (Section 4 "Training Details" and 4.2)."""

    min_size: int = paper.MIN_SIZE  # shorter side at test time
    train_min_size: tuple[int, int] = (paper.MIN_SIZE, paper.MIN_SIZE)  # (lo, hi): Section 4.2 samples 640..800
    max_size: int = paper.MAX_SIZE  # longer side at most 1333
    # The resized size, an integer computation (fcos_lab.data.transforms.resized_size): "official" is the
    # authors' Resize.get_size (shorter side exactly min_size unless the longer would pass max_size);
    # "torchvision" is GeneralizedRCNNTransform's floor(side * min(min_size / short, max_size / long)).
    resize_rule: Literal["official", "torchvision"] = "official"
    size_divisible: int = 32
    flip_prob: float = 0.5


@dataclass(frozen=True)
class TrainConfig:
    """Optimization (Section 4 "Training Details")."""

    max_iters: int = 90_000  # 90K iterations (2x = 180K for Table 5)
    batch_size: int = 16  # 16 images per iteration
    base_lr: float = 0.01  # at batch 16, scaled linearly with the batch
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_steps: tuple[float, ...] = (2 / 3, 8 / 9)  # 60K and 80K of 90K, as fractions of max_iters
    lr_gamma: float = 0.1
    warmup_iters: int = 500  # Detectron's linear warmup
    warmup_factor: float = 1 / 3
    grad_clip: float = 0.0  # Section 4.1.3: gradients clipped when GN is off; 0 = no clipping
    # Not in the paper: precision of the training forward; auto = bf16 where the CPU/GPU has bf16 units,
    # fp16 with a gradient scaler on GPUs without bf16 (fcos_lab/precision.py)
    amp: AmpSetting = "auto"
    # Not in the paper: CPU intra-op threads; 0 = the cores other processes leave free, re-checked during the
    # run (fcos_lab/threads.py); N = exactly N, which bit-identical resumes need (float sums follow the count)
    threads: int = 0
    seed: int = 0
    num_workers: int = 2
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    eval_every: int = 0  # 0 = only at the end
    log_every: int = 20
    max_bad_steps: int = 5  # consecutive non-finite losses before the run stops
    skip_nonfinite: bool = True  # check every step (one host-device sync); false: check at log time, no sync
    compile: bool = False  # torch.compile the model (CUDA mostly; off by default)
    # NHWC activations for every conv (model and input): oneDNN / cuDNN's preferred layout. Measured on
    # 2 CPU cores at 800x1216 against torchvision's NCHW model: inference went from 1.00x to ~1.15x and a
    # batch-2 training step from ~1.05x to ~1.1x (with the folded frozen BN of model/backbone.py); results
    # equal up to float summation order.
    channels_last: bool = True


@dataclass(frozen=True)
class DataConfig:
    """Where the data lives. Empty strings mean the embedded synthetic dataset."""

    train_ann: str = ""
    train_images: str = ""
    val_ann: str = ""
    val_images: str = ""
    on_bad_image: Literal["error", "skip"] = "error"
    # How a COCO [x, y, w, h] becomes a box: "continuous" [x, y, x + w, y + h] (fcos_lab's default, as
    # torchvision); "legacy" the authors' maskrcnn-benchmark [x, y, x + w - 1, y + h - 1] clipped to
    # [0, W - 1], with "+1" areas (w + 1)(h + 1) in the minimal-area rule. The paper's Tables 1 and 2 come
    # from "legacy" boxes (fcos-lab stats uses them by default).
    # Deviation from paper: training defaults to "continuous" boxes; the authors' code trains on "legacy" ones,
    # one original pixel narrower and shorter.
    box_convention: Literal["continuous", "legacy"] = "continuous"
    synthetic_root: str = "runs/synthetic"
    synthetic_num_train: int = 400
    synthetic_num_val: int = 100
    synthetic_image_size: int = 320
    class_agnostic: bool = False  # Section 5: one "object" class for region proposals


@dataclass(frozen=True)
class Config:
    """A complete experiment: model, assignment, loss, post-processing, input, training and data."""

    name: str = "fcos_r50_fpn_1x"
    model: ModelConfig = field(default_factory=ModelConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    input: InputConfig = field(default_factory=InputConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
    raise TypeError(f"not JSON serializable: {value!r}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parse an override string into ``annotation``; :class:`ConfigError` names the key and the choices."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        if text not in args:
            raise ConfigError(f"{key}: {text!r} is not a valid choice; valid choices: {', '.join(map(str, args))}")
        return text
    if origin in (types.UnionType, typing.Union):
        if text.lower() in ("none", "null", "") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_value(text, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected a boolean (true/false), got {text!r}")
    if annotation in (int, float, str):
        if annotation is str:
            return text
        try:
            value = annotation(text)
        except ValueError:
            raise ConfigError(f"{key}: expected {annotation.__name__}, got {text!r}") from None
        if annotation is float and math.isnan(value):
            raise ConfigError(f"{key}: NaN is not a valid value")
        return value
    if origin is tuple:
        try:
            parsed = json.loads(text.replace("inf", "Infinity").replace("(", "[").replace(")", "]"))
        except json.JSONDecodeError:
            raise ConfigError(f"{key}: expected a JSON list such as [1, 2], got {text!r}") from None
        return _coerce(parsed, annotation, key)
    raise ConfigError(f"{key}: overrides of type {annotation} are not supported")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check a JSON-parsed value against a tuple annotation and convert lists to tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{key}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}")


def apply_overrides(config: Config, overrides: list[str] | tuple[str, ...] | dict[str, Any]) -> Config:
    """Return ``config`` with dotted overrides applied (``"section.field=value"`` strings or a dict).

    Raises:
        ConfigError: for a malformed override, an unknown section or field (listing the valid ones),
            or a value of the wrong type.
    """
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        for text in overrides:
            if "=" not in text:
                raise ConfigError(f"override {text!r} must look like section.field=value")
            key, value = text.split("=", 1)
            items.append((key.strip(), value.strip()))
    sections = {f.name for f in fields(Config) if f.name != "name"}
    for key, raw in items:
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in sections:
            raise ConfigError(f"unknown override key {key!r}; valid sections: {', '.join(sorted(sections))}")
        section_name, field_name = parts
        section = getattr(config, section_name)
        types_ = _field_types(type(section))
        if field_name not in types_:
            raise ConfigError(
                f"unknown override key {key!r}; valid fields of {section_name}: {', '.join(sorted(types_))}"
            )
        annotation = types_[field_name]
        value = _parse_value(raw, annotation, key) if isinstance(raw, str) else _check_typed(raw, annotation, key)
        config = replace(config, **{section_name: replace(section, **{field_name: value})})
    validate(config)
    return config


def _check_typed(value: Any, annotation: Any, key: str) -> Any:
    """Validate a Python value (from a dict override) by round-tripping it through the string parser."""
    if isinstance(value, (list, tuple)):
        return _coerce(value, annotation, key)
    if isinstance(value, bool) or value is None:
        text = str(value).lower() if value is not None else "none"
    else:
        text = str(value)
    return _parse_value(text, annotation, key)


def validate(config: Config) -> None:
    """Cross-field checks that a single field's type cannot express."""
    m, a = config.model, config.assign
    if len(a.size_ranges) != len(m.strides):
        raise ConfigError(
            f"assign.size_ranges has {len(a.size_ranges)} ranges but model.strides has {len(m.strides)} levels"
        )
    for lo, hi in a.size_ranges:
        if not lo < hi:
            raise ConfigError(f"assign.size_ranges: each range needs lo < hi, got ({lo}, {hi})")
    # The network's levels: P3 (stride 8) to P7 (128) as in the paper, or from P2 (stride 4, from C2), the
    # extension for small objects; the FPN builds exactly these.
    doubling = all(s == 2 * p for p, s in zip(m.strides, m.strides[1:]))
    if m.strides[:1] not in ((8,), (4,)) or m.strides[-1] != 128 or not doubling:
        raise ConfigError(f"model.strides must double per level from 8 (P3) or 4 (P2) up to 128 (P7), got {m.strides}")
    if m.detector == "anchor" and len(m.anchor_sizes) != len(m.strides):
        raise ConfigError(
            f"model.anchor_sizes has {len(m.anchor_sizes)} sizes but model.strides has {len(m.strides)} levels")
    if m.num_classes < 1:
        raise ConfigError(f"model.num_classes must be >= 1, got {m.num_classes}")
    if not 0 <= m.frozen_stages <= 4:  # stem + layer1..layer4; a ResNet has no layer5
        raise ConfigError(f"model.frozen_stages must be in 0..4, got {m.frozen_stages}")
    if m.head_norm == "gn" and m.fpn_channels % 32:
        raise ConfigError(f"model.fpn_channels must be a multiple of 32 for GroupNorm(32), got {m.fpn_channels}")
    if config.postprocess.centerness_mode == "learned" and m.centerness_on == "none":
        raise ConfigError("postprocess.centerness_mode=learned needs model.centerness_on=cls or reg")
    lo, hi = config.input.train_min_size
    if not 0 < lo <= hi:
        raise ConfigError(f"input.train_min_size must be (lo, hi) with 0 < lo <= hi, got {(lo, hi)}")
    if config.train.threads < 0:
        raise ConfigError(f"train.threads must be >= 0 (0 = follow the free cores), got {config.train.threads}")
    if config.train.batch_size < 1 or config.train.max_iters < 1:
        raise ConfigError("train.batch_size and train.max_iters must be >= 1")
    if config.loss.centerness_weighted_box_loss and m.centerness_on == "none":
        raise ConfigError("loss.centerness_weighted_box_loss needs a center-ness branch (model.centerness_on)")


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (e.g. a checkpoint or ``config.json``)."""
    try:
        sections = {}
        for f in fields(Config):
            if f.name == "name":
                continue
            cls = typing.get_type_hints(Config)[f.name]
            values = data.get(f.name, {})
            unknown = set(values) - {x.name for x in fields(cls)}
            if unknown:
                raise ConfigError(f"config section {f.name!r} has unknown fields {sorted(unknown)}")
            # The same type and Literal checks as overrides, so a corrupt config.json fails here, not later.
            types_ = _field_types(cls)
            sections[f.name] = cls(**{k: _check_typed(v, types_[k], f"{f.name}.{k}") for k, v in values.items()})
        config = Config(name=data.get("name", "custom"), **sections)
    except TypeError as exc:
        raise ConfigError(f"malformed config: {exc}") from None
    validate(config)
    return config
