"""The paper's experiments at three scales: the data, input size, backbone and schedule of every row (Section 4).

A *scale* fixes the data, input size, backbone and schedule that every row of :mod:`fcos_lab.paper` is
trained with; a row is trained as ``preset + row overrides + scale overrides + user overrides``
(:func:`fcos_lab.analysis.experiments.row_config`):

- ``smoke``: the synthetic shapes (32 train / 16 val images, 128 px), resnet18 with a 64-channel
  pyramid (two channels per GroupNorm group: P7 is 1 x 1 at 128 px), 20 iterations on the CPU. It
  checks that every experiment runs end to end in about a minute; its numbers say nothing about the paper.
- ``workshop``: the synthetic shapes with the data, input sizes, backbone and schedule of the CPU demo
  preset (:data:`WORKSHOP_PRESET`, read by name; at most :data:`WORKSHOP_MAX_ITERS` iterations, for the
  time budget), three seeds per trained row, and only the comparisons whose effect can stand out of three
  seeds' spread within about an hour on a CPU (:data:`WORKSHOP_ROWS`): center sampling (Table 3) and
  center-ness at test time (Table 4: the four variants evaluated on Table 3's "+ ctr. on reg." models,
  :data:`WORKSHOP_MODEL`, so six trainings in all). The statistics of Tables 1 and 2 (FPN against P4
  only) need no training. With ``dataset="coco"``: the 128 real COCO train2017 images (evaluated on the
  128 val2017 images) at half the paper's input size, small ResNets, 300 iterations.
- ``paper``: the presets unchanged (ResNet-50 and up, 90K or 180K iterations, 800 px) on COCO
  train2017 / val2017 under ``data_root``: a GPU machine with the dataset.

Below ``paper`` the input is smaller than the paper's 800 px, so every length that is tied to it (the
FPN size ranges ``m_i`` of Section 3.2 and the RetinaNet anchor sizes) is scaled by the same factor.

The statistics of Tables 1 and 2 (:mod:`fcos_lab.analysis.statistics`) need no training; they run on
the full val2017 annotations when the file is there (a documented subset at ``smoke``,
:func:`statistics_file`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fcos_lab import paper
from fcos_lab.analysis.report import SCALES
from fcos_lab.config import Config
from fcos_lab.errors import ConfigError, DataError
from fcos_lab.presets import DEMO_PRESET, resolve

PAPER_MIN_SIZE = 800  # Section 4: shorter side 800
COCO = "coco"
SYNTHETIC = "synthetic"
# The full val2017 ground truth for Tables 1 and 2: the official file when a user has it, else the
# derived box-only file of ../shared/data (identical boxes, no crowd regions; see its README).
STATS_FILES = ("coco/annotations/instances_val2017.json", "coco/annotations/instances_val2017_bboxonly_DERIVED.json")
# (train annotations, train images, val annotations, val images) under data_root, per scale.
COCO_FILES = {
    "workshop": ("coco/annotations/instances_train2017_coco128_bboxonly_DERIVED.json", "coco/images/train2017",
                 "coco/annotations/instances_val2017_lightly128_bboxonly_DERIVED.json", "coco/images/val2017"),
    "paper": ("coco/annotations/instances_train2017.json", "coco/images/train2017",
              "coco/annotations/instances_val2017.json", "coco/images/val2017"),
}

# The preset whose data, input sizes, backbone and schedule the workshop scale trains with (read by name,
# so a retuned demo retunes the workshop).
WORKSHOP_PRESET = DEMO_PRESET
WORKSHOP_SEEDS = 3
# The time budget caps the schedule (the preset's own when shorter): six trainings (Table 3's pair, three
# seeds each) at ~0.36 s per iteration (the demo's 2.8 it/s in bf16 on an idle 2-core machine: batch 8,
# 256 px, resnet18; its 720 iterations took 263 s with evaluation) take ~26 min, leaving the rest of the
# hour to the statistics of Tables 1-2, about 25 evaluations and the kernels. The demo's recipe reached
# AP50 0.30 after 180 iterations and 0.78 after 720, so fewer would leave little to compare.
WORKSHOP_MAX_ITERS = 800
# The one trained FCOS at workshop scale: Table 4's test-time variants, Table 2's detection share and
# Figures 7-8 use these trainings (Table 3's, reused through the shared trainings folder) instead of
# training Table 4's learned row as well.
WORKSHOP_MODEL = ("Table 3", "+ ctr. on reg.")
# The rows trained at workshop scale (tables not listed: every row). Only comparisons with an effect large
# enough to stand out of three seeds in the time budget: center sampling (Table 3, +0.7 AP in the paper;
# its reference row is trained too) and center-ness at test time (Table 4, on :data:`WORKSHOP_MODEL`).
WORKSHOP_ROWS: dict[str, tuple[str, ...]] = {
    "Table 3": ("+ ctr. on reg.", "+ ctr. sampling"),
    "Table 5": (),  # deeper backbones need ImageNet weights and long schedules to differ
    "Table 6": (),
    "Table 7": (),  # AP90 differences of 2-3 points need well-trained boxes
    "Table 8": (),  # steps of 0.1-0.5 AP in the paper: far inside any short training's spread
}
WORKSHOP_UNTRAINED = ("not trained at workshop scale: its effect cannot stand out of the seed spread of a "
                      "CPU-hour training (see fcos_lab.analysis.scales.WORKSHOP_ROWS); run it at paper scale")

# What a number measured at each scale can be compared with (shown beside every table).
SCALE_NOTES = {
    "smoke": "smoke scale: every model trained for 20 iterations on 32 synthetic 128-px images; the numbers check "
             "that the experiment runs and are not comparable with the paper (statistics of Tables 1-2 excepted: "
             "real val2017 boxes, a subset of the images).",
    "workshop": "workshop scale: the CPU demo's synthetic shapes, backbone and schedule, three seeds per trained row, "
                "only the comparisons with large effects (center-ness at test time, center sampling); verdicts say "
                "whether a change goes the paper's way beyond the seed spread, never the paper's numbers "
                "(statistics of Tables 1-2: the full val2017 annotations).",
}


@dataclass(frozen=True)
class ScaleSettings:
    """Everything a scale changes: data, input scale, backbone, schedule, statistics subset.

    Attributes:
        scale: ``smoke``, ``workshop`` or ``paper``.
        dataset: ``"synthetic"`` or ``"coco"``; the ``train_*`` / ``val_*`` paths are set for ``"coco"``.
        synthetic_root, synthetic_num_train, synthetic_num_val, synthetic_image_size: the synthetic data.
        input_scale: input sizes, size ranges and anchor sizes are the preset's times this (1 = paper).
        max_iters, batch_size, base_lr, warmup_iters: the schedule (None: the preset's).
        backbones: preset backbone -> the one trained here (CPU-sized stand-ins below ``paper``).
        fpn_channels, frozen_stages: None keeps the preset's.
        num_workers: data-loader workers.
        stats_ann: the annotation file of Tables 1 and 2; stats_max_images: its first N images only.
        data_root: the folder holding ``coco/``.
        keep_checkpoints: False (smoke) drops optimizer state and the safetensors copy after training and
            deletes the weights when the notebook finishes: thirty smoke models would fill gigabytes.
        threads: torch intra-op threads (:func:`set_threads`); None keeps torch's default.
        base_preset: a preset whose input sizes, backbone, schedule and synthetic data every row takes
            (its size ranges and anchors scaled as the preset's are to the paper's); None: ``input_scale``,
            ``backbones`` and the schedule fields above.
        seeds: trainings per row (seeds ``seed, seed + 1, ...``); each number is their mean and spread.
        trained_rows: table -> the labels of the rows trained at this scale (tables not listed: all).
        test_time_model: ``(table, row)`` of the trained FCOS that stands for "the model" at this scale:
            Table 4's rows become the four test-time variants of its training instead of two trainings,
            and the one-model notebooks (02, 09, 10) use it; ``()``: Table 4's rows as in the paper.
        trainings_dir: where trainings are kept and reused (keyed by their config), shared by notebooks
            that pass the same ``work_dir``.
    """

    scale: str
    dataset: str
    train_ann: str = ""
    train_images: str = ""
    val_ann: str = ""
    val_images: str = ""
    synthetic_root: str = "runs/synthetic"
    synthetic_num_train: int = 32
    synthetic_num_val: int = 16
    synthetic_image_size: int = 128
    input_scale: float = 1.0
    max_iters: int | None = None
    batch_size: int | None = None
    base_lr: float | None = None
    warmup_iters: int | None = None
    backbones: dict[str, str] = field(default_factory=dict)
    fpn_channels: int | None = None
    frozen_stages: int | None = None
    num_workers: int | None = None
    stats_ann: str | None = None
    stats_max_images: int | None = None
    data_root: str | None = None
    keep_checkpoints: bool = True
    threads: int | None = None
    base_preset: str | None = None
    seeds: int = 1
    trained_rows: dict[str, tuple[str, ...]] = field(default_factory=dict)
    test_time_model: tuple[str, str] = ()
    trainings_dir: str = "runs"

    def overrides_for(self, config: Config) -> dict[str, Any]:
        """The dotted overrides (typed values) that turn ``config`` into this scale's version of it."""
        out: dict[str, Any] = {}
        if self.dataset == SYNTHETIC:
            out.update({"data.train_ann": "", "data.train_images": "", "data.val_ann": "", "data.val_images": "",
                        "data.synthetic_root": self.synthetic_root,
                        "data.synthetic_num_train": self.synthetic_num_train,
                        "data.synthetic_num_val": self.synthetic_num_val,
                        "data.synthetic_image_size": self.synthetic_image_size})
        else:
            out.update({"data.train_ann": self.train_ann, "data.train_images": self.train_images,
                        "data.val_ann": self.val_ann, "data.val_images": self.val_images})
        f = self.input_scale
        if self.base_preset:
            out.update(base_preset_overrides(config, self.base_preset))
        elif f != 1.0:
            # Deviation from paper: smaller inputs than 800 px, so every length tied to the input size
            # (size ranges m_i of Section 3.2, RetinaNet anchor sizes) shrinks by the same factor.
            i = config.input
            out.update({
                "input.min_size": round(i.min_size * f), "input.max_size": round(i.max_size * f),
                "input.train_min_size": [round(v * f) for v in i.train_min_size],
                "assign.size_ranges": [[lo * f, hi * f] for lo, hi in config.assign.size_ranges],
                "model.anchor_sizes": [s * f for s in config.model.anchor_sizes],
            })
        if self.max_iters is not None:
            out.update({"train.max_iters": self.max_iters, "train.checkpoint_every": self.max_iters,
                        "train.log_every": max(1, self.max_iters // 10)})
        for key, value in (("train.batch_size", self.batch_size), ("train.base_lr", self.base_lr),
                           ("train.warmup_iters", self.warmup_iters), ("model.fpn_channels", self.fpn_channels),
                           ("model.frozen_stages", self.frozen_stages), ("train.num_workers", self.num_workers)):
            if value is not None:
                out[key] = value
        if config.model.backbone in self.backbones and not self.base_preset:
            out["model.backbone"] = self.backbones[config.model.backbone]
        return out

    def trains(self, table: str, row: str) -> bool:
        """Whether ``row`` of ``table`` is trained at this scale (:attr:`trained_rows`)."""
        return table not in self.trained_rows or row in self.trained_rows[table]

    def untrained_note(self) -> str:
        """Why a row this scale does not train has no measurement."""
        return WORKSHOP_UNTRAINED if self.trained_rows == WORKSHOP_ROWS else f"not trained at {self.scale} scale"

    def check_training_data(self) -> None:
        """Raise :class:`DataError` naming what is missing when this scale trains on COCO files not present."""
        if self.dataset != COCO:
            return
        paths = {"train_ann": self.train_ann, "train_images": self.train_images, "val_ann": self.val_ann,
                 "val_images": self.val_images}
        missing = [f"{key} {path!r}" for key, path in paths.items() if not path or not Path(path).exists()]
        if missing:
            raise DataError(
                f"scale {self.scale!r} trains on COCO files, but these are missing: {', '.join(missing)}; pass "
                "data_root (a folder with coco/annotations and coco/images) or the four files, or use synthetic data")

    def with_files(self, **paths: str | int | None) -> ScaleSettings:
        """These settings with some files replaced (``train_ann``, ``val_images``, ``stats_ann``, ...; None keeps).

        Setting any of the four training/validation paths switches the data to ``"coco"``.
        """
        changes = {key: value for key, value in paths.items() if value is not None}
        unknown = set(changes) - {"train_ann", "train_images", "val_ann", "val_images", "stats_ann", "stats_max_images"}
        if unknown:
            raise ConfigError(f"unknown file setting(s) {sorted(unknown)}")
        if set(changes) & {"train_ann", "train_images", "val_ann", "val_images"}:
            changes["dataset"] = COCO
        return replace(self, **changes)

    def describe(self) -> str:
        """One line for tables and results.json: what was trained on what, and for how long."""
        data = (f"synthetic shapes ({self.synthetic_num_train} train / {self.synthetic_num_val} val, "
                f"{self.synthetic_image_size} px)" if self.dataset == SYNTHETIC else f"COCO ({Path(self.train_ann).name})")
        seeds = f", {self.seeds} seeds per trained row" if self.seeds > 1 else ""
        if self.base_preset:
            base = resolve(self.base_preset)
            iters = self.max_iters or base.train.max_iters
            return (f"{self.scale}: {data}, inputs {base.input.min_size} px, {base.model.backbone} and the schedule "
                    f"of preset {self.base_preset} ({iters} iterations, batch {self.batch_size or base.train.batch_size})"
                    f"{seeds}")
        schedule = f"{self.max_iters} iterations" if self.max_iters else "the preset's schedule"
        size = f"inputs x{self.input_scale:g}" if self.input_scale != 1 else "800 px inputs"
        backbone = f", backbones {sorted(set(self.backbones.values()))}" if self.backbones else ""
        return f"{self.scale}: {data}, {size}, {schedule}{backbone}{seeds}"


def base_preset_overrides(config: Config, base_preset: str) -> dict[str, Any]:
    """The overrides that give ``config`` the input sizes, backbone and schedule of ``base_preset``.

    Only what the scale changes is taken; every switch of the row (center-ness, sampling, losses, head)
    stays. Size ranges and anchor sizes are scaled by the factor the base preset's first range boundary
    has to the paper's ``m_3 = 64``.
    """
    base = resolve(base_preset)
    # Deviation from paper: smaller inputs than 800 px, so every length tied to the input size (size
    # ranges m_i of Section 3.2, RetinaNet anchor sizes) shrinks as the base preset's ranges do.
    factor = base.assign.size_ranges[0][1] / paper.SIZE_RANGES[0][1]
    m, t = base.model, base.train
    return {
        "input.min_size": base.input.min_size, "input.max_size": base.input.max_size,
        "input.train_min_size": list(base.input.train_min_size),
        "assign.size_ranges": [[lo * factor, hi * factor] for lo, hi in config.assign.size_ranges],
        "model.anchor_sizes": [s * factor for s in config.model.anchor_sizes],
        "model.backbone": m.backbone, "model.backbone_norm": m.backbone_norm, "model.frozen_stages": m.frozen_stages,
        "model.fpn_channels": m.fpn_channels,
        "train.max_iters": t.max_iters, "train.batch_size": t.batch_size, "train.base_lr": t.base_lr,
        "train.warmup_iters": t.warmup_iters, "train.lr_steps": list(t.lr_steps), "train.num_workers": t.num_workers,
        "train.checkpoint_every": t.max_iters, "train.log_every": t.log_every,
    }


def default_data_root() -> Path | None:
    """``../shared/data`` beside the repository (or beside the working directory), if present."""
    import fcos_lab

    for base in (Path(fcos_lab.__file__).resolve().parents[1], Path.cwd()):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def scale_settings(scale: str, data_root: str | Path | None = None, *, dataset: str | None = None,
                   work_dir: str | Path = "runs", given_weights: bool = False) -> ScaleSettings:
    """The :class:`ScaleSettings` of ``scale``.

    Args:
        scale: ``smoke``, ``workshop`` or ``paper``.
        data_root: folder with ``coco/``; None: :func:`default_data_root`.
        dataset: ``"synthetic"`` or ``"coco"``; None: synthetic at smoke and workshop, COCO at paper, and
            COCO whenever ``given_weights`` (weights trained elsewhere are evaluated on real images).
        work_dir: where synthetic data (``work_dir/synthetic``) and trainings (``work_dir/runs``) are
            written; notebooks given the same folder reuse each other's trainings.
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
    root = Path(data_root) if data_root else default_data_root()
    stats_ann = next((str(root / p) for p in STATS_FILES if root and (root / p).is_file()), None)
    # Smoke on COCO (dataset="coco") uses the 128-image files too.
    coco_files = [str((root or Path(".")) / p) for p in COCO_FILES.get(scale, COCO_FILES["workshop"])]
    if dataset is None:
        dataset = COCO if scale == "paper" or given_weights else SYNTHETIC
    if dataset not in (SYNTHETIC, COCO):
        raise ConfigError(f"unknown dataset {dataset!r}; valid: {SYNTHETIC}, {COCO}")
    common = dict(scale=scale, dataset=dataset, stats_ann=stats_ann, data_root=str(root) if root else None,
                  synthetic_root=str(Path(work_dir) / "synthetic"), trainings_dir=str(Path(work_dir) / "runs"))
    if dataset == COCO:
        common.update(zip(("train_ann", "train_images", "val_ann", "val_images"), coco_files))
    small = {"resnet50": "resnet18", "resnet101": "resnet18", "resnext101_32x8d": "resnet18", "resnext101_64x4d": "resnet18"}
    if scale == "smoke":
        return ScaleSettings(**common, synthetic_num_train=32, synthetic_num_val=16, synthetic_image_size=128,
                             input_scale=128 / PAPER_MIN_SIZE if dataset == SYNTHETIC else 0.25,
                             max_iters=20, batch_size=4, base_lr=0.02, warmup_iters=5, backbones=small,
                             fpn_channels=64, frozen_stages=0, num_workers=0, stats_max_images=500,
                             keep_checkpoints=False, threads=1)
    if scale == "workshop":
        selection = dict(seeds=WORKSHOP_SEEDS, trained_rows=WORKSHOP_ROWS, test_time_model=WORKSHOP_MODEL)
        if dataset == SYNTHETIC:
            base = resolve(WORKSHOP_PRESET)
            # The demo's threads: as many as the thread governor (fcos_lab.threads) finds free, which keeps a
            # run from collapsing when another process takes a core, as one fixed thread per run once had to.
            return ScaleSettings(**common, **selection, base_preset=WORKSHOP_PRESET, threads=None,
                                 max_iters=min(base.train.max_iters, WORKSHOP_MAX_ITERS),
                                 synthetic_num_train=base.data.synthetic_num_train,
                                 synthetic_num_val=base.data.synthetic_num_val,
                                 synthetic_image_size=base.data.synthetic_image_size)
        # Deeper presets keep a deeper stand-in, so Table 5's ordering can still show.
        workshop = {**small, "resnet101": "resnet34", "resnext101_32x8d": "resnet34", "resnext101_64x4d": "resnet34"}
        return ScaleSettings(**common, **selection, input_scale=0.5, max_iters=300, batch_size=8, base_lr=0.02,
                             warmup_iters=50, backbones=workshop, fpn_channels=64, frozen_stages=0, num_workers=2)
    return ScaleSettings(**common)


def set_threads(settings: ScaleSettings) -> int:
    """Apply ``settings.threads`` to torch (when set) and return the number of intra-op threads in use.

    Smoke uses one: its models are tiny, and two OpenMP threads on two cores collapse as soon as another
    process takes one of them (measured here: 6 s instead of 0.35 s per smoke iteration).
    """
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    return torch.get_num_threads()


# ----------------------------------------------------------------------------------------------
# Tables 1 and 2: the annotation file their statistics are computed on


def statistics_file(settings: ScaleSettings, out_dir: str | Path) -> tuple[str, str]:
    """The annotation file Tables 1 and 2 are computed on, and a sentence saying which (and why).

    The full val2017 file when present, cut to its first ``stats_max_images`` images at ``smoke``
    (written into ``out_dir``); without it, the validation annotations of the scale's own data.
    """
    if settings.stats_ann is None:
        if settings.dataset == COCO:
            return settings.val_ann, f"val2017 file not found; statistics of {settings.val_ann}"
        from fcos_lab.data.synthetic import make_synthetic_coco

        synthetic = make_synthetic_coco(settings.synthetic_root, num_train=settings.synthetic_num_train,
                                        num_val=settings.synthetic_num_val, image_size=settings.synthetic_image_size)
        return str(synthetic.val_ann), "val2017 file not found; statistics of the synthetic validation set"
    if not settings.stats_max_images:
        return settings.stats_ann, f"full {Path(settings.stats_ann).name}"
    path = first_images_file(settings.stats_ann, settings.stats_max_images,
                             Path(out_dir) / f"stats_subset_{settings.stats_max_images}.json")
    kept, total = (len(json.loads(p.read_text())["images"]) for p in (path, Path(settings.stats_ann)))
    return str(path), (f"first {kept} of {total} images (by id) of {Path(settings.stats_ann).name} "
                       f"at scale {settings.scale}, for time; other scales use the full file")


def first_images_file(ann_file: str | Path, max_images: int, path: str | Path) -> Path:
    """Write the first ``max_images`` images (by id) of a COCO-format file, with their annotations, to ``path``."""
    from fcos_lab.checkpoint import atomic_write_text

    data = json.loads(Path(ann_file).read_text())
    images = sorted(data["images"], key=lambda image: image["id"])[:max_images]
    keep = {image["id"] for image in images}
    subset = {**data, "images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in keep]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(subset))
    return path
