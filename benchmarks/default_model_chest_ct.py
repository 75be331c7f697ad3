"""Check the shipped default model on a real CT it never saw: the 141-slice chest CT in ../shared/data.

Prints, per class, voxel count, volume (mL) and the slice range, the segmentation time and peak RSS, and
writes a PNG with axial/coronal overlays (docs/images/default_model_chest_ct.png by default). Then, as the
users will run it (whole volume, post-processing on), the Dice on the held-out block of the real abdominal
CT (axial slices 78-92, never trained on; the card's own figures segment that block alone).

    python benchmarks/default_model_chest_ct.py [--model default|PATH]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None):
    from napari_medseg.inference import segment
    from napari_medseg.io import read_volume

    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=root.parent / "shared" / "data")
    ap.add_argument("--png", type=Path, default=root / "docs" / "images" / "default_model_chest_ct.png")
    ap.add_argument("--model", default="default")
    args = ap.parse_args(argv)

    image = read_volume(args.data / "ct_chest_dicom")
    t = time.perf_counter()
    res = segment(image, model=args.model, device="cpu")
    dt = time.perf_counter() - t
    lab = res.labels.array
    print(f"{image}: segmented in {dt:.1f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    for v, name in sorted(res.classes.items()):
        if v == 0:
            continue
        m = lab == v
        ks = np.flatnonzero(m.any(axis=(1, 2)))
        rng = f"slices {ks.min()}..{ks.max()}" if ks.size else "absent"
        ii = np.flatnonzero(m.any(axis=(0, 1)))
        side = ""
        if ii.size:  # image i axis: LPS +x = patient left for an identity direction
            ci = float(np.mean(np.nonzero(m)[2]))
            side = "patient left" if (image.direction[0, 0] > 0) == (ci > lab.shape[2] / 2) else "patient right"
        print(f"  {v} {name:<13} {int(m.sum()):>8} voxels {m.sum() * image.voxel_volume_mm3 / 1000:8.1f} mL  {rng}  {side}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from napari_medseg.classes import class_colors

    cols = class_colors()
    cmap = ListedColormap([(0, 0, 0, 0)] + [cols.get(v, (1, 1, 1, 1)) for v in range(1, 7)])
    nk = lab.shape[0]
    k_show = sorted({int(round(f * (nk - 1))) for f in (0.04, 0.14, 0.25, 0.40, 0.65)})
    j_show = lab.shape[1] // 2 + 30
    fig, axes = plt.subplots(2, 3, figsize=(13, 9))
    axes = axes.ravel()
    win = dict(cmap="gray", vmin=-200, vmax=300)
    sx, sy, sz = image.spacing
    for ax, k in zip(axes[:5], k_show):
        ax.imshow(image.array[k], **win)
        ax.imshow(lab[k], cmap=cmap, vmin=0, vmax=6, alpha=0.45, interpolation="nearest")
        ax.set_title(f"axial k={k}")
    axes[5].imshow(image.array[:, j_show, :], aspect=sz / sx, origin="lower", **win)
    axes[5].imshow(lab[:, j_show, :], cmap=cmap, vmin=0, vmax=6, alpha=0.45, aspect=sz / sx, origin="lower",
                   interpolation="nearest")
    axes[5].set_title(f"coronal j={j_show}")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"model {args.model!r} on the unseen chest CT (liver orange, spleen purple, kidneys yellow, tumour red, spine white;\n"
                 + ("image left = patient right)" if image.direction[0, 0] > 0 else "image left = patient left)"))
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=70, bbox_inches="tight")
    print(f"wrote {args.png}")
    heldout_in_context(args.data, args.model)


def heldout_in_context(data: Path, model: str) -> None:
    from napari_medseg.inference import segment
    from napari_medseg.io import read_volume
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "research"))  # research/default_recipe.py
    from default_recipe import REAL_HELDOUT_BLOCK, TS_MAP

    folder = data / "ct_abdomen_3mm"
    if not folder.is_dir():
        print(f"{folder} not found: no held-out real-CT figure")
        return
    image, ref = read_volume(folder / "ct.nii.gz"), read_volume(folder / "labels.nii.gz")
    truth = np.zeros(ref.array.shape, np.uint8)
    for src, dst in TS_MAP.items():
        truth[ref.array == src] = dst
    res = segment(image, model=model, device="cpu")
    a, b = REAL_HELDOUT_BLOCK
    pred, gt = res.labels.array[a:b], truth[a:b]
    scores = []
    for v in sorted(set(TS_MAP.values())):
        p, g = pred == v, gt == v
        scores.append(f"{res.classes[v]} {2 * (p & g).sum() / max(1, p.sum() + g.sum()):.3f}")
    print(f"real abdomen CT, held-out slices {a}-{b - 1}, whole volume segmented, post-processed: Dice " + ", ".join(scores))


if __name__ == "__main__":
    main()
