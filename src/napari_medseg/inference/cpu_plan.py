"""The CPU plan of a run: cached or measured (`calibrate`), then the predictor it names, ready to slide.

`prepare_network(net, card, plan, x)` is what the pipeline calls: on a CUDA plan, or with calibration disabled,
it returns the BatchNorm-folded PyTorch network as before; on the CPU it returns the measured plan's predictor
(an OpenVINO / ONNX Runtime predictor, or the folded PyTorch network with the plan's autocast and memory format)
and fills ``plan.runtime``, ``plan.sw_batch_size``, ``plan.precision``, ``plan.threads`` and ``plan.info``
(candidate table, timings, cache state, notes of any fallback).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, replace

from napari_medseg.inference.calibrate import (BIG_BATCH, _HINT, Candidate, Reference, TorchPredictor,
                                               calibration_enabled, calibration_windows, cpu_identity, cpu_threads,
                                               measure, plan_key, plan_path, stage1_candidates)


_CONFIG = ("runtime", "precision", "channels_last", "batch", "streams")


def prepare_network(net, card, plan, x=None, sw_batch_size=None, amp=None, calibrate=None, recalibrate=False,
                    passes: int = 1):
    """``(predictor, plan)`` for the sliding window; ``plan`` is updated in place.

    ``net``: a ``torch.nn.Module``, or a `LoadedModel`: one whose network is still unbuilt runs a cached plan's
    converted runtime without building it (`fast_plan`), so such a run never imports MONAI. ``passes``: how
    many times the sliding window covers ``x`` (TTA flips), for that shortcut's cost rule."""
    import torch

    from napari_medseg.inference.optimize import fold_batchnorm

    loaded = net if hasattr(net, "is_module") else None
    if plan.device != "cpu" or not calibration_enabled(calibrate):
        net = fold_batchnorm(loaded.network if loaded is not None else net).to(plan.device)
        if plan.channels_last:
            net = net.to(memory_format=torch.channels_last_3d)
        return net, plan
    threads_now = plan.torch_threads or min(cpu_threads(), torch.get_num_threads())
    from napari_medseg.inference.fast_plan import plan_without_network

    found = None
    if loaded is not None and not loaded.built and not recalibrate:
        n_windows = None
        if x is not None:
            from napari_medseg.inference.sliding import SlidingWindow

            n_windows = max(1, int(passes)) * SlidingWindow(tuple(card.roi_size), float(card.overlap)).n_windows(
                tuple(x.shape[1:]))
        found = plan_without_network(loaded, card, sw_batch_size, amp, threads_now, n_windows)
    if found is not None:
        pred, info = found
    else:
        if loaded is not None:
            net = loaded.network
        max_batch = _memory_batch(card, x)
        pred, info = cpu_plan(net, card, x, sw_batch_size, amp, recalibrate, max_batch, threads_now, loaded)
    best = info["chosen"]
    plan.runtime, plan.sw_batch_size, plan.info = best["runtime"], int(best["batch"]), info
    # a converted runtime built by calibration keeps calibration's threads for this first run
    plan.threads = threads_now if info.get("cached") or best["runtime"] == "torch" else info["threads"]
    if plan.threads != threads_now:
        plan.threads_note = None
    info["run_threads"] = plan.threads
    if best["runtime"] == "torch":
        plan.amp_dtype = None if best["precision"] == "float32" else getattr(torch, best["precision"])
        plan.channels_last, plan.precision = bool(best["channels_last"]), None
    else:
        plan.amp_dtype, plan.channels_last, plan.precision = None, False, best["precision"]
    return pred, plan


def plan_fixed(sw_batch_size, amp, runtimes) -> dict:
    """The caller's settings a plan is keyed by (with the CPU, libraries, weights and ROI)."""
    return {"batch": int(sw_batch_size) if sw_batch_size else None, "amp": amp, "runtimes": runtimes}


def _memory_batch(card, x) -> int:
    from napari_medseg.inference.planner import _cpu_plan

    voxels = int(x[0].numel()) if x is not None else int(__import__("numpy").prod(card.roi_size))
    return _cpu_plan(card, voxels, BIG_BATCH, False, True, []).sw_batch_size


def architecture_key(net) -> str:
    """What a plan's speed depends on besides the CPU and libraries: the network's layers (parameter and buffer
    names, shapes, dtypes), not its weights' values."""
    import hashlib

    blob = "|".join(f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in net.state_dict().items())
    return "architecture:" + hashlib.sha256(blob.encode()).hexdigest()


def load_plan(path):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("chosen"), dict) else None


def cpu_plan(net, card, x=None, sw_batch_size=None, amp=None, recalibrate=False, max_batch=BIG_BATCH, threads_now=None,
             loaded=None):
    """``(predictor, info)``: the cached plan for this CPU, libraries, weights and ROI, or a new measured one.

    ``threads_now``: the threads a cached plan's converted runtime runs with (`calibrate.run_threads`: fewer on a
    busy machine); calibration always measures with all of this process's cores. ``loaded``: the `LoadedModel`
    ``net`` came from; while ``net`` is still its weights file's, the plan is also filed under that file
    (`fast_plan.remember`) for a later process to find without building the network."""
    from napari_medseg.inference.fast_plan import remember

    import torch

    from napari_medseg._atomic import atomic_path
    from napari_medseg.inference.optimize import fold_batchnorm
    from napari_medseg.inference.runtimes import (available_runtimes, convert_network, make_predictor,
                                                  runtime_versions, weights_sha256)

    t0 = time.perf_counter()
    roi, in_ch = tuple(int(r) for r in card.roi_size), int(card.in_channels)
    folded = fold_batchnorm(net).to("cpu").eval()
    sha = weights_sha256(net)
    runtimes = available_runtimes()
    identity, versions, threads = cpu_identity(), runtime_versions(), cpu_threads()
    fixed = plan_fixed(sw_batch_size, amp, runtimes)
    key = plan_key(identity, versions, sha, roi, in_ch, fixed)
    path = plan_path(card.name, key)
    # another version of the same network (a fine-tune: same layers, new weights) reuses its measured choice;
    # only a conversion for the new weights (OpenVINO / ONNX Runtime) is redone
    arch_path = plan_path(card.name, plan_key(identity, versions, architecture_key(net), roi, in_ch, fixed))
    saved = None if recalibrate else load_plan(path)
    reused = None
    if saved is None and not recalibrate:
        reused = saved = load_plan(arch_path)
    notes: list[str] = []
    conv, nets = None, {False: folded}

    def torch_net(channels_last: bool):
        if channels_last not in nets:
            nets[channels_last] = copy.deepcopy(folded).to(memory_format=torch.channels_last_3d)
        return nets[channels_last]

    def build(c: Candidate, n_threads=None):
        if c.runtime == "torch":
            return TorchPredictor(torch_net(c.channels_last), c.channels_last, c.precision)
        return make_predictor(c.runtime, conv.folder, c.batch, _HINT[c.precision], n_threads or threads, c.streams)

    if saved is not None:
        chosen = Candidate(**{k: saved["chosen"][k] for k in _CONFIG if k in saved["chosen"]})
        try:
            if chosen.runtime != "torch":
                conv = convert_network(folded, roi, in_ch, sha, runtimes)
                if not conv.usable(chosen.runtime):
                    raise RuntimeError("; ".join(conv.notes) or f"{chosen.runtime} is not usable")
            pred = torch_net(chosen.channels_last) if chosen.runtime == "torch" else build(chosen, threads_now)
            if reused is not None:  # measured for another version of this network: saved for these weights too
                saved = dict(reused, key=key, weights_sha256=sha, reused_from=reused.get("weights_sha256"),
                             notes=[*reused.get("notes", []), "the plan measured for another version of this network "
                                    "(same layers, other weights) was reused"])
                with atomic_path(path, force=True) as tmp:
                    tmp.write_text(json.dumps(saved, indent=1), encoding="utf-8")
            remember(loaded, card, sha, saved)
            info = dict(saved, cached=True, calibration_s=0.0, convert_s=conv.seconds if conv else 0.0,
                        prepare_s=time.perf_counter() - t0, path=str(path))
            return pred, info
        except Exception as e:  # noqa: BLE001 (the cached choice no longer runs: measure again)
            notes.append(f"the cached plan ({chosen.label()}) could not be used ({e}); recalibrated")

    convert_s = 0.0
    usable = ["torch"]
    if any(r != "torch" for r in runtimes):
        conv = convert_network(folded, roi, in_ch, sha, runtimes)
        convert_s = conv.seconds
        notes += [n for n in conv.notes if n not in notes]
        usable = [r for r in runtimes if conv.usable(r)] or ["torch"]
    run_n = torch.get_num_threads()  # this run's count; calibration measures with all of the process's cores
    torch.set_num_threads(threads)
    try:
        pred, best, table, windows, cal_s = _calibrate(torch_net, build, folded, x, roi, sw_batch_size, amp, max_batch,
                                                       usable, notes)
    finally:
        torch.set_num_threads(run_n)
    info = {"format": 1, "key": key, "cpu": identity, "threads": threads,
            "versions": versions, "weights_sha256": sha, "roi": list(roi), "fixed": fixed,
            "chosen": asdict(best), "runtime": best.runtime, "ms_per_window": best.ms_per_window,
            "candidates": [asdict(c) for c in table], "max_abs_diff": dict(conv.max_abs_diff) if conv else {},
            "notes": notes, "calibration_input": "image" if x is not None else "synthetic",
            "calibration_windows": int(len(windows)), "calibration_s": cal_s, "convert_s": convert_s,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.parent.mkdir(parents=True, exist_ok=True)
    for target in (path, arch_path):
        with atomic_path(target, force=True) as tmp:
            tmp.write_text(json.dumps(info, indent=1), encoding="utf-8")
    remember(loaded, card, sha, info)
    info.update(cached=False, prepare_s=time.perf_counter() - t0, path=str(path))
    return pred, info


def _calibrate(torch_net, build, folded, x, roi, sw_batch_size, amp, max_batch, usable, notes):
    """Stage 1 (batch 1) and stage 2 (the best at a larger batch, OpenVINO as parallel requests).

    Returns ``(predictor, candidate, table, windows, seconds)``: the fastest working candidate and its predictor,
    every candidate measured, the calibration windows and the time it took."""
    t_cal = time.perf_counter()
    batches = [int(sw_batch_size)] if sw_batch_size else sorted({1, max(1, min(BIG_BATCH, int(max_batch)))})
    windows = calibration_windows(x, roi, max(batches))
    stage1 = [replace(c, batch=batches[0]) for c in stage1_candidates(usable, amp)]
    ref = Reference(windows, lambda: TorchPredictor(folded, False, "float32"))
    warm: list = [None]
    built = measure(stage1, build, windows, ref, warm)
    table = list(stage1)
    ok1 = sorted((c for c in stage1 if c.status == "ok"), key=lambda c: c.ms_per_window)
    if len(batches) > 1 and ok1:
        stage2 = [replace(ok1[0], batch=batches[1], ms_per_window=None, agreement=None, status="not run")]
        ov_best = next((c for c in ok1 if c.runtime == "openvino"), None)
        if ov_best is not None and ov_best.ms_per_window <= 1.25 * ok1[0].ms_per_window and cpu_threads() > 1:
            stage2.append(replace(ov_best, batch=batches[1], streams=True, ms_per_window=None, agreement=None,
                                  status="not run"))
        built2 = measure(stage2, build, windows, ref, warm)
        built.update({len(stage1) + i: p for i, p in built2.items()})
        table += stage2
    ok = [i for i, c in enumerate(table) if c.status == "ok"]
    if not ok:  # nothing ran (should not happen: PyTorch fp32 is always a candidate); the fixed plan
        notes.append("calibration found no working candidate; PyTorch fp32 is used")
        best_i, table = None, table + [Candidate("torch", status="fallback")]
    else:
        best_i = min(ok, key=lambda i: table[i].ms_per_window)
    best = table[best_i] if best_i is not None else table[-1]
    pred = built.get(best_i) if best_i is not None else None
    pred = torch_net(best.channels_last) if best.runtime == "torch" else pred
    del built
    return pred, best, table, windows, time.perf_counter() - t_cal


def format_table(info: dict) -> str:
    """The candidate table of a plan, for ``medseg plan``."""
    lines = [f"CPU: {info['cpu']['model']} ({info['cpu']['machine']}; {' '.join(info['cpu']['flags'])}), "
             f"{info['threads']} threads",
             "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
             f"weights SHA-256 {info['weights_sha256'][:16]}..., ROI {tuple(info['roi'])}, "
             f"calibrated on {info['calibration_windows']} {info['calibration_input']} window(s)", "",
             f"{'runtime':<12} {'precision':<9} {'format':<13} {'batch':>5} {'ms/window':>9} {'agreement':>9}  status"]
    for c in info["candidates"]:
        ms = f"{c['ms_per_window']:.0f}" if c.get("ms_per_window") is not None else "-"
        ag = f"{c['agreement']:.4%}" if c.get("agreement") is not None else "-"
        fmt = "channels-last" if c["channels_last"] else "parallel req." if c.get("streams") else "contiguous"
        lines.append(f"{c['runtime']:<12} {c['precision']:<9} {fmt:<13} {c['batch']:>5} {ms:>9} {ag:>9}  {c['status']}")
    ch = info["chosen"]
    lines += ["", f"chosen: {Candidate(**{k: ch[k] for k in _CONFIG if k in ch}).label()}"
              f" ({info['ms_per_window']:.0f} ms/window)" if info.get("ms_per_window") else "chosen: PyTorch fp32"]
    if info.get("max_abs_diff"):
        lines.append("conversion check (max abs diff vs PyTorch, random window): "
                     + ", ".join(f"{k} {v:.1e}" for k, v in info["max_abs_diff"].items()))
    how = (f"cached plan ({info['path']})" if info.get("cached") else
           f"calibration {info['calibration_s']:.1f} s + conversion {info['convert_s']:.1f} s; saved to {info['path']}")
    lines.append(how)
    lines += [f"note: {n}" for n in info.get("notes", [])]
    return "\n".join(lines)
