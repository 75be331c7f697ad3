"""The shipped default model: a verified package whose card says what it was trained on, and that works."""

import numpy as np
import pytest

from napari_medseg.classes import class_names
from napari_medseg.models.registry import builtin_default_path


def test_default_package_loads_and_documents_itself():
    from napari_medseg.models.package import load_model_package

    path = builtin_default_path()
    size = sum(p.stat().st_size for p in path.iterdir())
    assert size < 10 * 2**20
    loaded = load_model_package(path)  # checks the SHA-256
    card = loaded.card
    assert card.class_names() == class_names()
    prov = card.provenance
    assert any("ct_abdomen_3mm" in d for d in prov["data"]["train"])
    assert prov["metrics"]["heldout_real_ct_dice"]["liver"] > 0
    assert prov["metrics"]["heldout_phantom_dice_mean"] > 0
    assert prov["command"] == "scripts/train_default_model.sh"


def test_default_model_segments_an_unseen_phantom(tmp_path, monkeypatch):
    from napari_medseg.inference import segment
    from napari_medseg.sample import make_phantom
    from napari_medseg.training.default_recipe import ADULT

    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path))
    image, gt = make_phantom(seed=301, **ADULT)
    pred = segment(image, model="default", device="cpu").labels.array
    for value in (1, 2, 6):  # liver, spleen, spine
        p, g = pred == value, gt.array == value
        assert 2 * (p & g).sum() / (p.sum() + g.sum()) > 0.6, value


def test_thoracoabdominal_phantom_puts_the_chest_above_the_organs():
    """The recipe's synthetic phantom: liver and spleen end under lungs and heart, which are background."""
    from napari_medseg.training.default_recipe import THORAX_SLICES, thoracoabdominal

    image, labels = thoracoabdominal(501)
    hu, lab = image.array.astype(float), labels.array
    assert image.same_grid(labels) and image.spatial_shape[0] == 60 + THORAX_SLICES
    present = set(np.unique(lab).tolist())
    assert {0, 1, 2, 6} <= present  # background, liver, spleen, spine
    top_liver = np.flatnonzero((lab == 1).any(axis=(1, 2))).max()
    top_spleen = np.flatnonzero((lab == 2).any(axis=(1, 2))).max()
    assert top_liver < image.spatial_shape[0] - 10 and top_spleen < image.spatial_shape[0] - 10
    above = slice(top_liver + 3, None)
    assert set(np.unique(lab[above]).tolist()) <= {0, 6}  # only the spine continues into the chest
    assert (hu[above] < -600).mean() > 0.2  # lungs (and air): a chest, not an abdomen
    inside_body = hu[above] > -300
    assert np.median(hu[above][inside_body]) > -150  # heart, chest wall and mediastinum are there too
