"""Widgets and cached loaders shared by the pages; every computation is a call into ``fcos_lab``.

Streamlit puts ``app/`` on ``sys.path`` while a page runs, so pages ``import fcos_app`` (and this file
imports the app's :mod:`app_data` and :mod:`inputs`). Images of a dataset are read through the page's
config (:mod:`fcos_lab.data.samples`), checkpoints through :mod:`fcos_lab.runs`, dense predictions through
:mod:`fcos_lab.predict`; a config is a cache key by its ``repr`` (:func:`config_key`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import app_data
import inputs
import streamlit as st
import torch

from fcos_lab import predict, runs
from fcos_lab.analysis.dataset_boxes import DatasetBoxes, load_dataset_boxes
from fcos_lab.config import Config
from fcos_lab.data import samples
from fcos_lab.errors import FcosLabError
from fcos_lab.presets import PRESETS

SOURCES = ("Synthetic demo data", "COCO-format dataset", "Upload an image")
AS_RECORDED = "as recorded in the checkpoint"
DEFAULT_PRESET = "fcos_r50_fpn_1x"  # the paper's main model: 800-pixel inputs, m_i = 0, 64, ..., 512, inf


@contextmanager
def guard() -> Iterator[None]:
    """Show an fcos_lab error (bad file, bad checkpoint, bad input) as a message and stop this page run."""
    try:
        yield
    except FcosLabError as error:
        st.error(str(error))
        st.stop()


def config_key(config: Config) -> str:
    """A cache key of a config: its ``repr`` (frozen dataclasses all the way down)."""
    return repr(config)


def percent(value: float | None) -> str:
    """A percentage of :mod:`fcos_lab.analysis.recall_ambiguity` as text; None (nothing counted) as "-"."""
    return "-" if value is None else f"{value:.2f} %"


def file_mtime(path: str | Path) -> float:
    try:
        return Path(path).expanduser().stat().st_mtime
    except OSError:
        return 0.0


# ---------------------------------------------------------------------------------------------- cached loaders


@st.cache_resource(show_spinner="Writing the synthetic demo data ...")
def synthetic_dataset(data_dir: str):
    """The app's synthetic shapes under ``data_dir`` (generated on first use)."""
    del data_dir  # part of the cache key: the folder comes from $FCOS_LAB_APP_DATA
    return app_data.ensure_synthetic_dataset()


@st.cache_resource(max_entries=8, show_spinner="Reading the annotation file ...")
def dataset(ann_file: str, image_dir: str, mtime: float, box_convention: str, _config: Config):
    """The dataset of ``_config`` over a file, for :func:`fcos_lab.data.samples.dataset_sample`.

    A sample's boxes depend on the config's box convention alone (the dataset's resize is not used: pages
    resize with :func:`resized_sample`), so that is the key; another input size does not re-read the file.
    """
    del mtime, box_convention  # a changed file, or another box convention, is read again
    return samples.open_dataset(ann_file, image_dir, _config)


@st.cache_resource(max_entries=64, show_spinner=False)
def dataset_sample(ann_file: str, image_dir: str, mtime: float, image_id: int, box_convention: str,
                   _config: Config) -> samples.Sample:
    return samples.dataset_sample(dataset(ann_file, image_dir, mtime, box_convention, _config), image_id)


@st.cache_resource(max_entries=16, show_spinner="Decoding the upload ...")
def uploaded_image(digest: str, _data: bytes, name: str) -> torch.Tensor:
    del digest  # the key: the bytes themselves are not hashed twice
    return inputs.read_image_bytes(_data, name)


@st.cache_resource(max_entries=32, show_spinner=False)
def resized_sample(sample_key: str, key: str, _sample: samples.Sample, _config: Config) -> samples.Sample:
    """The sample in the training frame of ``_config`` (its input size and resize rule)."""
    del sample_key, key
    return samples.resize_sample(_sample, _config)


@st.cache_resource(max_entries=4, show_spinner="Loading the checkpoint ...")
def detector(path: str, mtime: float, preset: str | None) -> runs.LoadedModel:
    """The cached model loader: one network per (checkpoint file, modification time, preset)."""
    del mtime
    return runs.load_detector(path, preset)


@st.cache_resource(max_entries=8, show_spinner="Running the network ...")
def dense_prediction(model_key: str, image_key: str, min_size: int, _loaded, _image) -> predict.DensePrediction:
    """The network's output on one image at one input size: computed once, then every slider reuses it."""
    del model_key, image_key
    return predict.predict_dense(_loaded, _image, min_size)


@st.cache_resource(max_entries=8, show_spinner="Reading and resizing the boxes ...")
def dataset_boxes(ann_file: str, mtime: float, key: str, max_images: int, _config: Config) -> DatasetBoxes:
    """The file's boxes resized as ``_config`` trains (``key`` is :func:`config_key`)."""
    del mtime, key
    return load_dataset_boxes(ann_file, _config, max_images=max_images)


# ---------------------------------------------------------------------------------------------- widgets


def how_to_make_checkpoint() -> None:
    """The message of a page that needs a checkpoint and has none, with a button that makes one."""
    st.info(
        "No checkpoint yet. Make one with\n\n"
        f"```\n{app_data.demo_command()}\n```\n"
        "(about a minute on a CPU; `fcos-lab demo` without `--quick` trains the full demo). "
        f"The app then finds `{app_data.default_run_dir()}` by itself; any other run folder or "
        "`model_*.pt` file can be typed in the checkpoint box."
    )
    if not app_data.default_run_dir().exists() and st.button("Run the quick demo now", key="make_demo"):
        from fcos_lab.demo import run_demo

        with guard(), st.spinner("Training the quick demo on the CPU ..."):
            run_demo(app_data.app_data_dir() / "demo", quick=True, device="cpu", progress=False)
        st.rerun()


def checkpoint_picker(required: bool) -> runs.LoadedModel | None:
    """Sidebar widgets for a checkpoint (a run folder or a file) and the preset to build it with."""
    st.sidebar.subheader("Checkpoint")
    default = app_data.default_run_dir()
    text = st.sidebar.text_input(
        "Run folder or model_*.pt file", value=str(default) if default.is_dir() else "", key="checkpoint",
        help="A run folder (the newest checkpoint in it is used) or a checkpoint file.",
    )
    preset = st.sidebar.selectbox("Build the network as", [AS_RECORDED, *PRESETS], key="checkpoint_preset",
                                  help="Another preset than the checkpoint's only works if its weights fit.")
    if not text.strip():
        if required:
            how_to_make_checkpoint()
        else:
            st.sidebar.caption("No checkpoint: only the targets are shown.")
        return None
    path = Path(text.strip()).expanduser()
    if not path.exists():
        st.error(f"{path}: no such run folder or checkpoint file.")
        how_to_make_checkpoint()
        return None
    if path.is_dir():
        files = runs.checkpoint_files(path)
        if files:
            path = st.sidebar.selectbox("Checkpoint file", files, format_func=lambda p: p.name,
                                        key=f"checkpoint_file|{path}")
    try:
        loaded = detector(str(path), file_mtime(path), None if preset == AS_RECORDED else preset)
    except FcosLabError as error:
        st.error(f"Cannot use this checkpoint: {error}")
        return None
    st.sidebar.caption(f"`{loaded.path.name}`: preset `{loaded.trained_preset}`, iteration {loaded.iteration}, "
                       f"{len(loaded.class_names)} classes")
    return loaded


def model_key(loaded: runs.LoadedModel) -> str:
    return f"{loaded.path}|{file_mtime(loaded.path)}|{loaded.config.name}"


class Picked(NamedTuple):
    """The chosen image: its sample, a cache key of image and boxes, and a cache key of the image alone."""

    sample: samples.Sample
    key: str
    image_key: str


def image_picker(config: Config, where: Any = None) -> Picked | None:
    """Sidebar widgets choosing an image and its boxes; a dataset's boxes as ``config``'s data loader makes them.

    ``where`` is the sidebar container the widgets go in (default the sidebar itself), so that a page that
    needs its config first can still show the image widgets above the checkpoint's.
    """
    where = st.sidebar if where is None else where
    where.subheader("Image")
    source = where.radio("Image from", SOURCES, key="image_source")
    if source == SOURCES[2]:
        return _uploaded_sample(where)
    if source == SOURCES[0]:
        data = synthetic_dataset(str(app_data.app_data_dir()))
        split = where.radio("Split", ["val", "train"], horizontal=True, key="synthetic_split")
        ann_file = str(data.val_ann if split == "val" else data.train_ann)
        image_dir = str(data.val_images if split == "val" else data.train_images)
    else:
        ann_file = where.text_input("Annotation file (COCO JSON)", key="coco_ann").strip()
        image_dir = where.text_input("Image folder", key="coco_images").strip()
        if not ann_file or not image_dir:
            st.info("Type the path of a COCO-format annotation file and of its image folder in the sidebar.")
            return None
    stamp = file_mtime(ann_file)
    try:
        data = dataset(ann_file, image_dir, stamp, config.data.box_convention, config)
    except FcosLabError as error:
        st.error(f"Cannot read this dataset: {error}")
        return None
    if not len(data):
        st.warning(f"{ann_file}: the file lists no images.")
        return None
    counts = {i: len(data.coco.imgToAnns.get(i, [])) for i in data.image_ids}
    busiest = max(range(len(data.image_ids)), key=lambda k: counts[data.image_ids[k]])  # overlaps are likelier
    image_id = where.selectbox(
        "Image", data.image_ids, index=busiest, key=f"image_id|{ann_file}",
        format_func=lambda i: f"{data.coco.imgs[i]['file_name']} (id {i}, {counts[i]} boxes)",
    )
    try:
        sample = dataset_sample(ann_file, image_dir, stamp, int(image_id), config.data.box_convention, config)
    except FcosLabError as error:
        st.error(f"Cannot read this image: {error}")
        return None
    key = f"{ann_file}|{stamp}|{image_id}|{config.data.box_convention}"
    return Picked(sample, key, key)


def _uploaded_sample(where: Any) -> Picked | None:
    upload = where.file_uploader("Image file", key="upload")
    text = where.text_area(
        "Boxes, one per line: x0 y0 x1 y1 class",
        value="", key="typed_boxes", height=120,
        help="Pixels of the uploaded image; class is a name or a number. This app has no box-drawing "
             "widget (no drawing component can be downloaded here), so boxes are typed.",
    )
    where.caption("Boxes are typed rather than drawn: one line `x0 y0 x1 y1 class` per box.")
    if upload is None:
        st.info("Upload an image in the sidebar and type its boxes (one `x0 y0 x1 y1 class` per line).")
        return None
    data = upload.getvalue()
    digest = hashlib.sha1(data).hexdigest()
    try:
        image = uploaded_image(digest, data, upload.name)
        boxes, labels, names = inputs.parse_typed_boxes(text, image_size=tuple(image.shape[-2:]))
    except FcosLabError as error:
        st.error(str(error))
        return None
    sample = samples.Sample(image, boxes, labels, torch.zeros(len(boxes), dtype=torch.bool), names, upload.name)
    box_digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    return Picked(sample, f"upload|{digest}|{box_digest}", f"upload|{digest}")


def preset_picker(label: str = "Preset (input size, size ranges, center sampling)", key: str = "preset") -> str:
    names = list(PRESETS)
    return st.selectbox(label, names, index=names.index(DEFAULT_PRESET), key=key)
