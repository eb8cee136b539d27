"""Cached loaders shared by the pages; every computation is a call into ``fcos_lab``.

Streamlit puts ``app/`` on ``sys.path`` while a page runs, so pages ``import fcos_app`` (and this file
imports the app's :mod:`app_data` and :mod:`inputs`). Images of a dataset are read through the page's
config (:mod:`fcos_lab.data.samples`), checkpoints through :mod:`fcos_lab.runs`, dense predictions through
:mod:`fcos_lab.predict`; a config is a cache key by its ``repr`` (:func:`config_key`). The widgets the pages
share are :mod:`widgets`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import app_data
import inputs
import streamlit as st
import torch

from fcos_lab import predict, runs
from fcos_lab.analysis.dataset_boxes import DatasetBoxes, load_dataset_boxes
from fcos_lab.config import Config
from fcos_lab.data import samples
from fcos_lab.errors import FcosLabError


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


def model_key(loaded: runs.LoadedModel) -> str:
    return f"{loaded.path}|{file_mtime(loaded.path)}|{loaded.config.name}"


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


@st.cache_data(ttl=5, show_spinner=False)
def run_folders(runs_root: str, app_folder: str) -> list[str]:
    """:func:`app_data.find_app_runs`, looked up again at most every 5 seconds (the folders walked are the key)."""
    del runs_root, app_folder
    return [str(path) for path in app_data.find_app_runs()]


@st.cache_resource(max_entries=4, show_spinner="Reading the detections and the ground truth, classifying the errors ...")
def error_analysis(ann_file: str, detections_file: str, stamps: tuple[float, float], key: str, _config: Config | None):
    """TIDE's errors of a detections file (:func:`fcos_lab.analysis.tide_breakdowns.analyze_errors` under the
    config the detections were made with, ``key`` its :func:`config_key`), with the ground truth and the records."""
    from fcos_lab.analysis.tide_breakdowns import analyze_errors, load_inputs

    del stamps, key  # a changed file, or another config, is read again
    coco, detections = load_inputs(ann_file, detections_file)
    analysis = analyze_errors(coco, detections, _config, sources={"ann": ann_file, "detections": detections_file})
    return coco, detections, analysis


@st.cache_resource(max_entries=16, show_spinner=False)
def image_file(path: str, mtime: float) -> torch.Tensor:
    """An image file as :func:`fcos_lab.data.coco.load_image` reads it (``[3, H, W]`` in [0, 1])."""
    from fcos_lab.data.coco import load_image

    del mtime
    return load_image(path)
