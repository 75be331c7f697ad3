"""Simulated-user benchmark of click prompts: Dice after 1, 3 and 5 clicks and seconds per click.

    PYTHONPATH=src nice -n 10 python benchmarks/prompt_clicks.py [--model PATH] [--clicks 5] [--data ../shared/data] [--only TEXT]

The user clicks once deep inside the structure, then up to 4 times at the centre of the largest error region
(positive on a missed part, negative on a leak), each time with the previous result as ``previous``
(`napari_medseg.prompt.simulate`). Structures: liver and spleen of ../shared/data/ct_abdomen_3mm (held out of
the prompt model's training), and liver, spleen and a kidney of a synthetic phantom whose seed was not trained
on. The first call of the process (model load, kernel warm-up) is timed apart; "s/click" are the warm calls.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _threshold_lungs(image) -> dict:
    """Reference lungs of an unlabelled chest CT, by a rule that needs no model: air (< -400 HU) not connected
    to the outside of the body, its largest component with holes (vessels) filled slice by slice, split into
    the two lungs by a watershed of the distance map from the two largest cores. Named by the patient side of
    their centres (LPS x). Empty when the split does not give two lungs of similar size."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    air = image.array < -400
    lab, _ = ndi.label(air)
    faces = np.concatenate([lab[:, 0].ravel(), lab[:, -1].ravel(), lab[:, :, 0].ravel(), lab[:, :, -1].ravel()])
    lab[np.isin(lab, np.unique(faces))] = 0
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    lungs = np.stack([ndi.binary_fill_holes(s) for s in lab == sizes.argmax()])
    dist = ndi.distance_transform_edt(lungs, sampling=tuple(image.spacing)[::-1])  # array axes are (k, j, i)
    for radius in (5, 8, 11, 14, 17, 20, 25):
        cores, _ = ndi.label(dist > radius)
        sizes = np.bincount(cores.ravel())
        sizes[0] = 0
        big = np.argsort(sizes)[::-1][:2]
        if len(big) == 2 and sizes[big[1]] > 0.2 * sizes[big[0]]:
            break
    else:
        print("# chest CT: the lungs could not be split; rows skipped")
        return {}
    markers = np.zeros(lungs.shape, np.int32)
    markers[cores == big[0]], markers[cores == big[1]] = 1, 2
    split = watershed(-dist, markers, mask=lungs)
    # LPS: +x is the patient's left
    x = [image.geometry.index_to_physical(np.argwhere(split == v).mean(axis=0)[::-1])[0] for v in (1, 2)]
    left = 1 if x[0] > x[1] else 2
    return {"lung_left": split == left, "lung_right": split == 3 - left}


def _cases(data: Path):
    from napari_medseg.io import read_volume
    from napari_medseg.sample import SAMPLE_GEOMETRY, make_phantom

    ct = data / "ct_abdomen_3mm"
    if ct.is_dir():
        image, labels = read_volume(ct / "ct.nii.gz"), read_volume(ct / "labels.nii.gz")
        names = {v: int(k) for k, v in json.loads((ct / "classes.json").read_text()).items()}
        for organ in ("liver", "spleen"):
            yield f"ct_abdomen_3mm {organ} (held out)", image, labels.array == names[organ]
    else:
        print(f"# {ct} not found: real-CT rows skipped")
    chest = data / "ct_chest_dicom"
    if chest.is_dir():
        image = read_volume(chest)
        for organ, mask in _threshold_lungs(image).items():
            yield f"ct_chest_dicom {organ} (CT not trained on)", image, mask
    image, labels = make_phantom(901, **SAMPLE_GEOMETRY)  # seed 901: not a training phantom
    for value, organ in ((1, "liver (held out)"), (2, "spleen (held out)"), (3, "kidney_right")):
        yield f"phantom seed=901 {organ}", image, labels.array == value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="prompt model package (default: the shipped one)")
    ap.add_argument("--clicks", type=int, default=5)
    here = Path(__file__).resolve().parents[1]
    default = next((p for p in (here.parent / "shared/data", here.parents[1] / "shared/data", Path("/work/shared/data"))
                    if p.is_dir()), here.parent / "shared/data")
    ap.add_argument("--data", type=Path, default=default)
    ap.add_argument("--only", default=None, help="run only the structures whose name contains this text")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--spacing-factor", type=float, default=1.0,
                    help="diagnosis: run the model at its spacing times this (the crop covers that much more)")
    args = ap.parse_args(argv)

    import torch

    from napari_medseg.prompt.model import load_prompt_model
    from napari_medseg.prompt.segment import prompt_segment
    from napari_medseg.prompt.simulate import click_session, first_click

    flags = subprocess.run("lscpu | grep -o -E 'avx512[a-z_0-9]*|amx[a-z_]*' | sort -u | tr '\\n' ' '",
                           shell=True, capture_output=True, text=True).stdout.strip()
    print(f"# CPU: {os.cpu_count()} cores, {flags or 'no AVX-512'}; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()}")
    t = time.perf_counter()
    loaded = load_prompt_model(args.model)
    if args.spacing_factor != 1.0:
        import dataclasses

        card = dataclasses.replace(loaded.card, spacing=tuple(v * args.spacing_factor for v in loaded.card.spacing))
        loaded = dataclasses.replace(loaded, card=card)
    cases = [c for c in _cases(args.data) if args.only is None or args.only in c[0]]
    first = prompt_segment(cases[0][1], positive=[first_click(cases[0][2])], model=loaded)
    print(f"# model {loaded.path} ({loaded.card.provenance.get('training', {}).get('steps', '?')} training steps); "
          f"first call incl. load and warm-up {time.perf_counter() - t:.2f} s (crop {first.meta['prompt']['crop_shape']})")
    c0 = resource.getrusage(resource.RUSAGE_SELF)
    rows, secs, cpus = [], [], []
    print(f"{'structure':44s} {'voxels':>7s} {'Dice@1':>7s} {'Dice@3':>7s} {'Dice@5':>7s} {'s/click mean':>12s} {'worst':>6s} "
          f"{'CPU-s worst':>11s}  crops")
    for name, image, truth in cases:
        res = click_session(image, truth, args.clicks, model=loaded)
        d = [r["dice"] for r in res]
        at = lambda n: d[min(n, len(d)) - 1]  # noqa: E731 - a session that stopped early keeps its last Dice
        s = [r["seconds"] for r in res]
        secs += s
        cpus += [r["cpu_seconds"] for r in res]
        errs = [(r["false_negative"], r["false_positive"]) for r in res]
        rows.append({"structure": name, "voxels": int(truth.sum()), "dice": d, "seconds": s, "errors": errs,
                     "clicks": [(r["point"], r["positive"]) for r in res], "crops": [r["crop"] for r in res]})
        print(f"{name:44s} {int(truth.sum()):7d} {at(1):7.3f} {at(3):7.3f} {at(5):7.3f} {np.mean(s):12.3f} {max(s):6.3f} {max(cpus[-len(s):]):11.3f}  "
              + " ".join("x".join(map(str, r["crop"])) + ("+" if r["runs"] > 1 else "") for r in res), flush=True)
        print("    per click: " + " ".join(f"{r['dice']:.3f}{'+' if r['positive'] else '-'}(FN {r['false_negative']} FP "
                                         f"{r['false_positive']})" for r in res)
              + f"; torch threads per click {[r['threads'] for r in res]}", flush=True)
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    print(f"# all clicks: {len(secs)}, mean {np.mean(secs):.3f} s, worst {max(secs):.3f} s, CPU {cpu:.1f} s for "
          f"{sum(secs):.1f} s wall (per click: {np.mean(cpus):.3f} CPU-s mean, {max(cpus):.3f} worst); "
          f"load average {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load_average": os.getloadavg(), "cpu_flags": flags}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
