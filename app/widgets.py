"""The widgets the pages share (image, checkpoint, preset), each showing the value the page computes with.

Every stateful widget goes through :func:`kept`: its value lives under its key in ``st.session_state`` and
under a plain key beside it (``_kept|<key>``), and is handed to the widget before the widget is drawn. So

- the widget shows what the page computed, after any sequence of clicks: every widget is told its value on
  every run, not trusted to remember it. A browser forgets the value of a widget that a run did not draw
  (a page stopped early with ``st.stop()``, the widget hidden for a while) while the server keeps it; the
  widget then shows its default and computes with the kept value (streamlit/streamlit#4247, #10114, #7338);
- a value survives while its widget is hidden (the COCO paths while the synthetic data are shown) and
  across pages (the image chosen on one page is the image of the next);
- a value that no longer fits its options (an image id of another file, a level the FPN switch removed)
  falls back to the default.

Settings that a preset decides (input size, center sampling, size ranges) are reset to the new preset's
values by :func:`follow_preset` when the preset changes, so their keys never change. Cached loaders are
:mod:`fcos_app`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import app_data
import fcos_app
import inputs
import streamlit as st
import torch

from fcos_lab import runs
from fcos_lab.config import Config
from fcos_lab.data import samples
from fcos_lab.errors import FcosLabError
from fcos_lab.presets import PRESETS

SOURCES = ("Synthetic demo data", "COCO-format dataset", "Upload an image")
AS_RECORDED = "as recorded in the checkpoint"
OTHER_RUN = "another folder or file ..."
DEFAULT_PRESET = "fcos_r50_fpn_1x"  # the paper's main model: 800-pixel inputs, m_i = 0, 64, ..., 512, inf
KEPT = "_kept|"
# Class names that are placeholders of a label space, not classes (torchvision's 91 COCO indices).
PLACEHOLDER_NAMES = frozenset({"__background__", "N/A"})


# ---------------------------------------------------------------------------------------------- state


def kept(widget: Callable[..., Any], label: str, *, key: str, default: Any, options: Sequence[Any] | None = None,
         **kwargs: Any) -> Any:
    """Draw ``widget`` (``st.toggle``, ``st.sidebar.radio``, ...) with its value kept as the module says.

    Args:
        widget: a Streamlit widget function taking ``label`` (and ``options``) and ``key``.
        key: the widget's key; never changes with the page's other settings.
        default: the value when the widget has none yet, or when its value is not among ``options``.
        options: the choices of a radio, selectbox or multiselect (a list ``default``: the choices no longer
            offered are dropped).
    """
    state = st.session_state
    value = state[key] if key in state else state.get(KEPT + key, default)
    if options is not None and isinstance(default, list):  # a multiselect: keep the choices still offered
        value = [v for v in value if v in options]
    elif options is not None and value not in options:
        value = default
    state[key] = value  # on every run: the browser is told the value even when it has lost it
    result = widget(label, options, key=key, **kwargs) if options is not None else widget(label, key=key, **kwargs)
    state[KEPT + key] = result
    return result


def follow_preset(marker: str, preset: str, values: Mapping[str, Any]) -> None:
    """Give the widgets ``values`` (key -> value) the values of ``preset`` when it differs from the last one seen.

    Call it after the preset's widget and before the widgets it sets; ``marker`` names the page's preset.
    """
    state = st.session_state
    if state.get(marker) == preset:
        return
    for key, value in values.items():
        state[key] = value
        state[KEPT + key] = value
    state[marker] = preset


# ---------------------------------------------------------------------------------------------- checkpoints


def how_to_make_checkpoint() -> None:
    """Say how to make a checkpoint, with a button that makes one (call it once per page run)."""
    st.info(
        "No checkpoint yet. Make one with\n\n"
        f"```\nfcos-lab demo --quick\n```\n"
        "(about a minute on a CPU; `fcos-lab demo` without `--quick` trains the full demo). The app lists every "
        f"run folder under `{app_data.runs_root()}` and `{app_data.app_data_dir()}` in the sidebar; any other run "
        "folder or `model_*.pt` file can be typed there."
    )
    if not app_data.default_run_dir().exists() and st.button("Run the quick demo now", key="make_demo"):
        from fcos_lab.demo import run_demo

        with fcos_app.guard(), st.spinner("Training the quick demo on the CPU ..."):
            run_demo(app_data.app_data_dir() / "demo", quick=True, device="cpu", progress=False)
        fcos_app.run_folders.clear()
        st.rerun()


def _shown(path: str) -> str:
    """A run folder as the sidebar lists it: relative to the working folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def checkpoint_picker() -> runs.LoadedModel | None:
    """Sidebar widgets choosing a run (every run folder found, newest first) or a typed path, and its checkpoint.

    Returns None, after saying why in the page when a path was given, when there is no usable checkpoint;
    the page then calls :func:`how_to_make_checkpoint` once.
    """
    st.sidebar.subheader("Checkpoint")
    found = fcos_app.run_folders(str(app_data.runs_root()), str(app_data.app_data_dir()))
    choices = [*found, OTHER_RUN]
    run = kept(st.sidebar.selectbox, "Run", key="run", default=choices[0], options=choices,
               format_func=lambda p: p if p == OTHER_RUN else _shown(p),
               help=f"Run folders under `{app_data.runs_root()}` and `{app_data.app_data_dir()}`, newest first.")
    text = run
    if run == OTHER_RUN:
        text = kept(st.sidebar.text_input, "Run folder or model_*.pt file", key="checkpoint", default="",
                    help="A run folder (its newest checkpoint is used) or a checkpoint file.").strip()
    preset = kept(st.sidebar.selectbox, "Build the network as", key="checkpoint_preset", default=AS_RECORDED,
                  options=[AS_RECORDED, *PRESETS], help="Another preset than the checkpoint's only works if its weights fit.")
    if not text:
        return None
    path = Path(text).expanduser()
    if not path.exists():
        st.error(f"{path}: no such run folder or checkpoint file.")
        return None
    if path.is_dir():
        files = [str(p) for p in runs.checkpoint_files(path)]
        if files:
            path = Path(kept(st.sidebar.selectbox, "Checkpoint file", key="checkpoint_file", default=files[0],
                             options=files, format_func=lambda p: Path(p).name))
    try:
        loaded = fcos_app.detector(str(path), fcos_app.file_mtime(path), None if preset == AS_RECORDED else preset)
    except FcosLabError as error:
        st.error(f"Cannot use this checkpoint: {error}")
        return None
    st.sidebar.caption(f"`{loaded.path.name}`: preset `{loaded.trained_preset}`, iteration {loaded.iteration}, "
                       f"{len(loaded.class_names)} classes")
    return loaded


def lacking_classes(dataset_names: Sequence[str], checkpoint_names: Sequence[str]) -> list[str]:
    """The dataset's class names the checkpoint does not have (placeholders such as ``N/A`` ignored)."""
    known = set(checkpoint_names)
    return [name for name in dataset_names if name not in known and name not in PLACEHOLDER_NAMES]


def class_mismatch_warning(dataset_names: Sequence[str], checkpoint_names: Sequence[str], shown: int = 6) -> None:
    """A short warning when the checkpoint lacks some of the dataset's classes (its objects then go undetected)."""
    lacking = lacking_classes(dataset_names, checkpoint_names)
    if not lacking:
        return
    listed = ", ".join(lacking[:shown]) + (f" and {len(lacking) - shown} more" if len(lacking) > shown else "")
    st.warning(f"Dataset classes the checkpoint lacks: {listed} ({len(lacking)} of {len(dataset_names)}).")


# ---------------------------------------------------------------------------------------------- presets and images


def preset_picker(label: str = "Preset (input size, size ranges, center sampling)", key: str = "preset",
                  where: Any = st) -> str:
    return kept(where.selectbox, label, key=key, default=DEFAULT_PRESET, options=list(PRESETS))


class Picked(NamedTuple):
    """The chosen image: its sample, a cache key of image and boxes, and a cache key of the image alone."""

    sample: samples.Sample
    key: str
    image_key: str


def image_picker(config: Config, where: Any = None) -> Picked | None:
    """Sidebar widgets choosing an image and its boxes; a dataset's boxes as ``config``'s data loader makes them.

    The choice (source, paths, image) is the same on every page. ``where`` is the sidebar container the
    widgets go in (default the sidebar itself), so that a page that needs its config first can still show
    the image widgets above the checkpoint's.
    """
    where = st.sidebar if where is None else where
    where.subheader("Image")
    source = kept(where.radio, "Image from", key="image_source", default=SOURCES[0], options=SOURCES)
    if source == SOURCES[2]:
        return _uploaded_sample(where)
    if source == SOURCES[0]:
        data = fcos_app.synthetic_dataset(str(app_data.app_data_dir()))
        split = kept(where.radio, "Split", key="synthetic_split", default="val", options=["val", "train"], horizontal=True)
        ann_file = str(data.val_ann if split == "val" else data.train_ann)
        image_dir = str(data.val_images if split == "val" else data.train_images)
    else:
        ann_file = kept(where.text_input, "Annotation file (COCO JSON)", key="coco_ann", default="").strip()
        image_dir = kept(where.text_input, "Image folder", key="coco_images", default="").strip()
        if not ann_file or not image_dir:
            st.info("Type the path of a COCO-format annotation file and of its image folder in the sidebar.")
            return None
    stamp = fcos_app.file_mtime(ann_file)
    try:
        data = fcos_app.dataset(ann_file, image_dir, stamp, config.data.box_convention, config)
    except FcosLabError as error:
        st.error(f"Cannot read this dataset: {error}")
        return None
    if not len(data):
        st.warning(f"{ann_file}: the file lists no images.")
        return None
    counts = {i: len(data.coco.imgToAnns.get(i, [])) for i in data.image_ids}
    busiest = max(data.image_ids, key=lambda i: counts[i])  # overlaps are likelier
    image_id = kept(where.selectbox, "Image", key="image_id", default=busiest, options=data.image_ids,
                    format_func=lambda i: f"{data.coco.imgs[i]['file_name']} (id {i}, {counts[i]} boxes)")
    try:
        sample = fcos_app.dataset_sample(ann_file, image_dir, stamp, int(image_id), config.data.box_convention, config)
    except FcosLabError as error:
        st.error(f"Cannot read this image: {error}")
        return None
    key = f"{ann_file}|{stamp}|{image_id}|{config.data.box_convention}"
    return Picked(sample, key, key)


def _uploaded_sample(where: Any) -> Picked | None:
    upload = where.file_uploader("Image file", key="upload")  # a file upload cannot be kept: Streamlit owns it
    text = kept(where.text_area, "Boxes, one per line: x0 y0 x1 y1 class", key="typed_boxes", default="",
                height=120, help="Pixels of the uploaded image; class is a name or a number. This app has no "
                "box-drawing widget (no drawing component can be downloaded here), so boxes are typed.")
    where.caption("Boxes are typed rather than drawn: one line `x0 y0 x1 y1 class` per box.")
    if upload is None:
        st.info("Upload an image in the sidebar and type its boxes (one `x0 y0 x1 y1 class` per line).")
        return None
    data = upload.getvalue()
    digest = hashlib.sha1(data).hexdigest()
    try:
        image = fcos_app.uploaded_image(digest, data, upload.name)
        boxes, labels, names = inputs.parse_typed_boxes(text, image_size=tuple(image.shape[-2:]))
    except FcosLabError as error:
        st.error(str(error))
        return None
    sample = samples.Sample(image, boxes, labels, torch.zeros(len(boxes), dtype=torch.bool), names, upload.name)
    box_digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    return Picked(sample, f"upload|{digest}|{box_digest}", f"upload|{digest}")
