"""The shipped default model: a verified package whose card says what it was trained on, and that works."""

from pathlib import Path

import numpy as np
import pytest

from napari_medseg.classes import class_names
from napari_medseg.models.registry import builtin_default_path

RECIPE = Path(__file__).resolve().parents[2] / "research" / "default_recipe.py"


def recipe():
    """The research script ``research/default_recipe.py`` (not part of the installed package) as a module."""
    import importlib.util
    import sys

    if "default_recipe" not in sys.modules:
        spec = importlib.util.spec_from_file_location("default_recipe", RECIPE)
        module = importlib.util.module_from_spec(spec)
        sys.modules["default_recipe"] = module
        spec.loader.exec_module(module)
    return sys.modules["default_recipe"]


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
    ADULT = recipe().ADULT

    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path))
    image, gt = make_phantom(seed=301, **ADULT)
    pred = segment(image, model="default", device="cpu").labels.array
    for value in (1, 2, 6):  # liver, spleen, spine
        p, g = pred == value, gt.array == value
        assert 2 * (p & g).sum() / (p.sum() + g.sum()) > 0.6, value


def test_thoracoabdominal_phantom_puts_the_chest_above_the_organs():
    """The recipe's synthetic phantom: liver and spleen end under lungs and heart, which are background."""
    THORAX_SLICES, thoracoabdominal = recipe().THORAX_SLICES, recipe().thoracoabdominal

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


def test_recipe_is_a_research_script_outside_the_package():
    """The recipe left the installed package (it defaults to a repo-relative ../shared/data) and still runs."""
    import importlib.util
    import os
    import subprocess
    import sys

    assert importlib.util.find_spec("napari_medseg.training.default_recipe") is None
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(RECIPE), "--help"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "--thoracoabdominal" in proc.stdout and "--data" in proc.stdout
    script = (RECIPE.parents[1] / "scripts" / "train_default_model.sh").read_text()
    assert script.count("python research/default_recipe.py") == 3 and "napari_medseg.training.default_recipe" not in script
