"""Few-slice learning on a real CT (issue 14): Dice on the unlabelled slices, mean ± sd over seeds, and seconds.

Data: ../shared/data/ct_abdomen_3mm (3 mm abdominal CT, TotalSegmentator reference labels; 112 axial slices
k = 0..111, organs in k = 66..111). Conditions (``--condition``, any subset; each run is a whole `finetune` job
as the widget runs it, the re-segmentation included):

* ``scratch5`` -- a new model from scratch (``from_scratch=True``) for liver, spleen and kidney_right,
  labelled together on 5 axial slices spread over k = 66..111; Dice on the 107 other axial slices (false
  positives on organ-free slices count). The default model knows these organs, so the transfer of its
  encoder (``FinetuneConfig.scratch_init``) is measured against a random start (``--scratch-init random``).
* ``new5`` -- the same for two structures the default model has no class for: stomach (TS 6) and aorta
  (TS 52), 5 axial slices spread over k = 61..111 (the transfer then carries only what the default model's
  weights learnt as "background" anatomy, though from this very CT).
* ``ft1`` / ``ft3`` -- fine-tune of the shipped default model from 1 (k 85) or 3 (k 79, 85, 91) corrected
  slices holding all six default classes. The default model was trained on this CT's slices k < 74 and
  k >= 97, so Dice is reported on the block it never saw, k = 74..96 minus the corrected slices (``block``),
  and -- to show forgetting where it had learnt -- on every other slice of the volume (``all``).

Each finished run is appended to a JSON-lines file (``--out``); a rerun skips the (condition, seed, variant)
runs already there, so the matrix can be run in parts; ``--report`` only prints the table.

    nice -n 10 python benchmarks/finetune_few_slices.py --condition scratch5 ft1 ft3 --seeds 0 1 2
    python benchmarks/finetune_few_slices.py --report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

# TotalSegmentator value -> default-model class value (as the default model's recipe maps them)
TS_TO_DEFAULT = {5: 1, 1: 2, 2: 3, 3: 4, **{v: 6 for v in range(26, 34)}}
DEFAULT_NAMES = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "liver_tumour", 6: "spine"}
SCRATCH_CLASSES = {1: "liver", 2: "spleen", 3: "kidney_right"}
NEW_CLASSES = {1: "stomach", 2: "aorta"}  # TotalSegmentator 6 and 52: classes the default model does not know
NEW_TS = {6: 1, 52: 2}
CONDITIONS = {
    "scratch5": {"slices": None, "n": 5, "scratch": True, "budget": 255.0},
    "new5": {"slices": None, "n": 5, "scratch": True, "budget": 255.0, "new": True},
    "ft1": {"slices": [85], "scratch": False, "budget": 120.0},
    "ft3": {"slices": [79, 85, 91], "scratch": False, "budget": 120.0},
}
UNSEEN_BLOCK = range(74, 97)  # slices the default model never trained on


def spread_slices(mask: np.ndarray, n: int) -> list[int]:
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    lo, hi = ks.min(), ks.max()
    return [int(round(lo + (hi - lo) * (i + 0.5) / n)) for i in range(n)]


def dice(a, b) -> float | None:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else None


def per_class_dice(pred, truth, ks, names) -> dict:
    out = {}
    for v, n in names.items():
        d = dice(pred[ks] == v, truth[ks] == v)
        if d is not None:
            out[n] = round(d, 4)
    return out


def default_data_dir() -> Path:
    here = Path(__file__).resolve().parents[1]
    for cand in (here.parent / "shared" / "data", here.parents[1] / "shared" / "data"):
        if cand.is_dir():
            return cand
    return here.parent / "shared" / "data"


def load(data: Path):
    from napari_medseg.io import read_volume

    img = read_volume(data / "ct_abdomen_3mm" / "ct.nii.gz")
    ts = read_volume(data / "ct_abdomen_3mm" / "labels.nii.gz")
    lut = np.zeros(256, dtype=np.uint8)
    for s, d in TS_TO_DEFAULT.items():
        lut[s] = d
    raw = np.asarray(ts.array).astype(np.int64)
    full = lut[raw]
    lut_new = np.zeros(256, dtype=np.uint8)
    for s, d in NEW_TS.items():
        lut_new[s] = d
    _NEW["labels"] = ts.with_array(lut_new[raw], classes={0: "background", **NEW_CLASSES})
    return img, ts.with_array(full, classes={0: "background", **DEFAULT_NAMES})


_NEW = {}


def run_one(img, lab, cond: str, seed: int, args) -> dict:
    from napari_medseg.training.config import FinetuneConfig
    from napari_medseg.training.finetune import finetune

    spec = CONDITIONS[cond]
    truth = np.asarray(lab.array)
    if spec.get("new"):
        labels = _NEW["labels"]
        truth = np.asarray(labels.array)
        slices = spread_slices(truth > 0, spec["n"])
        names = NEW_CLASSES
    elif spec["scratch"]:
        sc = np.where(truth <= 3, truth, 0).astype(np.uint8)  # liver, spleen, kidney_right; the rest background
        labels = lab.with_array(sc, classes={0: "background", **SCRATCH_CLASSES})
        slices = spread_slices(sc > 0, spec["n"])
        names, truth = SCRATCH_CLASSES, sc
    else:
        labels, slices, names = lab, list(spec["slices"]), DEFAULT_NAMES
    base = FinetuneConfig()
    budget = args.budget or spec["budget"]
    tcfg = dataclasses.replace(base.train, time_budget_s=budget, seed=seed, num_threads=args.threads)
    over = dict(json.loads(args.set)) if args.set else {}
    tover = {k[len("train."):]: v for k, v in over.items() if k.startswith("train.")}
    fover = {k: v for k, v in over.items() if not k.startswith("train.")}
    if spec["scratch"] and args.scratch_init:
        fover["scratch_init"] = args.scratch_init
    cfg = dataclasses.replace(base, train=dataclasses.replace(tcfg, **tover), **fover)
    load0 = os.getloadavg()[0]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    res = finetune(img, labels, [(0, k) for k in slices], model="default", from_scratch=spec["scratch"],
                   name=f"bench_{cond}", config=cfg, activate=False, resegment=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    pred = np.asarray(res.segmentation.labels.array)
    other = [k for k in range(truth.shape[0]) if k not in slices]
    row = {"condition": cond, "seed": seed, "variant": args.variant, "slices": slices, "wall_s": round(wall, 1),
           "cpu_s": round(cpu, 1), "load_start": round(load0, 2), "load_end": round(os.getloadavg()[0], 2),
           "steps": res.timing.get("steps"), "train_s": res.timing.get("train_s"), "check": res.check,
           "heldout": [list(s) for s in res.heldout_slices], "config": over, "reason": res.reason,
           "init": (res.card.provenance.get("init") or {}).get("note"),
           "dice_all": per_class_dice(pred, truth, other, names), "summary": res.summary()}
    if not spec["scratch"]:
        block = [k for k in UNSEEN_BLOCK if k not in slices]
        row["dice_block"] = per_class_dice(pred, truth, block, names)
        base_pred = baseline_prediction(img)
        row["before_block"] = per_class_dice(base_pred, truth, block, names)
        row["before_all"] = per_class_dice(base_pred, truth, other, names)
        row["in_slices"] = sorted({names[int(v)] for v in np.unique(truth[slices]) if int(v) in names})
        row["after_heldout"] = (res.metrics_after or {}).get("dice_fg")
        row["before_heldout"] = (res.metrics_before or {}).get("dice_fg")
    return row


_BASE = {}


def baseline_prediction(img):
    from napari_medseg.inference import segment

    if "pred" not in _BASE:
        _BASE["pred"] = np.asarray(segment(img, model="default", device="cpu").labels.array)
    return _BASE["pred"]


def cpu_flags() -> str:
    """The CPU's AVX-512 / AMX flags (as the project's benchmarks report them)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "flags unknown"
    return " ".join(sorted(f for f in flags if f.startswith(("avx512", "amx")))) or "no AVX-512"


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def report(rows: list[dict]) -> None:
    def ms(v):
        v = [x for x in v if x is not None]
        if not v:
            return "n/a"
        return f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}" + (f" (n={len(v)})" if len(v) != 3 else "")

    keys = sorted({(r["condition"], r.get("variant", "")) for r in rows})
    verdicts = []
    print("| condition | variant | organ | Dice (unlabelled slices) | before (default model) | job wall s | CPU s | steps | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cond, var in keys:
        rs = [r for r in rows if r["condition"] == cond and r.get("variant", "") == var]
        scratch = CONDITIONS.get(cond, {}).get("scratch", True)
        field_ = "dice_all" if scratch else "dice_block"
        organs = list(dict.fromkeys(o for r in rs for o in r[field_]))
        if not scratch:
            organs = [o for o in organs if o in rs[0].get("in_slices", organs)]
        walls = [r["wall_s"] for r in rs]
        wall = f"{np.mean(walls):.0f} ({min(walls):.0f}-{max(walls):.0f})"
        cpu = f"{np.mean([r['cpu_s'] for r in rs]):.0f}"
        steps = "/".join(str(r.get("steps")) for r in rs)
        ld = f"{min(r['load_start'] for r in rs):.1f}-{max(r['load_end'] for r in rs):.1f}"
        for o in organs:
            before = "-" if scratch else ms([r["before_block"].get(o) for r in rs])
            print(f"| {cond} | {var or 'default'} | {o} | {ms([r[field_].get(o) for r in rs])} | {before} | {wall} | {cpu} | {steps} | {ld} |")
        if not scratch:
            for o in organs:
                print(f"| {cond} (all other slices) | {var or 'default'} | {o} | {ms([r['dice_all'].get(o) for r in rs])} | "
                      f"{ms([r['before_all'].get(o) for r in rs])} | | | | |")
            verdicts.append(f"{cond} {var or 'default'}: {acceptance(rs, organs)}")
    for v in verdicts:
        print(v)


def acceptance(rs: list[dict], organs: list[str], worse: float = 0.01) -> str:
    """Issue 14's one-slice point on the means over seeds: a gain on every organ of the slice on the block the
    default model never saw, and on all other slices (where it trained) no organ worse by more than ``worse``."""
    def delta(o, where):
        a = [r[f"dice_{where}"].get(o) for r in rs]
        b = [r[f"before_{where}"].get(o) for r in rs]
        return None if None in a or None in b else float(np.mean(a) - np.mean(b))

    block = {o: delta(o, "block") for o in organs}
    other = {o: delta(o, "all") for o in organs}
    no_gain = [f"{o} {d:+.3f}" for o, d in block.items() if d is not None and d <= 0]
    worst = min(((d, o) for o, d in other.items() if d is not None), default=(0.0, "-"))
    lost = [f"{o} {d:+.3f}" for o, d in other.items() if d is not None and d < -worse]
    return ("gain on every organ on the unseen block: " + ("yes" if not no_gain else "NO (" + ", ".join(no_gain) + ")")
            + f"; all other slices: worst change {worst[1]} {worst[0]:+.3f}"
            + (f", worse by more than {worse}: " + ", ".join(lost) if lost else f" (none worse by more than {worse})"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--condition", nargs="+", choices=sorted(CONDITIONS), default=sorted(CONDITIONS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--budget", type=float, default=None, help="job budget in s (default: 255 scratch, 120 fine-tune)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the training planner's)")
    ap.add_argument("--scratch-init", default=None, help="scratch5: 'default' (encoder transfer) or 'random'")
    ap.add_argument("--set", default="", help='config overrides as JSON, e.g. {"train.weak_weight": 0}')
    ap.add_argument("--variant", default="", help="name of this configuration in the results file")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "medseg_few_slices.jsonl")
    ap.add_argument("--force", action="store_true", help="rerun runs already in --out")
    ap.add_argument("--report", action="store_true", help="only print the table of --out")
    args = ap.parse_args(argv)
    if args.report:  # --variant X: only that configuration's runs
        report([r for r in read_rows(args.out) if not args.variant or r.get("variant", "") == args.variant])
        return
    if not (args.data / "ct_abdomen_3mm").is_dir():
        raise SystemExit(f"{args.data}/ct_abdomen_3mm not found (give --data)")
    os.environ.setdefault("MEDSEG_HOME", tempfile.mkdtemp(prefix="medseg-bench-"))
    img, lab = load(args.data)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs ({cpu_flags()}); results -> {args.out}",
          flush=True)
    if any(not CONDITIONS[c]["scratch"] for c in args.condition):
        baseline_prediction(img)  # the default model's segmentation first: its CPU plan is then measured before
        # the first job, as on a machine that has segmented before (each job's own stages are still timed)
    for cond in args.condition:
        for seed in args.seeds:
            done = {(r["condition"], r["seed"], r.get("variant", "")) for r in read_rows(args.out)}
            if (cond, seed, args.variant) in done and not args.force:
                print(f"{cond} seed {seed} {args.variant}: already in {args.out}, skipped", flush=True)
                continue
            row = run_one(img, lab, cond, seed, args)
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    report([r for r in read_rows(args.out)])


if __name__ == "__main__":
    main()
