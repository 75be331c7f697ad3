"""Benchmark: napari-medseg inference vs the MONAI bundle-style reference pipeline, same volume/network/weights.

Network: spleen_ct_segmentation's UNet (spatial_dims 3, in 1, out 2, channels 16..256, strides 2x4,
num_res_units 2, batch norm); preprocessing RAS, 1.5x1.5x2 mm, ScaleIntensityRanged -57..164; ROI 96^3.
Weights: random weights give a near-constant output, so the UNet is first fitted briefly (fixed seed) to
a threshold task on the same volume (label = HU > 100 in the model grid: bone and contrast), which gives a
non-trivial two-class segmentation. The fitted weights are cached in --work.

(a) reference: LoadImaged -> EnsureChannelFirstd -> Orientationd -> Spacingd -> ScaleIntensityRanged ->
    SlidingWindowInferer(overlap 0.5, sw_batch_size 4) -> Activationsd(softmax) -> Invertd -> AsDiscreted ->
    SaveImaged, fp32, as the spleen bundle runs it on a CPU;
(b) ours: napari_medseg.segment(...) + write_labels (default CPU plan: bf16 autocast + channels_last_3d), with
    the same overlap 0.5 and sw_batch_size 4.
Each pipeline runs in its own subprocess, so wall time and peak memory (ru_maxrss) are per pipeline. The timed
region of each starts after its library imports (torch, MONAI) and covers reading, inference, inversion and
writing; the CPU seconds cover the whole process, imports included.

    nice python benchmarks/inference_vs_monai.py                 # chest CT from ../shared/data
    nice python benchmarks/inference_vs_monai.py --synthetic     # a synthetic phantom instead
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHEST = ROOT.parent / "shared" / "data" / "ct_chest_dicom"
NET_ARGS = dict(spatial_dims=3, in_channels=1, out_channels=2, channels=[16, 32, 64, 128, 256], strides=[2, 2, 2, 2],
                num_res_units=2, norm="batch")
PIXDIM = (1.5, 1.5, 2.0)
A_MIN, A_MAX = -57.0, 164.0


def card():
    from napari_medseg.models import ClassInfo, ModelCard

    return ModelCard(name="spleen-unet-bench", architecture="UNet", arch_args=dict(NET_ARGS), in_channels=1,
                     classes=[ClassInfo(1, "bright")], orientation="RAS", spacing=PIXDIM,
                     intensity={"type": "ct_window", "a_min": A_MIN, "a_max": A_MAX, "b_min": 0.0, "b_max": 1.0, "clip": True},
                     roi_size=(96, 96, 96), overlap=0.5, sw_batch_size=4, blend_mode="constant")


def prepare(args) -> tuple[Path, Path, Path]:
    """The input NIfTI, the fitted weights (model.pt) and our model package (same weights)."""
    import numpy as np
    import torch

    from napari_medseg.inference.preprocess import model_input
    from napari_medseg.io import read_volume, write_volume
    from napari_medseg.models import build_network, save_model_package

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    image = work / ("synthetic.nii.gz" if args.synthetic else "chest_ct.nii.gz")
    if not image.exists():
        if args.synthetic:
            from napari_medseg.sample import make_phantom

            vol, _ = make_phantom(seed=0, shape=(120, 384, 384), spacing=(0.9, 0.9, 2.0))
        else:
            vol = read_volume(CHEST)
        write_volume(vol, image)
    pt = work / f"{image.name.split('.')[0]}_unet.pt"
    pkg = work / f"{image.name.split('.')[0]}_package"
    if not pt.exists():
        t = time.perf_counter()
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        c = card()
        x, _ = model_input(read_volume(image), c)  # [1, i, j, k] on the model grid, window applied
        net = build_network(c).train()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        p = 64
        thr = (100.0 - A_MIN) / (A_MAX - A_MIN)
        for step in range(args.fit_steps):
            starts = [[int(rng.integers(0, max(1, s - p + 1))) for s in x.shape[1:]] for _ in range(2)]
            batch = torch.stack([x[:, a:a + p, b:b + p, d:d + p] for a, b, d in starts])
            if batch.shape[2:] != (p, p, p):
                batch = torch.nn.functional.pad(batch, [0, p - batch.shape[4], 0, p - batch.shape[3], 0, p - batch.shape[2]])
            target = (batch[:, 0] > thr).long()
            loss = torch.nn.functional.cross_entropy(net(batch), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        torch.save(net.state_dict(), pt)
        print(f"fitted the UNet for {args.fit_steps} steps in {time.perf_counter() - t:.0f} s (final loss {loss.item():.3f})")
    if not pkg.exists():
        save_model_package(torch.load(pt, weights_only=True), card(), pkg)
    return image, pt, pkg


def run_reference(image: Path, pt: Path, out: Path) -> dict:
    import torch
    from monai.inferers import SlidingWindowInferer
    from monai.networks.nets import UNet
    from monai.transforms import (Activationsd, AsDiscreted, Compose, EnsureChannelFirstd, EnsureTyped, Invertd,
                                  LoadImaged, Orientationd, SaveImaged, ScaleIntensityRanged, Spacingd)

    t0 = time.perf_counter()
    pre = Compose([
        LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"), Orientationd(keys="image", axcodes="RAS"),
        Spacingd(keys="image", pixdim=PIXDIM, mode="bilinear"),
        ScaleIntensityRanged(keys="image", a_min=A_MIN, a_max=A_MAX, b_min=0.0, b_max=1.0, clip=True),
        EnsureTyped(keys="image"),
    ])
    post = Compose([
        Activationsd(keys="pred", softmax=True),
        Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
        AsDiscreted(keys="pred", argmax=True),
        SaveImaged(keys="pred", output_dir=str(out.parent), output_postfix="ref", resample=False, separate_folder=False,
                   print_log=False),
    ])
    net = UNet(**NET_ARGS)
    net.load_state_dict(torch.load(pt, weights_only=True))
    net.eval()
    inferer = SlidingWindowInferer(roi_size=(96, 96, 96), sw_batch_size=4, overlap=0.5)
    data = pre({"image": str(image)})
    t1 = time.perf_counter()
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None], net)[0]
    t2 = time.perf_counter()
    post(data)
    t3 = time.perf_counter()
    return {"seconds": t3 - t0, "stages": {"load+preprocess": t1 - t0, "inference": t2 - t1, "invert+save": t3 - t2},
            "windows": None}


def run_ours(image: Path, pkg: Path, out: Path, overlap: float) -> dict:
    # Library imports stay outside the timed region, as in run_reference (torch, MONAI networks and
    # transforms are imported there before t0); segment() would otherwise import them lazily inside it.
    import monai.networks.nets  # noqa: F401
    import torch  # noqa: F401

    import napari_medseg.inference.pipeline  # noqa: F401
    import napari_medseg.models.network  # noqa: F401
    from napari_medseg.inference import segment
    from napari_medseg.io import read_volume, write_labels

    t0 = time.perf_counter()
    vol = read_volume(image)
    windows = []
    res = segment(vol, model=str(pkg), device="cpu", overlap=overlap,
                  progress=lambda p: windows.append(p.total) if p.stage == "inference" else None)
    write_labels(res.labels, out, reference=vol, force=True)
    return {"seconds": time.perf_counter() - t0, "stages": res.timings, "plan": res.plan,
            "windows": windows[-1] if windows else None}


def child(args) -> None:
    out = Path(args.out)
    if args.child == "reference":
        info = run_reference(Path(args.image), Path(args.weights), out)
    else:
        info = run_ours(Path(args.image), Path(args.weights), out, args.overlap)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    info["peak_rss_mb"] = ru.ru_maxrss / 1024.0
    info["cpu_seconds"] = ru.ru_utime + ru.ru_stime  # less sensitive than wall time to other users of the machine
    print("RESULT " + json.dumps(info))


def spawn(kind: str, image: Path, weights: Path, out: Path, overlap: float) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--image", str(image), "--weights", str(weights),
           "--out", str(out), "--overlap", str(overlap)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{kind} pipeline failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    info = json.loads(line[7:])
    info["process_wall_seconds"] = wall
    return info


def dice_table(ref_path: Path, ours_path: Path) -> dict:
    import nibabel as nib
    import numpy as np

    ref = np.asarray(nib.load(ref_path).dataobj).squeeze()
    ours = np.asarray(nib.load(ours_path).dataobj).squeeze()
    if ref.shape != ours.shape:
        raise SystemExit(f"label grids differ: reference {ref.shape} vs ours {ours.shape}")
    out = {}
    for v in (0, 1):
        a, b = ref == v, ours == v
        out[v] = {"dice": 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum()), "ref_voxels": int(a.sum()),
                  "our_voxels": int(b.sum())}
    out["voxel_agreement"] = float((ref == ours).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synthetic", action="store_true", help="use a synthetic phantom instead of the chest CT")
    ap.add_argument("--work", default=str(Path("/tmp") / "medseg_bench"), help="folder for inputs/weights/outputs")
    ap.add_argument("--fit-steps", type=int, default=30)
    ap.add_argument("--overlap", type=float, default=0.5, help="overlap for ours (the reference always uses 0.5)")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="alternate ours/reference this many times")
    ap.add_argument("--child", choices=["reference", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if not args.synthetic and not CHEST.is_dir():
        raise SystemExit(f"{CHEST} not found; use --synthetic")
    image, pt, pkg = prepare(args)
    work = Path(args.work)
    stem = image.name.split(".")[0]
    ref_out = work / f"{stem}_ref.nii.gz"
    ours_out = work / f"{stem}_ours.nii.gz"
    import torch

    print(f"input: {image} | torch {torch.__version__}, {torch.get_num_threads()} threads")
    for rep in range(args.repeat):
        ours = spawn("ours", image, pkg, ours_out, args.overlap)
        print(f"ours:      {ours['seconds']:7.1f} s  CPU {ours['cpu_seconds']:6.1f} s  peak RSS {ours['peak_rss_mb']:7.0f} MB  "
              f"windows {ours['windows']}  [{ours['plan']}]")
        print("           stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in ours["stages"].items() if v >= 0.05))
        if args.skip_reference:
            continue
        ref = spawn("reference", image, pt, ref_out, 0.5)
        print(f"reference: {ref['seconds']:7.1f} s  CPU {ref['cpu_seconds']:6.1f} s  peak RSS {ref['peak_rss_mb']:7.0f} MB  (MONAI, fp32)")
        print("           stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in ref["stages"].items()))
        d = dice_table(ref_out, ours_out)
        print(f"time ratio ours/reference: wall {ours['seconds'] / ref['seconds']:.3f}, "
              f"CPU {ours['cpu_seconds'] / ref['cpu_seconds']:.3f} (the machine is shared: wall time is noisy)")
        print(f"Dice agreement: background {d[0]['dice']:.4f}, class 1 {d[1]['dice']:.4f} "
              f"(class 1 voxels: reference {d[1]['ref_voxels']}, ours {d[1]['our_voxels']}); "
              f"voxel agreement {d['voxel_agreement']:.5f}")


if __name__ == "__main__":
    main()
