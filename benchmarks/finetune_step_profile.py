"""Where a fine-tuning step's time goes on the real chest CT: data sampling, forward, loss, backward, optimiser.

Builds the same training case `finetune` builds (default model, axial corrected slices through the heart with
the false "liver" erased), then runs ``--steps`` optimiser steps with the threads and batch the training plan
chooses and times each part of every step; also one held-out validation pass and one whole-image window pass
(what the budget reserves for). Prints per-part medians, steps/min, CPU seconds and the load average.

    python benchmarks/finetune_step_profile.py [--data ../shared/data/ct_chest_dicom] [--steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA / "ct_chest_dicom"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--slices", default="30,36,46,56,80")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    folder = Path(args.data)
    if not folder.is_dir():
        print(f"no {folder}: nothing to do")
        return 0
    os.environ.setdefault("MEDSEG_HOME", tempfile.mkdtemp(prefix="medseg_bench_"))
    import torch

    from napari_medseg.inference import segment
    from napari_medseg.inference.train_plan import apply_training_plan
    from napari_medseg.io import read_volume
    from napari_medseg.models import load_model
    from napari_medseg.models.registry import resolve_model
    from napari_medseg.training.config import FinetuneConfig
    from napari_medseg.training.data import PatchSampler, model_axis_of_array_axis, prepare_case
    from napari_medseg.training.finetune import _slice_mask, _subcase
    from napari_medseg.training.job import estimate_segment_s
    from napari_medseg.training.loop import evaluate_cases
    from napari_medseg.training.loss import masked_dice_ce
    from napari_medseg.training.train import class_names

    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    vol = read_volume(folder)
    labels = segment(vol, model="default").labels
    lab = labels.array.copy()
    ks = [int(k) for k in args.slices.split(",")]
    for k in ks:
        lab[k][(lab[k] == 1) | (lab[k] == 5)] = 0
    slices = [(0, k) for k in ks]
    loaded = load_model(resolve_model("default"))
    card, net = loaded.card, loaded.network
    cfg = FinetuneConfig().train
    if args.threads:
        cfg = dataclasses.replace(cfg, num_threads=args.threads)
    t = time.perf_counter()
    case = prepare_case(vol, labels.with_array(lab), card, mask=_slice_mask(lab.shape, slices))
    prep_s = time.perf_counter() - t
    thin = model_axis_of_array_axis(vol, card, 0)
    train_case = _subcase(case, [1, 2, 4, 5], thin)
    val_case = _subcase(case, [3], thin)
    t = time.perf_counter()
    cfg = apply_training_plan(net, cfg)
    plan_s = time.perf_counter() - t
    print(f"case {tuple(case.shape)} prepared in {prep_s:.1f} s; plan {plan_s:.1f} s: threads {torch.get_num_threads()}, "
          f"batch {cfg.batch_size}, patch {cfg.patch_size}")
    t = time.perf_counter()
    evaluate_cases(net, [val_case], card.out_channels, cfg.patch_size, class_names(card))
    val_s = time.perf_counter() - t
    t = time.perf_counter()
    seg_est = estimate_segment_s(net, card, vol)
    est_s = time.perf_counter() - t
    print(f"one held-out validation pass {val_s:.2f} s; whole-image segmentation estimated {seg_est:.1f} s "
          f"(the estimate took {est_s:.2f} s)")
    sampler = PatchSampler([train_case], cfg, card.out_channels)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr)
    net.train()
    parts = {k: [] for k in ("sample", "forward", "loss", "backward", "optimiser", "step")}
    cpu0, w0 = _cpu(), time.perf_counter()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        img, tgt, msk = sampler.sample()
        t1 = time.perf_counter()
        logits = net(img)
        t2 = time.perf_counter()
        loss = masked_dice_ce(logits, tgt, msk, cfg.ce_weight, cfg.dice_weight)
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        float(loss.detach())
        t5 = time.perf_counter()
        for k, a, b in (("sample", t0, t1), ("forward", t1, t2), ("loss", t2, t3), ("backward", t3, t4),
                        ("optimiser", t4, t5), ("step", t0, t5)):
            parts[k].append(b - a)
    wall, cpu = time.perf_counter() - w0, _cpu() - cpu0
    med = {k: statistics.median(v[1:] or v) for k, v in parts.items()}
    print(f"{args.steps} steps in {wall:.1f} s wall, {cpu:.1f} CPU-s: {60 * args.steps / wall:.1f} steps/min "
          f"(median step {med['step']:.3f} s, first step {parts['step'][0]:.3f} s)")
    for k in ("sample", "forward", "loss", "backward", "optimiser"):
        print(f"  {k:<10} median {med[k]:.3f} s  ({100 * med[k] / med['step']:.0f} %)")
    print(f"input {tuple(img.shape)} {img.dtype}; load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
