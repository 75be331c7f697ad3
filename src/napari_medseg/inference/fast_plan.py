"""A cached CPU plan run straight from the weights file: no network built, no MONAI imported.

A whole ``medseg predict`` process on a small CT spends about 2 s importing MONAI (its ``__init__`` loads every
submodule), more than the network itself takes on a fast CPU. When the cached plan runs the network in a
converted runtime (OpenVINO, ONNX Runtime), that PyTorch network is never used, so it need not be built.

`remember` files a plan a second time under the *weights file* (its SHA-256 and the card's architecture,
arguments and channels: `models.known.network_identity`), together with the in-memory hash of the network that
was built from it (which names the converted-network cache entry). It does so only while the network still
hashes as it did when it was built from that file, so a network changed in memory (a fine-tune in this process)
never lends its plan to the file. `plan_without_network` finds that record for a `LoadedModel` whose network
is still unbuilt (`load_model(lazy=True)`), checks that the converted entry is there for these libraries, and
returns its predictor. Anything missing (a plan on PyTorch, a removed cache entry, other library versions)
returns None and the run builds the network as before.
"""

from __future__ import annotations

import json
import sys
import time


def _file_key(card, file_sha: str, identity: dict, versions: dict, roi, fixed: dict) -> str:
    from napari_medseg.inference.calibrate import plan_key
    from napari_medseg.models.known import network_identity

    return plan_key(identity, versions, "file:" + network_identity(card, file_sha), roi, int(card.in_channels), fixed)


def _file_plan_path(card, key: str):
    from napari_medseg.inference.calibrate import plan_path

    return plan_path(f"{card.name}-file", key)


def remember(loaded, card, sha: str, info: dict) -> None:
    """File ``info`` (a plan for the network hashing to ``sha``) under ``loaded``'s weights file, if that network
    is still the one built from the file."""
    from napari_medseg._atomic import atomic_path
    from napari_medseg.inference.cpu_plan import load_plan

    if loaded is None or not loaded.weights_file_sha256 or loaded.built_sha256 != sha:
        return
    try:
        key = _file_key(card, loaded.weights_file_sha256, info["cpu"], info["versions"], info["roi"], info["fixed"])
        doc = {k: v for k, v in info.items() if k not in ("cached", "prepare_s", "path")}
        doc.update(file_key=key, weights_sha256=sha)
        path = _file_plan_path(card, key)
        old = load_plan(path) or {}
        # a fresh process's cost: the largest seen (a process that had MONAI already reports less), kept unless a
        # new one is clearly larger, so a cached run does not rewrite the file for a few milliseconds
        build_s, seen = float(loaded.build_s or 0.0), float(old.get("network_build_s") or 0.0)
        build_s = build_s if build_s > 1.25 * seen else seen
        if build_s:
            doc["network_build_s"] = round(build_s, 3)
        if old == json.loads(json.dumps(doc)):
            return  # filed already (every cached run of this model passes here): no write
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, force=True) as tmp:
            tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    except (OSError, KeyError, TypeError, ValueError):  # a read-only cache or an old plan: no shortcut next time
        pass


def plan_without_network(loaded, card, sw_batch_size=None, amp=None, threads_now=None, n_windows=None):
    """``(predictor, info)`` of the cached plan of ``loaded``'s unbuilt network when it runs a converted runtime
    whose entry is cached (or, for a plan on PyTorch, when a converted candidate is cheaper for this case's
    ``n_windows`` than building the network: `converted_instead`); None otherwise."""
    from napari_medseg.inference.calibrate import _HINT, Candidate, cpu_identity
    from napari_medseg.inference.cpu_plan import _CONFIG, load_plan, plan_fixed
    from napari_medseg.inference.runtimes import (available_runtimes, cached_conversion, make_predictor,
                                                  runtime_versions)

    if loaded.built or not loaded.weights_file_sha256:
        return None
    t0 = time.perf_counter()
    roi = tuple(int(r) for r in card.roi_size)
    runtimes = available_runtimes()
    key = _file_key(card, loaded.weights_file_sha256, cpu_identity(), runtime_versions(), roi,
                    plan_fixed(sw_batch_size, amp, runtimes))
    path = _file_plan_path(card, key)
    saved = load_plan(path)
    if saved is None or saved.get("file_key") != key:
        return None
    conv = cached_conversion(str(saved.get("weights_sha256", "")), roi, card.in_channels, runtimes)
    if conv is None:
        return None
    note = None
    if saved["chosen"].get("runtime") == "torch":
        alt = converted_instead(saved, conv, n_windows)
        if alt is None:
            return None
        saved, note = dict(saved, chosen=alt[0], runtime=alt[0]["runtime"], ms_per_window=alt[0]["ms_per_window"]), alt[1]
    chosen = Candidate(**{k: saved["chosen"][k] for k in _CONFIG if k in saved["chosen"]})
    if not conv.usable(chosen.runtime):
        return None
    try:
        pred = make_predictor(chosen.runtime, conv.folder, chosen.batch, _HINT[chosen.precision],
                              threads_now or saved.get("threads"), chosen.streams)
    except Exception:  # noqa: BLE001 (the entry no longer runs: the normal path converts or measures again)
        return None
    info = dict(saved, cached=True, network_built=False, calibration_s=0.0, convert_s=0.0,
                prepare_s=time.perf_counter() - t0, path=str(path))
    if note:
        info["switched"] = note
    return pred, info


def converted_instead(saved: dict, conv, n_windows: int | None):
    """``(candidate, note)``: the fastest converted candidate of a plan that chose PyTorch, when running it costs
    less than building the PyTorch network in this process would (MONAI's import and the build, as measured for
    this model: ``network_build_s``) plus PyTorch's windows; None otherwise (or when the figures are unknown)."""
    build_s, torch_ms = saved.get("network_build_s"), saved["chosen"].get("ms_per_window")
    if not n_windows or not build_s or not torch_ms or "monai" in sys.modules:  # MONAI already here: no cost
        return None
    ok = [c for c in saved.get("candidates", []) if c.get("status") == "ok" and c.get("runtime") != "torch"
          and c.get("ms_per_window") and conv.usable(c["runtime"])]
    if not ok:
        return None
    best = min(ok, key=lambda c: c["ms_per_window"])
    extra_s = n_windows * (best["ms_per_window"] - torch_ms) / 1000.0
    if extra_s >= build_s:
        return None
    return best, (f"{best['runtime']} instead of PyTorch for this process: {n_windows} windows {extra_s:+.1f} s "
                  f"against {build_s:.1f} s to build the PyTorch network, MONAI's import included")
