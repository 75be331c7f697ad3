"""Learning from few slices on real data: train a new model from scratch on N labelled axial slices.

On ../shared/data/ct_abdomen_3mm: the liver (TotalSegmentator value 5) from 5 axial slices spread over the
organ, the spleen (value 1) from 3. Prints the Dice on every *other* axial slice of the volume (false
positives on organ-free slices count), wall time, and a time/Dice curve: the held-out corrected slice's
Dice during training (from `FinetuneResult.history`) and, with ``--budgets``, the all-other-slices Dice of
separate runs with growing time budgets.

    python benchmarks/finetune_few_slices.py --organ liver --n 5 --budget 300
    python benchmarks/finetune_few_slices.py --organ spleen --n 3 --budget 300
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ORGANS = {"liver": 5, "spleen": 1}


def spread_slices(mask: np.ndarray, n: int) -> list[int]:
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    lo, hi = ks.min(), ks.max()
    return [int(round(lo + (hi - lo) * (i + 0.5) / n)) for i in range(n)]


def dice(a, b) -> float:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def run(image, labels, slices, budget, threads, holdout):
    from napari_medseg.inference import segment
    from napari_medseg.training.config import FinetuneConfig
    from napari_medseg.training.finetune import finetune

    base = FinetuneConfig()
    tcfg = dataclasses.replace(base.train, steps=100000, time_budget_s=budget, num_threads=threads, val_every=25)
    cfg = dataclasses.replace(base, train=tcfg, **({} if holdout is None else {"holdout": holdout}))
    t0 = time.perf_counter()
    res = finetune(image, labels, [(0, k) for k in slices], from_scratch=True, name="bench", config=cfg)
    t_train = time.perf_counter() - t0
    t1 = time.perf_counter()
    pred = segment(image, model=res.model_path, device="cpu").labels.array == 1
    t_seg = time.perf_counter() - t1
    gt = labels.array == 1
    other = [k for k in range(gt.shape[0]) if k not in slices]
    return res, dice(pred[other], gt[other]), t_train, t_seg


def main(argv=None):
    import torch

    from napari_medseg.io import read_volume

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--organ", choices=sorted(ORGANS), default="liver")
    ap.add_argument("--n", type=int, default=5, help="labelled axial slices")
    ap.add_argument("--budget", type=float, default=280.0, help="training time budget (s); 0: only --budgets")
    ap.add_argument("--budgets", default="", help="extra runs with these budgets for the curve, e.g. 60,120")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--holdout", type=int, default=None, help="held-out slices (default: auto)")
    args = ap.parse_args(argv)
    os.environ.setdefault("MEDSEG_HOME", tempfile.mkdtemp(prefix="medseg-bench-"))
    torch.manual_seed(0)

    img = read_volume(args.data / "ct_abdomen_3mm" / "ct.nii.gz")
    lab = read_volume(args.data / "ct_abdomen_3mm" / "labels.nii.gz")
    organ = (lab.array == ORGANS[args.organ]).astype(np.uint8)
    labels = lab.with_array(organ, classes={0: "background", 1: args.organ})
    slices = spread_slices(organ.astype(bool), args.n)
    print(f"{args.organ}: {args.n} labelled axial slices k={slices} of {organ.shape[0]}; threads={args.threads}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    points = []
    for b in [float(x) for x in args.budgets.split(",") if x.strip()]:
        _, d, t, _ = run(img, labels, slices, b, args.threads, args.holdout)
        points.append((t, d))
        print(f"  budget {b:>5.0f}s: trained {t:6.1f}s  Dice(other slices) {d:.3f}", flush=True)
    if args.budget <= 0:  # only the --budgets runs
        return
    res, d, t_train, t_seg = run(img, labels, slices, args.budget, args.threads, args.holdout)
    points.append((t_train, d))
    steps = res.history[-1]["step"]
    print(f"held-out check: {res.check} slices {res.heldout_slices}; {res.summary()}")
    print("time/Dice curve on the held-out corrected slice (s, step, Dice):")
    for h in res.history:
        if h.get("val_dice") is not None:
            print(f"  {h['time_s']:7.1f}  {h['step']:5d}  {h['val_dice']:.3f}")
    print("time/Dice curve on all other slices (train s, Dice):", ", ".join(f"({t:.0f}, {v:.3f})" for t, v in points))
    print(f"RESULT {args.organ} n={args.n}: Dice on all {organ.shape[0] - args.n} other axial slices = {d:.3f} "
          f"after {t_train:.0f} s training ({steps} steps) + {t_seg:.1f} s segmentation; "
          f"goal >= 0.85 within 300 s: {'MET' if d >= 0.85 and t_train <= 300 else 'NOT MET'}")


if __name__ == "__main__":
    main()
