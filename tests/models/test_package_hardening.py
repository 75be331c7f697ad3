"""Issue 9, defects 4c, 6 and 10: card + weights integrity, card sizes checked before building, model names."""

from __future__ import annotations

import json
import shutil
import tracemalloc

import pytest
import torch

from napari_medseg.cli import main
from napari_medseg.errors import IntegrityError, ModelError
from napari_medseg.models import ClassInfo, ModelCard, build_network, load_model_package, save_model_package
from napari_medseg.models.registry import builtin_default_path, resolve_model, validate_model_name


def _card(**kw):
    base = dict(name="tiny", arch_args=dict(spatial_dims=3, channels=(4, 8), strides=(2,), num_res_units=1),
                classes=[ClassInfo(1, "liver"), ClassInfo(2, "spleen")], roi_size=(16, 16, 16), spacing=(2.0, 2.0, 2.0))
    base.update(kw)
    return ModelCard(**base)


@pytest.fixture
def package(tmp_path):
    torch.manual_seed(0)
    return save_model_package(build_network(_card()), _card(), tmp_path / "pkg")


def _edit_card(path, fn):
    card = json.loads((path / "card.json").read_text())
    fn(card)
    (path / "card.json").write_text(json.dumps(card, indent=2))


def test_swapped_class_names_are_an_integrity_error(package):
    def swap(card):
        card["classes"][0]["name"], card["classes"][1]["name"] = card["classes"][1]["name"], card["classes"][0]["name"]

    _edit_card(package, swap)
    with pytest.raises(IntegrityError, match="card was modified"):
        load_model_package(package)


def test_reformatted_card_still_loads_and_zip_packages_are_sealed_too(package, tmp_path):
    _edit_card(package, lambda card: None)  # same content, other whitespace
    assert load_model_package(package).warnings == []
    z = save_model_package(build_network(_card()), _card(), tmp_path / "pkg.zip")
    assert load_model_package(z).warnings == []
    import zipfile

    assert "integrity.json" in zipfile.ZipFile(z).namelist()


def test_the_shipped_default_model_is_sealed_and_loads():
    assert (builtin_default_path() / "integrity.json").is_file()
    loaded = load_model_package(resolve_model("default"))
    assert not any("integrity" in w for w in loaded.warnings)


def test_a_package_without_integrity_record_loads_with_a_warning(package):
    (package / "integrity.json").unlink()
    loaded = load_model_package(package)
    assert any("integrity.json" in w for w in loaded.warnings)


def test_swapped_weights_with_their_card_hash_are_caught_by_the_record(package, tmp_path):
    torch.manual_seed(1)
    other = save_model_package(build_network(_card()), _card(), tmp_path / "other")
    shutil.copy(other / "model.safetensors", package / "model.safetensors")
    shutil.copy(other / "card.json", package / "card.json")  # card hash matches the new weights ...
    with pytest.raises(IntegrityError):  # ... but not the package's integrity record
        load_model_package(package)


@pytest.mark.parametrize("edit", [
    lambda c: c["arch_args"].update(channels=[4096, 8192, 16384], strides=[2, 2]),  # ~ 10^11 values if built
    lambda c: c["arch_args"].update(channels=[4, 9]),
])
def test_a_card_that_does_not_fit_the_weights_builds_nothing_big(package, edit):
    _edit_card(package, edit)
    (package / "integrity.json").unlink()  # a hand-made card: only the fit check stands between it and the build
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match="do not fit"):
            load_model_package(package)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200e6  # the refused network would need > 100 GB


@pytest.mark.parametrize("roi", [[100000, 100000, 100000], [0, 16, 16], [16, 16], [1.5, 16, 16]])
def test_absurd_roi_size_is_refused(package, roi):
    _edit_card(package, lambda c: c.update(roi_size=roi))
    (package / "integrity.json").unlink()
    with pytest.raises(ModelError, match="roi_size|memory"):
        load_model_package(package)


@pytest.mark.parametrize("name", ["../../x", "..", "a/b", "a\\b", ".hidden", "", "x@v1", "c:evil", " pad"])
def test_bad_model_names_are_refused(name):
    with pytest.raises(ModelError, match="invalid model name"):
        validate_model_name(name)


@pytest.mark.parametrize("name", ["liver", "liver-ct_v2", "Abdomen CT 1.5"])
def test_good_model_names(name):
    assert validate_model_name(name) == name


def test_finetune_name_escape_writes_nothing_outside_the_models_home(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("MEDSEG_HOME", str(home))
    import numpy as np

    from napari_medseg.io import write_labels, write_volume
    from napari_medseg.volume import Volume

    img = Volume(np.zeros((8, 8, 8), np.int16))
    write_volume(img, tmp_path / "ct.nii.gz")
    write_labels(img.with_array(np.ones((8, 8, 8), np.uint8)), tmp_path / "lab.nii.gz")
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = main(["finetune", str(tmp_path / "ct.nii.gz"), str(tmp_path / "lab.nii.gz"), "--slices", "z:3",
               "--from-scratch", "--name", "../../x", "--steps", "1", "-q"])
    assert rc == 2 and "invalid model name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not (tmp_path.parent / "x").exists()
    from napari_medseg.models.registry import list_versions

    with pytest.raises(ModelError):
        list_versions("../../x")


def test_a_network_that_cannot_be_built_on_meta_still_loads(tmp_path):
    """SwinUNETR calls .item() in its constructor: the meta-device fit check steps aside, the strict load judges."""
    card = _card(architecture="SwinUNETR", arch_args=dict(feature_size=12, spatial_dims=3), roi_size=(32, 32, 32))
    torch.manual_seed(0)
    path = save_model_package(build_network(card), card, tmp_path / "swin")
    assert load_model_package(path).card.architecture == "SwinUNETR"
