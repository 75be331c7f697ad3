"""Tiny synthetic data and a tiny trained parent model for fast training tests."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.fixture
def medseg_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MEDSEG_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def _trained_tiny(tmp_path_factory):
    """A tiny parent model trained once per session on blob seed 0 (state dict + card)."""
    import torch

    from napari_medseg.progress import run_steps
    from napari_medseg.training.train import train_steps

    torch.manual_seed(0)
    image, labels = blob_volumes(0)
    res = run_steps(train_steps([image], [labels], tiny_card(), tiny_config(60)))
    return {k: v.clone() for k, v in res.network.state_dict().items()}, res.card


@pytest.fixture
def tiny_parent(medseg_home, _trained_tiny):
    """The tiny model installed as ``tiny@v1`` (active) in a fresh models home; returns its folder."""
    from napari_medseg.models.package import save_model_package
    from napari_medseg.training.versions import activate

    state, card = _trained_tiny
    path = save_model_package(state, card, medseg_home / "models" / "tiny" / "v1")
    activate("tiny", "v1")
    return path
