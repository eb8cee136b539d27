"""The training and validation splits a :class:`~fcos_lab.config.Config` names (Section 4: COCO
trainval35k / minival), or the embedded synthetic dataset when ``config.data`` leaves them unset.
"""

from __future__ import annotations

from fcos_lab.config import Config
from fcos_lab.data.coco import CocoDetection
from fcos_lab.errors import ConfigError


def build_datasets(config: Config, need_train: bool = True) -> tuple[CocoDetection | None, CocoDetection]:
    """The training and validation datasets of ``config.data`` (the synthetic demo set when unset)."""
    d, i = config.data, config.input
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
        train_set = CocoDetection(
            train_ann,
            train_images,
            train=True,
            min_size=tuple(i.train_min_size),
            max_size=i.max_size,
            flip_prob=i.flip_prob,
            on_bad_image=d.on_bad_image,
            seed=config.train.seed,
        )
    val_set = CocoDetection(
        val_ann, val_images, train=False, min_size=i.min_size, max_size=i.max_size, on_bad_image=d.on_bad_image
    )
    return train_set, val_set
