"""The ``fcos-lab`` command line: parses arguments and calls the library; no logic of its own.

Every user-facing error (an :class:`~fcos_lab.errors.FcosLabError`) is printed as one line on stderr
with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from fcos_lab.errors import FcosLabError
from fcos_lab.threads import prefer_passive_wait

EPILOG = """overrides are dotted KEY=VALUE pairs, e.g. train.max_iters=200 model.backbone=resnet101
presets: see `fcos-lab presets`"""


def _common(parser: argparse.ArgumentParser, preset_default: str | None = "fcos_r50_fpn_1x") -> None:
    if preset_default is not None:
        parser.add_argument("--preset", default=preset_default, help="paper-named preset (default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: %(default)s")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcos-lab",
        description="FCOS workbench: train, evaluate and probe the anchor-free detector of Tian et al. (ICCV 2019).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="generate synthetic data, train the CPU demo model, evaluate, render")
    p.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny data and schedule: seconds, for tests")
    _common(p, preset_default=None)

    p = sub.add_parser("train", help="train a preset on COCO-format data", epilog=EPILOG)
    _common(p)
    p.add_argument("--run-dir", help="run folder (default: runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of --run-dir")
    p.add_argument("--train-ann", help="training annotation JSON (sets data.train_ann)")
    p.add_argument("--train-images", help="training image folder (sets data.train_images)")
    p.add_argument("--val-ann", help="validation annotation JSON (sets data.val_ann)")
    p.add_argument("--val-images", help="validation image folder (sets data.val_images)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")

    p = sub.add_parser("eval", help="evaluate a checkpoint (or a detections file) with COCO metrics")
    p.add_argument("--checkpoint", help="checkpoint file or run folder")
    p.add_argument("--detections", help="evaluate this COCO results file instead of running a model")
    p.add_argument("--ann", required=True, help="ground-truth annotation JSON")
    p.add_argument("--images", help="image folder (needed with --checkpoint)")
    p.add_argument("--out", help="folder for detections.json and metrics.json")
    p.add_argument("--class-agnostic", action="store_true", help="one class for all (Table 7, proposals)")
    p.add_argument("--max-dets", default="1,10,100", help="COCO maxDets, e.g. 100,300,1000 for proposals")
    p.add_argument("--proposals", action="store_true",
                   help="region proposals (Table 6): class-agnostic, maxDets 100,300,1000 -> AR100 and AR1000")
    _common(p, preset_default=None)

    p = sub.add_parser("predict", help="detect objects in images or folders; writes JSON and pictures")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", default="runs/predict", help="output folder (default: %(default)s)")
    p.add_argument("--render-thresh", type=float, default=0.3, help="score threshold for drawn boxes")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set postprocess.nms_thresh=0.5 (repeatable)")

    p = sub.add_parser("stats", help="best possible recall and ambiguous samples (Tables 1 and 2) from annotations")
    p.add_argument("--ann", required=True, help="COCO-format annotation JSON")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--out", help="folder for stats.json and table.md")
    p.add_argument("--no-retinanet", action="store_true", help="skip the anchor rows")
    p.add_argument("--box-convention", choices=["legacy", "continuous"],
                   help="legacy: Detectron's [x, y, x+w-1, y+h-1] boxes (the paper's numbers, default); "
                        "continuous: [x, y, x+w, y+h] as fcos_lab trains")
    p.add_argument("--ambiguity-unit", choices=["locations", "pairs"], help="count ambiguous locations or (location, box) pairs")
    p.add_argument("--strict-size-ranges", action="store_true", help="torchvision's strict size-range bounds")

    p = sub.add_parser("fiftyone", help="FiftyOne dataset of images, ground truth and predictions: TP/FP/FN, "
                                         "ambiguous locations, unrecallable boxes, errors per level", epilog=EPILOG)
    p.add_argument("--ann", required=True, help="COCO-format ground-truth JSON")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--pred", required=True, help="COCO results JSON (fcos-lab eval --out) with level/location/...")
    p.add_argument("--name", default="fcos-lab", help="dataset name, replaced if it exists (default: %(default)s)")
    p.add_argument("--launch", action="store_true", help="serve the FiftyOne App until Ctrl-C")
    p.add_argument("--port", type=int, default=5151, help="App port (default: %(default)s)")
    p.add_argument("--address", default="127.0.0.1", help="App address (default: %(default)s)")
    p.add_argument("--eval-key", default="eval", help="FiftyOne evaluation key (default: %(default)s)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for TP/FP/FN (default: %(default)s)")
    p.add_argument("--preset", default="fcos_r50_fpn_1x", help="preset the predictions were made with")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")

    sub.add_parser("presets", help="list the presets and what they change")
    return parser


def _load_model(checkpoint: str, overrides: list[str], device: str):
    from fcos_lab.checkpoint import load_checkpoint, load_model_weights
    from fcos_lab.distributed import resolve_device
    from fcos_lab.model.detector import build_model
    from fcos_lab.presets import resolve

    payload = load_checkpoint(checkpoint)
    config = resolve(payload["config"], overrides)
    torch_device = resolve_device(device)
    model = build_model(config)
    load_model_weights(model, payload)
    return model.to(torch_device).eval(), config, payload, torch_device


def _cmd_demo(args) -> int:
    from fcos_lab.demo import run_demo

    summary = run_demo(args.out, quick=args.quick, device=args.device, overrides=args.overrides)
    print(f"\nfcos-lab demo finished in {summary['seconds']} s ({summary['iterations']} iterations)")
    ap = summary["AP"]
    if ap is not None:
        print(f"  AP {summary['AP']:.3f}   AP50 {summary['AP50']:.3f}   AP75 {summary['AP75']:.3f}  (synthetic val)")
    for name, path in summary["files"].items():
        print(f"  {name:13s} {path}")
    return 0


def _cmd_train(args) -> int:
    from fcos_lab.presets import resolve
    from fcos_lab.train import train

    extra = [f"data.{key}={value}" for key, value in (
        ("train_ann", args.train_ann), ("train_images", args.train_images),
        ("val_ann", args.val_ann), ("val_images", args.val_images)) if value]
    config = resolve(args.preset, list(args.overrides) + extra)
    run_dir = Path(args.run_dir or f"runs/{config.name}")
    result = train(config, run_dir, device=args.device, resume=args.resume, evaluate_at_end=not args.no_eval)
    print(f"trained {result.iterations} iterations in {result.seconds:.0f} s -> {result.run_dir}")
    if result.metrics:
        print("  " + "  ".join(f"{k} {result.metrics[k]:.3f}" for k in ("AP", "AP50", "AP75") if k in result.metrics))
    return 0


def _cmd_eval(args) -> int:
    from fcos_lab.detections_file import load_detections, save_detections
    from fcos_lab.evaluate import evaluate_detections
    from fcos_lab.train import _json_safe

    try:
        max_dets = tuple(int(v) for v in ("100,300,1000" if args.proposals else args.max_dets).split(","))
    except ValueError:
        raise FcosLabError(f"--max-dets must be comma-separated integers, got {args.max_dets!r}") from None
    class_agnostic = args.class_agnostic or args.proposals
    runtime = {}
    if args.detections:
        detections = load_detections(args.detections)
    else:
        if not (args.checkpoint and args.images):
            raise FcosLabError("eval needs --detections FILE, or --checkpoint and --images")
        from fcos_lab.data.coco import CocoDetection
        from fcos_lab.predict import predict_dataset

        model, config, _, device = _load_model(args.checkpoint, args.overrides, args.device)
        dataset = CocoDetection(args.ann, args.images, train=False, min_size=config.input.min_size,
                                max_size=config.input.max_size, on_bad_image=config.data.on_bad_image)
        detections = predict_dataset(model, config, dataset, device=device, progress=True)
        from fcos_lab.precision import resolve_precision

        runtime = {"runtime": resolve_precision(config.model.inference_amp, device).record()}
    result = evaluate_detections(args.ann, detections, class_agnostic=class_agnostic, max_dets=max_dets)
    print(result.summary)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if not args.detections:
            save_detections(out / "detections.json", detections)
        (out / "metrics.json").write_text(json.dumps(_json_safe({**result.metrics, "per_class_ap": result.per_class_ap, **runtime}), indent=2))
        print(f"wrote {out / 'metrics.json'}")
    return 0


def _cmd_predict(args) -> int:
    from fcos_lab.predict import predict_images

    model, config, payload, device = _load_model(args.checkpoint, args.overrides, args.device)
    path = predict_images(model, config, args.inputs, args.out, class_names=payload["class_names"] or None,
                          category_ids=payload["category_ids"] or None, device=device, render_thresh=args.render_thresh)
    print(f"wrote {path} and rendered images in {path.parent}")
    return 0


def _cmd_stats(args) -> int:
    from fcos_lab.analysis.statistics import main as stats_main

    argv = ["--ann", args.ann] + (["--json"] if args.json else []) + (["--out", args.out] if args.out else [])
    argv += ["--no-retinanet"] if args.no_retinanet else []
    argv += ["--box-convention", args.box_convention] if args.box_convention else []
    argv += ["--ambiguity-unit", args.ambiguity_unit] if args.ambiguity_unit else []
    argv += ["--strict-size-ranges"] if args.strict_size_ranges else []
    return int(stats_main(argv) or 0)


def _cmd_fiftyone(args) -> int:
    from fcos_lab.integrations.fiftyone import main as fiftyone_main

    argv = ["--ann", args.ann, "--images", args.images, "--pred", args.pred, "--name", args.name,
            "--port", str(args.port), "--address", args.address, "--eval-key", args.eval_key,
            "--iou", str(args.iou), "--preset", args.preset] + (["--launch"] if args.launch else [])
    return int(fiftyone_main(argv + list(args.overrides)) or 0)


def _cmd_presets(args) -> int:
    from fcos_lab.presets import PRESETS

    for name, config in PRESETS.items():
        m, a, l, p = config.model, config.assign, config.loss, config.postprocess
        print(f"{name:30s} {m.backbone:17s} P6/P7<-{m.p6p7_from} head_norm={m.head_norm} ctr_on={m.centerness_on} "
              f"box={m.box_param} radius={a.center_sampling_radius} loss={l.box_loss} nms={p.nms_thresh}")
    return 0


COMMANDS = {
    "demo": _cmd_demo, "train": _cmd_train, "eval": _cmd_eval, "predict": _cmd_predict,
    "stats": _cmd_stats, "fiftyone": _cmd_fiftyone, "presets": _cmd_presets,
}


def main(argv: list[str] | None = None) -> int:
    prefer_passive_wait()  # before any command imports torch, whose OpenMP runtime reads it once
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except FcosLabError as error:
        print(f"fcos-lab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fcos-lab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
