"""Cohort throughput: cases per minute in this process (the plain loop) and on Dask LocalClusters of 1 and 2
worker processes, one thread each, and the per-case overhead of the distributed path against the plain loop.

    python benchmarks/cohort_scaling.py [--cases 6] [--model default] [--shape 48 160 160]

Cases are sample phantoms (different seeds) written to a temporary folder. The plain loop runs with one torch
thread, like each worker, so "overhead" compares like with like: (1-worker Dask time - plain time) / cases.
Worker start-up (process spawn, imports, model load) is timed separately: it is paid once per worker.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--model", default="default")
    ap.add_argument("--shape", type=int, nargs=3, default=None, metavar=("K", "J", "I"))
    args = ap.parse_args(argv)

    import torch

    from napari_medseg.cohort import connect, predict_cohort
    from napari_medseg.io import write_volume
    from napari_medseg.models import load_model
    from napari_medseg.sample import make_phantom

    tmp = Path(tempfile.mkdtemp(prefix="medseg-cohort-bench-"))
    kw = {"shape": tuple(args.shape)} if args.shape else {}
    cases = [write_volume(make_phantom(seed=s, **kw)[0], tmp / "cases" / f"case{s:02d}.nii.gz") for s in range(args.cases)]
    model_path = str(load_model(args.model).path)
    settings = {"device": "cpu"}

    def outs(name):
        return [tmp / name / c.name.replace(".nii.gz", "_seg.nii.gz") for c in cases]

    torch.set_num_threads(1)
    predict_cohort(cases[:1], outs("warm")[:1], model=model_path, settings=settings)  # imports, model load
    t = time.perf_counter()
    plain = predict_cohort(cases, outs("plain"), model=model_path, settings=settings)
    plain_s = time.perf_counter() - t
    per_case = plain_s / len(cases)
    print(f"input: {len(cases)} phantom cases of shape {kw.get('shape', 'default')}; model {args.model}")
    print(f"plain loop, 1 thread: {plain_s:.1f} s = {60 * len(cases) / plain_s:.1f} cases/min ({per_case:.2f} s/case)")
    rows = {}
    for workers in (1, 2):
        t = time.perf_counter()
        client = connect(f"local:{workers}")
        predict_cohort(cases[:workers], outs(f"warm{workers}")[:workers], model=model_path, settings=settings,
                       client=client)
        start_s = time.perf_counter() - t
        t = time.perf_counter()
        rep = predict_cohort(cases, outs(f"dask{workers}"), model=model_path, settings=settings, client=client)
        run_s = time.perf_counter() - t
        client.close()
        client.cluster.close()
        assert rep["failed"] == 0, rep
        rows[workers] = run_s
        print(f"Dask local:{workers} (1 thread each): {run_s:.1f} s = {60 * len(cases) / run_s:.1f} cases/min; "
              f"start-up + first case per worker {start_s:.1f} s")
    overhead = (rows[1] - plain_s) / len(cases)
    print(f"per-case overhead of the distributed path (1 worker vs plain loop): {overhead:+.2f} s "
          f"= {100 * overhead / per_case:+.1f} % of a {per_case:.1f} s case (goal <= 5 %)")
    print(f"scaling 1 -> 2 workers: {rows[1] / rows[2]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
