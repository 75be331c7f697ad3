"""Optimised CPU runtimes: the network converted once to ONNX (and OpenVINO IR), cached by its weights' SHA-256.

`convert_network` exports the (BatchNorm-folded, fp32) network with ``torch.onnx`` to
``<cache>/networks/<sha>-<roi>/model.onnx``, converts it to OpenVINO IR (``model.xml``/``.bin``) when OpenVINO is
installed, and checks each runtime against PyTorch on a random window (max abs difference). The entry is built in
a temporary folder and renamed into place (atomic), so a crash leaves nothing half-written; a runtime whose check
fails, or whose conversion raises, is left out with a note, and the run falls back to PyTorch.

Predictors (`OpenVINOPredictor`, `OnnxRuntimePredictor`) map a torch tensor ``[N, C, *roi]`` to ``[N, C_out, *roi]``
like the network itself, so `sliding_window_steps` uses them unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: bump when the layout of a cache entry changes
FORMAT = 1
#: a converted runtime must match PyTorch within this (absolute, on logits scaled to at least 1)
EXACT_TOL = 1e-3


def cache_dir() -> Path:
    """``$MEDSEG_CACHE``, else ``<models home>/cache``."""
    env = os.environ.get("MEDSEG_CACHE")
    if env:
        return Path(env).expanduser()
    from napari_medseg.models.registry import models_home

    return models_home() / "cache"


def weights_sha256(network) -> str:
    """SHA-256 of the network's parameters and buffers as they are in memory (names, shapes, dtypes, bytes).

    Hashing the loaded tensors rather than the file means an in-memory fine-tuned network never reuses the
    entry of the weights it started from."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(network.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def available_runtimes() -> list[str]:
    """The runtimes usable here, fastest-first as measured on our machines; ``$MEDSEG_RUNTIMES`` restricts them."""
    found = ["torch"]
    if importlib.util.find_spec("onnx") is not None or importlib.util.find_spec("onnxscript") is not None:
        if importlib.util.find_spec("openvino") is not None:
            found.insert(0, "openvino")
        if importlib.util.find_spec("onnxruntime") is not None:
            found.append("onnxruntime")
    want = os.environ.get("MEDSEG_RUNTIMES")
    if want:
        keep = {w.strip().lower() for w in want.split(",")}
        found = [r for r in found if r in keep] or ["torch"]
    return found


def runtime_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "openvino", "onnxruntime", "onnx"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _onnx_to_openvino(onnx_path: Path, xml_path: Path) -> None:
    """ONNX -> OpenVINO IR (float32 weights) without ``ov.convert_model``.

    ``convert_model`` (the OVC tool) sends usage telemetry unless the user has opted out: it writes a client
    id under the home folder and forks a process to post it, from inside napari, on a clinical machine. It
    then stalled the GUI for 142 ms here. Reading the ONNX file with the runtime's own ONNX front end and
    applying the OVC flow's model transformations gives the same IR (identical weights file, same 104
    layers, identical outputs, measured on the default model); `ov.save_model` does the rest of that flow.
    """
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    try:
        from openvino._offline_transformations import apply_moc_transformations
    except ImportError:  # the CPU plugin compiles the untransformed graph to the same outputs
        pass
    else:
        apply_moc_transformations(model, cf=False, smart_reshape=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def openvino_precisions() -> list[str]:
    """Precisions OpenVINO's CPU plugin offers on this CPU, beyond f32 (``bf16`` and/or ``f16``)."""
    try:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001
        return []
    return [p for p, c in (("bf16", "BF16"), ("f16", "FP16")) if c in caps]


@dataclass
class Converted:
    """A cache entry: the ONNX file, the OpenVINO IR when converted, and each runtime's check against PyTorch."""

    folder: Path
    onnx: Path | None
    ov_xml: Path | None
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # spent converting now (0 when the entry was already cached)

    def usable(self, runtime: str) -> bool:
        if runtime == "openvino":
            return self.ov_xml is not None and "openvino" in self.max_abs_diff
        if runtime == "onnxruntime":
            return self.onnx is not None and "onnxruntime" in self.max_abs_diff
        return runtime == "torch"


def _export_onnx(net, example, path: Path) -> None:
    import torch

    kw = dict(input_names=["image"], output_names=["logits"])
    with warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.simplefilter("ignore")
        try:  # the TorchScript exporter: mature for convolutional networks and twice as fast to run here
            torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=17,
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, **kw)
            return
        except Exception as first:  # noqa: BLE001 (a removed or failing legacy exporter: try torch.export)
            err = first
        try:
            batch = torch.export.Dim("batch", min=1, max=1024)
            torch.onnx.export(net, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},), **kw)
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"ONNX export failed ({type(err).__name__}: {err}; then {type(e).__name__}: {e})") from e


def _check(runtime: str, folder: Path, example, ref: np.ndarray) -> float:
    pred = make_predictor(runtime, folder, batch=1, precision="f32", threads=None)
    out = pred(example).numpy()
    if out.shape != ref.shape:
        raise RuntimeError(f"output shape {out.shape} != PyTorch's {ref.shape}")
    return float(np.abs(out - ref).max())


def _entry_folder(sha: str, roi, in_channels: int, root: Path | None = None) -> Path:
    return (root or cache_dir()) / "networks" / f"{sha[:24]}-{'x'.join(map(str, roi))}-c{int(in_channels)}-f{FORMAT}"


def cached_conversion(sha: str, roi, in_channels: int, runtimes=None, root: Path | None = None) -> Converted | None:
    """The cache entry of the network whose in-memory weights hash to ``sha``, when it was converted with these
    libraries for these runtimes; None otherwise (the network is not needed to look)."""
    runtimes = [r for r in (runtimes or available_runtimes()) if r != "torch"]
    folder = _entry_folder(sha, tuple(int(r) for r in roi), in_channels, root)
    info_path = folder / "info.json"
    if info_path.is_file():
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(info_path.read_text(encoding="utf-8"))
            if (info.get("sha256") == sha and info.get("versions") == runtime_versions()
                    and all(r in info.get("tried", []) for r in runtimes)):  # same weights, libraries, runtimes
                return _from_info(folder, info)
    return None


def convert_network(net, roi, in_channels: int, sha: str, runtimes=None, root: Path | None = None) -> Converted:
    """The cache entry for ``net`` (fp32, eval mode) at ``roi``: converted now, or reused. Never raises for a
    conversion problem: what failed is in ``notes`` and that runtime is not usable."""
    import torch

    runtimes = [r for r in (runtimes or available_runtimes()) if r != "torch"]
    roi = tuple(int(r) for r in roi)
    found = cached_conversion(sha, roi, in_channels, runtimes, root)
    if found is not None:
        return found
    folder = _entry_folder(sha, roi, in_channels, root)
    base = folder.parent
    t0 = time.perf_counter()
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=base))
    info = {"sha256": sha, "roi": list(roi), "versions": runtime_versions(), "tried": runtimes, "max_abs_diff": {},
            "notes": []}
    try:
        gen = torch.Generator().manual_seed(0)
        example = torch.rand((1, int(in_channels), *roi), generator=gen)
        with torch.inference_mode():
            ref = net(example)
            ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).float().numpy()
        tol = EXACT_TOL * max(1.0, float(np.abs(ref).max()))
        try:
            _export_onnx(net, example, tmp / "model.onnx")
        except Exception as e:  # noqa: BLE001
            info["notes"].append(f"ONNX export failed, PyTorch runs the network: {e}")
        if (tmp / "model.onnx").is_file() and "openvino" in runtimes:
            try:
                _onnx_to_openvino(tmp / "model.onnx", tmp / "model.xml")
            except Exception as e:  # noqa: BLE001
                info["notes"].append(f"OpenVINO conversion failed ({type(e).__name__}: {e}); not used")
        for rt in runtimes:
            need = tmp / ("model.xml" if rt == "openvino" else "model.onnx")
            if not need.is_file():
                continue
            try:
                diff = _check(rt, tmp, example, ref)
            except Exception as e:  # noqa: BLE001
                info["notes"].append(f"{rt} could not run the converted network ({type(e).__name__}: {e}); not used")
                continue
            if diff <= tol:
                info["max_abs_diff"][rt] = diff
            else:
                info["notes"].append(f"{rt} differs from PyTorch by {diff:.2e} (> {tol:.1e}) on a random window; not used")
        (tmp / "info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
        if folder.exists():  # a stale or partial entry (other runtimes tried): replace it
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process won the race: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return convert_network(net, roi, in_channels, sha, runtimes, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    conv = _from_info(folder, info)
    conv.seconds = time.perf_counter() - t0
    return conv


def _from_info(folder: Path, info: dict) -> Converted:
    onnx = folder / "model.onnx"
    xml = folder / "model.xml"
    return Converted(folder, onnx if onnx.is_file() else None, xml if xml.is_file() else None,
                     dict(info.get("max_abs_diff", {})), list(info.get("notes", [])))


class OpenVINOPredictor:
    """OpenVINO CPU plugin on the IR in ``folder``, reshaped to a static ``[batch, C, *roi]`` (faster than a dynamic
    batch; a short last batch is zero-padded). ``streams=True``: the THROUGHPUT hint instead, one window per
    request and the plugin's optimal number of requests in flight (the ``batch`` windows of a call in parallel)."""

    def __init__(self, folder: Path, batch: int, precision: str = "f32", threads: int | None = None,
                 streams: bool = False):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(Path(folder) / "model.xml"))
        dims = model.inputs[0].get_partial_shape()
        shape = [1 if streams else int(batch)] + [dims[i].get_length() for i in range(1, dims.rank.get_length())]
        model.reshape({0: shape})
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "THROUGHPUT" if streams else "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.batch, self.shape, self.queue = int(batch), tuple(shape), None
        compiled = core.compile_model(model, "CPU", config)
        if streams:
            self.queue = ov.AsyncInferQueue(compiled, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            self.queue.set_callback(self._done)
            self._outs = {}
        else:
            self.request = compiled.create_infer_request()

    def _done(self, request, index):
        self._outs[index] = np.array(request.get_output_tensor(0).data)

    def __call__(self, x):
        import torch

        a = x.detach().to("cpu", torch.float32).contiguous().numpy()
        if self.queue is not None:
            self._outs = {}
            for i in range(a.shape[0]):
                self.queue.start_async({0: a[i:i + 1]}, i)
            self.queue.wait_all()
            return torch.from_numpy(np.concatenate([self._outs[i] for i in range(a.shape[0])]))
        outs = []
        for s in range(0, a.shape[0], self.batch):
            part = a[s:s + self.batch]
            n = part.shape[0]
            if n < self.batch:
                part = np.concatenate([part, np.zeros((self.batch - n, *part.shape[1:]), part.dtype)])
            res = self.request.infer({0: part})
            outs.append(np.array(res[0][:n]))
        return torch.from_numpy(np.concatenate(outs) if len(outs) > 1 else outs[0])


class OnnxRuntimePredictor:
    """ONNX Runtime's CPU execution provider on the ONNX file in ``folder`` (dynamic batch)."""

    def __init__(self, folder: Path, batch: int, precision: str = "f32", threads: int | None = None):
        import onnxruntime as ort

        if precision != "f32":
            raise ValueError("ONNX Runtime runs this network in f32 only here")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.batch = int(batch)
        self.session = ort.InferenceSession(str(Path(folder) / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def __call__(self, x):
        import torch

        a = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = [self.session.run(None, {self.name: a[s:s + self.batch]})[0] for s in range(0, a.shape[0], self.batch)]
        return torch.from_numpy(np.concatenate(outs) if len(outs) > 1 else outs[0])


def make_predictor(runtime: str, folder: Path, batch: int, precision: str = "f32", threads: int | None = None,
                   streams: bool = False):
    if runtime == "openvino":
        return OpenVINOPredictor(folder, batch, precision, threads, streams)
    if runtime == "onnxruntime":
        return OnnxRuntimePredictor(folder, batch, precision, threads)
    raise ValueError(f"unknown runtime {runtime!r}")
