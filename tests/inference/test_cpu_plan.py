"""The measuring CPU planner, for real: it converts a small UNet, times the candidates, caches the plan, reuses it,
reuses its choice (not its conversion) for new weights of the same network, and falls back to PyTorch when a conversion fails."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_medseg.inference import segment
from napari_medseg.inference import calibrate as cal
from napari_medseg.inference import runtimes as rt
from napari_medseg.inference.cpu_plan import cpu_plan, format_table
from napari_medseg.models import ClassInfo, LoadedModel, ModelCard, build_network
from napari_medseg.volume import Volume

ARCH = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2], num_res_units=1, norm="batch")


def small_model(seed=0) -> LoadedModel:
    card = ModelCard(name="tiny-plan", architecture="UNet", arch_args=dict(ARCH), in_channels=1,
                     classes=[ClassInfo(1, "a"), ClassInfo(2, "b")], spacing=None, orientation=None,
                     intensity={"type": "none"}, roi_size=(16, 16, 16), overlap=0.25, pad_mode="constant")
    torch.manual_seed(seed)
    net = build_network(card).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding and conversion have work to do
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return LoadedModel(net, card, None)


def image(shape=(20, 28, 24)):
    rng = np.random.default_rng(0)
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    arr = (np.sin(3 * i) + np.cos(2 * j) * k + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    return Volume(arr, spacing=(1.0, 1.0, 1.0))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDSEG_CALIBRATE", "1")
    return tmp_path / "cache"


def test_calibration_measures_caches_and_reuses_the_plan(cache):
    model, vol = small_model(), image()
    ref = segment(vol, model=model, device="cpu", calibrate=False, amp=False)  # PyTorch fp32, fixed plan
    first = segment(vol, model=model, device="cpu")
    info = first.plan_info
    assert info["cached"] is False and info["calibration_s"] > 0
    cands = info["candidates"]
    assert {c["runtime"] for c in cands} >= {"torch"} and {c["runtime"] for c in cands} <= {"torch", "openvino", "onnxruntime"}
    ok = [c for c in cands if c["status"] == "ok"]
    assert ok and all(c["ms_per_window"] > 0 for c in ok)
    assert info["chosen"]["ms_per_window"] == min(c["ms_per_window"] for c in ok)  # the fastest eligible one
    for c in cands:  # reduced precisions are either eligible (agreement >= 99.9 %) or rejected with the figure
        if c["precision"] != "float32" and c["agreement"] is not None:
            assert (c["agreement"] >= cal.MIN_AGREEMENT) == (c["status"] == "ok")
    assert f"runtime={info['runtime']}" in first.plan and "ms/window measured" in first.plan
    saved = json.loads((cache / "plans").glob("tiny-plan-*.json").__next__().read_text())
    assert saved["chosen"] == info["chosen"] and saved["weights_sha256"] == rt.weights_sha256(model.network)
    second = segment(vol, model=model, device="cpu")
    assert second.plan_info["cached"] is True and second.plan_info["chosen"] == info["chosen"]
    assert "cached plan" in second.plan and second.timings["plan"] >= 0
    for res in (first, second):  # whatever runtime won, the labels are the PyTorch fp32 labels
        assert (res.labels.array == ref.labels.array).mean() >= 0.999
    assert "calibration" in format_table(second.plan_info) or "cached plan" in format_table(second.plan_info)


def test_changed_weights_invalidate_the_cached_plan_and_conversion(cache):
    model, vol = small_model(), image()
    a = segment(vol, model=model, device="cpu").plan_info
    weight = next(model.network.parameters())
    original = weight.detach().clone()
    with torch.no_grad():
        weight.add_(0.01)  # an in-memory fine-tune step: same file, new weights
    b = segment(vol, model=model, device="cpu").plan_info
    # the same layers with new weights (a fine-tuned version) reuse the measured choice, not the conversion
    assert b["cached"] is True and b["reused_from"] == a["weights_sha256"] and b["chosen"] == a["chosen"]
    assert b["weights_sha256"] != a["weights_sha256"] and b["key"] != a["key"]
    assert len(list((cache / "plans").glob("tiny-plan-*.json"))) == 3  # per weights (2) and per architecture
    if len(rt.available_runtimes()) > 1:  # each weights version has its own converted network
        assert len([p for p in (cache / "networks").iterdir() if not p.name.startswith(".")]) == 2
    with torch.no_grad():
        weight.copy_(original)  # back to the first weights: their plan is still there
    c = segment(vol, model=model, device="cpu").plan_info
    assert c["key"] == a["key"] and c["cached"] is True


def test_plan_key_depends_on_cpu_flags_versions_and_roi():
    ident = {"model": "cpu", "machine": "x86_64", "flags": ["avx2"]}
    base = cal.plan_key(ident, {"torch": "2"}, "ab" * 32, (96, 96, 96), 1, {})
    assert base != cal.plan_key(dict(ident, flags=["avx2", "avx512f"]), {"torch": "2"}, "ab" * 32, (96, 96, 96), 1, {})
    assert base != cal.plan_key(ident, {"torch": "3"}, "ab" * 32, (96, 96, 96), 1, {})
    assert base != cal.plan_key(ident, {"torch": "2"}, "ab" * 32, (64, 64, 64), 1, {})
    assert base == cal.plan_key(ident, {"torch": "2"}, "ab" * 32, (96, 96, 96), 1, {})


def test_a_failing_conversion_falls_back_to_pytorch_with_a_note(cache, monkeypatch):
    if len(rt.available_runtimes()) == 1:
        pytest.skip("no ONNX-based runtime installed")  # then PyTorch is the only candidate anyway

    def broken(*a, **k):
        raise RuntimeError("unsupported operator Foo")

    monkeypatch.setattr(rt, "_export_onnx", broken)
    res = segment(image(), model=small_model(), device="cpu")
    assert res.plan_info["runtime"] == "torch" and "runtime=torch" in res.plan
    assert any("ONNX export failed" in n and "unsupported operator Foo" in n for n in res.plan_info["notes"])
    assert any("ONNX export failed" in w for w in res.warnings)
    assert {c["runtime"] for c in res.plan_info["candidates"]} == {"torch"}


def test_an_inexact_conversion_is_not_used(cache, monkeypatch):
    if len(rt.available_runtimes()) == 1:
        pytest.skip("no ONNX-based runtime installed")
    monkeypatch.setattr(rt, "_check", lambda *a, **k: 0.5)
    _, info = cpu_plan(small_model().network, small_model().card)
    assert info["runtime"] == "torch" and not info["max_abs_diff"]
    assert any("differs from PyTorch by 5.00e-01" in n for n in info["notes"])


def test_reduced_precision_below_the_agreement_threshold_is_rejected():
    windows = torch.rand(2, 1, 8, 8, 8)

    def fp32(x):
        return torch.cat([x, 1 - x], 1)

    def sloppy(x):  # flips the argmax on ~1 % of the voxels
        y = fp32(x).clone()
        y[:, :, :1, :1] = y[:, :, :1, :1].flip(1)
        return y

    cands = [cal.Candidate("openvino"), cal.Candidate("openvino", "bfloat16"), cal.Candidate("torch", "bfloat16")]
    preds = {("openvino", "float32"): fp32, ("openvino", "bfloat16"): sloppy, ("torch", "bfloat16"): fp32}
    built = cal.measure(cands, lambda c: preds[(c.runtime, c.precision)], windows, cal.Reference(windows, lambda: fp32))
    assert [c.status.split(":")[0] for c in cands] == ["ok", "rejected", "ok"]
    assert cands[1].agreement < cal.MIN_AGREEMENT and cands[2].agreement == 1.0
    assert set(built) == {0, 2}


def test_calibration_off_keeps_the_fixed_pytorch_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDSEG_CALIBRATE", "0")
    res = segment(image(), model=small_model(), device="cpu")
    assert res.plan.startswith("runtime=torch") and res.plan_info == {}
    assert not (tmp_path / "cache").exists()


def test_tta_and_probabilities_through_a_converted_runtime(cache, monkeypatch):
    if "openvino" not in rt.available_runtimes() and "onnxruntime" not in rt.available_runtimes():
        pytest.skip("no ONNX-based runtime installed")
    monkeypatch.setenv("MEDSEG_RUNTIMES", "openvino,onnxruntime")  # PyTorch off: the converted runtime must run
    model, vol = small_model(), image()
    res = segment(vol, model=model, device="cpu", amp=False, tta=True, return_probabilities=True)
    assert res.plan_info["runtime"] in ("openvino", "onnxruntime")
    ref = segment(vol, model=model, device="cpu", amp=False, tta=True, return_probabilities=True, calibrate=False)
    assert np.abs(res.probabilities.array - ref.probabilities.array).max() < 1e-4
    assert np.array_equal(res.labels.array, ref.labels.array)


def test_cpu_identity_and_threads():
    ident = cal.cpu_identity()
    assert ident["model"] and isinstance(ident["flags"], list)
    assert all(cal._FLAG_RE.match(f) for f in ident["flags"])
    assert cal.cpu_threads() >= 1


def test_a_onednn_isa_cap_keeps_reduced_precisions_out_and_keys_the_plan(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 makes PyTorch's and OpenVINO's kernels AVX2-only while their probes still see
    bf16: the planner must not offer bf16/fp16 then, and a plan measured without the cap is not reused."""
    monkeypatch.setattr(cal, "torch_precisions", lambda: ["bfloat16"] if cal.isa_allows("bfloat16") else [])
    monkeypatch.setattr(rt, "openvino_precisions", lambda: ["bf16", "f16"])
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    free = cal.cpu_identity()
    assert "isa_cap" not in free
    precisions = {c.precision for c in cal.stage1_candidates(["openvino", "torch"], None)}
    assert precisions == {"float32", "bfloat16", "float16"}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    capped = cal.cpu_identity()
    assert capped["isa_cap"] == "AVX2"
    assert {c.precision for c in cal.stage1_candidates(["openvino", "torch"], None)} == {"float32"}
    assert not cal.isa_allows("bfloat16") and cal.isa_allows("float32")
    from napari_medseg.inference.planner import cpu_bf16_supported

    assert cpu_bf16_supported() is False  # the fixed (uncalibrated) plan does not pick bf16 autocast either
    key = dict(versions={"torch": "2"}, sha="ab" * 32, roi=(96, 96, 96), in_channels=1, fixed={})
    assert cal.plan_key(free, **key) != cal.plan_key(capped, **key)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert cal.isa_allows("bfloat16") and not cal.isa_allows("float16")


def test_a_busy_machine_gets_fewer_threads_and_the_plan_says_why(cache, monkeypatch):
    monkeypatch.delenv("MEDSEG_THREADS", raising=False)
    monkeypatch.setattr(cal, "cpu_threads", lambda: 4)
    for busy, want in ((0.0, 4), (0.4, 4), (1.0, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(cal, "busy_cores", lambda b=busy: b)
        n, why = cal.run_threads(4)
        assert n == want, (busy, n)
        assert (why is None) == (n == 4) and (why is None or "MEDSEG_THREADS" in why)
    assert cal.run_threads(1) == (1, None)
    monkeypatch.setenv("MEDSEG_THREADS", "3")
    assert cal.run_threads(4) == (3, None)  # fixed by the user: no adaptation
    from napari_medseg.errors import InputError

    for bad in ("two", "0", "-1"):
        monkeypatch.setenv("MEDSEG_THREADS", bad)
        with pytest.raises(InputError, match="MEDSEG_THREADS"):
            cal.run_threads(4)
    monkeypatch.delenv("MEDSEG_THREADS")
    assert cal.busy_cores() >= 0.0  # reads /proc/loadavg here

    # a run on a "busy" machine: torch runs with 1 thread during the run, the plan text says why, and the
    # caller's setting is restored afterwards
    monkeypatch.setattr(cal, "cpu_threads", lambda: 2)
    monkeypatch.setattr(cal, "busy_cores", lambda: 1.8)
    seen = []
    model = small_model()
    real_forward = model.network.forward

    def spy(x):
        seen.append(torch.get_num_threads())
        return real_forward(x)

    monkeypatch.setattr(model.network, "forward", spy)
    monkeypatch.setenv("MEDSEG_RUNTIMES", "torch")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        segment(image(), model, device="cpu")  # first run: calibration with all cores
        res = segment(image(), model, device="cpu")  # cached plan: the busy machine's count
        assert torch.get_num_threads() == 2  # the caller's setting is back
    finally:
        torch.set_num_threads(before)
    assert "threads=1 (of 2: other processes keep about 1.8" in res.plan and res.plan_info["run_threads"] == 1
    assert seen and seen[-1] == 1


def test_medseg_plan_shows_the_table_and_recalibrates(cache, tmp_path, capsys):
    from napari_medseg.cli import main
    from napari_medseg.io import write_volume
    from napari_medseg.models import save_model_package

    m = small_model()
    pkg = save_model_package(m.network, m.card, tmp_path / "pkg")
    write_volume(image(), tmp_path / "img.nii.gz")
    assert main(["plan", str(pkg), str(tmp_path / "img.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "runtime" in out and "ms/window" in out and "chosen:" in out and "calibration" in out and "image window" in out
    assert main(["plan", str(pkg), str(tmp_path / "img.nii.gz")]) == 0
    assert "cached plan" in capsys.readouterr().out
    # medseg predict reuses it, and its JSON report carries the plan, its table and timings
    assert main(["predict", str(tmp_path / "img.nii.gz"), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(pkg),
                 "--device", "cpu", "--quiet"]) == 0
    case = json.loads((tmp_path / "seg_report.json").read_text())["cases"][0]
    assert case["plan_info"]["cached"] is True and case["plan"].startswith(f"runtime={case['plan_info']['runtime']}")
    assert case["plan_info"]["candidates"] and case["plan_info"]["ms_per_window"] > 0 and "plan" in case["timings"]
    capsys.readouterr()
    assert main(["plan", str(pkg), "--recalibrate", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cached"] is False and info["calibration_input"] == "synthetic" and info["candidates"]


def test_training_plan_measures_threads_and_caps_the_batch(cache, monkeypatch):
    from napari_medseg.inference import train_plan
    from napari_medseg.training.config import TrainConfig

    net = small_model().network
    before = {k: v.clone() for k, v in net.state_dict().items()}
    plan = train_plan.plan_training(net, (16, 16, 16), 2)
    assert 1 <= plan["threads"] <= cal.cpu_threads() and plan["batch_size"] == 2
    if cal.cpu_threads() > 1:
        assert plan["measured"] and plan["cached"] is False and len(plan["table"]) == 2
        assert plan["threads"] == min(plan["table"], key=lambda r: r["seconds_per_step"])["threads"]
        assert train_plan.plan_training(net, (16, 16, 16), 2)["cached"] is True
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN stats of the real net untouched
    monkeypatch.setattr("napari_medseg.inference.planner.host_available_bytes", lambda: 1_000_000)
    cfg = train_plan.apply_training_plan(net, TrainConfig(batch_size=4, patch_size=(16, 16, 16)))
    assert cfg.batch_size == 1 and torch.get_num_threads() >= 1
    threads = torch.get_num_threads()
    try:
        assert train_plan.apply_training_plan(net, TrainConfig(num_threads=1)).num_threads == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
