"""Run the paper's notebooks with papermill and build the "paper vs measured" report.

    python -m pipelines.reproduce --scale smoke|workshop|paper [--only 03,04] --out DIR [--force] [--notebooks DIR]
        [--weights RUN_OR_CHECKPOINT [--val-max-images N]] [section.field=value ...]

Each notebook runs as its own executed copy in ``DIR/<notebook>/``; a notebook whose complete
``results.json`` for the same scale (and the same ``--weights``) exists is skipped unless ``--force``.
The notebooks share ``DIR/shared`` for synthetic data and trainings, so a model several notebooks need
is trained once. With ``--weights`` the evaluation-only notebooks (:data:`WEIGHTS_NOTEBOOKS`) evaluate
those weights instead of training; overrides (``input.min_size=320``) go to every notebook that takes them. A notebook that fails keeps
its executed copy with the error, the others still run, and the exit code is 1. The report
(``reproduction.md`` and ``reproduction.html``) lists every table with the paper's value, the measured
value, the difference, the scale and the hardware. This module lists notebooks and parameters only;
all analysis lives in ``fcos_lab``.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

from fcos_lab.analysis.report import SCALES, load_results, reproduction_report
from fcos_lab.analysis.scales import SCALE_NOTES

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = (
    "01-best-possible-recall",
    "02-ambiguous-samples",
    "03-fcos-vs-retinanet",
    "04-centerness",
    "05-backbones",
    "06-fcos-as-rpn",
    "07-class-agnostic-pr",
    "08-ablations",
    "09-centerness-vs-iou",
    "10-qualitative",
)
# The notebooks whose experiments need a trained model but no training of their own: they take `weights`.
WEIGHTS_NOTEBOOKS = ("02-ambiguous-samples", "04-centerness", "07-class-agnostic-pr", "09-centerness-vs-iou",
                     "10-qualitative")
# Of those, the ones that score the validation set (--val-max-images); 10 only draws a few images.
SCORING_NOTEBOOKS = ("02-ambiguous-samples", "04-centerness", "07-class-agnostic-pr", "09-centerness-vs-iou")
# Statistics only: no model, no overrides, no trainings to share.
STATISTICS_NOTEBOOKS = ("01-best-possible-recall",)


def notebooks_in(notebook_dir: Path) -> tuple[str, ...]:
    """The notebooks to run: :data:`NOTEBOOKS` for the repository's folder, else every ``NN-name.ipynb`` in it."""
    if notebook_dir.resolve() == NOTEBOOK_DIR.resolve():
        return NOTEBOOKS
    return tuple(sorted(p.stem for p in notebook_dir.glob("[0-9][0-9]-*.ipynb")))


def parameters_for(notebook: str, scale: str, out_dir: Path, device: str, data_root: str | None, *,
                   work_dir: Path | None = None, weights: str | None = None, val_max_images: int | None = None,
                   overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The papermill parameters of one notebook: the common ones, and those it takes of the rest."""
    params = {"scale": scale, "output_dir": str(out_dir), "device": device, "seed": 0}
    if data_root:
        params["data_root"] = data_root
    if notebook not in STATISTICS_NOTEBOOKS:
        if work_dir is not None:
            params["work_dir"] = str(work_dir)
        if overrides:
            params["overrides"] = list(overrides)
    if weights and notebook in WEIGHTS_NOTEBOOKS:
        params["weights"] = weights
        if val_max_images and notebook in SCORING_NOTEBOOKS:
            params["val_max_images"] = val_max_images
    return params


def is_complete(out_dir: Path, scale: str, weights: str | None = None) -> bool:
    """Whether ``out_dir`` holds complete results of this scale, measured with the same ``weights`` (or none)."""
    path = out_dir / "results.json"
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    same_weights = (data.get("parameters") or {}).get("weights") == weights or out_dir.name not in WEIGHTS_NOTEBOOKS
    return bool(data.get("complete")) and data.get("scale") == scale and same_weights


def run(scale: str, out: Path, only: list[str] | None = None, force: bool = False, device: str = "auto",
        data_root: str | None = None, kernel: str = "python3", notebook_dir: Path | None = None, *,
        weights: str | None = None, val_max_images: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Run the selected notebooks, write the report; 0 when all ran, 1 when one failed, 2 for bad arguments."""
    import papermill

    notebook_dir = Path(notebook_dir) if notebook_dir is not None else NOTEBOOK_DIR
    notebooks = notebooks_in(notebook_dir)
    out.mkdir(parents=True, exist_ok=True)
    selected = [n for n in notebooks if not only or n.split("-")[0] in only or n in only]
    unknown = [o for o in (only or []) if not any(n.split("-")[0] == o or n == o for n in notebooks)]
    if unknown:
        print(f"unknown notebook(s) {unknown}; valid: {', '.join(n.split('-')[0] for n in notebooks)}", file=sys.stderr)
        return 2
    weights = str(Path(weights).resolve()) if weights else None  # the notebooks run in the repository root
    failed: dict[str, str] = {}
    for name in selected:
        target = out / name
        if not force and is_complete(target, scale, weights):
            print(f"[skip] {name}: results complete for scale {scale}")
            continue
        print(f"[run]  {name} (scale {scale})", flush=True)
        target.mkdir(parents=True, exist_ok=True)
        # A results.json left by an earlier (other-scale or failed) run must not pass for this run's.
        (target / "results.json").unlink(missing_ok=True)
        try:
            papermill.execute_notebook(
                str(notebook_dir / f"{name}.ipynb"),
                str(target / f"{name}.ipynb"),
                parameters=parameters_for(name, scale, target, device, data_root, work_dir=out / "shared",
                                          weights=weights, val_max_images=val_max_images, overrides=overrides),
                kernel_name=kernel,
                cwd=str(REPO),
                progress_bar=False,
            )
        except Exception as error:  # noqa: BLE001 - papermill raises several types; all mean "this notebook failed"
            summary = str(error).strip().splitlines()
            failed[name] = (summary[-1] if summary else type(error).__name__)[:300]
            print(f"[fail] {name}: {failed[name]}", file=sys.stderr)
    results = [load_results(out / n / "results.json") for n in notebooks if (out / n / "results.json").is_file()]
    markdown, page = reproduction_report(results, failed)
    if scale in SCALE_NOTES:  # what the numbers of this scale can be compared with, above every table
        title, rest = markdown.split("\n", 1)
        markdown = f"{title}\n\n> {SCALE_NOTES[scale]}\n{rest}"
        page = page.replace("</h1>", f"</h1><p><i>{html.escape(SCALE_NOTES[scale])}</i></p>", 1)
    (out / "reproduction.md").write_text(markdown)
    (out / "reproduction.html").write_text(page)
    print(f"wrote {out / 'reproduction.md'} and {out / 'reproduction.html'}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="smoke")
    parser.add_argument("--only", help="comma-separated notebook numbers, e.g. 03,04")
    parser.add_argument("--out", default="runs/reproduction", help="output folder (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rerun notebooks whose results are complete")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--data-root", help="folder with coco/annotations and coco/images (default: ../shared/data)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: %(default)s)")
    parser.add_argument("--notebooks", type=Path, default=None,
                        help="folder of NN-name.ipynb notebooks to run instead of notebooks/ (default: notebooks/)")
    parser.add_argument("--weights", help="a checkpoint or run folder (e.g. from fcos-lab import-weights) that notebooks "
                                          f"{', '.join(n[:2] for n in WEIGHTS_NOTEBOOKS)} evaluate instead of training")
    parser.add_argument("--val-max-images", type=int, help="with --weights: evaluate on the first N validation images")
    parser.add_argument("overrides", nargs="*", help="section.field=value overrides for every notebook that takes them")
    args = parser.parse_args(argv)
    only = [o.strip() for o in args.only.split(",")] if args.only else None
    return run(args.scale, Path(args.out), only, args.force, args.device, args.data_root, args.kernel, args.notebooks,
               weights=args.weights, val_max_images=args.val_max_images, overrides=args.overrides)


if __name__ == "__main__":
    sys.exit(main())
