"""A cached plan runs from the weights file without building the network (no MONAI import in a fresh process),
never for a network changed in memory or other weights, and only after the model was once built and checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medseg.inference import segment
from napari_medseg.inference.fast_plan import converted_instead
from napari_medseg.models import load_model, save_model_package

from tests.inference.test_cpu_plan import image, small_model

pytest.importorskip("openvino")  # the converted runtime this shortcut exists for (the [all] extra)


@pytest.fixture
def ov_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDSEG_CALIBRATE", "1")
    monkeypatch.setenv("MEDSEG_RUNTIMES", "openvino")  # the plan runs OpenVINO (what an AVX2 CPU chooses)
    return tmp_path / "cache"


def _package(tmp_path, seed=0) -> Path:
    m = small_model(seed)
    return save_model_package(m.network, m.card, tmp_path / f"pkg{seed}")


def test_a_cached_plan_runs_from_the_file_without_building_the_network(ov_cache, tmp_path):
    pkg, vol = _package(tmp_path), image()
    first = load_model(pkg, lazy=True)
    assert first.built, "a model never built here is built (and checked) at load"
    ref = segment(vol, model=first, device="cpu")
    assert ref.plan_info["runtime"] == "openvino" and ref.plan_info["cached"] is False
    again = load_model(pkg, lazy=True)
    assert not again.built, "the same file and card were built and checked before"
    res = segment(vol, model=again, device="cpu")
    assert not again.built and res.plan_info["network_built"] is False and res.plan_info["cached"] is True
    np.testing.assert_array_equal(res.labels.array, ref.labels.array)
    assert load_model(pkg).built, "load_model without lazy still builds at once"


def test_a_fresh_process_never_imports_monai_on_the_shortcut(ov_cache, tmp_path):
    pkg, vol = _package(tmp_path), image()
    want = segment(vol, model=load_model(pkg, lazy=True), device="cpu").labels.array
    np.save(tmp_path / "img.npy", vol.array)
    code = (f"import sys, numpy as np\nfrom napari_medseg import segment\nfrom napari_medseg.volume import Volume\n"
            f"r = segment(Volume(np.load(r'{tmp_path / 'img.npy'}'), spacing=(1.0, 1.0, 1.0)), model=r'{pkg}', device='cpu')\n"
            f"np.save(r'{tmp_path / 'out.npy'}', r.labels.array)\nprint('monai' in sys.modules, r.plan_info['network_built'])\n")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["False", "False"], out.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), want)


def test_a_network_changed_in_memory_never_lends_its_plan_to_the_file(ov_cache, tmp_path):
    pkg, vol = _package(tmp_path), image()
    ref = segment(vol, model=load_model(pkg, lazy=True), device="cpu")
    changed = load_model(pkg, lazy=True)
    with torch.no_grad():
        next(changed.network.parameters()).add_(0.5)  # e.g. a fine-tune in this process
    other = segment(vol, model=changed, device="cpu")
    assert other.plan_info["weights_sha256"] != ref.plan_info["weights_sha256"]
    (filed,) = [json.loads(p.read_text()) for p in (ov_cache / "plans").glob("*-file-*.json")]
    assert filed["weights_sha256"] == ref.plan_info["weights_sha256"], "the file's plan still names the file's network"
    fresh = load_model(pkg, lazy=True)
    np.testing.assert_array_equal(segment(vol, model=fresh, device="cpu").labels.array, ref.labels.array)
    assert not fresh.built


def test_other_weights_in_the_file_build_and_check_the_network(ov_cache, tmp_path):
    pkg, vol = _package(tmp_path, seed=0), image()
    segment(vol, model=load_model(pkg, lazy=True), device="cpu")
    other = _package(tmp_path, seed=1)
    model = load_model(other, lazy=True)
    assert model.built, "new weights: built and checked at load"
    res = segment(vol, model=model, device="cpu")
    assert res.plan_info.get("network_built") is not False


def test_a_plan_on_pytorch_switches_to_a_converted_runtime_only_when_that_is_cheaper(monkeypatch):
    class Conv:
        def usable(self, runtime):
            return runtime == "openvino"

    saved = {"chosen": {"runtime": "torch", "ms_per_window": 50.0}, "network_build_s": 2.0,
             "candidates": [{"runtime": "openvino", "precision": "bfloat16", "status": "ok", "ms_per_window": 60.0},
                            {"runtime": "onnxruntime", "precision": "float32", "status": "ok", "ms_per_window": 55.0},
                            {"runtime": "torch", "precision": "bfloat16", "status": "ok", "ms_per_window": 50.0}]}
    monkeypatch.delitem(sys.modules, "monai", raising=False)
    best, note = converted_instead(saved, Conv(), 72)  # 72 x 10 ms = 0.72 s < 2 s
    assert best["runtime"] == "openvino" and "72 windows" in note and "2.0 s" in note
    assert converted_instead(saved, Conv(), 400) is None  # 4 s of slower windows > 2 s of building
    assert converted_instead(dict(saved, network_build_s=None), Conv(), 72) is None  # unknown cost: keep the plan
    monkeypatch.setitem(sys.modules, "monai", sys)  # MONAI already imported here: building costs nothing more
    assert converted_instead(saved, Conv(), 72) is None


def test_a_bundle_network_checked_once_is_read_again_without_monai(ov_cache, tmp_path, monkeypatch):
    from napari_medseg.models import bundle as bundle_mod
    from napari_medseg.models import network as network_mod

    from tests.models.bundle_factory import SPLEEN_INFERENCE

    root = tmp_path / "spleen_ct_segmentation"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(SPLEEN_INFERENCE))
    (root / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1", "network_data_format": {
        "outputs": {"pred": {"channel_def": {"0": "background", "1": "spleen"}}}}}))
    card, _ = bundle_mod.bundle_card(root)
    net = network_mod.build_network(card)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    first = bundle_mod.load_bundle(root, lazy=True)
    assert first.built

    def no_monai(name):
        raise AssertionError("network_class (MONAI) was asked again")

    monkeypatch.setattr(network_mod, "network_class", no_monai)
    again, _ = bundle_mod.bundle_card(root)
    assert (again.architecture, again.arch_args) == (card.architecture, card.arch_args)
    lazy = bundle_mod.load_bundle(root, lazy=True)
    assert not lazy.built and lazy.card.arch_args == card.arch_args


def test_the_switch_rule_counts_every_tta_pass(ov_cache, tmp_path, monkeypatch):
    """TTA runs the sliding window once per flip: the shortcut's cost rule gets all those windows."""
    import napari_medseg.inference.fast_plan as fp

    pkg, vol = _package(tmp_path), image()
    segment(vol, model=load_model(pkg, lazy=True), device="cpu")  # builds, plans, records
    seen = []
    real = fp.plan_without_network
    monkeypatch.setattr(fp, "plan_without_network", lambda *a, **k: seen.append(a[5] if len(a) > 5 else a[-1]) or real(*a, **k))
    plain = segment(vol, model=load_model(pkg, lazy=True), device="cpu")
    flips = segment(vol, model=load_model(pkg, lazy=True), device="cpu", tta=True)
    assert len(seen) == 2 and seen[1] == 4 * seen[0] > 0
    assert plain.labels.array.shape == flips.labels.array.shape
