"""The recipe of the shipped default model (run by ``scripts/train_default_model.sh``; a research script, not
part of the installed package: ``python research/default_recipe.py --help``).

Training data (all resampled to the model grid: RAS, 3 mm isotropic):

* synthetic phantoms (`napari_medseg.sample.make_phantom`), seeds 101-108: half at the sample's geometry
  (0.8 x 0.8 x 2.5 mm, a small body), half at an adult field of view (2.7 x 2.7 x 3 mm), with mild
  intensity variation (offset ±10 HU, enhancement x0.9-1.15, noise 10-20 HU);
* the real 3 mm abdominal CT ``ct_abdomen_3mm`` (TotalSegmentator reference labels mapped 5->liver,
  1->spleen, 2->kidney_right, 3->kidney_left, vertebrae 26-33->spine), slices k < 74 and k >= 97 only.

Held out (never trained on): phantoms seeds 201 (sample geometry) and 202 (adult geometry), and the real CT
block k = 78..92 (15 axial slices through liver, spleen, both kidneys and L1-L2). The Dice on each is
written to the card (``provenance.metrics``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

TS_MAP = {5: 1, 1: 2, 2: 3, 3: 4, **{v: 6 for v in range(26, 34)}}
REAL_TRAIN_BLOCKS = ((0, 74), (97, 112))
REAL_HELDOUT_BLOCK = (78, 93)
SMALL = dict(shape=(48, 128, 128), spacing=(0.8, 0.8, 2.5))
ADULT = dict(shape=(60, 128, 128), spacing=(2.7, 2.7, 3.0))


def phantom_variants(seeds, rng_seed=0):
    from napari_medseg.sample import make_phantom

    rng = np.random.default_rng(rng_seed)
    out = []
    for n, seed in enumerate(seeds):
        geom = SMALL if n % 2 == 0 else ADULT
        kw = dict(hu_offset=float(rng.uniform(-10, 10)), contrast=float(rng.uniform(0.9, 1.15)), noise=float(rng.uniform(10, 20)))
        img, lab = make_phantom(seed=seed, **geom, **kw)
        desc = f"phantom seed={seed} spacing={geom['spacing']} " + " ".join(f"{k}={v:.2f}" for k, v in kw.items())
        img.meta["description"] = lab.meta["description"] = desc
        out.append((img, lab))
    return out


def crop_k(vol, k0, k1):
    """Slices ``k0:k1`` of a volume as a new `Volume` with the matching origin."""
    from napari_medseg.volume import Volume

    origin = vol.index_to_physical([0, 0, k0])
    return Volume(vol.array[k0:k1].copy(), vol.spacing, tuple(origin), vol.direction.copy(), dict(vol.meta))


def real_ct(data_dir: Path):
    from napari_medseg.io import read_volume

    img = read_volume(data_dir / "ct_abdomen_3mm" / "ct.nii.gz")
    lab = read_volume(data_dir / "ct_abdomen_3mm" / "labels.nii.gz")
    return img, lab


def default_card():
    from napari_medseg.classes import class_names
    from napari_medseg.training.train import unet_card

    card = unet_card(
        "default",
        {k: v for k, v in class_names().items() if k},
        spacing=(3.0, 3.0, 3.0),
        channels=(16, 32, 64, 128),
        strides=(2, 2, 2),
        num_res_units=1,
        roi_size=(96, 96, 96),
        intensity={"type": "ct_window", "a_min": -175.0, "a_max": 250.0, "b_min": 0.0, "b_max": 1.0, "clip": True},
        description=(
            "Default abdominal CT model (liver, spleen, kidneys, liver tumour, spine): MONAI UNet at 3 mm, "
            "trained on synthetic phantoms and one real 3 mm abdominal CT; see provenance for data and held-out Dice."
        ),
    )
    # one liver, one spleen, two kidneys: stray islands (chest-wall muscle, heart) go; a tumour lies in the liver
    card.keep_largest = [1, 2, 3, 4]
    card.contained_in = {5: 1}
    return card


def main(argv=None) -> int:
    import dataclasses

    import torch

    from napari_medseg.models.package import save_model_package
    from napari_medseg.progress import run_steps
    from napari_medseg.training.config import TrainConfig
    from napari_medseg.training.data import prepare_case
    from napari_medseg.training.loop import evaluate_cases, training_steps
    from napari_medseg.training.train import class_names, finish_card, TrainResult
    from napari_medseg.models.network import build_network

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("-o", "--output", type=Path, default=Path(__file__).resolve().parents[1] / "src" / "napari_medseg" / "models" / "default")
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--time-budget", type=float, default=2100.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--init", type=Path, help="continue from this model package (stage 2)")
    ap.add_argument("--thorax", type=int, default=0, help="synthetic thorax negatives (seeds 401..)")
    ap.add_argument("--lateral-muscles", action="store_true",
                    help="thorax negatives with thick muscles outside the ribs (stage 3; stage 2 had none)")
    ap.add_argument("--thoracoabdominal", type=int, default=0,
                    help="synthetic phantoms running up into the chest (seeds 501..), see thoracoabdominal()")
    ap.add_argument("--fg-fraction", type=float, default=0.7, help="share of patches centred on a labelled organ")
    ap.add_argument("--real-weight", type=int, default=3, help="copies of each real-CT block among the cases")
    ap.add_argument("--composite-heart", choices=["ellipsoid", "column"], default="ellipsoid",
                    help="heart of the thoracoabdominal phantoms")
    ap.add_argument("--antialias", action="store_true", help="card: Gaussian anti-aliasing before downsampling")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    card = dataclasses.replace(default_card(), antialias=bool(args.antialias))
    cfg = TrainConfig(
        steps=args.steps, time_budget_s=args.time_budget, lr=args.lr, warmup_frac=0.03, batch_size=2,
        patch_size=(64, 64, 48), fg_fraction=args.fg_fraction, intensity_jitter=0.1, scale_jitter=0.1,
        val_every=10**9, seed=args.seed, num_threads=args.threads,
    )
    train_ph = phantom_variants(range(101, 109), rng_seed=args.seed)
    held_ph = phantom_variants((201, 202), rng_seed=args.seed + 1)
    img, lab = real_ct(args.data)
    cases = [prepare_case(i, l, card, name=i.meta["description"], pad_to=cfg.patch_size) for i, l in train_ph]
    real_cases = [
        prepare_case(crop_k(img, a, b), crop_k(lab, a, b), card, label_map=TS_MAP, name=f"ct_abdomen_3mm k={a}..{b - 1}",
                     pad_to=cfg.patch_size)
        for a, b in REAL_TRAIN_BLOCKS
    ]
    cases += real_cases * args.real_weight  # default 3: 2 blocks x 3 vs 8 phantoms, a third of the patches
    thorax = [thorax_negative(401 + n, lateral_muscles=args.lateral_muscles) for n in range(args.thorax)]
    cases += [prepare_case(i, l, card, name=i.meta["description"], pad_to=cfg.patch_size) for i, l in thorax] * 2
    composite = [thoracoabdominal(501 + n, heart=args.composite_heart) for n in range(args.thoracoabdominal)]
    cases += [prepare_case(i, l, card, name=i.meta["description"], pad_to=cfg.patch_size) for i, l in composite] * 2
    ho_ph = [prepare_case(i, l, card, name=i.meta["description"]) for i, l in held_ph]
    a, b = REAL_HELDOUT_BLOCK
    ho_real = [prepare_case(crop_k(img, a, b), crop_k(lab, a, b), card, label_map=TS_MAP, name=f"ct_abdomen_3mm k={a}..{b - 1}")]

    if args.init:
        from napari_medseg.models.package import load_model_package

        net = load_model_package(args.init).network
    else:
        net = build_network(card)
    names = class_names(card)

    def show(p):
        if p.step % 25 == 0:
            print(f"step {p.step} loss {p.loss if p.loss is None else round(p.loss, 4)} t={p.elapsed_s:.0f}s", flush=True)

    log = run_steps(training_steps(net, cases, cfg, card.out_channels, None, names), show)
    roi = (96, 96, 96)
    m_ph = evaluate_cases(net, ho_ph, card.out_channels, roi, names)
    m_real = evaluate_cases(net, ho_real, card.out_channels, roi, names)
    metrics = {
        "heldout_phantom_dice": m_ph["dice"],
        "heldout_phantom_dice_mean": m_ph["dice_mean"],
        "heldout_real_ct_dice": m_real["dice"],
        "heldout_real_ct_dice_mean": m_real["dice_mean"],
        "evaluated_on": "model grid (3 mm), pooled over the held-out volumes; network output before post-processing",
    }
    print(json.dumps(metrics, indent=1), flush=True)
    result = TrainResult(net, card, log, metrics=metrics)
    data = {
        "train": [c.name for c in cases[: len(train_ph)]] + [c.name for c in real_cases]
        + [f"synthetic thorax negative seed={401 + n}" for n in range(args.thorax)]
        + [f"synthetic thoracoabdominal phantom seed={501 + n}" for n in range(args.thoracoabdominal)],
        "heldout": [c.name for c in ho_ph] + [c.name for c in ho_real],
        "real_ct_label_map": {str(k): v for k, v in TS_MAP.items()},
        "real_ct_source": "ct_abdomen_3mm (TotalSegmentator tests/reference_files; labels are model output, not expert)",
    }
    extra = {"command": "scripts/train_default_model.sh", "seed": args.seed}
    if args.init:
        from napari_medseg.models.package import read_card

        first = read_card(args.init).provenance
        earlier = list(first.get("stages") or [{k: first.get(k) for k in ("steps", "train_seconds", "hyper_parameters", "metrics")}])
        # the init's own stage: its figures are the card's top-level ones (its steps: the total minus the stages before)
        own = {"steps": int(first.get("steps") or 0) - sum(int(st.get("steps") or 0) for st in earlier[:-1]),
               **{k: first.get(k) for k in ("train_seconds", "hyper_parameters", "metrics") if first.get(k) is not None}}
        earlier[-1] = {**own, **earlier[-1]} if len(earlier) > 1 else earlier[-1]
        extra["stages"] = earlier + [{"init": f"stage {len(earlier)} above", "thorax_negatives": args.thorax,
                                      "thoracoabdominal_phantoms": args.thoracoabdominal, "antialias": bool(args.antialias),
                                      "lateral_muscles": bool(args.lateral_muscles), "composite_heart": args.composite_heart,
                                      "real_weight": args.real_weight, "lr": args.lr, "seed": args.seed,
                                      "steps": log.steps, "train_seconds": round(log.elapsed_s, 1)}]
        extra["steps"] = log.steps + int(first.get("steps") or 0)
    card = finish_card(card, result, cfg, data, extra)
    card = dataclasses.replace(card, version="builtin")
    save_model_package(net, card, args.output, force=True)
    print(f"saved {args.output} after {log.steps} steps in {log.elapsed_s:.0f}s ({log.stopped_by})")
    return 0



def _thorax_slice(nj: int, ni: int, si: float, sj: float, rng, heart: bool = True, lateral_muscles: bool = True) -> np.ndarray:
    """One synthetic lower-thorax axial slice in HU ``[j, i]``: chest wall, lungs, heart, aorta, ribs.

    ``lateral_muscles``: thick muscles outside the ribs (stage 2 of the default model was trained without).
    """
    x = (np.arange(ni) - (ni - 1) / 2) * si
    y = (np.arange(nj) - (nj - 1) / 2) * sj
    yy, xx = np.meshgrid(y, x, indexing="ij")
    R = min(ni * si, nj * sj) / 2
    s = 1 + rng.uniform(-0.06, 0.06)

    def ell(cx, cy, a, b):
        return ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 < 1

    body = ell(0, 0.02 * R, 0.92 * R * s, 0.70 * R * s)
    wall = ell(0, 0.02 * R, 0.80 * R * s, 0.58 * R * s)
    hu2d = np.full((nj, ni), -1000.0)
    hu2d[body] = -100
    hu2d[body & ~wall] = np.where(((xx[body & ~wall] + yy[body & ~wall]) // 12) % 2 == 0, 45, -90)  # muscle / fat
    hu2d[wall] = -80  # mediastinal fat
    for side in (-1, 1):
        hu2d[ell(side * 0.40 * R * s, 0.05 * R, 0.33 * R * s, 0.45 * R * s) & wall] = -850  # lungs
    if heart:  # (the mask first: the random draws keep the order stage 2 was trained with)
        heart_mask = ell(0.10 * R + rng.uniform(-5, 5), -0.18 * R, 0.30 * R * s, 0.24 * R * s)
        hu2d[heart_mask] = 40 + rng.uniform(-10, 30)
        hu2d[ell(0.12 * R, -0.16 * R, 0.20 * R * s, 0.15 * R * s)] = 45 + rng.uniform(-10, 60)  # blood pool
    hu2d[ell(-0.05 * R, 0.22 * R, 0.07 * R, 0.07 * R)] = 45 + rng.uniform(-10, 60)  # aorta
    ring = body & ~ell(0, 0.02 * R, 0.84 * R * s, 0.62 * R * s)
    ang = np.arctan2(yy, xx)
    hu2d[ring & (np.cos(ang * 9) > 0.7)] = 450  # rib cross-sections
    # thick lateral chest-wall muscles outside the ribs (serratus / latissimus): a real chest CT's
    # elongated soft-tissue blobs beside the ribs, which the first models called spleen or liver
    for side in ((-1, 1) if lateral_muscles else ()):
        a, b = rng.uniform(0.05, 0.09) * R, rng.uniform(0.18, 0.30) * R
        cx, cy = side * 0.90 * R * s, rng.uniform(-0.1, 0.25) * R
        hu2d[ell(cx, cy, a, b)] = rng.uniform(25, 60)  # bulging the body outline a little, as they do
    return hu2d


def thorax_negative(seed: int, lateral_muscles: bool = True):
    """A synthetic lower-thorax block labelled background except the spine: lungs, heart, chest wall, ribs.

    Neither training source shows a heart or chest wall; without such negatives the model called the
    heart and chest-wall muscle of a real chest CT "liver"/"spleen". The spine (label 6) is taken from a
    phantom of the same geometry so it continues into the thorax.
    """
    from napari_medseg.sample import make_phantom

    rng = np.random.default_rng(seed)
    img, lab = make_phantom(seed=seed, **ADULT)
    nk, nj, ni = img.spatial_shape
    si, sj, _ = img.spacing
    hu = np.repeat(_thorax_slice(nj, ni, si, sj, rng, lateral_muscles=lateral_muscles)[None], nk, axis=0)
    spine = lab.array == 6
    hu[spine] = img.array[spine]
    hu += rng.normal(0, 15, hu.shape)
    labels = np.where(spine, 6, 0).astype(np.uint8)
    im = img.with_array(hu.astype(np.int16), description=f"thorax negative seed={seed}")
    return im, lab.with_array(labels, description=f"thorax negative seed={seed}")


THORAX_SLICES = 40  # thorax slices stacked above an ADULT phantom (3 mm each)


def thoracoabdominal(seed: int, heart: str = "ellipsoid"):
    """A synthetic phantom that runs from the kidneys up into the chest: liver and spleen end in a dome.

    The real training CT stops at the liver dome and the thorax negatives hold no organ, so a model trained
    on them alone had never seen lungs and heart *above* a liver: on a real chest CT, whose sliding windows
    always hold the thorax, it then missed the upper abdomen (a crop without the chest found it). Here an
    abdomen phantom (`make_phantom`, 30 cm tall) is cut by two diaphragm domes (paraboloids, the right one
    higher); above them lies the synthetic thorax (lungs reaching down around the domes, heart resting on
    them, chest wall, ribs) over a 4-6 mm diaphragm band, all background except the spine; the liver's left
    lobe reaches under the heart. The phantom
    (18 cm) gets `THORAX_SLICES` more slices on top (its spine continued), 30 cm in all, about the height of
    a model window.
    """
    from scipy.ndimage import gaussian_filter

    from napari_medseg.sample import make_phantom

    rng = np.random.default_rng(seed)
    kw = dict(hu_offset=float(rng.uniform(-10, 10)), contrast=float(rng.uniform(0.85, 1.15)))
    img, lab = make_phantom(seed=seed, noise=0.0, **ADULT, **kw)
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], THORAX_SLICES, axis=0)])  # noqa: E731
    img, lab = img.with_array(pad(img.array)), lab.with_array(pad(lab.array))
    nk, nj, ni = img.spatial_shape
    si, sj, sk = img.spacing
    x = ((np.arange(ni) - (ni - 1) / 2) * si)[None, :]
    y = ((np.arange(nj) - (nj - 1) / 2) * sj)[:, None]
    z = (np.arange(nk) * sk)[:, None, None]
    H = nk * sk
    R = min(ni * si, nj * sj) / 2
    right_apex = rng.uniform(0.42, 0.52) * H  # 12.6-15.6 cm: inside the abdomen phantom's top
    left_apex = right_apex - rng.uniform(8, 25)
    curv = rng.uniform(0.55, 0.8) * R  # radius of curvature of each dome (mm)
    # LPS: patient right is -x; the domes sit over the liver (right) and the spleen/stomach (left)
    dome_r = right_apex - ((x + 0.35 * R) ** 2 + (y + 0.05 * R) ** 2) / (2 * curv)
    dome_l = left_apex - ((x - 0.35 * R) ** 2 + (y + 0.05 * R) ** 2) / (2 * curv)
    dome = np.maximum(np.maximum(dome_r, dome_l), right_apex - rng.uniform(45, 70))  # [j, i]
    band = rng.uniform(4, 6)
    above = z > dome[None] + band
    diaphragm = (z > dome[None]) & ~above
    hu = np.asarray(img.array, dtype=np.float32).copy()
    if heart not in ("ellipsoid", "column"):
        raise ValueError(f"heart must be 'ellipsoid' or 'column', got {heart!r}")
    thorax = _thorax_slice(nj, ni, si, sj, rng, heart=heart == "column").astype(np.float32)
    labels = np.asarray(lab.array).copy()
    spine = labels == 6
    # the left lobe of the liver reaches across the midline under the heart: liver tissue (labelled) in the
    # 4-7 cm below the dome, anterior, so that heart and liver meet across the diaphragm as they do in a real CT
    liver_hu = float(np.median(hu[labels == 1])) if (labels == 1).any() else 60.0
    lobe = (((x - rng.uniform(0.0, 0.12) * R) / (0.30 * R)) ** 2 + ((y + 0.22 * R) / (0.16 * R)) ** 2 < 1)[None]
    lobe = lobe & (z <= dome[None]) & (z > dome[None] - rng.uniform(40, 70)) & (labels != 6)
    hu[lobe] = liver_hu
    labels[lobe] = 1
    hu = np.where(above & ~spine, thorax[None], hu)
    hu = np.where(diaphragm & ~spine & (thorax[None] > -950), 40.0 + kw["hu_offset"], hu)
    labels[(above | diaphragm) & ~spine] = 0
    # the heart: an ellipsoid resting on the diaphragm over the left lobe, in a thin rim of pericardial fat,
    # as dense as the liver below it (unenhanced), so only the diaphragm and the fat tell them apart
    # ("column": the thorax slice's own heart, the same in every slice above the diaphragm)
    if heart == "ellipsoid":
        hx, hy = rng.uniform(-0.02, 0.15) * R, rng.uniform(-0.20, -0.12) * R
        ha, hb, hc = rng.uniform(0.26, 0.36) * R, rng.uniform(0.20, 0.27) * R, rng.uniform(45, 65)
        ci, cj = int(np.argmin(np.abs(x[0] - hx))), int(np.argmin(np.abs(y[:, 0] - hy)))
        hz = dome[cj, ci] + band + 0.9 * hc
        r = np.sqrt(((x - hx) / ha) ** 2 + ((y - hy) / hb) ** 2 + ((z - hz) / hc) ** 2)
        hu[(r < 1.12) & above] = -80.0
        hu[(r < 1.0) & above] = 40.0 + rng.uniform(-10, 25)
        hu[(r < 0.6) & above] = 45.0 + rng.uniform(-10, 60)  # blood pool
    hu = gaussian_filter(hu, (0.3, 0.5, 0.5), mode="nearest")
    n = gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), (0.3, 0.7, 0.7))
    hu += n * (rng.uniform(10, 25) / (n.std() + 1e-6))
    desc = f"thoracoabdominal phantom seed={seed}"
    return (img.with_array(np.clip(np.rint(hu), -1024, 3071).astype(np.int16), description=desc),
            lab.with_array(labels.astype(np.uint8), description=desc))


if __name__ == "__main__":
    sys.exit(main())
