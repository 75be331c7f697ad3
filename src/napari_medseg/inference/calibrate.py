"""The measuring CPU planner: time a few windows per candidate once per machine and model, cache the best plan.

Candidates are (runtime, precision, memory format, batch size): PyTorch (fp32 contiguous, fp32 channels-last,
bf16/fp16 autocast + channels-last where oneDNN supports them on this CPU), OpenVINO (f32, and bf16/f16 where its
CPU plugin offers them) and ONNX Runtime (f32), whichever are installed. Stage 1 times each at batch 1: one warm-up
call, then one or two timed calls (a second only when the first was short and within `PRUNE` x the best; none
when the warm-up alone was far slower than the best). Stage 2 times the best at a larger batch, and the best
OpenVINO candidate with the batch's windows as parallel requests. A reduced precision is eligible only if its
argmax agrees with fp32 on >= `MIN_AGREEMENT` of the calibration voxels. The plan is a JSON file under
``<cache>/plans/`` keyed by the CPU (model name + instruction-set flags), the library versions, the SHA-256 of
the network's weights, the ROI and any fixed batch/precision, written atomically; later runs reuse it.

``MEDSEG_CALIBRATE=0`` (or ``calibrate=False``) disables measuring and conversion: the fixed PyTorch plan of
`planner.plan_run` is used as is.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path


PLAN_FORMAT = 2
MIN_AGREEMENT = 0.999
PRUNE = 3.0
PRUNE_SECONDS = 0.5
BIG_BATCH = 4
_FLAG_RE = re.compile(r"^(avx\d*|avx512\w*|avx_vnni\w*|amx\w*|fma|f16c|sse4_2|neon|asimd\w*|sve\w*)$")
_HINT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def calibration_enabled(calibrate: bool | None = None) -> bool:
    if calibrate is not None:
        return bool(calibrate)
    return os.environ.get("MEDSEG_CALIBRATE", "1").strip().lower() not in ("0", "false", "no", "off")


def cpu_threads() -> int:
    """Cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(float(quota) / float(period) + 0.5)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _own_running_threads() -> int:
    """Threads of this process in state R (running or runnable) right now; 1 where /proc is not readable."""
    n = 0
    try:
        for task in Path("/proc/self/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2:].startswith("R"):
                n += 1
    except OSError:
        return 1
    return max(1, n)


def busy_cores(samples: int = 3, interval_s: float = 0.005) -> float:
    """Cores other processes keep busy now: the smaller of the 1-minute load average and the median number of
    runnable tasks of other processes over a few samples (``/proc/loadavg``); 0.0 where neither is known.

    Taking the smaller of a one-minute average and an instantaneous count keeps a short burst, or a load that
    has just ended, from halving a run's threads."""
    counts, load1 = [], 0.0
    for i in range(max(1, samples)):
        try:
            fields = Path("/proc/loadavg").read_text().split()
            load1 = float(fields[0])
            counts.append(int(fields[3].split("/")[0]) - _own_running_threads())
        except (OSError, ValueError, IndexError):
            break
        if i + 1 < samples:
            time.sleep(interval_s)
    if not counts:
        try:
            return max(0.0, float(os.getloadavg()[0]))
        except (AttributeError, OSError):
            return 0.0
    others = float(sorted(counts)[len(counts) // 2])
    return max(0.0, min(load1, others))


def run_threads(planned: int) -> tuple[int, str | None]:
    """Threads for a run that would use ``planned``: fewer when other processes keep cores busy, and a note saying so.

    OpenMP/oneDNN threads wait for each other at every layer; when another process holds one of the cores, a
    2-thread run goes at the speed of its slower thread and spends the rest spinning (measured: the chest CT's
    network stage took 36 s with 2 threads and 12 s with 1 at load average 7.8 on 2 cores). ``MEDSEG_THREADS=N``
    fixes the count (no adaptation)."""
    fixed = os.environ.get("MEDSEG_THREADS", "").strip()
    if fixed:
        try:
            n = int(fixed)
        except ValueError:
            n = 0
        if n < 1:
            from napari_medseg.errors import InputError

            raise InputError(f"MEDSEG_THREADS={fixed!r} is not a positive whole number of threads; set it to e.g. "
                             f"MEDSEG_THREADS={cpu_threads()} (this machine's cores) or unset it to let the planner choose")
        return n, None
    planned = max(1, int(planned))
    if planned == 1:
        return 1, None
    busy = busy_cores()
    free = int(cpu_threads() - busy + 0.5)
    n = max(1, min(planned, free))
    if n < planned:
        return n, (f"of {planned}: other processes keep about {busy:.1f} of the {cpu_threads()} cores busy; "
                   "MEDSEG_THREADS=N fixes the count")
    return n, None


def cpu_identity() -> dict:
    """Model name and the instruction-set flags that decide kernel choice (AVX2, AVX-512*, AMX*, ...)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware") and name in ("", platform.machine(), platform.processor()):
                    name = val.strip()
                elif key in ("flags", "features") and not flags:
                    flags = {t for t in val.split() if _FLAG_RE.match(t)}
    except OSError:
        pass
    out = {"model": name, "machine": platform.machine(), "flags": sorted(flags)}
    cap = isa_cap()
    if cap:
        out["isa_cap"] = cap
    return out


#: oneDNN ISA levels (``ONEDNN_MAX_CPU_ISA``) from which bf16 / fp16 kernels exist
_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512",
              "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL", "DEFAULT")
_FP16_ISAS = ("AVX512_CORE_FP16", "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16",
              "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL", "DEFAULT")


def isa_cap() -> str | None:
    """The instruction-set cap the user set for oneDNN (``ONEDNN_MAX_CPU_ISA`` or ``DNNL_MAX_CPU_ISA``), upper case.

    PyTorch's and OpenVINO's CPU kernels both honour it, but their capability probes read the CPU itself: a
    bf16 candidate under ``ONEDNN_MAX_CPU_ISA=AVX2`` would be emulated (20x slower in PyTorch) or fail (OpenVINO).
    The planner therefore keeps reduced precisions out when the cap excludes them, and the cap is part of the plan's
    key, so a plan measured without it is never reused under it."""
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        val = os.environ.get(var, "").strip().upper()
        if val:
            return val
    return None


def isa_allows(precision: str) -> bool:
    """False when the oneDNN ISA cap rules out ``precision``'s kernels ("bfloat16"/"float16"); fp32 always runs."""
    cap = isa_cap()
    if cap is None or precision == "float32":
        return True
    return cap in (_BF16_ISAS if precision == "bfloat16" else _FP16_ISAS)


@dataclass
class Candidate:
    runtime: str
    precision: str = "float32"
    channels_last: bool = False
    batch: int = 1
    streams: bool = False  # OpenVINO: the batch's windows as parallel requests (THROUGHPUT hint)
    ms_per_window: float | None = None
    agreement: float | None = None  # argmax agreement with fp32 on the calibration windows (reduced precisions)
    status: str = "not run"  # ok / pruned / rejected: ... / failed: ...

    def label(self) -> str:
        fmt = ", channels-last" if self.channels_last else ", parallel requests" if self.streams else ""
        return f"{self.runtime} {self.precision}{fmt}, batch {self.batch}"


def torch_precisions() -> list[str]:
    import torch

    out = []
    for name, probe in (("bfloat16", "_is_mkldnn_bf16_supported"), ("float16", "_is_mkldnn_fp16_supported")):
        try:
            if bool(getattr(torch.ops.mkldnn, probe)()) and isa_allows(name):
                out.append(name)
        except Exception:  # noqa: BLE001
            pass
    return out


def stage1_candidates(runtimes: list[str], amp: bool | None) -> list[Candidate]:
    """Batch-1 candidates, converted-runtime fp32 first (they are the fp32 reference and usually fast)."""
    from napari_medseg.inference.runtimes import openvino_precisions

    def keep(prec):
        return amp is None or (prec == "float32") != bool(amp)

    ov_red = [{"bf16": "bfloat16", "f16": "float16"}[p] for p in openvino_precisions()] if "openvino" in runtimes else []
    ov_red = [p for p in ov_red if isa_allows(p)]
    cands = []
    if "openvino" in runtimes:
        cands.append(Candidate("openvino"))
    if "onnxruntime" in runtimes:
        cands.append(Candidate("onnxruntime"))
    cands += [Candidate("openvino", p) for p in ov_red]
    if "torch" in runtimes:
        cands += [Candidate("torch", p, True) for p in torch_precisions()]
        cands += [Candidate("torch", "float32", True), Candidate("torch", "float32", False)]
    kept = [c for c in cands if keep(c.precision)]
    return kept or [c for c in cands if c.precision == "float32"]


class TorchPredictor:
    """What `sliding._predict` does for a network: memory format, autocast, inference mode."""

    def __init__(self, net, channels_last: bool, precision: str):
        import torch

        self.net, self.channels_last = net, channels_last
        self.dtype = None if precision == "float32" else getattr(torch, precision)

    def __call__(self, x):
        import contextlib

        import torch

        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        amp = torch.autocast("cpu", dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), amp:
            y = self.net(x)
        return (y[0] if isinstance(y, (list, tuple)) else y).float()


def plan_key(identity: dict, versions: dict, sha: str, roi, in_channels: int, fixed: dict) -> str:
    blob = json.dumps({"format": PLAN_FORMAT, "cpu": identity, "threads": cpu_threads(), "versions": versions,
                       "sha256": sha, "roi": list(map(int, roi)), "in": int(in_channels), "fixed": fixed},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def plan_path(card_name: str, key: str, root: Path | None = None) -> Path:
    from napari_medseg.inference.runtimes import cache_dir

    folder = (root or cache_dir()) / "plans"
    for existing in folder.glob(f"*-{key[:20]}.json"):  # the same weights under another name share the plan
        return existing
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(card_name or "model"))[:60]
    return folder / f"{safe}-{key[:20]}.json"


def calibration_windows(x, roi, n: int):
    """``n`` windows ``[n, C, *roi]`` from the middle of the model input ``x`` ``[C, i, j, k]`` (synthetic smooth
    noise in [0, 1] when ``x`` is None), so calibration sees the run's own data."""
    import torch
    import torch.nn.functional as F

    from napari_medseg.inference.sliding import SlidingWindow

    roi = tuple(int(r) for r in roi)
    if x is None:
        g = torch.Generator().manual_seed(0)
        noise = torch.rand((n, 1, *roi), generator=g)
        return F.avg_pool3d(noise, 5, stride=1, padding=2).clamp_(0, 1)
    x = x.detach().to("cpu", torch.float32)
    pad = []
    for s, r in zip(reversed(x.shape[1:]), reversed(roi)):
        d = max(r - int(s), 0)
        pad += [d // 2, d - d // 2]
    if any(pad):
        x = F.pad(x, pad)
    starts = SlidingWindow(roi, 0.25).window_starts(tuple(x.shape[1:]))
    mid = len(starts) // 2
    pick = [starts[min(len(starts) - 1, max(0, mid - n // 2 + i))] for i in range(n)]
    return torch.stack([x[:, i:i + roi[0], j:j + roi[1], k:k + roi[2]] for i, j, k in pick])


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


class Reference:
    """fp32 outputs on the calibration windows: kept from the first exact fp32 candidate, or computed on demand
    by the fastest fp32 predictor measured so far (PyTorch fp32 when none was)."""

    def __init__(self, windows, fallback):
        self.windows, self.fallback, self.y, self.pred, self.ms = windows, fallback, None, None, None

    def offer(self, c: Candidate, pred, y):
        if c.precision == "float32" and (self.ms is None or c.ms_per_window < self.ms):
            self.pred, self.ms = pred, c.ms_per_window
        if c.precision == "float32" and (self.y is None or len(y) > len(self.y)):
            self.y = y

    def __call__(self, n: int):
        if self.y is None or len(self.y) < n:
            self.y = (self.pred or self.fallback())(self.windows[:n])
        return self.y[:n]


def measure(cands: list[Candidate], build, windows, reference: Reference, best: list | None = None) -> dict:
    """Time each candidate in place (one warm-up call, one timed call, a second timed call when it is short and
    could win); returns the built predictors of those that ran, by index. ``best`` ([ms]) is the fastest per
    window so far, shared between stages. A candidate whose warm-up alone is over `PRUNE` times the best time
    and over `PRUNE_SECONDS` is not timed further: a first call costs more than later ones (PyTorch pays most, up
    to several times its steady time on small networks, which `PRUNE_SECONDS` exempts), but only ~1.1-1.5x on a
    network big enough for the saving to matter."""
    built = {}
    best = best if best is not None else [None]
    for idx, c in enumerate(cands):
        try:
            pred = build(c)
            win = windows[:c.batch]
            y, warm = _timed(pred, win)
            if best[0] is not None and warm > PRUNE_SECONDS and warm * 1000 / c.batch > PRUNE * best[0]:
                c.ms_per_window = warm * 1000 / c.batch
                c.status = f"pruned: its warm-up alone took {c.ms_per_window / best[0]:.1f}x the best's time"
                continue
            y, t1 = _timed(pred, win)
            ms = t1 * 1000 / c.batch
            if t1 < 0.25 and (best[0] is None or ms < PRUNE * best[0]):
                ms = min(ms, _timed(pred, win)[1] * 1000 / c.batch)
            c.ms_per_window = ms
        except Exception as e:  # noqa: BLE001 (a runtime that cannot run this network is just not a candidate)
            c.status = f"failed: {type(e).__name__}: {str(e)[:160]}"
            continue
        reference.offer(c, pred, y)
        if c.precision != "float32":
            ref = reference(c.batch)
            c.agreement = float((y.argmax(1) == ref.argmax(1)).float().mean())
            if c.agreement < MIN_AGREEMENT:
                c.status = f"rejected: argmax agreement {c.agreement:.4%} < {MIN_AGREEMENT:.1%}"
                continue
        c.status = "ok"
        built[idx] = pred
        best[0] = c.ms_per_window if best[0] is None else min(best[0], c.ms_per_window)
    return built
