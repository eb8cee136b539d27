"""The ``fcos-lab`` command line: parses arguments and calls the library; no logic of its own.

Every user-facing error (an :class:`~fcos_lab.errors.FcosLabError`) is printed as one line on stderr
with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from fcos_lab.errors import FcosLabError
from fcos_lab.threads import prefer_passive_wait

EPILOG = """overrides are dotted KEY=VALUE arguments, the same for every command, e.g.
  train.max_iters=200 model.backbone=resnet101 postprocess.nms_thresh=0.5
presets: see `fcos-lab presets`"""
PREDICT_LINES = 20  # images reported one by one by fcos-lab predict; beyond, a total
OVERRIDE_PATTERN = re.compile(r"^(model|assign|loss|postprocess|input|train|data)\.[A-Za-z_]\w*=")


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

    p = sub.add_parser("predict", help="detect objects in images or folders; writes JSON and pictures", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    p.add_argument("--out", default="runs/predict", help="output folder (default: %(default)s)")
    p.add_argument("--render-thresh", type=float, default=0.3,
                   help="score threshold of the boxes drawn (detections.json keeps them all; default: %(default)s)")
    p.add_argument("--ann", help="COCO annotation JSON whose file_names give the image ids (else: integer file "
                                 "stems, as COCO's 000000000139.jpg = 139; else running numbers)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_KEY=VALUE",
                   help="image files or folders, and dotted config overrides (section.field=value)")

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
    p.add_argument("--preset", default="fcos_r50_fpn_1x", help="whose assignment (default: %(default)s)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides (assign.*, input.*)")

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

    p = sub.add_parser("errors", help="TIDE error breakdown (Cls, Loc, Both, Dupe, Bkg, Miss) of a detections file, "
                                       "by FPN level, center-ness, ambiguous location and size", epilog=EPILOG)
    p.add_argument("--detections", required=True, help="COCO results JSON (fcos-lab eval --out)")
    p.add_argument("--ann", required=True, help="COCO-format ground-truth JSON")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--out", help="folder for errors.json, report.md and the figures (HTML)")
    p.add_argument("--preset", default="fcos_r50_fpn_1x", help="preset the detections were made with")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")

    p = sub.add_parser("tune", help="recommend size ranges and input size for a dataset (and whether it needs P2)",
                       epilog=EPILOG)
    p.add_argument("--ann", required=True, help="COCO-format annotation JSON (e.g. from fcos-lab convert)")
    p.add_argument("--preset", default="fcos_r50_fpn_1x", help="whose assignment, levels and input size (default: %(default)s)")
    p.add_argument("--levels", choices=["p3", "p2"], help="search P3-P7 or P2-P7 ranges (default: the preset's levels)")
    p.add_argument("--max-ambiguity", type=float, help="ambiguity limit in percent (default: the paper ranges')")
    p.add_argument("--search-images", type=int, help="images in the search sample (default: 500)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--out", help="folder for tune.json, report.md and the figures (HTML, PNG)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")

    p = sub.add_parser("convert", help="convert a YOLO-format dataset (one label .txt per image) to COCO JSON",
                       description="YOLO lines 'class cx cy w h' (fractions of the image as displayed, after EXIF "
                                   "orientation) become COCO [x, y, w, h] pixel boxes; see fcos_lab.data.yolo.")
    p.add_argument("--from", dest="source_format", required=True, choices=["yolo"], help="input format")
    p.add_argument("--images", required=True, help="image folder (searched recursively)")
    p.add_argument("--labels", required=True, help="label folder mirroring --images, one .txt per image")
    p.add_argument("--names", required=True, help="names.txt (one class name per line) or an Ultralytics data.yaml")
    p.add_argument("--out", required=True, help="COCO annotation JSON to write")
    p.add_argument("--category-ids", choices=["index", "coco80"], default="index",
                   help="index: 1..C in names order (default); coco80: the standard COCO ids of the 80 classes")
    p.add_argument("--image-ids", choices=["index", "stem"], default="index",
                   help="index: 1..N in sorted file-name order (default); stem: the integer file stem, as COCO")
    p.add_argument("--tolerance", type=float,
                   help="how far a box edge may leave [0, 1] (default: 1e-6, rounding; Ultralytics accepts 0.01)")

    p = sub.add_parser("import-weights", help="turn a published weights file into a run folder (nothing is downloaded)")
    p.add_argument("file", help="weights file, e.g. torchvision's fcos_resnet50_fpn_coco-99b0c9b7.pth")
    p.add_argument("--from", dest="source", required=True, choices=["torchvision"], help="code base of the file")
    p.add_argument("--out", required=True, help="run folder to create (absent or empty)")
    p.add_argument("--class-names", help="text file, one class name a line (default: COCO's for 91 classes)")

    p = sub.add_parser("export", help="export a checkpoint for deployment (ONNX, onnxruntime)")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="default: %(default)s")
    p.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    p.add_argument("--nms", action="store_true", help="NMS inside the graph: outputs final detections")

    p = sub.add_parser("workshop", help="copy the workshop notebooks into a folder, generate their data, say how to open them")
    p.add_argument("--dir", required=True, help="the participant's workshop folder (created if missing)")
    p.add_argument("--force", action="store_true", help="replace notebooks already in the folder (a participant's work)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the demo preset, "
                   "recorded for the notebooks (e.g. data.synthetic_num_train=200)")

    sub.add_parser("presets", help="list the presets and what they change")
    return parser


def _load(args):
    from fcos_lab.runs import load_detector

    return load_detector(args.checkpoint, overrides=list(args.overrides), device=args.device)


def split_overrides(values: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments split into ``(others, overrides)``: ``section.field=value`` items are overrides."""
    overrides = [v for v in values if OVERRIDE_PATTERN.match(v)]
    return [v for v in values if not OVERRIDE_PATTERN.match(v)], overrides


def _cmd_demo(args) -> int:
    from fcos_lab.demo import run_demo

    summary = run_demo(args.out, quick=args.quick, device=args.device, overrides=args.overrides)
    print(f"\nfcos-lab demo finished in {summary['seconds']} s ({summary['iterations']} iterations)")
    ap = summary["AP"]
    if ap is not None:
        print(f"  AP {summary['AP']:.3f}   AP50 {summary['AP50']:.3f}   AP75 {summary['AP75']:.3f}  (synthetic val)")
        print("  " + "   ".join(f"{k} {summary[k]:.3f}" for k in ("APs", "APm", "APl", "ARl") if summary.get(k) is not None))
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
    from fcos_lab.runs import write_json

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
        from fcos_lab.data.splits import coco_dataset
        from fcos_lab.predict import predict_dataset

        loaded = _load(args)
        dataset = coco_dataset(loaded.config, args.ann, args.images)
        detections = predict_dataset(loaded.model, loaded.config, dataset, device=loaded.device, progress=True,
                                     category_ids=list(loaded.category_ids) or None)
        from fcos_lab.precision import resolve_precision

        runtime = {"runtime": resolve_precision(loaded.config.model.inference_amp, loaded.device).record()}
    result = evaluate_detections(args.ann, detections, class_agnostic=class_agnostic, max_dets=max_dets)
    print(result.summary)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if not args.detections:
            save_detections(out / "detections.json", detections)
        write_json(out / "metrics.json", {**result.metrics, "per_class_ap": result.per_class_ap, **runtime})
        print(f"wrote {out / 'metrics.json'}")
    return 0


def _cmd_predict(args) -> int:
    from fcos_lab.predict import predict_images

    args.inputs, args.overrides = split_overrides(args.inputs)
    if not args.inputs:
        raise FcosLabError("predict needs at least one image file or folder")
    loaded = _load(args)
    path, images = predict_images(loaded.model, loaded.config, args.inputs, args.out,
                                  class_names=list(loaded.class_names) or None,
                                  category_ids=list(loaded.category_ids) or None, device=loaded.device,
                                  render_thresh=args.render_thresh, ann_file=args.ann)
    for image in images[:PREDICT_LINES]:
        print(image.describe(args.render_thresh))
    if len(images) > PREDICT_LINES:
        drawn, total = sum(i.drawn for i in images), sum(i.detections for i in images)
        print(f"... {len(images)} images in all: {drawn} of {total} detections drawn, {total - drawn} held back")
    print(f"wrote {path} (every detection, with image_id and category_name) and rendered images in {path.parent}")
    return 0


def _cmd_stats(args) -> int:
    from fcos_lab.analysis.statistics import main as stats_main

    argv = ["--ann", args.ann] + (["--json"] if args.json else []) + (["--out", args.out] if args.out else [])
    argv += ["--no-retinanet"] if args.no_retinanet else []
    argv += ["--box-convention", args.box_convention] if args.box_convention else []
    argv += ["--ambiguity-unit", args.ambiguity_unit] if args.ambiguity_unit else []
    argv += ["--strict-size-ranges"] if args.strict_size_ranges else []
    argv += ["--preset", args.preset, *args.overrides]
    return int(stats_main(argv) or 0)


def _cmd_fiftyone(args) -> int:
    from fcos_lab.integrations.fiftyone import main as fiftyone_main

    argv = ["--ann", args.ann, "--images", args.images, "--pred", args.pred, "--name", args.name,
            "--port", str(args.port), "--address", args.address, "--eval-key", args.eval_key,
            "--iou", str(args.iou), "--preset", args.preset] + (["--launch"] if args.launch else [])
    return int(fiftyone_main(argv + list(args.overrides)) or 0)


def _cmd_errors(args) -> int:
    from fcos_lab.analysis.tide_report import main as errors_main

    argv = ["--detections", args.detections, "--ann", args.ann, "--preset", args.preset]
    argv += (["--json"] if args.json else []) + (["--out", args.out] if args.out else [])
    return int(errors_main(argv + list(args.overrides)) or 0)


def _cmd_tune(args) -> int:
    from fcos_lab.analysis.tune_report import main as tune_main

    argv = ["--ann", args.ann, "--preset", args.preset] + (["--levels", args.levels] if args.levels else [])
    argv += ["--max-ambiguity", str(args.max_ambiguity)] if args.max_ambiguity is not None else []
    argv += ["--search-images", str(args.search_images)] if args.search_images is not None else []
    argv += (["--json"] if args.json else []) + (["--out", args.out] if args.out else [])
    return int(tune_main(argv + list(args.overrides)) or 0)


def _cmd_convert(args) -> int:
    from fcos_lab.checkpoint import atomic_write_text
    from fcos_lab.data.yolo import convert_yolo_to_coco, format_summary, read_class_names

    coco, summary = convert_yolo_to_coco(args.images, args.labels, read_class_names(args.names),
                                         category_ids=args.category_ids, image_ids=args.image_ids,
                                         **({} if args.tolerance is None else {"tolerance": args.tolerance}))
    atomic_write_text(Path(args.out), json.dumps(coco))  # only once the whole conversion has succeeded
    print(format_summary(summary))
    print(f"wrote {args.out}")
    return 0


def _cmd_import_weights(args) -> int:
    from fcos_lab.interop.import_weights import import_weights

    out = import_weights(args.file, args.out, source=args.source, class_names_file=args.class_names)
    print(f"wrote {out} (model_final.pt, model_final.safetensors, config.json); try: fcos-lab predict --checkpoint {out} IMAGE")
    return 0


def _cmd_export(args) -> int:
    from fcos_lab.interop.onnx import export_onnx
    from fcos_lab.runs import load_detector

    loaded = load_detector(args.checkpoint)
    path = export_onnx(loaded.model, loaded.config, args.out, nms=args.nms)
    print(f"wrote {path}")
    return 0


def _cmd_workshop(args) -> int:
    from fcos_lab.workshop.folder import instructions, make_workshop_folder

    print(instructions(make_workshop_folder(args.dir, list(args.overrides), force=args.force)))
    return 0


def _cmd_presets(args) -> int:
    from fcos_lab.paper import rows_of_preset
    from fcos_lab.presets import PRESETS

    print(f"{'preset':30s} {'backbone':17s} {'P6/P7':5s} {'head':4s} {'ctr':4s} {'box':4s} {'radius':6s} {'loss':10s} "
          f"{'nms':4s} paper rows (fcos_lab/paper.py) and their first number")
    for name, config in PRESETS.items():
        m, a, l, p = config.model, config.assign, config.loss, config.postprocess
        rows = "; ".join(f"{row.table} \"{row.row}\"" + "".join(f" ({k} {v})" for k, v in list(row.values.items())[:1])
                         for row in rows_of_preset(name)) or "-"
        print(f"{name:30s} {m.backbone:17s} {m.p6p7_from:5s} {m.head_norm:4s} {m.centerness_on:4s} {m.box_param:4s} "
              f"{a.center_sampling_radius:<6g} {l.box_loss:10s} {p.nms_thresh:<4g} {rows}")
    return 0


COMMANDS = {
    "demo": _cmd_demo, "train": _cmd_train, "eval": _cmd_eval, "predict": _cmd_predict,
    "stats": _cmd_stats, "fiftyone": _cmd_fiftyone, "errors": _cmd_errors, "presets": _cmd_presets, "tune": _cmd_tune,
    "convert": _cmd_convert, "import-weights": _cmd_import_weights, "export": _cmd_export, "workshop": _cmd_workshop,
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``section.field=value`` overrides may stand anywhere after the command."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    takes_inputs = hasattr(args, "inputs")  # predict: image paths may follow options too
    unknown = [item for item in extra if not (OVERRIDE_PATTERN.match(item) or (takes_inputs and not item.startswith("-")))]
    if unknown or (extra and not hasattr(args, "overrides") and not takes_inputs):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        if hasattr(args, "overrides"):
            args.overrides = list(args.overrides or []) + extra
        else:  # predict: overrides are split from its image paths
            args.inputs = list(args.inputs) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    prefer_passive_wait()  # before any command imports torch, whose OpenMP runtime reads it once
    args = parse(argv)
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
