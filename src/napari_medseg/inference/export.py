"""`medseg export`: the network as ONNX (or OpenVINO IR) plus a JSON sidecar with the card's pre/post-processing,
so a model can be deployed without napari-medseg.

The exported network is the BatchNorm-folded fp32 network (the same function up to rounding), with a dynamic batch
axis and the card's ROI as its spatial shape. The export is checked before anything is written in place: ONNX
Runtime (``.onnx``) or OpenVINO (``.xml``) must match PyTorch within `EXPORT_TOL` on a random ROI window, else a
`ModelError`. Files are written to temporary names beside the target and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from napari_medseg.errors import ModelError

EXPORT_TOL = 1e-3
SIDECAR_FORMAT = "napari-medseg-export/1"


def sidecar(card, network_file: str, check: dict) -> dict:
    """The deployment recipe: what a runtime must do around the network to reproduce `segment`."""
    from napari_medseg.inference.pipeline import _channel_to_value

    return {
        "format": SIDECAR_FORMAT,
        "model": {"name": card.name, "version": card.version, "architecture": card.architecture,
                  "weights_sha256": card.weights_sha256, "description": card.description},
        "network": {"file": network_file, "input": "image", "output": "logits",
                    "input_shape": ["batch", int(card.in_channels), *map(int, card.roi_size)],
                    "output_shape": ["batch", len(_channel_to_value(card)), *map(int, card.roi_size)],
                    "dtype": "float32",
                    "axes": "N, C, then the volume's voxel axes i, j, k after reorientation (i = the NIfTI/ITK "
                            "fastest axis, i.e. a [k, j, i] numpy array transposed)"},
        "preprocessing": {"orientation": card.orientation, "spacing_mm_ijk": list(card.spacing) if card.spacing else None,
                          "resampling": "linear, MONAI Spacingd geometry", "intensity": dict(card.intensity or {}),
                          "crop_foreground": bool(card.crop_foreground), "pad_mode": getattr(card, "pad_mode", "constant")},
        "inference": {"roi_size": list(map(int, card.roi_size)), "overlap": float(card.overlap),
                      "blend_mode": card.blend_mode, "sw_batch_size": int(card.sw_batch_size)},
        "postprocessing": {"activation": "softmax over channels", "resample_to_source": "linear on probabilities",
                           "label": "argmax over channels, then channel_to_label",
                           "channel_to_label": [int(v) for v in _channel_to_value(card)],
                           "keep_largest": list(card.keep_largest or []),
                           "contained_in": {str(k): int(v) for k, v in (getattr(card, "contained_in", {}) or {}).items()},
                           "fill_holes": bool(card.fill_holes)},
        "classes": [{"value": int(c.value), "name": c.name, "color": list(c.color) if c.color is not None else None}
                    for c in card.classes],
        "check": check,
    }


def export_model(model, out, fmt: str = "onnx", force: bool = False) -> dict:
    """Export ``model`` (a spec for `load_model` or a `LoadedModel`) to ``out``; returns the sidecar dict.

    ``fmt="onnx"`` writes ``out`` (``.onnx``) + ``out.json``-style sidecar ``<stem>.json``; ``fmt="openvino"``
    writes ``<stem>.xml`` + ``<stem>.bin`` + ``<stem>.json``."""
    import numpy as np
    import torch

    from napari_medseg._atomic import check_overwrite, public_mode
    from napari_medseg.inference.optimize import fold_batchnorm
    from napari_medseg.inference.runtimes import _export_onnx, _onnx_to_openvino, make_predictor
    from napari_medseg.models import LoadedModel, load_model

    if fmt not in ("onnx", "openvino"):
        raise ModelError(f"export format must be 'onnx' or 'openvino', not {fmt!r}")
    out = Path(out)
    stem = out.name[:-len(out.suffix)] if out.suffix.lower() in (".onnx", ".xml", ".json") else out.name
    names = [f"{stem}.onnx"] if fmt == "onnx" else [f"{stem}.xml", f"{stem}.bin"]
    targets = [out.parent / n for n in names] + [out.parent / f"{stem}.json"]
    for t in targets:
        check_overwrite(t, force)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if not isinstance(loaded.network, torch.nn.Module):
        raise ModelError(f"model {loaded.card.name!r} has no PyTorch network to export")
    card = loaded.card
    net = fold_batchnorm(loaded.network).to("cpu").eval()
    runtime = "onnxruntime" if fmt == "onnx" else "openvino"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.export-", dir=out.parent))
    try:
        gen = torch.Generator().manual_seed(1)
        example = torch.rand((1, int(card.in_channels), *map(int, card.roi_size)), generator=gen)
        with torch.inference_mode():
            ref = net(example)
            ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).float().numpy()
        try:
            _export_onnx(net, example, tmp / "model.onnx")
            if fmt == "openvino":
                _onnx_to_openvino(tmp / "model.onnx", tmp / "model.xml")
            got = make_predictor(runtime, tmp, batch=1, precision="f32")(example).numpy()
        except ImportError as e:
            raise ModelError(f"exporting to {fmt} needs the {e.name or runtime} package: "
                             "pip install 'napari-medseg[all]'") from e
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"exporting model {card.name!r} to {fmt} failed: {type(e).__name__}: {e}") from e
        diff = float(np.abs(got - ref).max())
        if not diff <= EXPORT_TOL:
            raise ModelError(f"the exported {fmt} network differs from PyTorch by {diff:.2e} (> {EXPORT_TOL}) on a random "
                             f"window; not written")
        info = sidecar(card, names[0], {"runtime": runtime, "max_abs_diff_vs_pytorch": diff, "window": "uniform [0, 1)"})
        (tmp / "sidecar.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
        sources = ([tmp / "model.onnx"] if fmt == "onnx" else [tmp / "model.bin", tmp / "model.xml"]) + [tmp / "sidecar.json"]
        dests = ([targets[0]] if fmt == "onnx" else [targets[1], targets[0]]) + [targets[-1]]
        for src, dst in zip(sources, dests):  # the .bin before the .xml that names it; the sidecar last
            with contextlib.suppress(OSError):
                os.chmod(src, public_mode())
            os.replace(src, dst)
        return info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
