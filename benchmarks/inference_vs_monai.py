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

Before the timed runs, ``medseg plan`` runs once in its own process (the measuring CPU planner's first-use
conversion + calibration, cached under --work/cache); its cost is reported separately, and the timed runs reuse
the cached plan. ``--bundle`` times whole processes instead (imports included, what a user waits for):
``medseg predict IMAGE --model BUNDLE_DIR`` against a plain MONAI script that runs the same bundle folder
(spleen_ct_segmentation layout, the same fitted weights) through ``monai.bundle.ConfigParser``: its own
dataloader, preprocessing, SlidingWindowInferer and postprocessing (``python -m monai.bundle run`` would also need
pytorch-ignite for the SupervisedEvaluator, which is not installed here).

    nice python benchmarks/inference_vs_monai.py                 # chest CT from ../shared/data
    nice python benchmarks/inference_vs_monai.py --synthetic     # a synthetic phantom instead
    nice python benchmarks/inference_vs_monai.py --bundle        # whole processes, a MONAI bundle folder
    nice python benchmarks/inference_vs_monai.py --max-isa AVX2  # both sides on oneDNN's AVX2 kernels

``--max-isa AVX2`` sets ``ONEDNN_MAX_CPU_ISA`` for every process (plan, ours, reference): PyTorch and OpenVINO then
use only their AVX2 kernels, which is how they run on a CPU without AVX-512/bf16 (the planner drops the reduced
precisions under the cap). It emulates the instruction set, not that CPU's clocks and caches.
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


def bundle_config() -> dict:
    """spleen_ct_segmentation's configs/inference.json with this benchmark's network (its own ``$`` expressions
    included: MONAI evaluates them, napari-medseg reads only the literal parts)."""
    return {
        "imports": ["$import glob", "$import os"], "bundle_root": ".", "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data/Task09_Spleen",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "UNet", **NET_ARGS}, "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"}, {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": list(PIXDIM), "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": A_MIN, "a_max": A_MAX, "b_min": 0.0,
             "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"}]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 4},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 4, "overlap": 0.5},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "meta_key_postfix": "meta_dict", "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "resample": False, "separate_folder": False}]},
        "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                      "load_dict": {"model": "@network"}}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": True},
        "run": ["$@evaluator.run()"],
    }


def write_bundle(pt: Path, root: Path) -> Path:
    import shutil

    if (root / "models" / "model.pt").is_file():
        return root
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    shutil.copyfile(pt, root / "models" / "model.pt")
    meta = {"version": "0.5.0", "name": "spleen_ct_segmentation (benchmark copy)", "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "num_channels": 1, "spatial_shape": [96, 96, 96]}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                             "channel_def": {"0": "background", "1": "bright"}}}}}
    (root / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    (root / "configs" / "inference.json").write_text(json.dumps(bundle_config(), indent=2))
    return root


def calibrate_first(model: Path, image: Path, env: dict) -> dict:
    """The planner's first use of the model on this machine, in its own process: ``medseg plan MODEL IMAGE``."""
    cmd = [sys.executable, "-m", "napari_medseg.cli", "plan", str(model), str(image), "--json"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"medseg plan failed:\n{proc.stderr[-3000:]}")
    info = json.loads(proc.stdout)
    info["process_wall_seconds"] = wall
    return info


def run_bundle_reference(bundle: Path, image: Path, out_dir: Path) -> None:
    """A plain MONAI script: the bundle's own config, parsed and run by monai.bundle.ConfigParser."""
    import torch
    from monai.bundle import ConfigParser
    from monai.data import decollate_batch

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    parser["output_dir"] = str(out_dir)
    parser["datalist"] = [str(image)]
    parser["dataloader"]["num_workers"] = 0
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))  # as CheckpointLoader
    network.eval()
    inferer = parser.get_parsed_content("inferer")
    post = parser.get_parsed_content("postprocessing")
    for batch in parser.get_parsed_content("dataloader"):
        with torch.no_grad():
            batch["pred"] = inferer(batch["image"], network)
        for item in decollate_batch(batch):
            post(item)


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

    for lib in ("openvino", "onnxruntime"):  # the CPU runtimes are library imports too
        try:
            __import__(lib)
        except ImportError:
            pass
    from napari_medseg.inference import segment
    from napari_medseg.io import read_volume, write_labels

    t0 = time.perf_counter()
    vol = read_volume(image)
    windows = []
    res = segment(vol, model=str(pkg), device="cpu", overlap=overlap,
                  progress=lambda p: windows.append(p.total) if p.stage == "inference" else None)
    write_labels(res.labels, out, reference=vol, force=True)
    return {"seconds": time.perf_counter() - t0, "stages": res.timings, "plan": res.plan,
            "windows": windows[-1] if windows else None, "cached_plan": res.plan_info.get("cached")}


def child(args) -> None:
    out = Path(args.out)
    if args.child == "bundle-reference":
        run_bundle_reference(Path(args.weights), Path(args.image), out)
        return
    if args.child == "reference":
        info = run_reference(Path(args.image), Path(args.weights), out)
    else:
        info = run_ours(Path(args.image), Path(args.weights), out, args.overlap)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    info["peak_rss_mb"] = ru.ru_maxrss / 1024.0
    info["cpu_seconds"] = ru.ru_utime + ru.ru_stime  # less sensitive than wall time to other users of the machine
    print("RESULT " + json.dumps(info))


def spawn(kind: str, image: Path, weights: Path, out: Path, overlap: float, env=None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--image", str(image), "--weights", str(weights),
           "--out", str(out), "--overlap", str(overlap)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
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


def whole_process(cmd: list[str], env=None) -> dict:
    """Wall and CPU seconds of a whole process (imports included), as a user waits for it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": after.ru_maxrss / 1024.0}


def print_calibration(cal: dict) -> None:
    ch = cal["chosen"]
    what = "cached plan" if cal.get("cached") else "first use"
    print(f"{what} (medseg plan, own process, {cal['process_wall_seconds']:.1f} s): conversion {cal['convert_s']:.1f} s"
          f" + calibration {cal['calibration_s']:.1f} s on {cal['calibration_windows']} window(s) -> {ch['runtime']} "
          f"{ch['precision']}{', channels-last' if ch['channels_last'] else ''}{', parallel requests' if ch.get('streams') else ''}, batch {ch['batch']}, "
          f"{ch['ms_per_window']:.0f} ms/window, {cal['threads']} threads")
    print("           candidates: " + "; ".join(
        f"{c['runtime']} {c['precision']}{' cl' if c['channels_last'] else ''}{' par' if c.get('streams') else ''} b{c['batch']} "
        + (f"{c['ms_per_window']:.0f} ms" if c.get("ms_per_window") is not None else "-")
        + ("" if c["status"] == "ok" else f" ({c['status'].split(':')[0]})") for c in cal["candidates"]))
    print(f"           CPU: {cal['cpu']['model']}, flags {' '.join(f for f in cal['cpu']['flags'] if 'avx512' in f or 'amx' in f) or 'no AVX-512'}")


def bundle_mode(args, image: Path, pt: Path, env: dict) -> None:
    work = Path(args.work)
    bundle = write_bundle(pt, work / "spleen_ct_segmentation")
    stem = image.name.split(".")[0]
    ours_out, ref_dir = work / f"{stem}_bundle_ours.nii.gz", work / "bundle_ref"
    ref_dir.mkdir(exist_ok=True)
    print_calibration(calibrate_first(bundle, image, env))
    ours_cmd = [sys.executable, "-m", "napari_medseg.cli", "predict", str(image), "-o", str(ours_out), "--model",
                str(bundle), "--device", "cpu", "--quiet", "--force", "--report", str(work / "bundle_report.json")]
    ref_cmd = [sys.executable, __file__, "--child", "bundle-reference", "--image", str(image), "--weights", str(bundle),
               "--out", str(ref_dir)]
    for rep in range(args.repeat):
        ours = whole_process(ours_cmd, env)
        report = json.loads((work / "bundle_report.json").read_text())["cases"][0]
        print(f"ours (medseg predict --model BUNDLE):  {ours['seconds']:6.1f} s wall, CPU {ours['cpu_seconds']:6.1f} s "
              f"[{report['plan']}]")
        if args.skip_reference:
            continue
        ref = whole_process(ref_cmd, env)
        print(f"reference (MONAI ConfigParser script): {ref['seconds']:6.1f} s wall, CPU {ref['cpu_seconds']:6.1f} s")
        (seg,) = list(ref_dir.glob("*_seg.nii.gz"))
        d = dice_table(seg, ours_out)
        print(f"whole-process ratio ours/reference: wall {ours['seconds'] / ref['seconds']:.3f}, "
              f"CPU {ours['cpu_seconds'] / ref['cpu_seconds']:.3f}; Dice bg {d[0]['dice']:.4f}, class 1 {d[1]['dice']:.4f}; "
              f"voxel agreement {d['voxel_agreement']:.5f}")


def main() -> None:
    global CHEST
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synthetic", action="store_true", help="use a synthetic phantom instead of the chest CT")
    ap.add_argument("--chest", default=str(CHEST), help="the chest CT DICOM folder (default: ../shared/data/ct_chest_dicom)")
    ap.add_argument("--work", default=str(Path("/tmp") / "medseg_bench"), help="folder for inputs/weights/outputs")
    ap.add_argument("--fit-steps", type=int, default=30)
    ap.add_argument("--overlap", type=float, default=0.5, help="overlap for ours (the reference always uses 0.5)")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="alternate ours/reference this many times")
    ap.add_argument("--bundle", action="store_true", help="whole processes on a MONAI bundle folder (imports included)")
    ap.add_argument("--recalibrate", action="store_true", help="drop the cached CPU plan and converted networks first")
    ap.add_argument("--max-isa", help="cap oneDNN's instruction set for both sides (ONEDNN_MAX_CPU_ISA, e.g. AVX2: "
                    "PyTorch's and OpenVINO's kernels then run as on a CPU without AVX-512/bf16)")
    ap.add_argument("--child", choices=["reference", "ours", "bundle-reference"], help=argparse.SUPPRESS)
    ap.add_argument("--image", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    CHEST = Path(args.chest)
    if not args.synthetic and not CHEST.is_dir():
        raise SystemExit(f"{CHEST} not found; use --synthetic or --chest")
    image, pt, pkg = prepare(args)
    work = Path(args.work)
    import os
    import shutil

    env = dict(os.environ, MEDSEG_CACHE=str(work / "cache"), MEDSEG_CALIBRATE="1")
    if args.max_isa:
        env["ONEDNN_MAX_CPU_ISA"] = env["DNNL_MAX_CPU_ISA"] = args.max_isa.upper()
    if args.recalibrate:
        shutil.rmtree(work / "cache", ignore_errors=True)
    import torch

    load = os.getloadavg()
    print(f"input: {image} | torch {torch.__version__}, {torch.get_num_threads()} threads | load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs"
          + (f" | oneDNN ISA capped at {env['ONEDNN_MAX_CPU_ISA']} on both sides" if args.max_isa else ""))
    if args.bundle:
        bundle_mode(args, image, pt, env)
        return
    stem = image.name.split(".")[0]
    ref_out = work / f"{stem}_ref.nii.gz"
    ours_out = work / f"{stem}_ours.nii.gz"
    print_calibration(calibrate_first(pkg, image, env))
    for rep in range(args.repeat):
        ours = spawn("ours", image, pkg, ours_out, args.overlap, env)
        print(f"ours:      {ours['seconds']:7.1f} s  CPU {ours['cpu_seconds']:6.1f} s  peak RSS {ours['peak_rss_mb']:7.0f} MB  "
              f"windows {ours['windows']}  [{ours['plan']}]")
        print("           stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in ours["stages"].items() if v >= 0.05))
        if args.skip_reference:
            continue
        ref = spawn("reference", image, pt, ref_out, 0.5, env)
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
