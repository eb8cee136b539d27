"""The training and validation splits a :class:`~fcos_lab.config.Config` names (Section 4: COCO
trainval35k / minival), or the embedded synthetic dataset when ``config.data`` leaves them unset.

:func:`coco_dataset` is the one place that turns ``config.input`` and ``config.data`` into a dataset's
resize and box settings; every caller (training, evaluation, the app, the notebooks) goes through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fcos_lab.config import Config
from fcos_lab.data.coco import CocoDetection
from fcos_lab.errors import ConfigError


def coco_dataset(
    config: Config, ann_file: str | Path, image_dir: str | Path, *, train: bool = False,
    image_ids: Sequence[int] | None = None,
) -> CocoDetection:
    """A COCO-format dataset with the resize, box convention and augmentation of ``config``.

    Training samples the shorter side from ``input.train_min_size`` and flips; evaluation uses
    ``input.min_size``.
    """
    i, d = config.input, config.data
    return CocoDetection(
        ann_file,
        image_dir,
        train=train,
        min_size=tuple(i.train_min_size) if train else i.min_size,
        max_size=i.max_size,
        resize_rule=i.resize_rule,
        box_convention=d.box_convention,
        flip_prob=i.flip_prob,
        on_bad_image=d.on_bad_image,
        seed=config.train.seed,
        image_ids=image_ids,
    )


def build_datasets(config: Config, need_train: bool = True) -> tuple[CocoDetection | None, CocoDetection]:
    """The training and validation datasets of ``config.data`` (the synthetic demo set when unset)."""
    d = config.data
    train_ann, train_images, val_ann, val_images = d.train_ann, d.train_images, d.val_ann, d.val_images
    if not val_ann:
        from fcos_lab.data.synthetic import make_synthetic_coco

        synthetic = make_synthetic_coco(
            d.synthetic_root,
            num_train=d.synthetic_num_train,
            num_val=d.synthetic_num_val,
            image_size=d.synthetic_image_size,
            seed=config.train.seed,
        )
        train_ann = train_ann or str(synthetic.train_ann)
        train_images = train_images or str(synthetic.train_images)
        val_ann, val_images = str(synthetic.val_ann), str(synthetic.val_images)
    train_set = None
    if need_train:
        if not train_ann or not train_images:
            raise ConfigError("data.train_ann and data.train_images must both be set (or neither, for synthetic data)")
        train_set = coco_dataset(config, train_ann, train_images, train=True)
    return train_set, coco_dataset(config, val_ann, val_images)
