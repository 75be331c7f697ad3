"""Fixtures for training tests: a fresh models home and a tiny trained parent model."""

from __future__ import annotations

import pytest

from training_helpers import blob_volumes, tiny_card, tiny_config


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
