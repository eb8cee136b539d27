"""One participant's workshop: the data, the preset, the checks, the interactive views and the trained model.

Every workshop notebook starts with ``ws = Workshop(workshop_dir, solutions=solutions)`` and checks each
exercise with ``my_function = ws.check("2.5", my_function)``: the check runs the participant's function
(or, with ``solutions=True``, the reference solution, which the returned function then is) on hand-made,
random and real cases, prints what passed, and raises an :class:`~fcos_lab.workshop.checking.ExerciseError`
naming the first wrong answer.

The preset is the CPU demo (:data:`fcos_lab.presets.DEMO_PRESET`, taken by name: whatever recipe it holds),
pointed at ``workshop_dir/synthetic`` (generated on first use, as ``fcos-lab workshop`` does). Training
writes into ``workshop_dir/runs``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from fcos_lab.config import Config
from fcos_lab.data.samples import Sample, dataset_sample, open_dataset, resize_sample
from fcos_lab.data.splits import build_datasets
from fcos_lab.demo import demo_config
from fcos_lab.errors import InputError
from fcos_lab.precision import cpu_name, resolve_precision
from fcos_lab.runs import LoadedModel, load_detector
from fcos_lab.workshop import display
from fcos_lab.workshop.checks import CHECKS
from fcos_lab.workshop.folder import recorded_overrides
from fcos_lab.workshop.scenes import Scene, real_scenes
from fcos_lab.workshop.solutions import SOLUTIONS

DEFAULT_RUN = "runs/training"
CENTERNESS_MODES = (("none", "w/o center-ness"), ("from_box", "center-ness of the predicted box (†)"),
                    ("learned", "learned center-ness"), ("oracle", "ground-truth center-ness (oracle)"))


def workshop_config(workshop_dir: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The demo preset on ``workshop_dir/synthetic``, with dotted ``overrides``."""
    return demo_config(Path(workshop_dir), quick=False, overrides=list(overrides))


class Workshop:
    """The state a workshop notebook shares between its cells.

    Args:
        workshop_dir: the folder ``fcos-lab workshop --dir`` made (data in ``synthetic/``, runs in ``runs/``).
        solutions: use the reference solutions instead of the participant's functions (instructors, CI).
        overrides: dotted overrides of the demo preset, after those ``fcos-lab workshop`` recorded in
            ``workshop_dir/workshop.json`` (e.g. a smaller dataset for a quick run).
        real_images: how many validation images give the checks their real cases.
        val_ann, val_images: a COCO-format set (photographs, say) to look at and evaluate on instead of the
            synthetic validation images; training stays on the synthetic shapes.
    """

    def __init__(self, workshop_dir: str | Path = ".", *, solutions: bool = False, overrides: Sequence[str] = (),
                 real_images: int = 8, val_ann: str | Path | None = None, val_images: str | Path | None = None) -> None:
        display.setup()
        self.dir = Path(workshop_dir)
        self.solutions = bool(solutions)
        self.config = workshop_config(self.dir, [*recorded_overrides(self.dir), *overrides])
        _, self.val_set = build_datasets(self.config, need_train=False)  # generates the data when missing
        if val_ann or val_images:
            if not (val_ann and val_images):
                raise InputError("give both val_ann (a COCO-format JSON) and val_images (its image folder), or neither")
            self.val_set = open_dataset(val_ann, val_images, self.config)
        self.real_images = real_images
        print(self.describe())

    def describe(self) -> str:
        """What this workshop runs on, in a few lines."""
        precision = resolve_precision(self.config.train.amp, "cpu")
        levels = ", ".join(f"P{s.bit_length() - 1}" for s in self.config.model.strides)
        return "\n".join([
            f"preset {self.config.name}: {self.config.model.backbone}, {self.config.input.min_size}-px images, levels {levels}",
            f"data: {self.config.data.synthetic_root}; validation images: {self.val_set.ann_file} ({len(self.val_set)})",
            f"CPU: {cpu_name()}, {torch.get_num_threads()} threads; training in {precision.description}",
            ("solutions=True: every exercise uses the reference solution" if self.solutions
             else "write each exercise, then run the check below it"),
        ])

    @cached_property
    def real(self) -> list[Scene]:
        """The real cases of the checks: validation images in the preset's training frame."""
        return real_scenes(self.config, self.val_set, self.real_images)

    # ------------------------------------------------------------------------ exercises

    def check(self, exercise: str, function: Callable) -> Callable:
        """Check ``function`` for ``exercise`` (e.g. ``"2.5"``); returns the function the notebook goes on with.

        Raises:
            ExerciseError: the first wrong answer, in words.
        """
        if exercise not in CHECKS:
            raise KeyError(f"no exercise {exercise!r}; exercises: {', '.join(CHECKS)}")
        if self.solutions:
            function = SOLUTIONS[exercise]
            print(f"exercise {exercise}: solutions=True, checking the reference solution")
        print(CHECKS[exercise](function, self.real))
        return function

    # ------------------------------------------------------------------------ images and views

    def sample(self, index: int = 0, resized: bool = True) -> Sample:
        """Validation image ``index`` with its boxes, in the training frame unless ``resized=False``."""
        sample = dataset_sample(self.val_set, self.val_set.image_ids[index])
        return resize_sample(sample, self.config) if resized else sample

    def network_feature_shapes(self, index: int = 0) -> tuple[tuple[int, int], tuple[tuple[int, int], ...]]:
        """``(padded input size, feature-map shape of each level)`` of the (untrained) network on image ``index``."""
        from fcos_lab.model.detector import build_model
        from fcos_lab.predict import preprocess_images

        batch = preprocess_images([self.sample(index, resized=False).image], self.config)
        with torch.no_grad():
            output = build_model(self.config).eval()(batch.tensors)
        return tuple(batch.tensors.shape[-2:]), output.feature_shapes

    def assignment_view(self, image_ids: Sequence[int] | None = None) -> Any:
        """Show the interactive assignment view (image, size ranges m_i, radius, level)."""
        from fcos_lab.workshop.views import AssignmentView

        view = AssignmentView(self.config, self.val_set, image_ids)
        view.show()
        return view

    def detections_view(self, loaded: LoadedModel, image_ids: Sequence[int] | None = None) -> Any:
        """Show the interactive detections view (image, score threshold, center-ness on/off)."""
        from fcos_lab.workshop.views import DetectionsView

        view = DetectionsView(loaded, self.val_set, image_ids)
        view.show()
        return view

    # ------------------------------------------------------------------------ training and evaluation

    def training_config(self, iterations: int | None = None, amp: str | None = None) -> Config:
        """The preset with ``iterations`` (None: the preset's schedule, scaled warmup) and ``train.amp``."""
        config = self.config
        t = config.train
        if iterations is not None:
            scale = iterations / t.max_iters
            t = replace(t, max_iters=int(iterations), warmup_iters=max(1, round(t.warmup_iters * scale)),
                        checkpoint_every=max(1, int(iterations)), log_every=max(1, min(t.log_every, int(iterations) // 10)))
        if amp is not None:
            t = replace(t, amp=amp)
        return replace(config, train=t)

    def train(self, run_dir: str | Path = DEFAULT_RUN, iterations: int | None = None, amp: str | None = None) -> Any:
        """Train the preset into ``workshop_dir/run_dir`` and evaluate it; returns the ``TrainResult``."""
        from fcos_lab.train import train

        return train(self.training_config(iterations, amp), self.dir / run_dir, device="cpu")

    def trained_model(self, run_dir: str | Path = DEFAULT_RUN, iterations: int | None = None) -> LoadedModel:
        """The model notebook 04 trained in ``run_dir``; trains one first (``iterations``) when there is none."""
        checkpoint = self.dir / run_dir / "model_final.pt"
        if not checkpoint.is_file():
            print(f"no trained model in {checkpoint.parent} (notebook 04 makes it): training one now")
            self.train(run_dir, iterations)
        return load_detector(checkpoint, device="cpu")

    def evaluate(self, loaded: LoadedModel, centerness_mode: str | None = None,
                 detections_path: str | Path | None = None) -> dict[str, Any]:
        """The model on the workshop's validation images (in the model's own input size), scored with COCO's AP.

        Args:
            loaded: the model (notebook 04's, or weights imported with ``fcos-lab import-weights``).
            centerness_mode: Table 4's test-time variant (``none``, ``from_box``, ``learned``, ``oracle``);
                None keeps the model's.
            detections_path: where to write the detections (COCO results with level, location, center-ness).

        Returns:
            ``metrics`` (AP, AP50, ... as fractions), ``detections`` (records), ``config`` (predicted with),
            ``val_ann``, ``val_images``, ``seconds``.
        """
        from fcos_lab.data.splits import coco_dataset
        from fcos_lab.detections_file import save_detections
        from fcos_lab.evaluate import evaluate_detections
        from fcos_lab.predict import predict_dataset

        started = time.perf_counter()
        config = loaded.config
        if centerness_mode is not None:
            config = replace(config, postprocess=replace(config.postprocess, centerness_mode=centerness_mode))
        dataset = coco_dataset(config, self.val_set.ann_file, self.val_set.image_dir)
        detections = predict_dataset(loaded.model, config, dataset, device=loaded.device, batch_size=8,
                                     category_ids=list(loaded.category_ids) or None)
        if detections_path is not None:
            save_detections(detections_path, detections)
        metrics = evaluate_detections(dataset.coco, detections).metrics
        return {"metrics": dict(metrics), "detections": detections, "config": config, "val_ann": str(dataset.ann_file),
                "val_images": str(dataset.image_dir), "seconds": time.perf_counter() - started}

    def centerness_table(self, loaded: LoadedModel) -> list[dict[str, Any]]:
        """Table 4 at test time: the model evaluated with each center-ness mode on the validation images."""
        rows = []
        for mode, name in CENTERNESS_MODES:
            result = self.evaluate(loaded, mode)
            metrics = result["metrics"]
            rows.append({"ranking score": name, "AP": metrics["AP"], "AP50": metrics["AP50"], "AP75": metrics["AP75"],
                         "seconds": round(result["seconds"], 1)})
        return rows

    def error_analysis(self, loaded: LoadedModel) -> tuple[Any, dict[str, Any]]:
        """TIDE's error breakdown of the model's validation detections: ``(ErrorAnalysis, evaluation)``."""
        from fcos_lab.analysis.tide_breakdowns import analyze_errors

        evaluation = self.evaluate(loaded, detections_path=loaded.path.parent / "detections_workshop.json")
        return analyze_errors(self.val_set.coco, evaluation["detections"], evaluation["config"]), evaluation

    def fiftyone_dataset(self, loaded: LoadedModel, evaluation: dict[str, Any], name: str = "fcos-workshop") -> Any:
        """A FiftyOne dataset of the validation images, ground truth and the model's detections (evaluated)."""
        import fiftyone as fo

        from fcos_lab.integrations.fiftyone import build_dataset

        fo.config.show_progress_bars = False  # a notebook output, not a terminal: no progress bars
        return build_dataset(evaluation["val_ann"], evaluation["val_images"], evaluation["detections"], name=name,
                             config=evaluation["config"])


def training_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (losses every ``log_every`` iterations, evaluations)."""
    text = (Path(run_dir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
