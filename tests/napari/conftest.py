from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path, monkeypatch):
    """Models home and config (recent models list) in a temporary folder, never the user's."""
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "medseg_home"))
    monkeypatch.setenv("MEDSEG_CONFIG_DIR", str(tmp_path / "medseg_config"))
    monkeypatch.delenv("MEDSEG_SYNC", raising=False)


@pytest.fixture(scope="session")
def phantom():
    """(image, labels) Volumes of a small abdomen phantom."""
    from napari_medseg.sample import make_phantom

    return make_phantom(seed=0)


def make_tiny_model(path, roi=(32, 32, 16), spacing=(1.6, 1.6, 2.5), channels=(4, 8), seed=0):
    """A small random-weight MONAI UNet package with the abdominal class table (fast on CPU)."""
    import torch

    from napari_medseg.classes import ABDOMEN_CLASSES
    from napari_medseg.models import ClassInfo, ModelCard, build_network, save_model_package

    card = ModelCard(
        name="tiny-test",
        architecture="UNet",
        arch_args={"spatial_dims": 3, "channels": list(channels), "strides": [2], "num_res_units": 0},
        classes=[ClassInfo(v, n, c) for v, (n, c) in ABDOMEN_CLASSES.items()],
        spacing=spacing,
        roi_size=roi,
        sw_batch_size=1,
    )
    torch.manual_seed(seed)
    net = build_network(card)
    return save_model_package(net, card, path)


@pytest.fixture
def tiny_model_factory(tmp_path):
    """``make(name, **kwargs) -> Path`` of a tiny model package in tmp_path (see `make_tiny_model`)."""
    return lambda name, **kwargs: make_tiny_model(tmp_path / name, **kwargs)


@pytest.fixture
def tiny_model(tmp_path):
    return make_tiny_model(tmp_path / "tiny_model")
