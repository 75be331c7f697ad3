"""Tiny synthetic data, a tiny model card and configs for fast training tests (imported by test modules)."""

from __future__ import annotations

import numpy as np

from napari_medseg.volume import Volume

TINY_PATCH = (16, 16, 16)


def blob_volumes(seed: int = 0, shape=(32, 32, 32), shift=(0, 0, 0)):
    """An ellipsoid (label 1, 150 HU) and a dark ball (label 2, -600 HU) in noise; 1.5 mm voxels."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    c = np.array(shape) / 2 + np.asarray(shift)
    r = np.sqrt(((k - c[0]) / 9) ** 2 + ((j - c[1] + 4) / 10) ** 2 + ((i - c[2] + 4) / 8) ** 2)
    r2 = np.sqrt((k - c[0]) ** 2 + (j - c[1] - 9) ** 2 + (i - c[2] - 9) ** 2) / 5
    labels = np.zeros(shape, np.uint8)
    labels[r < 1] = 1
    labels[r2 < 1] = 2
    hu = np.where(labels == 1, 150.0, np.where(labels == 2, -600.0, -100.0)) + rng.normal(0, 15, shape)
    image = Volume(hu.astype(np.int16), spacing=(1.5, 1.5, 1.5), meta={"modality": "CT"})
    lab = image.with_array(labels, classes={0: "background", 1: "organ", 2: "ball"})
    return image, lab


def tiny_card(name="tiny"):
    from napari_medseg.training.train import unet_card

    return unet_card(
        name, {1: "organ", 2: "ball"}, spacing=(1.5, 1.5, 1.5), channels=(4, 8), strides=(2,), num_res_units=0,
        roi_size=TINY_PATCH,
    )


def tiny_config(steps=40, **kw):
    from napari_medseg.training.config import TrainConfig

    base = dict(steps=steps, lr=1e-2, batch_size=2, patch_size=TINY_PATCH, val_every=10**6, num_threads=1,
                scale_jitter=0.0, intensity_jitter=0.0, warmup_frac=0.0)
    base.update(kw)
    return TrainConfig(**base)


def ft_config(steps=30, **kw):
    from napari_medseg.training.config import FinetuneConfig

    return FinetuneConfig(train=tiny_config(steps, patch_size=(16, 16, 8)), **kw)


