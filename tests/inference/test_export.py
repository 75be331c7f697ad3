"""``medseg export``: ONNX (checked with ONNX Runtime directly) and OpenVINO IR, plus the preprocessing sidecar."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_medseg.cli import main
from napari_medseg.inference import segment
from napari_medseg.models import ClassInfo, LoadedModel, ModelCard, build_network, load_model, save_model_package
from napari_medseg.volume import Volume


@pytest.fixture
def package(tmp_path):
    card = ModelCard(name="tiny-export", arch_args=dict(spatial_dims=3, channels=(4, 8), strides=(2,), num_res_units=1,
                                                          norm="batch"),
                     classes=[ClassInfo(1, "liver", (1.0, 0.0, 0.0, 1.0)), ClassInfo(3, "spleen")], roi_size=(16, 16, 16),
                     spacing=(2.0, 2.0, 2.0), intensity={"type": "ct_window", "a_min": -100, "a_max": 200, "b_min": 0.0,
                                                         "b_max": 1.0, "clip": True})
    torch.manual_seed(0)
    net = build_network(card).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return save_model_package(net, card, tmp_path / "tiny_export")


def test_onnx_export_matches_pytorch_in_onnx_runtime(tmp_path, package, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "exp" / "tiny.onnx"
    assert main(["export", str(package), "-o", str(out)]) == 0
    assert "max abs diff" in capsys.readouterr().out
    side = json.loads((tmp_path / "exp" / "tiny.json").read_text())
    assert side["network"]["file"] == "tiny.onnx" and side["network"]["input_shape"] == ["batch", 1, 16, 16, 16]
    pre = side["preprocessing"]
    assert pre["orientation"] == "RAS" and pre["spacing_mm_ijk"] == [2.0, 2.0, 2.0] and pre["intensity"]["a_max"] == 200
    assert side["inference"]["roi_size"] == [16, 16, 16]
    assert side["postprocessing"]["channel_to_label"] == [0, 1, 3]
    assert [c["name"] for c in side["classes"]] == ["liver", "spleen"] and side["check"]["max_abs_diff_vs_pytorch"] <= 1e-3

    # ONNX Runtime on its own (no napari-medseg code) against PyTorch on a random ROI window
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    loaded = load_model(package)
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(2, 1, 16, 16, 16)).astype(np.float32))
    with torch.inference_mode():
        ref = loaded.network(x).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-3

    # labels identical on a volume: the ONNX session as the predictor vs the PyTorch network (fp32)
    rng = np.random.default_rng(1)
    vol = Volume((rng.normal(size=(14, 30, 26)) * 120).astype(np.int16), (1.5, 1.5, 2.5), (3.0, -7.0, 11.0))
    onnx_model = LoadedModel(lambda t: torch.from_numpy(sess.run(None, {"image": t.numpy()})[0]), loaded.card, None)
    a = segment(vol, model=onnx_model, device="cpu", postprocess=False)
    b = segment(vol, model=loaded, device="cpu", amp=False, calibrate=False, postprocess=False)
    assert np.array_equal(a.labels.array, b.labels.array) and set(np.unique(a.labels.array)) > {0}


def _no_telemetry(monkeypatch):
    """Record every OpenVINO telemetry event (OVC's ``convert_model`` sends them and writes a client id)."""
    sent = []
    try:
        import openvino_telemetry
    except ImportError:
        return sent
    monkeypatch.setattr(openvino_telemetry.Telemetry, "send_event", lambda self, *a, **k: sent.append(a))
    monkeypatch.setattr(openvino_telemetry.Telemetry, "start_session", lambda self, *a, **k: sent.append(a))
    return sent


def test_openvino_export_writes_ir_and_sidecar(tmp_path, package, monkeypatch):
    ov = pytest.importorskip("openvino")
    sent = _no_telemetry(monkeypatch)
    out = tmp_path / "tiny.onnx"  # the suffix is replaced by the format's own
    assert main(["export", str(package), "-o", str(out), "--format", "openvino"]) == 0
    assert not sent, f"the conversion sent OpenVINO telemetry: {sent}"
    assert (tmp_path / "tiny.xml").is_file() and (tmp_path / "tiny.bin").is_file() and not out.exists()
    side = json.loads((tmp_path / "tiny.json").read_text())
    assert side["network"]["file"] == "tiny.xml" and side["check"]["runtime"] == "openvino"
    compiled = ov.Core().compile_model(str(tmp_path / "tiny.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.random.default_rng(0).random((1, 1, 16, 16, 16), dtype=np.float32)
    with torch.inference_mode():
        ref = load_model(package).network(torch.from_numpy(x)).numpy()
    assert np.abs(compiled({0: x})[0] - ref).max() <= 1e-3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_export_refuses_to_overwrite(tmp_path, package, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    assert main(["export", str(package), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["export", str(package), "-o", str(out), "--force"]) == 0 and out.read_bytes() != b"keep me"
