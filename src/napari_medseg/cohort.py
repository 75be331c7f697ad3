"""Cohorts: one case = read → segment → write, run in this process or as one task per case on Dask distributed.

`run_case` is the unit of work. It runs where the data is (on a Dask worker: inputs and outputs are paths on a
filesystem the workers share) and returns only a small JSON-able report entry. The model is loaded once per
process (`_model`) and reused for every case that process runs, so nothing large crosses the network.

Resumability: after a case's labels are written (atomically), a small *done record* is written beside them
(``<output folder>/.medseg_done/<output name>.json``, also atomic) with the input's fingerprint, the model's
SHA-256 and the settings. `predict_cohort(..., resume=True)` skips a case only when its output exists and its
record matches all three, so a killed run restarted with ``resume`` does only the rest, and a half-written
output (no record, or a record of other inputs/settings) never counts as done.

Faults: a case that fails with a `MedsegError` (or an I/O error) is reported as failed and not retried; the
others go on. A worker that dies (killed, out of memory) loses its running task, which Dask reschedules on
another worker (up to ``distributed.scheduler.allowed-failures`` times, then the case is reported failed with
``KilledWorker``): the cohort completes either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from napari_medseg.errors import InputError, MedsegError

DONE_DIR = ".medseg_done"
#: the settings that change a case's output (part of the done record)
SETTING_KEYS = ("overlap", "tta", "format", "series", "device", "channel_names")
#: the keys of ``settings`` that are not inference settings (the rest go into the `InferenceConfig`)
CASE_KEYS = ("format", "series", "channel_names")


# ---------------------------------------------------------------------------------------------- fingerprints
def fingerprint(path) -> str:
    """A cheap identity of an input file or folder (or of a multi-channel case, a list of them): SHA-256 over
    (relative path, size, mtime) of its files."""
    if isinstance(path, (list, tuple)):
        return hashlib.sha256("\0".join(fingerprint(p) for p in path).encode()).hexdigest()
    p = Path(path)
    if not p.exists():
        return "missing"
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        rel = f.name if f == p else str(f.relative_to(p))
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def done_record_path(output) -> Path:
    out = Path(output)
    return out.parent / DONE_DIR / f"{out.name}.json"


def is_done(case, output, model_sha256: str, settings: dict, config=None) -> bool:
    """True when ``output`` exists and its done record names this input, model and settings."""
    rec = done_record_path(output)
    if not Path(output).exists() or not rec.is_file():
        return False
    try:
        data = json.loads(rec.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (data.get("input_fingerprint") == fingerprint(case) and data.get("model_sha256") == model_sha256
            and data.get("settings") == _settings(settings, config))


def inference_config(settings: dict | None, config=None):
    """The run's `InferenceConfig`: ``config`` (or the defaults) with the inference keys of a ``settings``
    dict applied (``overlap``, ``tta``, ``device``, any other config field), for callers of the dict API."""
    from napari_medseg.inference.config import InferenceConfig

    extra = {k: v for k, v in (settings or {}).items() if k not in CASE_KEYS}
    return InferenceConfig.from_keywords(config, **extra)


def _settings(settings: dict, config=None) -> dict:
    cfg = inference_config(settings, config)
    case = {k: settings.get(k) for k in CASE_KEYS}
    return {k: case[k] if k in case else getattr(cfg, k) for k in SETTING_KEYS}


# ---------------------------------------------------------------------------------------------- one case
_MODELS: dict[str, Any] = {}


def _model(spec):
    """The model for ``spec``, loaded once per process (each Dask worker keeps its own)."""
    from napari_medseg.models import LoadedModel

    if isinstance(spec, LoadedModel):
        return spec
    key = str(spec)
    if key not in _MODELS:
        from napari_medseg.models import load_model

        _MODELS[key] = load_model(spec, lazy=True)
    return _MODELS[key]


def run_case(case, output, model_spec=None, settings: dict | None = None, force: bool = False, record: bool = True,
             progress=None, config=None) -> dict:
    """Read ``case``, segment it, write the labels to ``output`` (and, with ``record``, the done record that
    ``resume`` reads); return the report entry. ``config``: the `InferenceConfig`; ``settings``: the output
    format, DICOM series and channel names (inference keys there override ``config``, see
    `inference_config`). ``progress``: `segment`'s per-window callback.

    Never raises for a bad case: a `MedsegError`/I/O error is returned as ``status: "failed"`` (so Dask does not
    retry it). Errors of the machinery itself (a bug) still raise.
    """
    from napari_medseg._atomic import atomic_path, check_overwrite
    from napari_medseg.inference import segment
    from napari_medseg.io import read_volume, write_labels

    settings = dict(settings or {})
    config = inference_config(settings, config)
    t0 = time.perf_counter()
    multi = isinstance(case, (list, tuple))  # a multi-channel case: one image per model input channel
    entry: dict[str, Any] = {"input": str(case[0] if multi else case), "output": str(output), "status": "failed",
                             "worker": f"{socket.gethostname()}:{os.getpid()}"}
    if multi:
        entry["channels"] = [str(c) for c in case]
    try:
        check_overwrite(output, force)
        model = _model(model_spec)
        t = time.perf_counter()
        if multi:
            from napari_medseg.inference.channels import stack_channels

            volume = stack_channels(list(case), names=settings.get("channel_names"), series=settings.get("series"))
        else:
            volume = read_volume(case, series=settings.get("series"))
        read_s = time.perf_counter() - t
        res = segment(volume, model=model, config=config, progress=progress)
        t = time.perf_counter()
        write_labels(res.labels, output, reference=volume, force=force,
                     format="rtstruct" if settings.get("format") == "rtstruct" else None)
        res.timings["read"] = read_s
        res.timings["write"] = time.perf_counter() - t
        if record:
            done = {"input": str(case), "input_fingerprint": fingerprint(case), "model_sha256": model.card.weights_sha256,
                    "settings": _settings(settings, config), "output": str(output)}
            rec = done_record_path(output)
            rec.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(rec, force=True) as tmp:
                tmp.write_text(json.dumps(done, indent=1), encoding="utf-8")
        entry.update(status="ok", plan=res.plan, plan_info=res.plan_info, timings=res.timings, warnings=res.warnings,
                     stats=res.stats_table(),
                     shape=list(volume.spatial_shape), spacing=[float(s) for s in volume.spacing])
    except (MedsegError, OSError, ValueError, RuntimeError) as e:
        entry["error"] = f"{type(e).__name__}: {e}"
    entry["seconds"] = time.perf_counter() - t0
    return entry


# ---------------------------------------------------------------------------------------------- schedulers
def connect(address: str, timeout: str = "20s"):
    """A Dask `Client` for ``local``, ``local:N``, ``local:gpus`` or ``tcp://host:port``."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        raise InputError("--scheduler needs Dask distributed: pip install 'napari-medseg[dask]'") from e
    if address.startswith(("tcp://", "tls://", "ucx://")):
        try:
            return Client(address, timeout=timeout)
        except (OSError, TimeoutError) as e:
            raise InputError(f"cannot reach the Dask scheduler at {address}: {e}; is `dask scheduler` running there?") from e
    if address == "local:gpus":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as e:
            raise InputError("--scheduler local:gpus needs dask-cuda (one worker per GPU): pip install dask-cuda") from e
        with _numpy_friendly_workers():
            return Client(LocalCUDACluster(threads_per_worker=1))
    if address == "local" or address.startswith("local:"):
        n = address.partition(":")[2]
        if n and not n.isdigit():
            raise InputError(f"--scheduler {address!r}: use local, local:N (N worker processes), local:gpus or tcp://host:port")
        workers = int(n) if n else default_workers()
        if workers < 1:
            raise InputError(f"--scheduler {address!r}: the number of workers must be at least 1")
        with _numpy_friendly_workers():
            return Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"))
    raise InputError(f"--scheduler {address!r}: use local, local:N, local:gpus or tcp://host:port")


def _numpy_friendly_workers():
    """Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which keeps glibc from adapting its mmap
    threshold: every large numpy temporary becomes an mmap + page faults. A case ran 40 % slower in such a worker
    (0.95 s against 0.68 s in the plain loop, measured). Our workers start without it, unless the user sets it."""
    import dask

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        env["MALLOC_TRIM_THRESHOLD_"] = None  # None unsets it (distributed.nanny._get_env_variables)
    return dask.config.set({"distributed.nanny.pre-spawn-environ": env})


def default_workers(per_case_bytes: int = 3 << 30) -> int:
    """Worker processes for ``local``: one per core, no more than memory allows at ``per_case_bytes`` each
    (a 512² × 300-slice CT peaks at about 1.5 GB in `segment`; 3 GB leaves room)."""
    cores = os.cpu_count() or 1
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return max(1, cores)
    return max(1, min(cores, int(avail // per_case_bytes)))


# ---------------------------------------------------------------------------------------------- the cohort
def predict_cohort(cases: Iterable, outputs: Iterable, model=None, settings: dict | None = None, client=None,
                   resume: bool = False, force: bool = False, fail_fast: bool = False,
                   on_case: Callable[[dict], None] | None = None, records: bool = True, progress=None,
                   config=None) -> dict:
    """Segment every case (paths) into its output path, on ``client`` (a Dask `Client`) or in this process.

    Returns the report: ``{"cases": [entry, ...], "failed": n, "skipped": n, "seconds": s, "scheduler": ...}``
    with one entry per case in input order (``status`` ``ok``/``failed``/``skipped``, worker, timings, plan).
    ``config``: the `InferenceConfig` of every case (``settings``: format, series, channel names; its
    inference keys, the older spelling, override ``config``).
    ``resume`` skips cases already done with the same input, model and settings (see `is_done`).
    ``on_case(entry)`` is called as each case finishes (progress over cases). ``records``: write the done
    records (off for a one-file run). ``progress(n, case)``: a per-window progress callback for each case run
    in this process (closed after the case when it has ``close``).
    """
    cases = [[Path(p) for p in c] if isinstance(c, (list, tuple)) else Path(c) for c in cases]
    outputs = [Path(o) for o in outputs]
    if len(cases) != len(outputs):
        raise InputError(f"{len(cases)} case(s) but {len(outputs)} output path(s)")
    settings = dict(settings or {})
    config = inference_config(settings, config)  # bad settings fail here, before any case
    settings = {k: v for k, v in settings.items() if k in CASE_KEYS}
    from napari_medseg._guard import check_output_paths

    flat = [p for c in cases for p in (c if isinstance(c, list) else [c])]
    check_output_paths(outputs, flat)  # no output may be, or lie inside, an input (before any work)
    t0 = time.perf_counter()
    sha = _model(model).card.weights_sha256 if resume else None
    entries: list[dict | None] = [None] * len(cases)
    todo = []
    for n, (case, out) in enumerate(zip(cases, outputs)):
        if resume and is_done(case, out, sha, settings, config):
            entries[n] = {"input": str(case[0] if isinstance(case, list) else case), "output": str(out),
                          "status": "skipped", "reason": "done (resume)"}
            if on_case:
                on_case(entries[n])
        else:
            todo.append(n)
    # a case being redone with --resume replaces its own earlier (partial or stale) output
    redo_force = force or resume
    if client is None:
        for n in todo:
            bar = progress(n + 1, cases[n]) if progress else None
            try:
                entries[n] = run_case(cases[n], outputs[n], model, settings, redo_force, records, bar, config)
            finally:
                if hasattr(bar, "close"):
                    bar.close()
            if on_case:
                on_case(entries[n])
            if fail_fast and entries[n]["status"] == "failed":
                break
    else:
        _run_distributed(client, cases, outputs, todo, entries, model, settings, redo_force, records, fail_fast, on_case,
                         config)
    report = {"cases": [e for e in entries if e is not None], "seconds": time.perf_counter() - t0,
              "scheduler": _describe(client)}
    report["failed"] = sum(e["status"] == "failed" for e in report["cases"])
    report["skipped"] = sum(e["status"] == "skipped" for e in report["cases"])
    return report


def _run_distributed(client, cases, outputs, todo, entries, model, settings, force, records, fail_fast, on_case, config):
    from dask.distributed import as_completed

    futures = {}
    for n in todo:
        # pure=False: a case is a side effect (a file), never deduplicated or cached by Dask
        case = [str(p) for p in cases[n]] if isinstance(cases[n], list) else str(cases[n])
        fut = client.submit(run_case, case, str(outputs[n]), model, settings, force, records, None, config, pure=False,
                            key=f"medseg-case-{n}-{os.urandom(4).hex()}")
        futures[fut] = n
    for fut in as_completed(list(futures)):
        n = futures[fut]
        try:
            entry = fut.result()
        except Exception as e:  # noqa: BLE001 - KilledWorker, a crashed task: this case failed, the others go on
            entry = {"input": str(cases[n][0] if isinstance(cases[n], list) else cases[n]), "output": str(outputs[n]),
                     "status": "failed", "error": f"{type(e).__name__}: {e}"}
        entries[n] = entry
        if on_case:
            on_case(entry)
        if fail_fast and entry["status"] == "failed":
            for other in futures:
                other.cancel()
            break


def _describe(client) -> dict | None:
    if client is None:
        return None
    try:
        workers = client.scheduler_info().get("workers", {})
    except Exception:  # noqa: BLE001 - only informative
        workers = {}
    return {"address": getattr(client, "scheduler", None) and client.scheduler.address, "workers": len(workers),
            "dashboard": getattr(client, "dashboard_link", None)}
