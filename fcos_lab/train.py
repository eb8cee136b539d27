"""Training (Section 4 "Training Details"): one readable loop over the objective of a config.

The objective (locations, assignment, loss) is :class:`fcos_lab.objective.Objective`.

Devices, process groups and seeding are in :mod:`fcos_lab.distributed`; the datasets a config names are
built by :mod:`fcos_lab.data.splits`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from fcos_lab.anchor_based.detector import AnchorOutput
from fcos_lab.checkpoint import (
    atomic_write_text,
    export_safetensors,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    prune_checkpoints,
    save_checkpoint,
    unwrap,
)
from fcos_lab.config import Config
from fcos_lab.data.coco import CocoDetection, collate
from fcos_lab.data.splits import build_datasets
from fcos_lab.distributed import init_distributed, resolve_device, seed_everything
from fcos_lab.errors import ConfigError, FcosLabError
from fcos_lab.model.detector import FCOSOutput, build_model
from fcos_lab.objective import Objective
from fcos_lab.precision import announce, resolve_precision
from fcos_lab.runs import json_safe, write_json
from fcos_lab.targets import GroundTruth, ground_truth_of
from fcos_lab.threads import ThreadGovernor


def compute_loss(output: FCOSOutput | AnchorOutput, gt: GroundTruth, config: Config) -> dict[str, Tensor]:
    """Assignment then the loss of ``config``'s objective (:meth:`fcos_lab.objective.Objective.loss`)."""
    return Objective.from_config(config).loss(output, gt)


logger = logging.getLogger("fcos_lab.train")


class NonFiniteLossError(FcosLabError, RuntimeError):
    """Too many consecutive training steps with a NaN or infinite loss."""


def learning_rate(iteration: int, config: Config) -> float:
    """Learning rate at ``iteration`` (0-based): linear scaling, linear warmup, steps at 2/3 and 8/9.

    Section 4: 0.01 at batch 16, divided by 10 at 60K and 80K of 90K iterations.
    """
    t = config.train
    lr = t.base_lr * t.batch_size / 16
    for fraction in t.lr_steps:
        if iteration >= round(fraction * t.max_iters):
            lr *= t.lr_gamma
    if iteration < t.warmup_iters:
        alpha = iteration / t.warmup_iters
        lr *= t.warmup_factor * (1 - alpha) + alpha
    return lr


class _EpochIndexed(Dataset):
    """Items addressed as ``(epoch, index)`` so augmentation randomness follows the schedule, not the workers."""

    def __init__(self, dataset: CocoDetection) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


def batch_schedule(
    num_items: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world_size: int = 1
) -> Iterator[list[tuple[int, int]]]:
    """The ``(epoch, index)`` keys of this rank's share of iterations ``start..stop-1``.

    Each epoch is a seeded permutation; iteration ``i`` takes the ``i``-th global batch of ``batch_size``
    items and rank ``r`` takes every ``world_size``-th of them, so a resumed run sees the same batches.
    """
    per_epoch = max(1, num_items // batch_size)
    for iteration in range(start, stop):
        epoch, position = divmod(iteration, per_epoch)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(num_items, generator=generator)
        if num_items < batch_size:
            order = order.repeat(math.ceil(batch_size / num_items))
        chunk = order[position * batch_size : (position + 1) * batch_size].tolist()
        yield [(epoch, index) for index in chunk[rank::world_size]]


def _param_groups(model: torch.nn.Module, config: Config) -> list[dict[str, Any]]:
    """Detectron's groups, which the paper inherits from RetinaNet: biases at 2x lr without weight decay."""
    weights, biases = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (biases if name.endswith(".bias") else weights).append(param)
    t = config.train
    return [
        {"params": weights, "weight_decay": t.weight_decay, "lr_factor": 1.0},
        {"params": biases, "weight_decay": 0.0, "lr_factor": 2.0},
    ]


def _check_run_dir(run_dir: Path) -> None:
    """Fail before training when the run folder is unwritable or the disk is nearly full."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise FcosLabError(f"{run_dir}: run folder is not writable ({exc.strerror or exc})") from None
    free = shutil.disk_usage(run_dir).free
    if free < 200 * 2**20:
        raise FcosLabError(f"{run_dir}: only {free / 2**20:.0f} MiB free on disk; checkpoints need more")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    iterations: int
    checkpoint: Path
    metrics: dict[str, float]
    seconds: float


def train(
    config: Config,
    run_dir: str | Path,
    *,
    device: str = "auto",
    resume: bool = False,
    evaluate_at_end: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train ``config`` and write the run folder (config.json, metrics.jsonl, checkpoints, evaluation).

    With ``resume=True`` the newest checkpoint of ``run_dir`` is loaded and the same schedule continues.
    Launch with ``torchrun --nproc_per_node N`` for several processes; ``train.batch_size`` is the total.
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    torch_device = resolve_device(device)
    dist = init_distributed(torch_device)
    if torch_device.type == "cuda" and dist.world_size > 1:
        torch_device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(torch_device)
    if dist.is_main:
        _check_run_dir(run_dir)
    t = config.train
    if t.batch_size % dist.world_size:
        raise ConfigError(f"train.batch_size={t.batch_size} must be divisible by the {dist.world_size} processes")

    train_set, val_set = build_datasets(config)
    num_classes = 1 if config.data.class_agnostic else train_set.num_classes
    if config.model.num_classes != num_classes:
        logger.info("model.num_classes set to %d from %s", num_classes, train_set.ann_file)
        config = replace(config, model=replace(config.model, num_classes=num_classes))

    payload = None
    start_iter = 0
    if resume:
        found = latest_checkpoint(run_dir)
        if found is None:
            raise FcosLabError(f"{run_dir}: --resume given but the folder holds no checkpoint")
        payload = load_checkpoint(found)
        start_iter = payload["iteration"]
        if payload["config"].to_dict() != config.to_dict():
            logger.warning("resuming with the checkpoint's config (%s), not the one given", found)
            config = payload["config"]
            t = config.train
    seed_everything(t.seed + dist.rank)

    model = build_model(config).to(torch_device)
    optimizer = torch.optim.SGD(_param_groups(model, config), lr=learning_rate(0, config), momentum=t.momentum)
    if payload is not None:
        load_model_weights(model, payload)
        if "optimizer" in payload:
            optimizer.load_state_dict(payload["optimizer"])
        if "rng" in payload:
            torch.set_rng_state(payload["rng"]["torch"])
    if dist.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch_device.index] if torch_device.type == "cuda" else None
        )

    objective = Objective.from_config(config)
    forward = torch.compile(model) if t.compile else model
    threads = ThreadGovernor(t.threads)
    precision = resolve_precision(t.amp, torch_device)
    announce(precision, "training")
    if dist.is_main:
        inference = resolve_precision(config.model.inference_amp, torch_device)
        runtime = {"train": precision.record(), "inference": inference.record()}
        atomic_write_text(run_dir / "config.json", json.dumps({**config.to_dict(), "runtime": runtime}, indent=2))
    loader = DataLoader(
        _EpochIndexed(train_set),
        batch_sampler=list(
            batch_schedule(len(train_set), t.batch_size, t.seed, start_iter, t.max_iters, dist.rank, dist.world_size)
        ),
        collate_fn=functools.partial(collate, size_divisible=config.input.size_divisible),
        num_workers=t.num_workers,
        pin_memory=torch_device.type == "cuda",
        persistent_workers=False,
    )
    scaler = precision.grad_scaler()

    metrics_path = run_dir / "metrics.jsonl"
    if dist.is_main and not resume:
        metrics_path.write_text("")
    model.train()
    bad_steps = 0
    window: dict[str, float] = {}
    window_count, window_images, window_start = 0, 0, time.perf_counter()
    started = time.perf_counter()
    last_checkpoint = None
    bar = tqdm(total=t.max_iters, initial=start_iter, disable=not (progress and dist.is_main), dynamic_ncols=True)
    iteration = start_iter
    for batch, targets in loader:
        lr = learning_rate(iteration, config)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        images = batch.tensors.to(torch_device, non_blocking=True)
        gt = ground_truth_of(targets).to(torch_device)
        threads.step()
        with precision.autocast():
            output = forward(images)
        losses = objective.loss(output, gt)
        loss = losses["loss"]
        if t.skip_nonfinite and not bool(torch.isfinite(loss)):
            bad_steps += 1
            logger.warning("iteration %d: non-finite loss %s; step skipped", iteration, {k: float(v.detach()) for k, v in losses.items()})
            optimizer.zero_grad(set_to_none=True)
            if bad_steps >= t.max_bad_steps:
                bar.close()
                raise NonFiniteLossError(
                    f"{bad_steps} consecutive non-finite losses at iteration {iteration}; stopped. "
                    f"The last good checkpoint is {latest_checkpoint(run_dir)}"
                )
            iteration += 1
            continue
        bad_steps = 0
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if t.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        iteration += 1

        for key, value in losses.items():
            window[key] = window.get(key, 0.0) + value.detach()
        window_count += 1
        window_images += images.shape[0] * dist.world_size
        if iteration % t.log_every == 0 or iteration == t.max_iters:
            elapsed = time.perf_counter() - window_start
            row = {"iter": iteration, "lr": lr, "time": round(time.perf_counter() - started, 3)}
            row.update({k: float(v) / window_count for k, v in window.items()})
            if not math.isfinite(row["loss"]):
                bar.close()
                raise NonFiniteLossError(
                    f"non-finite loss in iterations {iteration - window_count + 1}..{iteration} "
                    f"(train.skip_nonfinite=false checks only here). The last good checkpoint is {latest_checkpoint(run_dir)}"
                )
            row["images_per_s"] = window_images / max(elapsed, 1e-9)
            row["threads"] = torch.get_num_threads()
            if dist.is_main:
                with open(metrics_path, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
                bar.set_postfix(
                    loss=f"{row['loss']:.3f}", cls=f"{row['loss_cls']:.3f}", box=f"{row['loss_box']:.3f}",
                    ctr=f"{row['loss_centerness']:.3f}", lr=f"{lr:.4g}", refresh=False,
                )
            window, window_count, window_images, window_start = {}, 0, 0, time.perf_counter()
        bar.update(1)
        if dist.is_main and (iteration % t.checkpoint_every == 0 and iteration < t.max_iters):
            last_checkpoint = save_checkpoint(
                run_dir / f"model_{iteration:07d}.pt", model, config, iteration=iteration, optimizer=optimizer,
                category_ids=train_set.category_ids, class_names=train_set.class_names,
                rng_state={"torch": torch.get_rng_state()},
            )
            prune_checkpoints(run_dir, t.keep_checkpoints)
        if t.eval_every and iteration % t.eval_every == 0 and iteration < t.max_iters and dist.is_main:
            _evaluate_into(unwrap(model), config, val_set, run_dir, iteration, torch_device, metrics_path)
            model.train()
    bar.close()
    threads.close()

    metrics: dict[str, float] = {}
    if dist.is_main:
        last_checkpoint = save_checkpoint(
            run_dir / "model_final.pt", model, config, iteration=iteration, optimizer=optimizer,
            category_ids=train_set.category_ids, class_names=train_set.class_names,
            rng_state={"torch": torch.get_rng_state()},
        )
        export_safetensors(run_dir / "model_final.safetensors", model, {"config": config.to_json()})
        if evaluate_at_end:
            metrics = _evaluate_into(unwrap(model), config, val_set, run_dir, iteration, torch_device, metrics_path)
    if dist.world_size > 1:
        torch.distributed.barrier()
    return TrainResult(run_dir, iteration, last_checkpoint or run_dir / "model_final.pt", metrics, time.perf_counter() - started)


def _evaluate_into(model, config, val_set, run_dir: Path, iteration: int, device, metrics_path: Path) -> dict[str, float]:
    """Evaluate on ``val_set``, write detections and metrics into the run folder, log a metrics row."""
    from fcos_lab.detections_file import save_detections
    from fcos_lab.evaluate import evaluate_detections
    from fcos_lab.predict import predict_dataset

    detections = predict_dataset(model, config, val_set, device=device)
    save_detections(run_dir / "detections_val.json", detections)
    result = evaluate_detections(val_set.coco, detections)
    metrics = {k: float(v) for k, v in result.metrics.items()}
    runtime = resolve_precision(config.model.inference_amp, device).record()
    write_json(run_dir / "metrics.json", {"iteration": iteration, **metrics, "per_class_ap": result.per_class_ap,
                                          "runtime": runtime})
    with open(metrics_path, "a") as handle:
        handle.write(json.dumps(json_safe({"iter": iteration, **{k: metrics[k] for k in ("AP", "AP50", "AP75")}})) + "\n")
    return metrics
