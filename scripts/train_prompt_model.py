"""Train the shipped promptable model (class-agnostic, simulated clicks) and write its model package.

    nice -n 10 python scripts/train_prompt_model.py --minutes 35 --work /tmp/prompt-train \
        --out src/napari_medseg/models/prompt

Data: every labelled structure of ../shared/data/ct_abdomen_3mm EXCEPT liver and spleen (held out: they are
the evaluation structures of benchmarks/prompt_clicks.py), plus the kidneys, liver tumours and spine of
synthetic phantoms (`napari_medseg.sample.make_phantom`; their liver and spleen are held out as well).
Everything is resampled to the model spacing (3 mm) keeping each volume's own axes. Checkpoints go to
``--work`` every 50 steps; ``--resume`` continues from the last one (the time budget counts the whole run).
The seed, steps, seconds and CPU seconds are written into the card's provenance.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

HELD_OUT = ("liver", "spleen")
PHANTOMS = [  # seed, hu_offset, contrast, noise: a spread of synthetic domains
    (301, 0.0, 1.0, 15.0), (302, -10.0, 0.9, 20.0), (303, 8.0, 1.1, 12.0), (304, 0.0, 1.3, 18.0),
    (305, -5.0, 0.8, 14.0), (306, 5.0, 1.0, 25.0),
]
MIN_VOXELS = 30
COARSE_EXTENT = 32  # model voxels per unit of scale, see _coarse_targets


def _default_data() -> Path:
    here = Path(__file__).resolve().parents[1]
    for cand in (here.parent / "shared" / "data", here.parents[1] / "shared" / "data", Path("/work/shared/data")):
        if cand.is_dir():
            return cand
    return here.parent / "shared" / "data"


def _to_model_grid(image, labels, spacing):
    """(image HU, labels) on a grid of ``spacing`` with the image's own axes and extent (labels: nearest)."""
    from napari_medseg.inference.preprocess import antialias
    from napari_medseg.inference.resample import Grid, resample

    if np.allclose(image.spacing, spacing, atol=1e-3):
        return np.asarray(image.array, np.float32), np.asarray(labels.array)
    extent = np.asarray(image.size_ijk) * np.asarray(image.spacing)
    n = [max(1, int(round(e / s))) for e, s in zip(extent, spacing)]
    g = Grid(tuple(reversed(n)), tuple(spacing), tuple(image.origin), image.direction)
    img = resample(antialias(image, g), image, g, mode="linear")
    lab = resample(np.asarray(labels.array), image, g, mode="nearest")
    return img, lab


def _extents(lab: np.ndarray) -> dict[int, int]:
    """Label value -> largest side of its bounding box (voxels)."""
    from scipy import ndimage

    return {v + 1: max(s.stop - s.start for s in sl) for v, sl in enumerate(ndimage.find_objects(lab.astype(np.int64)))
            if sl is not None}


def _coarse_targets(lab, targets, scale):
    """Targets large enough to be seen at ``scale`` x the model spacing at inference (a bounding-box side of at
    least 32 * scale model voxels: with the margin they do not fit the fixed crop at a finer spacing)."""
    ext = _extents(lab)
    return [v for v in targets if ext.get(v, 0) >= COARSE_EXTENT * scale]


def build_cases(data: Path, spacing, card, log, scales=(1.0,)):
    from napari_medseg.inference.preprocess import intensity
    from napari_medseg.io import read_volume
    from napari_medseg.prompt.train import TrainCase
    from napari_medseg.sample import SAMPLE_GEOMETRY, make_phantom

    cases, used = [], {"real": [], "phantom": []}
    ct_dir = data / "ct_abdomen_3mm"
    if ct_dir.is_dir():
        names = {int(k): v for k, v in json.loads((ct_dir / "classes.json").read_text()).items()}
        img, lab = _to_model_grid(read_volume(ct_dir / "ct.nii.gz"), read_volume(ct_dir / "labels.nii.gz"), spacing)
        counts = np.bincount(lab.ravel().astype(np.int64))
        targets = [v for v, nm in sorted(names.items()) if nm not in HELD_OUT and v < len(counts) and counts[v] >= MIN_VOXELS]
        cases.append(TrainCase("ct_abdomen_3mm", intensity(img, card), lab.astype(np.int16), targets))
        used["real"] = [names[v] for v in targets]
        log(f"ct_abdomen_3mm: {len(targets)} structures (held out: {', '.join(HELD_OUT)})")
        ct_img, ct_lab = read_volume(ct_dir / "ct.nii.gz"), read_volume(ct_dir / "labels.nii.gz")
        for f in scales:
            if f == 1.0:
                continue
            big = _coarse_targets(lab, targets, f)
            cimg, clab = _to_model_grid(ct_img, ct_lab, tuple(s * f for s in spacing))
            counts_f = np.bincount(clab.ravel().astype(np.int64), minlength=len(counts))
            big = [v for v in big if counts_f[v] >= MIN_VOXELS]
            if big:
                cases.append(TrainCase(f"ct_abdomen_3mm@x{f:g}", intensity(cimg, card), clab.astype(np.int16), big, scale=f))
                used.setdefault("coarse", []).append(f"x{f:g}: " + ", ".join(names[v] for v in big))
                log(f"ct_abdomen_3mm at {f:g} x the model spacing: {len(big)} large structures")
    else:
        log(f"{ct_dir} not found: training on phantoms only")
    for seed, off, con, noise in PHANTOMS:
        image, labels = make_phantom(seed, hu_offset=off, contrast=con, noise=noise, **SAMPLE_GEOMETRY)
        img, lab = _to_model_grid(image, labels, spacing)
        names = labels.meta["classes"]
        counts = np.bincount(lab.ravel().astype(np.int64), minlength=max(names) + 1)
        targets = [v for v, nm in names.items() if v and nm not in HELD_OUT and counts[v] >= MIN_VOXELS]
        cases.append(TrainCase(f"phantom{seed}", intensity(img, card), lab.astype(np.int16), targets))
        for f in scales:
            big = _coarse_targets(lab, targets, f) if f != 1.0 else []
            if big:
                cimg, clab = _to_model_grid(image, labels, tuple(s * f for s in spacing))
                cases.append(TrainCase(f"phantom{seed}@x{f:g}", intensity(cimg, card), clab.astype(np.int16), big, scale=f))
        used["phantom"].append(f"seed={seed} hu_offset={off} contrast={con} noise={noise}: "
                               + ", ".join(names[v] for v in targets))
    return cases, used


def lineage(provenance: dict) -> list[dict]:
    """The training runs behind a package, oldest first: its own lineage plus the run that wrote it."""
    t = provenance.get("training", {})
    own = {"date": provenance.get("date"), "command": provenance.get("command"), "init": t.get("init"),
           "steps": t.get("steps"), "train_seconds": t.get("train_seconds"), "cpu_seconds": t.get("cpu_seconds"),
           "target_sampling": t.get("target_sampling"), "crop": t.get("crop")}
    return [*t.get("lineage", []), own]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=35.0, help="training time budget (whole run, incl. resumes)")
    ap.add_argument("--max-steps", type=int, default=10**9)
    ap.add_argument("--data", type=Path, default=_default_data())
    ap.add_argument("--work", type=Path, default=Path("/tmp/prompt-train"), help="checkpoint folder")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/napari_medseg/models/prompt")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-clicks", type=int, default=4, help="corrective click rounds simulated before the trained one")
    ap.add_argument("--fp32", action="store_true", help="no bfloat16 autocast")
    ap.add_argument("--crop", type=int, default=64,
                    help="training crop side = the fixed inference crop side (model voxels, a multiple of 16)")
    ap.add_argument("--scales", default="1,1.4,2",
                    help="grid spacings (x the model spacing) of the training copies; coarse copies hold only the large "
                         "structures, seen as inference sees them when they do not fit the crop at the model spacing")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from the weights of this prompt model package (e.g. the shipped one) instead of random")
    ap.add_argument("--size-power", type=float, default=0.5,
                    help="targets drawn with probability proportional to voxels ** this (0: uniform over structures)")
    ap.add_argument("--package-only", action="store_true", help="write the package from the last checkpoint and stop")
    args = ap.parse_args(argv)

    import torch
    from safetensors.torch import load_file, save_file

    from napari_medseg.models.network import build_network
    from napari_medseg.models.package import save_model_package
    from napari_medseg.prompt.model import PromptSettings, prompt_card
    from napari_medseg.prompt.train import TrainSettings, train_steps

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    log = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True)  # noqa: E731
    settings = PromptSettings(min_side=args.crop, max_side=args.crop)
    scales = tuple(float(v) for v in args.scales.split(","))
    from napari_medseg.inference.planner import cpu_bf16_supported

    st = TrainSettings(seconds=args.minutes * 60, max_steps=args.max_steps, seed=args.seed, sigma=settings.sigma,
                       max_clicks=args.max_clicks, crop=args.crop, size_power=args.size_power, bf16=cpu_bf16_supported() and not args.fp32)
    card = prompt_card(settings=settings)
    net = build_network(card)
    args.work.mkdir(parents=True, exist_ok=True)
    ck, ck_opt, ck_info = args.work / "last.safetensors", args.work / "optimizer.pt", args.work / "progress.json"
    step, seconds, cpu0, opt_state, info = 0, 0.0, 0.0, None, {}
    if (args.resume or args.package_only) and ck.is_file():
        net.load_state_dict(load_file(ck))
        info = json.loads(ck_info.read_text())
        step, seconds, cpu0 = info["step"], info["seconds"], info.get("cpu_seconds", 0.0)
        if ck_opt.is_file() and not args.package_only:
            opt_state = torch.load(ck_opt, weights_only=True)
        log(f"resumed at step {step} ({seconds:.0f} s)")
    elif args.init is not None:
        from napari_medseg.prompt.model import load_prompt_model

        parent = load_prompt_model(args.init)
        net.load_state_dict({k: v.float() for k, v in parent.network.state_dict().items()})
        info = {"init": f"{args.init} ({parent.card.provenance.get('training', {}).get('steps')} steps)",
                "lineage": lineage(parent.card.provenance)}
        log(f"initialised from {info['init']}")
    if (args.resume or args.package_only) and args.init is not None and not info.get("lineage"):
        # a run started before the lineage was recorded: take it from the package it started from
        from napari_medseg.prompt.model import load_prompt_model

        info["lineage"] = lineage(load_prompt_model(args.init).card.provenance)
    cases, used = build_cases(args.data, card.spacing, card, log, scales)
    n_params = sum(p.numel() for p in net.parameters())
    log(f"{len(cases)} cases, {sum(len(c.targets) for c in cases)} targets; UNet {n_params:,} parameters; "
        f"budget {st.seconds:.0f} s; load average {os.getloadavg()}")

    def cpu_now():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return cpu0 + r.ru_utime + r.ru_stime

    loads = info.get("load_averages", [])
    stages = info.get("stages") or ([{"from_step": 0, "size_power": 0.0, "crop": st.crop, "max_clicks": st.max_clicks}]
                                    if step else [])
    commands = info.get("commands", [])
    if not args.package_only:
        commands.append("scripts/train_prompt_model.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        stages.append({"from_step": step, "size_power": st.size_power, "crop": st.crop, "max_clicks": st.max_clicks})
    if not args.package_only:
        for p in train_steps(net, cases, st, start_step=step, start_seconds=seconds, optimizer_state=opt_state):
            step, seconds = p["step"], p["seconds"]
            if step % 10 == 0:
                log(f"step {step} loss {p['loss']:.3f} (avg {p['loss_avg']:.3f}) {seconds:.0f} s cpu {cpu_now():.0f} s "
                    f"load {os.getloadavg()[0]:.2f}")
            if p["checkpoint"]:
                loads.append(round(os.getloadavg()[0], 2))
                save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(ck) + ".tmp")
                os.replace(str(ck) + ".tmp", ck)
                torch.save(p["optimizer"].state_dict(), str(ck_opt) + ".tmp")
                os.replace(str(ck_opt) + ".tmp", ck_opt)
                info = {"init": info.get("init"), "lineage": info.get("lineage", []), "step": step, "seconds": seconds, "cpu_seconds": cpu_now(), "loss_avg": p["loss_avg"],
                        "load_averages": loads, "stages": stages, "commands": commands}
                ck_info.write_text(json.dumps(info))
    card.provenance.update({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "; ".join(info.get("commands", [])) or "scripts/train_prompt_model.py --minutes 38, then "
                   "--resume --minutes 56 --size-power 0.5 (stage 2)",
        "data": {"real_ct": "ct_abdomen_3mm (TotalSegmentator tests/reference_files; labels are model output)",
                 "real_ct_structures": used["real"], "phantoms": used["phantom"],
                 "coarse_copies": used.get("coarse", []),
                 "held_out": list(HELD_OUT) + ["(never a training target, in the CT or the phantoms; they appear "
                                                "only as unlabelled surroundings of other structures)"]},
        "training": {"init": info.get("init"), "lineage": info.get("lineage", []),
                     "total_steps": step + sum(r.get("steps") or 0 for r in info.get("lineage", [])), "scales": list(scales), "steps": step, "train_seconds": round(seconds, 1), "cpu_seconds": round(info.get("cpu_seconds", cpu_now()), 1),
                     "seed": args.seed, "threads": args.threads, "load_averages": loads, "stages": stages,
                     "crop": [st.crop] * 3, "batch": st.batch, "max_corrective_clicks": st.max_clicks,
                     "refine_prob": st.refine_prob, "target_sampling": f"p ~ voxels ** {st.size_power}", "lr": st.lr, "weight_decay": st.weight_decay,
                     "precision": "bfloat16 autocast" if st.bf16 else "float32",
                     "loss": "DiceCE (sigmoid)", "final_loss_avg": info.get("loss_avg"),
                     "clicks": "monai.apps.deepgrow.transforms AddInitialSeedPointd, FindDiscrepancyRegionsd, "
                               "AddRandomGuidanced; signal as AddGuidanceSignald",
                     "augmentation": "axis permutation, flips, intensity scale/shift +-10 %/0.05"},
    })
    card.description = ("Promptable CT model (MONAI UNet, 3 mm): image + positive/negative clicks + previous mask -> "
                        "binary mask of the clicked structure. Class-agnostic; liver and spleen were held out of training.")
    # float16 weights: half the package size; they load into the float32 network (inference runs in bfloat16)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    path = save_model_package(half, card, args.out, force=True)
    log(f"wrote {path} ({sum(f.stat().st_size for f in path.iterdir()) / 1e6:.1f} MB) after {step} steps, {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
