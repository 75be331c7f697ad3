"""Cohorts on Dask distributed: real LocalClusters with 2 worker processes on loopback, a separately started
`dask scheduler` + `dask worker`, resume, a killed worker, a corrupt case."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from napari_medseg.cli import main
from napari_medseg.cohort import connect, done_record_path, fingerprint, predict_cohort
from napari_medseg.errors import InputError
from napari_medseg.io import read_volume, write_volume
from napari_medseg.models import ClassInfo, ModelCard, build_network, save_model_package
from napari_medseg.volume import Volume

distributed = pytest.importorskip("distributed", reason="the [dask] extra is part of the test environment")
pytestmark = pytest.mark.slow


@pytest.fixture
def model_path(tmp_path):
    card = ModelCard(name="cohort-tiny", arch_args=dict(spatial_dims=3, channels=(4, 8), strides=(2,), num_res_units=1),
                     classes=[ClassInfo(1, "a"), ClassInfo(2, "b")], roi_size=(16, 16, 16), spacing=(1.5, 1.5, 1.5))
    torch.manual_seed(3)
    return save_model_package(build_network(card), card, tmp_path / "model")


def _cases(folder, n, shape=(20, 28, 26)):
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        vol = Volume((rng.normal(size=shape) * 200).astype(np.int16), (1.2, 1.1, 2.0), (4.0 * i, -3.0, 9.0))
        paths.append(write_volume(vol, folder / f"case{i:02d}.nii.gz"))
    return paths


def _outputs(out, cases):
    return [out / p.name.replace(".nii.gz", "_seg.nii.gz") for p in cases]


@pytest.fixture(scope="module")
def client():
    c = connect("local:2")
    yield c
    c.close()
    c.cluster.close()


def test_distributed_outputs_equal_the_plain_run_and_a_corrupt_case_fails_alone(tmp_path, model_path, client):
    cases = _cases(tmp_path / "cases", 4)
    (tmp_path / "cases" / "corrupt.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    cases.append(tmp_path / "cases" / "corrupt.nii.gz")
    plain = predict_cohort(cases, _outputs(tmp_path / "plain", cases), model=model_path, settings={"device": "cpu"})
    dist = predict_cohort(cases, _outputs(tmp_path / "dist", cases), model=str(model_path), settings={"device": "cpu"},
                          client=client)
    for report in (plain, dist):
        assert [c["status"] for c in report["cases"]] == ["ok"] * 4 + ["failed"]
        assert report["failed"] == 1 and "corrupt.nii.gz" in report["cases"][-1]["input"]
    assert len({c["worker"] for c in dist["cases"][:4]}) == 2  # both worker processes took cases
    assert dist["scheduler"]["workers"] == 2
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:  # Dask's default made numpy-heavy cases 40 % slower
        assert set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {None}
    for a, b in zip(_outputs(tmp_path / "plain", cases[:4]), _outputs(tmp_path / "dist", cases[:4])):
        la, lb = read_volume(a), read_volume(b)
        assert la.same_grid(lb) and np.array_equal(la.array, lb.array)
    assert {"read", "inference", "write"} <= set(dist["cases"][0]["timings"]) and dist["cases"][0]["plan"]


def test_resume_does_only_the_missing_or_changed_cases(tmp_path, model_path, client):
    cases = _cases(tmp_path / "cases", 4)
    outs = _outputs(tmp_path / "out", cases)
    settings = {"device": "cpu", "overlap": 0.25}
    first = predict_cohort(cases[:2], outs[:2], model=str(model_path), settings=settings, client=client)  # "interrupted"
    assert first["failed"] == 0
    stamp = {o: o.stat().st_mtime_ns for o in outs[:2]}
    done = []
    again = predict_cohort(cases, outs, model=str(model_path), settings=settings, client=client, resume=True,
                           on_case=lambda e: done.append(e["status"]))
    assert [c["status"] for c in again["cases"]] == ["skipped", "skipped", "ok", "ok"] and again["skipped"] == 2
    assert sorted(done) == ["ok", "ok", "skipped", "skipped"]
    assert all(o.stat().st_mtime_ns == stamp[o] for o in outs[:2])  # not rewritten
    # a changed input, other settings, or an output without its done record are redone
    old = read_volume(cases[0])
    cases[0].unlink()  # the user replaces an input with other data (never us: inputs are never written)
    write_volume(Volume(old.array + 1, old.spacing, old.origin, old.direction), cases[0])
    done_record_path(outs[1]).unlink()
    third = predict_cohort(cases, outs, model=str(model_path), settings=settings, client=client, resume=True)
    assert [c["status"] for c in third["cases"]] == ["ok", "ok", "skipped", "skipped"]
    other = predict_cohort(cases, outs, model=str(model_path), settings={**settings, "overlap": 0.5}, client=None,
                           resume=True)
    assert [c["status"] for c in other["cases"]] == ["ok"] * 4
    rec = json.loads(done_record_path(outs[2]).read_text())
    assert rec["input_fingerprint"] == fingerprint(cases[2]) and rec["settings"]["overlap"] == 0.5


def test_a_worker_killed_mid_run_and_the_cohort_still_completes(tmp_path, model_path):
    cases = _cases(tmp_path / "cases", 8, shape=(40, 60, 56))
    outs = _outputs(tmp_path / "out", cases)
    c = connect("local:2")
    try:
        pids = c.run(os.getpid)  # worker address -> process id
        finished, killed = [], []

        def kill_a_busy_worker():
            deadline = time.time() + 300
            while not finished and time.time() < deadline:
                time.sleep(0.05)
            while time.time() < deadline:
                busy = [w for w, tasks in c.processing().items() if tasks and w in pids]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(busy[0])
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
        killer.start()
        report = predict_cohort(cases, outs, model=str(model_path), settings={"device": "cpu"}, client=c,
                                on_case=finished.append)
        killer.join(10)
    finally:
        c.close()
        c.cluster.close()
    assert killed, "no worker was busy to kill"
    assert [e["status"] for e in report["cases"]] == ["ok"] * 8, report
    assert all(o.is_file() for o in outs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_on_a_separately_started_scheduler_and_worker(tmp_path, model_path):
    cases = _cases(tmp_path / "cases", 3)
    port = _free_port()
    env = dict(os.environ)
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    sched = subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}",
                               "--nthreads", "1", "--no-nanny", "--no-dashboard"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = tmp_path / "out"
        rc = main(["predict", str(tmp_path / "cases"), "-o", str(out), "--model", str(model_path), "--device", "cpu",
                   "--scheduler", f"tcp://127.0.0.1:{port}", "--quiet"])
        assert rc == 0
        report = json.loads((out / "medseg_predict_report.json").read_text())
        assert report["scheduler"]["address"] == f"tcp://127.0.0.1:{port}"
        assert [c["status"] for c in report["cases"]] == ["ok"] * 3
        assert {c["worker"].split(":")[1] for c in report["cases"]} == {str(worker.pid)}
        # --resume through the CLI: nothing left to do
        rc = main(["predict", str(tmp_path / "cases"), "-o", str(out), "--model", str(model_path), "--device", "cpu",
                   "--scheduler", f"tcp://127.0.0.1:{port}", "--quiet", "--resume"])
        report = json.loads((out / "medseg_predict_report.json").read_text())
        assert rc == 0 and report["skipped"] == 3
    finally:  # a Dask worker's graceful close on SIGTERM can take over 30 s on a loaded machine: then kill it
        for p in (worker, sched):
            p.terminate()
        for p in (worker, sched):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(30)


def test_bad_scheduler_addresses_are_clear_errors():
    for bad in ("locl", "local:x", "local:0"):
        with pytest.raises(InputError, match="scheduler"):
            connect(bad)
    with pytest.raises(InputError, match="cannot reach the Dask scheduler"):
        connect(f"tcp://127.0.0.1:{_free_port()}", timeout="2s")


def test_an_output_inside_an_input_folder_is_refused_before_any_work(tmp_path, model_path):
    from napari_medseg.errors import OutputOverInputError

    cases = _cases(tmp_path / "cases", 1)
    with pytest.raises(OutputOverInputError):
        predict_cohort([tmp_path / "cases"], [tmp_path / "cases" / "seg.nii.gz"], model=model_path)
    with pytest.raises(OutputOverInputError):
        predict_cohort(cases, [cases[0]], model=model_path, force=True)
    assert sorted(p.name for p in (tmp_path / "cases").iterdir()) == ["case00.nii.gz"]
