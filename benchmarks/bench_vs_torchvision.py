"""fcos_lab vs torchvision's FCOS, side by side in one process (not a test).

Both models carry the same random weights (``from_torchvision``) and see the same inputs; calls are
interleaved round by round so that a busy machine slows both alike; medians and ratios are reported.
torchvision's model is put in the state a torchvision user trains from pretrained weights: BatchNorm
frozen (eval mode) and the stem and first stage without gradients, which is what the
``fcos_r50_fpn_torchvision`` preset does (Detectron's FREEZE_AT=2, the paper's setting).

fcos_lab runs at its default precision (``train.amp`` and ``model.inference_amp`` ``auto``: bf16 autocast
on a CPU with bf16 units or a bf16 GPU, fp32 elsewhere; :mod:`fcos_lab.precision`) unless ``--precision``
says otherwise. Training and inference rows compare it with torchvision at its default fp32 and, when
fcos_lab's precision is not fp32, with torchvision under the same autocast.

    python -m benchmarks.bench_vs_torchvision [--device cpu|cuda] [--precision auto|off|bf16|fp16] [--quick]
        [--size HxW] [--threads N] [--reps N] [--only assignment,train,infer,postprocess,eval,imported]
        [--nchw] [--torchvision-channels-last]

Writes ``benchmarks/results.md`` and ``benchmarks/results.json`` (one section per device, precision and
flag combination; :mod:`benchmarks.comparison`). Rows: target assignment; one training step (forward,
assignment, loss, backward, SGD step) at batch 2 and 8; inference end to end (preprocess, forward,
post-processing) at batch 1 and 8; post-processing alone; COCO evaluation of the same detections with
pycocotools and faster-coco-eval (identical AP required). Each row also gives the lowest and highest ratio
of one round's timings, so a reader sees how steady the machine was. ``benchmarks/profile_train_step.py``
profiles one training step.

``--only imported`` (not in the default set) times the path of a user of published weights: torchvision's
state dict saved as a ``.pth`` file, turned into a run folder by ``fcos-lab import-weights``, loaded back as
every surface loads a checkpoint, and run end to end at batch 1 against torchvision's own model.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torchvision
from torch import nn

from benchmarks.bench_assignment import assign_with, random_targets, timed_round_robin
from benchmarks.comparison import MARKDOWN_HEADER, Row, model_rows, run_record, write_json_section, write_section
from fcos_lab.config import TrainConfig
from fcos_lab.data.transforms import preprocess, resize_boxes
from fcos_lab.interop.torchvision import from_torchvision
from fcos_lab.points import make_locations
from fcos_lab.precision import SETTINGS, Precision, resolve_precision
from fcos_lab.predict import detect, postprocess_output
from fcos_lab.targets import pad_ground_truth
from fcos_lab.train import compute_loss

SECTIONS = ("assignment", "train", "infer", "postprocess", "eval", "imported")
DEFAULT_SECTIONS = SECTIONS[:5]


def build_models(device: torch.device, min_size: int = 800, max_size: int = 1333):
    torch.manual_seed(0)
    tv = torchvision.models.detection.fcos_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=min_size, max_size=max_size
    )
    head = tv.head
    with torch.no_grad():  # a head that produces detections, as in the parity test
        nn.init.normal_(head.classification_head.cls_logits.weight, std=0.05)
        nn.init.uniform_(head.classification_head.cls_logits.bias, -3.0, -0.5)
        nn.init.normal_(head.regression_head.bbox_reg.weight, std=0.05)
        nn.init.constant_(head.regression_head.bbox_reg.bias, 2.0)
    ours, config = from_torchvision(tv)
    body = tv.backbone.body
    for module in (body.conv1, body.bn1, body.layer1):
        for param in module.parameters():
            param.requires_grad_(False)
    return tv.to(device), ours.to(device), config


def freeze_bn(tv: nn.Module) -> None:
    for module in tv.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()


def same_detections(expected: dict, got, score_tol: float = 1e-5, box_tol: float = 1e-2) -> bool:
    """Whether two detection lists hold the same (score, label, box) rows, in any order among equal scores.

    With random weights many detections share a score to the last bit, and the two sorts may order such
    ties differently; each torchvision row is matched greedily to an unused fcos_lab row.
    """
    if len(expected["scores"]) != len(got.scores):
        return False
    unused = torch.ones(len(got.scores), dtype=torch.bool, device=got.scores.device)
    for score, label, box in zip(expected["scores"], expected["labels"], expected["boxes"]):
        match = (unused & ((got.scores - score).abs() <= score_tol) & (got.labels == label)
                 & ((got.boxes - box).abs() <= box_tol).all(dim=1)).nonzero()
        if len(match) == 0:
            return False
        unused[match[0, 0]] = False
    return True


def training_steps(tv: nn.Module, ours: nn.Module, config, images: list[torch.Tensor], targets: list[dict],
                   precision: Precision) -> dict[str, Callable[[], None]]:
    """One SGD step (lr 0) of torchvision in fp32 (``tv_fp32``) and under ``precision``'s autocast (``tv_amp``),
    and of fcos_lab at ``precision`` (``ours``) and in fp32 (``ours_fp32``); the ``*_amp``/``ours`` pair is
    left out where ``precision`` is fp32. lr 0 does the full optimizer work and keeps the weights equal."""
    tv_opt = torch.optim.SGD([p for p in tv.parameters() if p.requires_grad], lr=0.0, momentum=0.9)
    our_opt = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.0, momentum=0.9)
    fp32 = resolve_precision("off", precision.device_type)

    def tv_step(step_precision: Precision) -> None:
        tv.train()
        freeze_bn(tv)
        with step_precision.autocast():
            losses = tv(images, [dict(t) for t in targets])
        loss = sum(losses.values())
        tv_opt.zero_grad(set_to_none=True)
        loss.backward()
        tv_opt.step()

    steps = {"tv_fp32": functools.partial(tv_step, fp32),
             "ours": functools.partial(fcos_lab_step, ours, config, images, targets, precision, our_opt)}
    if precision.enabled:
        steps |= {"tv_amp": functools.partial(tv_step, precision),
                  "ours_fp32": functools.partial(fcos_lab_step, ours, config, images, targets, fp32, our_opt)}
    return steps


@torch.no_grad()
def torchvision_inference(tv: nn.Module, images: list[torch.Tensor], precision: Precision) -> list[dict]:
    """torchvision's model end to end on ``images`` under ``precision``'s autocast."""
    with precision.autocast():
        return tv(images)


def fcos_lab_step(model: nn.Module, config, images: list[torch.Tensor], targets: list[dict], precision: Precision,
                  optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """One training step of fcos_lab on raw images ``[3, H, W]`` and targets (``boxes`` ``[M, 4]`` xyxy in the
    images' pixels, ``labels`` ``[M]``): preprocess, forward under ``precision``'s autocast, loss, backward,
    optimizer step. Returns the losses of the step (``loss``, ``loss_cls``, ``loss_box``, ``loss_centerness``)."""
    model.train()
    b = preprocess(images, config.input.min_size, config.input.max_size)
    boxes = [resize_boxes(t["boxes"], o, s) for t, o, s in zip(targets, b.original_sizes, b.image_sizes)]
    g = pad_ground_truth(boxes, [t["labels"] for t in targets])
    with precision.autocast():
        output = model(b.tensors)
    losses = compute_loss(output, g, config)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return losses


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like 512x512, got {text!r}") from None
    if min(height, width) < 64:
        raise argparse.ArgumentTypeError(f"--size: at least 64 pixels a side, got {text!r}")
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=SETTINGS, default=TrainConfig().amp,
                        help="fcos_lab's train.amp and model.inference_amp (default: its default, %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smaller images, fewer repetitions")
    parser.add_argument("--size", type=parse_size, default=None,
                        help="input images HxW, which both models keep (no resize); default 800x1216 (384x576 with "
                             "--quick)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=None,
                        help="timed rounds per row (default 5, 3 with --quick; twice that minus one for the "
                             "cheaper batch-2 training and batch-1 inference rows)")
    parser.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma-separated rows to run, of {', '.join(SECTIONS)} (default: all but imported)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--nchw", action="store_true",
                        help="fcos_lab in NCHW (train.channels_last=false) instead of its NHWC default")
    parser.add_argument("--torchvision-channels-last", action="store_true",
                        help="put torchvision's model in NHWC too (not its default), to isolate the layout's share")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown or not only:
        parser.error(f"--only: unknown rows {unknown}; choose from {', '.join(SECTIONS)}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = args.size or ((384, 576) if args.quick else (800, 1216))
    reps, warmup = (args.reps or (3 if args.quick else 5)), 1
    if reps < 1:
        parser.error("--reps must be at least 1")
    cheap_reps = 2 * reps - 1  # batch-2 training and batch-1 inference: a steadier median for little time
    limits = (min(size), max(size)) if args.size else (384, 576) if args.quick else (800, 1333)
    tv, ours, fp32_config = build_models(device, *limits)
    # The fcos_r50_fpn_torchvision preset pins fp32 (bit-for-bit parity); here fcos_lab runs as configured.
    config = replace(fp32_config, train=replace(fp32_config.train, amp=args.precision),
                     model=replace(fp32_config.model, inference_amp=args.precision))
    train_precision = resolve_precision(config.train.amp, device)
    infer_precision = resolve_precision(config.model.inference_amp, device)
    if args.nchw:
        ours = ours.to(memory_format=torch.contiguous_format)
        ours.channels_last = False
    if args.torchvision_channels_last:
        tv = tv.to(memory_format=torch.channels_last)
    rows: list[Row] = []
    checks: list[str] = []

    def images_of(count: int, seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return [torch.rand(3, *size, generator=generator).to(device) for _ in range(count)]

    def targets_of(count: int, seed: int) -> list[dict]:
        return [{k: v.to(device) for k, v in t.items()} for t in random_targets(count, 20, size, seed)]

    # 1. Assignment: batch 8, 50 boxes per image.
    if "assignment" in only:
        targets = [{k: v.to(device) for k, v in t.items()} for t in random_targets(8, 50, size, 0)]
        with torch.no_grad():
            batch = preprocess(images_of(8, 1), config.input.min_size, config.input.max_size)
            features = [f.shape[-2:] for f in ours.fpn(ours.backbone(batch.tensors.to(device)))]
        locations = make_locations(tuple(tuple(f) for f in features), ours.strides, "zero",
                                   tuple(batch.tensors.shape[-2:]), device)
        gt = pad_ground_truth([t["boxes"] for t in targets], [t["labels"] for t in targets])
        anchors = [torch.cat([locations.points - locations.strides[:, None] / 2,
                              locations.points + locations.strides[:, None] / 2], 1)] * 8
        num_per_level = list(locations.num_per_level)
        tv_loss_backup = tv.head.compute_loss
        tv.head.compute_loss = lambda *a, **k: {}
        try:
            times = timed_round_robin({
                "tv": lambda: tv.compute_loss(targets, {}, anchors, num_per_level),
                "ours": lambda: assign_with("fcos_r50_fpn_torchvision", locations, gt),
            }, device, warmup, reps * 3)
        finally:
            tv.head.compute_loss = tv_loss_backup
        rows.append(Row("assignment", "target assignment, batch 8, 50 boxes/image", "fp32", "fp32",
                        times["tv"], times["ours"]))

    # 2. Training step, batch 2 and 8.
    if "train" in only:
        for batch_size in (2, 8):
            steps = training_steps(tv, ours, config, images_of(batch_size, 2), targets_of(batch_size, 3),
                                   train_precision)
            steps.pop("ours_fp32", None)
            peak = {}
            if device.type == "cuda":
                for name, fn in steps.items():
                    torch.cuda.reset_peak_memory_stats(device)
                    fn()
                    peak[name] = torch.cuda.max_memory_allocated(device) / 2**30
            rounds = cheap_reps if batch_size == 2 else reps
            times = timed_round_robin(steps, device, warmup, rounds)
            suffix = f" (peak GiB: {', '.join(f'{k} {v:.2f}' for k, v in peak.items())})" if peak else ""
            rows += model_rows(f"train_b{batch_size}", f"training step, batch {batch_size}{suffix}", times,
                               train_precision)

    # 3. Inference end to end, batch 1 and 8; in fp32 the detections must agree.
    tv.eval()
    ours.eval()
    if "infer" in only:
        fp32 = resolve_precision("off", device)
        for batch_size in (1, 8):
            images = images_of(batch_size, 4)
            tv_infer = functools.partial(torchvision_inference, tv, images)
            expected, got = tv_infer(fp32), detect(ours, fp32_config, images)
            same = all(same_detections(e, d) for e, d in zip(expected, got))
            checks.append(f"inference batch {batch_size} in fp32: detections identical to torchvision: {same} "
                          f"({sum(len(d.scores) for d in got)} detections)")
            functions = {"tv_fp32": functools.partial(tv_infer, fp32),
                         "ours": functools.partial(detect, ours, config, images)}
            if infer_precision.enabled:
                functions["tv_amp"] = functools.partial(tv_infer, infer_precision)
            rounds = cheap_reps if batch_size == 1 else reps
            times = timed_round_robin(functions, device, warmup, rounds)
            rows += model_rows(f"infer_b{batch_size}", f"inference end to end, batch {batch_size}", times,
                               infer_precision)

    # 4. Post-processing alone, batch 8, on the same head outputs (fp32 in both).
    if "postprocess" in only:
        images = images_of(8, 5)
        with torch.no_grad():
            image_list, _ = tv.transform(images)
            feats = list(tv.backbone(image_list.tensors).values())
            head_outputs = tv.head(feats)
            tv_anchors = tv.anchor_generator(image_list, feats)
            counts = [f.size(2) * f.size(3) for f in feats]
            split = {k: list(v.split(counts, dim=1)) for k, v in head_outputs.items()}
            batch = preprocess(images, config.input.min_size, config.input.max_size)
            output = ours(batch.tensors.to(device))
        times = timed_round_robin({
            "tv": lambda: tv.postprocess_detections(split, [list(a.split(counts)) for a in tv_anchors], image_list.image_sizes),
            "ours": lambda: postprocess_output(output, batch, config),
        }, device, warmup, reps * 3)
        rows.append(Row("postprocess", "post-processing alone, batch 8", "fp32", "fp32", times["tv"], times["ours"]))

    # 5. COCO evaluation of the same detections: pycocotools vs faster-coco-eval.
    if "eval" in only:
        rows.append(evaluation_row(checks, reps))

    # 6. A user of published weights: torchvision's state dict as a .pth file, `fcos-lab import-weights`, the
    #    run folder loaded as every surface loads it (fcos_lab.runs.load_detector), batch 1 end to end.
    if "imported" in only:
        with tempfile.TemporaryDirectory() as folder:
            imported = load_imported(tv, Path(folder), args.device, config)
        if args.nchw:
            imported.model = imported.model.to(memory_format=torch.contiguous_format)
            imported.model.channels_last = False
        images = images_of(1, 6)
        fp32 = resolve_precision("off", device)
        tv_imported = functools.partial(torchvision_inference, tv, images)
        same = same_detections(tv_imported(fp32)[0],
                               detect(imported.model, imported.fp32_config, images)[0])
        checks.append(f"imported weights, batch 1 in fp32: detections identical to torchvision: {same}")
        functions = {"tv_fp32": functools.partial(tv_imported, fp32),
                     "ours": functools.partial(detect, imported.model, imported.config, images)}
        if infer_precision.enabled:
            functions["tv_amp"] = functools.partial(tv_imported, infer_precision)
        times = timed_round_robin(functions, device, warmup, cheap_reps)
        rows += model_rows("infer_b1", "imported weights (.pth -> import-weights -> run folder), inference batch 1",
                           times, infer_precision)

    flags = [flag for flag, on in (("quick", args.quick), ("nchw", args.nchw),
                                   ("torchvision-channels-last", args.torchvision_channels_last)) if on]
    if args.size:
        flags.append(f"size {size[0]}x{size[1]}")
    if args.reps:
        flags.append(f"reps {reps}")
    if set(only) != set(DEFAULT_SECTIONS):
        flags.append(f"only {','.join(only)}")
    variant = " ".join([args.device, train_precision.name, *flags])
    command = " ".join(["python -m benchmarks.bench_vs_torchvision", f"--device {args.device}",
                        f"--precision {args.precision}",
                        *[f"--{flag}" for flag in flags],  # each flag is its option's name, with its value
                        f"--threads {args.threads}"])
    machine = run_record(device, command, size, reps, warmup, train_precision, infer_precision, checks)
    header = [
        f"<!-- device:{variant} -->",
        f"## {variant}",
        "",
        f"- Machine: {machine['cpu']} ({', '.join(machine['cpu_flags'])}), {machine['threads']} torch threads; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}",
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}"
        + (f", GPU {machine['gpu']}" if "gpu" in machine else ""),
        f"- fcos_lab precision: training {train_precision.description}; inference {infer_precision.description}",
        f"- Inputs: random images of {size[0]}x{size[1]} (both models resize to shorter side {config.input.min_size}, "
        f"longer at most {config.input.max_size}); {reps} timed rounds after {warmup} warm-up ({cheap_reps} for "
        f"training at batch 2 and inference at batch 1), the libraries in turns, the order alternating by round",
        f"- Command: `{command}`",
        f"- Memory format: fcos_lab {'NCHW' if args.nchw else 'NHWC (channels_last, its default)'}, torchvision "
        f"{'NHWC (channels_last, set by --torchvision-channels-last)' if args.torchvision_channels_last else 'NCHW (its default)'}",
        f"- Run at: {machine['run_at']}",
        *[f"- Check: {c}" for c in checks],
        "",
        *MARKDOWN_HEADER,
    ]
    section = "\n".join(header + [r.markdown() for r in rows]) + f"\n<!-- /device:{variant} -->\n"
    print(section)
    if not args.no_write:
        write_section(section, variant)
        write_json_section(variant, {**machine, "rows": [r.record() for r in rows]})
    return 0


@dataclass
class Imported:
    """The model of an imported run folder, with its config at the benchmark's precision and in fp32."""

    model: nn.Module
    config: object
    fp32_config: object


def load_imported(tv: nn.Module, folder: Path, device: str, config) -> Imported:
    """Save ``tv``'s state dict as torchvision publishes weights, import it, and load the run folder.

    The loading is :func:`fcos_lab.runs.load_detector`, the one every surface uses; the resize of ``config``
    (torchvision's, possibly ``--quick`` or ``--size``) and its inference precision are passed as overrides.
    """
    from fcos_lab.interop.import_weights import import_weights
    from fcos_lab.runs import load_detector

    weights = folder / "fcos_resnet50_fpn.pth"
    torch.save({k: v.cpu() for k, v in tv.state_dict().items()}, weights)
    run_dir = import_weights(weights, folder / "run")
    overrides = [f"input.min_size={config.input.min_size}", f"input.max_size={config.input.max_size}",
                 f"model.inference_amp={config.model.inference_amp}"]
    loaded = load_detector(run_dir, overrides=overrides, device=device)
    fp32_config = replace(loaded.config, model=replace(loaded.config.model, inference_amp="off"))
    return Imported(loaded.model, loaded.config, fp32_config)


def evaluation_row(checks: list[str], reps: int) -> Row:
    """Evaluate a synthetic detections set of 500 images with both backends; AP must be identical."""
    import time

    from fcos_lab.evaluate import evaluate_detections

    generator = torch.Generator().manual_seed(0)
    images, annotations, detections = [], [], []
    for image_id in range(1, 501):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 480})
        for k in range(8):
            x, y = (torch.rand(2, generator=generator) * 400).tolist()
            w, h = (torch.rand(2, generator=generator) * 150 + 10).tolist()
            category = int(torch.randint(1, 21, (1,), generator=generator))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            for _ in range(12):
                jitter = (torch.randn(4, generator=generator) * 8).tolist()
                detections.append({"image_id": image_id, "category_id": category if torch.rand(1, generator=generator) < 0.8 else 1,
                                   "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])],
                                   "score": float(torch.rand(1, generator=generator))})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c, "name": f"class{c}"} for c in range(1, 21)]}
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    times: dict[str, list[float]] = {"pycocotools": [], "faster_coco_eval": []}
    results = {}
    for _ in range(max(2, reps // 2)):
        for backend in times:
            start = time.perf_counter()
            results[backend] = evaluate_detections(coco, detections, backend=backend)
            times[backend].append(time.perf_counter() - start)
    ap = {b: r.metrics["AP"] for b, r in results.items()}
    checks.append(f"COCO evaluation of {len(detections)} detections on 500 images: AP pycocotools {ap['pycocotools']:.6f}, "
                  f"faster-coco-eval {ap['faster_coco_eval']:.6f}, identical: {abs(ap['pycocotools'] - ap['faster_coco_eval']) < 1e-9}")
    return Row("eval", "COCO evaluation (pycocotools -> faster-coco-eval)", None, None, times["pycocotools"],
               times["faster_coco_eval"])


if __name__ == "__main__":
    sys.exit(main())
