"""Threads and batch size for fine-tuning on a CPU, chosen by the same measuring planner (training stays PyTorch).

`plan_training` times one training step (forward + backward on a private copy of the network, so BatchNorm
statistics and gradients of the real one are untouched) at each candidate thread count, caps the batch size by
available memory, and caches the result under ``<cache>/plans/`` keyed by the CPU, library versions, the network's
shape (parameter names and shapes: speed does not depend on the weights' values), the patch and the batch size.
`apply_training_plan(net, config)` is the one call the training loop makes.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time

import numpy as np

#: training keeps ~this many float32 copies of a full-resolution feature map per patch voxel and first-layer channel
TRAIN_BYTES_FACTOR = 4 * 24
TRAIN_MEMORY_SHARE = 0.5


def _first_conv(net):
    from torch import nn

    return next((m for m in net.modules() if isinstance(m, (nn.Conv3d, nn.Conv2d))), None)


def memory_batch(net, patch, want: int) -> int:
    from napari_medseg.inference.planner import host_available_bytes

    conv = _first_conv(net)
    c0 = max(int(conv.out_channels) if conv is not None else 16, 8)
    per_sample = int(np.prod(patch)) * c0 * TRAIN_BYTES_FACTOR
    fit = int(host_available_bytes() * TRAIN_MEMORY_SHARE // max(per_sample, 1))
    return max(1, min(int(want), fit))


def _step_seconds(net, x, threads: int) -> float:
    import torch

    torch.set_num_threads(int(threads))
    times = []
    for _ in range(2):  # warm-up, then the timed step
        t = time.perf_counter()
        out = net(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        out.float().square().mean().backward()
        net.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return times[-1]


def plan_training(net, patch_size, batch_size: int, calibrate: bool | None = None) -> dict:
    """``{"threads", "batch_size", "measured", "table", ...}`` for training ``net`` on ``patch_size`` patches."""
    import torch

    from napari_medseg._atomic import atomic_path
    from napari_medseg.inference.calibrate import calibration_enabled, cpu_identity, cpu_threads
    from napari_medseg.inference.runtimes import cache_dir, runtime_versions

    n = cpu_threads()
    batch = memory_batch(net, patch_size, batch_size)
    plan = {"threads": n, "batch_size": batch, "measured": False, "table": []}
    candidates = sorted({n, max(1, n // 2)}, reverse=True)
    if not calibration_enabled(calibrate) or len(candidates) < 2:
        return plan
    shape = hashlib.sha256("|".join(f"{k}:{tuple(v.shape)}" for k, v in net.state_dict().items()).encode()).hexdigest()
    key = hashlib.sha256(json.dumps({"cpu": cpu_identity(), "n": n, "versions": runtime_versions(), "net": shape,
                                     "patch": list(map(int, patch_size)), "batch": batch}, sort_keys=True).encode())
    path = cache_dir() / "plans" / f"train-{key.hexdigest()[:20]}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(cached, dict) and int(cached.get("threads", 0)) >= 1:
            return dict(cached, cached=True)
    except (OSError, ValueError):
        pass
    conv = _first_conv(net)
    c_in = int(conv.in_channels) if conv is not None else 1
    dims = 3 if conv is None or conv.weight.dim() == 5 else 2
    t0 = time.perf_counter()
    probe = copy.deepcopy(net).train()
    x = torch.rand((batch, c_in, *map(int, patch_size[:dims])), generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    try:
        table = [{"threads": t, "seconds_per_step": _step_seconds(probe, x, t)} for t in candidates]
    finally:
        torch.set_num_threads(before)
    best = min(table, key=lambda r: r["seconds_per_step"])
    plan.update(threads=int(best["threads"]), measured=True, table=table, calibration_s=time.perf_counter() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, force=True) as tmp:
        tmp.write_text(json.dumps(plan, indent=1), encoding="utf-8")
    return dict(plan, cached=False)


def apply_training_plan(net, config):
    """Set torch's threads from the plan (unless ``config.num_threads`` is given; fewer when other processes keep
    cores busy now, `calibrate.run_threads`) and cap the batch size by memory; returns the config to train with.
    ``MEDSEG_CALIBRATE=0`` keeps torch's defaults."""
    import torch

    from napari_medseg.inference.calibrate import calibration_enabled, run_threads

    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
        return config
    if not calibration_enabled():
        return config
    plan = plan_training(net, config.patch_size, config.batch_size)
    threads, _why = run_threads(int(plan["threads"]))  # fewer on a busy machine (OpenMP threads wait for each other)
    torch.set_num_threads(threads)
    if plan["batch_size"] < config.batch_size:
        config = dataclasses.replace(config, batch_size=int(plan["batch_size"]))
    return config
