"""`pull_model` / `medseg models pull` against a loopback HTTP server (no internet)."""

from __future__ import annotations

import hashlib
import json

import pytest

from napari_medseg.errors import CancelledError, IntegrityError, ModelError
from napari_medseg.models import load_model
from napari_medseg.models.registry import active_version, list_versions, models_dir
from napari_medseg.models.zoo import DownloadError, list_zoo_bundles, pull_model

from zoo_factory import LoopbackServer, zip_bundle


@pytest.fixture()
def zoo(spleen_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    srv = LoopbackServer()
    blob = zip_bundle(spleen_bundle, tmp_path / "b.zip", "spleen_ct_segmentation")
    sha1 = hashlib.sha1(blob).hexdigest()
    srv.routes["/b/spleen_ct_segmentation_v0.5.0.zip"] = blob
    srv.routes["/b/spleen_ct_segmentation_v0.5.1.zip"] = blob
    srv.routes["/b/tampered.zip"] = blob[:-10] + b"0123456789"
    srv.routes["/b/cut.zip"] = blob
    srv.cut.add("/b/cut.zip")
    index = {
        "spleen_ct_segmentation_v0.5.0": {"checksum": sha1, "source": srv.base + "/b/spleen_ct_segmentation_v0.5.0.zip"},
        "spleen_ct_segmentation_v0.5.1": {"checksum": sha1, "source": srv.base + "/b/spleen_ct_segmentation_v0.5.1.zip"},
        "tampered_ct_segmentation_v0.1.0": {"checksum": sha1, "source": srv.base + "/b/tampered.zip"},
        "cut_ct_segmentation_v0.1.0": {"checksum": sha1, "source": srv.base + "/b/cut.zip"},
        "endoscopic_tool_segmentation_v0.1.0": {"checksum": sha1, "source": srv.base + "/b/none.zip"},
        "mednist_gan_v0.1.0": {"checksum": sha1, "source": srv.base + "/b/none.zip"},
    }
    srv.routes["/model_info.json"] = json.dumps(index).encode()
    monkeypatch.setenv("MEDSEG_ZOO_INDEX", srv.base + "/model_info.json")
    yield srv
    srv.close()


def _leftovers():
    return [p for p in models_dir().rglob("*") if p.name.startswith(".")] if models_dir().exists() else []


def test_pull_verifies_stores_activates_and_loads(zoo):
    seen = []
    path = pull_model("spleen_ct_segmentation", progress=seen.append)
    assert path == models_dir() / "spleen_ct_segmentation" / "0.5.1.zip"  # the latest version
    assert [p for p in seen if p.stage == "download"][-1].done == len(zoo.routes["/b/spleen_ct_segmentation_v0.5.1.zip"])
    assert active_version("spleen_ct_segmentation") == "0.5.1"
    loaded = load_model("spleen_ct_segmentation")
    assert loaded.card.name == "spleen_ct_segmentation" and loaded.card.class_names()[1] == "spleen"
    assert pull_model("spleen_ct_segmentation", version="0.5.0").name == "0.5.0.zip"
    assert active_version("spleen_ct_segmentation") == "0.5.1"  # a second pull does not move the active version
    assert list_versions("spleen_ct_segmentation") == ["0.5.0", "0.5.1"]
    n = len(zoo.hits)
    pull_model("spleen_ct_segmentation", version="0.5.0")  # already stored: no download
    assert all(not h.endswith(".zip") for h in zoo.hits[n:])
    assert _leftovers() == []


def test_failed_hash_keeps_nothing(zoo):
    with pytest.raises(IntegrityError, match="does not match the zoo's published sha1"):
        pull_model("tampered_ct_segmentation")
    assert not (models_dir() / "tampered_ct_segmentation" / "0.1.0.zip").exists() and _leftovers() == []


def test_cut_connection_keeps_nothing(zoo):
    with pytest.raises(DownloadError, match="connection broke"):
        pull_model("cut_ct_segmentation")
    assert not (models_dir() / "cut_ct_segmentation" / "0.1.0.zip").exists() and _leftovers() == []


def test_cancel_removes_the_partial_download(zoo):
    zoo.routes["/b/spleen_ct_segmentation_v0.5.1.zip"] += b"\0" * (1 << 20)  # several chunks
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(CancelledError, match="partial file was removed"):
        pull_model("spleen_ct_segmentation", cancel=cancel)
    assert list_versions("spleen_ct_segmentation") == [] and _leftovers() == []


def test_no_network_unknown_names_and_listing(zoo, monkeypatch):
    assert [r["name"] for r in list_zoo_bundles()] == ["cut_ct_segmentation", "spleen_ct_segmentation",
                                                       "tampered_ct_segmentation"]
    assert list_zoo_bundles()[1]["versions"] == ["0.5.0", "0.5.1"]
    with pytest.raises(ModelError, match="no bundle 'spleen' .*did you mean spleen_ct_segmentation"):
        pull_model("spleen")
    with pytest.raises(ModelError, match="no version '9.9'"):
        pull_model("spleen_ct_segmentation", version="9.9")
    with pytest.raises(ModelError, match="not a bundle name"):
        pull_model("../etc")
    monkeypatch.setenv("MEDSEG_ZOO_INDEX", "http://127.0.0.1:9/model_info.json")  # nothing listens on port 9
    with pytest.raises(DownloadError, match="cannot reach .*network connection"):
        pull_model("spleen_ct_segmentation")


def test_cli_pull(zoo, capsys):
    from napari_medseg.cli import main

    assert main(["models", "pull", "spleen_ct_segmentation", "--version", "0.5.0", "--quiet"]) == 0
    assert "stored in" in capsys.readouterr().out
    assert main(["models", "pull", "tampered_ct_segmentation", "--quiet"]) == 2
    assert "does not match" in capsys.readouterr().err
    assert main(["models"]) == 0
    assert "spleen_ct_segmentation@0.5.0" in capsys.readouterr().out
    assert main(["models", "zoo"]) == 0
    assert "spleen_ct_segmentation" in capsys.readouterr().out
