"""Model packages: round trip, integrity (hash), truncation, wrong architecture, .pt state dicts, registry."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from napari_medseg.errors import IntegrityError, ModelError, OutputExistsError
from napari_medseg.models import (
    ClassInfo,
    ModelCard,
    build_network,
    list_models,
    load_model,
    load_model_package,
    resolve_model,
    save_model_package,
)


def tiny_card(name="tiny", **kw) -> ModelCard:
    return ModelCard(
        name=name,
        arch_args=dict(spatial_dims=3, channels=(4, 8), strides=(2,), num_res_units=1),
        classes=[ClassInfo(1, "liver", (1.0, 0.0, 0.0, 1.0)), ClassInfo(2, "spleen")],
        roi_size=(16, 16, 16),
        **kw,
    )


@pytest.fixture
def package(tmp_path):
    card = tiny_card()
    torch.manual_seed(0)
    net = build_network(card)
    return save_model_package(net, card, tmp_path / "pkg"), net


def test_round_trip_folder_and_zip(package, tmp_path):
    path, net = package
    card = json.loads((path / "card.json").read_text())
    assert len(card["weights_sha256"]) == 64 and card["package_version"]
    loaded = load_model_package(path)
    assert not loaded.network.training and loaded.card.class_names() == {0: "background", 1: "liver", 2: "spleen"}
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[k], v)
    z = save_model_package(net.state_dict(), tiny_card(), tmp_path / "pkg.zip")
    assert zipfile.is_zipfile(z)
    assert load_model_package(z).card.weights_sha256 == loaded.card.weights_sha256


def test_refuses_to_overwrite(package):
    path, net = package
    with pytest.raises(OutputExistsError):
        save_model_package(net, tiny_card(), path)
    save_model_package(net, tiny_card(description="again"), path, force=True)
    assert load_model_package(path).card.description == "again"
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp folders left


def test_tampered_weights_fail_the_hash(package):
    path, _ = package
    w = path / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.safetensors"):
        load_model_package(path)


def test_truncated_weights_fail_clearly(package):
    path, _ = package
    w = path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    with pytest.raises(ModelError, match="model.safetensors"):
        load_model_package(path)
    card = json.loads((path / "card.json").read_text())
    card["weights_sha256"] = ""  # without a hash (and no integrity record), the safetensors parser catches it
    (path / "card.json").write_text(json.dumps(card))
    (path / "integrity.json").unlink()
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_model_package(path)


def test_wrong_architecture_names_the_file(package):
    path, _ = package
    card = json.loads((path / "card.json").read_text())
    card["arch_args"]["channels"] = [8, 16]
    (path / "card.json").write_text(json.dumps(card))
    with pytest.raises(IntegrityError, match="card was modified"):
        load_model_package(path)
    (path / "integrity.json").unlink()  # a hand-edited card without an integrity record: the fit check names it
    with pytest.raises(ModelError, match="do not fit the UNet"):
        load_model_package(path)


@pytest.mark.parametrize("arch", ["os.system", "torch.nn.Linear", "NotANet"])
def test_only_monai_networks(arch):
    with pytest.raises(ModelError, match="monai.networks.nets"):
        build_network(tiny_card(architecture=arch))


def test_code_in_arch_args_is_refused():
    card = tiny_card()
    card.arch_args["channels"] = "$[4, 8]"
    with pytest.raises(ModelError, match="code expression"):
        build_network(card)


def test_pt_state_dict_loads_weights_only(tmp_path):
    card = tiny_card()
    net = build_network(card)
    folder = tmp_path / "ptpkg"
    folder.mkdir()
    torch.save(net.state_dict(), folder / "model.pt")
    card.weights_file = "model.pt"
    (folder / "card.json").write_text(card.to_json())
    loaded = load_model_package(folder)
    assert any("integrity" in w for w in loaded.warnings)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, folder / "model.pt")
    with pytest.raises(ModelError, match="model.pt"):
        load_model_package(folder)


def test_registry_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    base = tmp_path / "home" / "models" / "organs"
    net = build_network(tiny_card("organs"))
    save_model_package(net, tiny_card("organs", version="v1"), base / "v1")
    save_model_package(net, tiny_card("organs", version="v2"), base / "v2")
    assert resolve_model("organs") == base / "v2"  # no active file: the newest
    (base / "active").write_text("v1\n")
    assert resolve_model("organs") == base / "v1"
    assert resolve_model("organs@v2") == base / "v2"
    assert load_model("organs").card.version == "v1"
    assert resolve_model(str(base / "v2")) == base / "v2"
    rows = [r for r in list_models() if r["name"] == "organs"]
    assert [(r["version"], r["active"]) for r in rows] == [("v1", True), ("v2", False)]
    with pytest.raises(ModelError, match="organs"):
        resolve_model("nope")
    with pytest.raises(ModelError, match="no version 'v9'"):
        resolve_model("organs@v9")
