"""The issue-18 walk on the real chest CT, headless: erase the default model's "liver" on the heart, fine-tune.

The default model calls the lower heart "liver" (it rests on the liver dome). The user erases that false
positive (liver and liver tumour) on axial slices through the heart — none of them holds real liver — marks
them corrected and fine-tunes. Prints the decision and why, the held-out slices, the per-class predicted
volumes of the parent and the new model on the whole image (and outside the corrected slices), and the job's
wall time against its budget (the budget bounds the whole job). Runs in a temporary models home.

    python benchmarks/finetune_chest_safety.py [--budget 240] [--slices 30,36,46,56,80] [--keep 8,20] [--threads N]
        [--runs 3] [--check-image PATH ...]

With ``--runs N`` the fine-tune is repeated N times in the same models home (the first run pays the training
planner's calibration, later ones find it cached); each run prints its wall time against the budget, CPU
seconds, the load average, the job's measured stages and steps per minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from _chest_walk import DATA, corrected_walk, cpu_seconds as _cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA / "ct_chest_dicom"))
    ap.add_argument("--budget", type=float, default=None, help="whole-job time budget in s (default: FinetuneConfig's)")
    ap.add_argument("--slices", default="30,36,46,56,80", help="axial slices through the heart to erase 'liver' on")
    ap.add_argument("--keep", default="", help="slices also ticked as checked and right, unedited (e.g. 8,20: real liver)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--allow-class-change", action="store_true")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--check-image", action="append", default=[], help="another image for the class check")
    args = ap.parse_args(argv)
    folder = Path(args.data)
    if not folder.is_dir():
        print(f"no {folder}: nothing to do")
        return 0
    os.environ["MEDSEG_HOME"] = tempfile.mkdtemp(prefix="medseg_bench_")
    import torch

    from napari_medseg.training.config import FinetuneConfig
    from napari_medseg.training.finetune import finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.slices.split(",")]
    vol, start, lab = corrected_walk(folder, ks)
    base = FinetuneConfig()
    train = base.train if args.budget is None else dataclasses.replace(base.train, time_budget_s=args.budget)
    if args.threads:
        train = dataclasses.replace(train, num_threads=args.threads)
    cfg = dataclasses.replace(base, train=train)
    keep = [int(k) for k in args.keep.split(",") if k.strip()]
    if keep:
        print(f"also ticked, unedited (the model's labels checked and right): slices {keep}")
    budget = train.time_budget_s
    for run in range(1, args.runs + 1):
        cpu0 = _cpu()
        t = time.perf_counter()
        res = finetune(vol, start.labels.with_array(lab), [(0, k) for k in ks + keep], model="default", config=cfg,
                       allow_class_change=args.allow_class_change, check_images=args.check_image)
        wall, cpu = time.perf_counter() - t, _cpu() - cpu0
        if run == 1:
            print(res.summary())
            print(f"{'class':<14}{'parent mL':>10}{'new mL':>9}{'parent out':>11}{'new out':>9}  status")
            for name, row in res.class_changes.items():
                print(f"{name:<14}{row['before_ml']:>10.1f}{row['after_ml']:>9.1f}{row['before_outside_ml']:>11.1f}"
                      f"{row['after_outside_ml']:>9.1f}  {row['status']}")
        tm = res.timing
        print(f"run {run}: job wall time {wall:.1f} s for a {budget:.0f} s budget ({(wall / budget - 1) * 100:+.1f} %), "
              f"{cpu:.0f} CPU-s, load average {os.getloadavg()[0]:.2f}; {tm['steps']} steps, "
              f"{tm.get('steps_per_min')} steps/min, slowdown {tm.get('slowdown')}")
        print(f"  stages (s): {tm.get('stages_s')}; reserved (s): {tm.get('reserved_s')}")
        seg = res.segmentation
        if seg is not None and getattr(seg, "timings", None):
            print("  the new model's segmentation (s): " + ", ".join(f"{k} {v:.1f}" for k, v in seg.timings.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
