"""DICOM SEG and RTSTRUCT on a CT of realistic size: write/read times, file sizes, agreement with plastimatch.

Generates an oblique CT series (default 60 x 512 x 512, 0.78 x 0.78 x 2.5 mm, tilted 12 deg about x) with three
organ labels (one with a hole), then for each format: our writer, our reader (voxel-identical?), and for
RTSTRUCT plastimatch's reader (Dice per structure, and its time as a ratio to ours). Prints a table; asserts
nothing.

    nice python benchmarks/seg_rtstruct.py [--shape 60 512 512] [--repeat 1]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "io"))


def main() -> None:
    from dicom_factory import rotation
    from labels_factory import NAMES, ct, dice, organs

    from read_dicom import best_of as timed

    from napari_medseg.io import read_volume, write_labels

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=3, default=[60, 512, 512])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medseg_seg_bench_"))
    try:
        geom = dict(shape=tuple(args.shape), spacing=(0.78, 0.78, 2.5), direction=rotation("x", 12),
                    origin=(-199.6, -210.2, -340.5))  # fmt: skip
        _, image = ct(tmp / "ct", geometry=geom)
        lab = organs(image.spatial_shape)
        print(f"CT {image.shape} spacing {image.spacing} oblique 12 deg; labels: "
              + ", ".join(f"{n} {int((lab == v).sum())} vox" for v, n in NAMES.items()))
        print(f"{'format':10s} {'write s':>8s} {'read s':>8s} {'size MB':>8s}  identical")
        for fmt in ("seg", "rtstruct"):
            out = tmp / f"{fmt}.dcm"
            tw, _ = timed(lambda: write_labels(image.with_array(lab), out, classes=NAMES, reference=image,
                                               format=fmt, force=True), args.repeat)  # fmt: skip
            tr, back = timed(lambda: read_volume(out, reference=image), args.repeat)
            same = bool(np.array_equal(back.array, lab)) and back.same_grid(image, tol=0)
            print(f"{fmt:10s} {tw:8.2f} {tr:8.2f} {out.stat().st_size / 1e6:8.2f}  {same}")
        many_segments(tmp, image, args.repeat, timed)
        if shutil.which("plastimatch"):
            t0 = time.perf_counter()
            subprocess.run(["plastimatch", "convert", "--input", str(tmp / "rtstruct.dcm"), "--referenced-ct",
                            str(tmp / "ct"), "--output-prefix", str(tmp / "pl"), "--prefix-format", "nrrd",
                            "--xor-contours"], check=True, capture_output=True)  # fmt: skip
            tp = time.perf_counter() - t0
            import SimpleITK as sitk

            scores = [dice(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp / "pl" / f"{n}.nrrd"))) > 0, lab == v)
                      for v, n in NAMES.items()]  # fmt: skip
            print(f"plastimatch read of our RTSTRUCT: {tp:.2f} s ({tp / tr:.1f}x our reader), Dice "
                  + ", ".join(f"{n} {d:.4f}" for n, d in zip(NAMES.values(), scores)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def many_segments(tmp: Path, image, repeat: int, timed) -> None:
    """A highdicom-made SEG with 100 disjoint segments (TotalSegmentator writes 117): our reader vs highdicom's
    own combined volume (which does not place it on the CT grid)."""
    import highdicom as hd
    from labels_factory import highdicom_seg

    from napari_medseg.io import read_volume

    nk, nj, ni = image.spatial_shape
    masks = {}
    for n in range(100):
        m = np.zeros(image.spatial_shape, bool)
        k0, j0, i0 = (n % 4) * (nk // 4), (n // 4 % 5) * (nj // 5), (n // 20) * (ni // 5)
        m[k0 : k0 + nk // 4, j0 : j0 + nj // 6, i0 : i0 + ni // 6] = True
        masks[f"segment {n + 1}"] = m
    path = highdicom_seg([Path(f) for f in image.meta["dicom_files"]], masks, tmp / "many.dcm", shuffle=False)
    ours, back = timed(lambda: read_volume(path, reference=image), repeat)
    theirs, _ = timed(lambda: hd.seg.segread(path).get_volume(combine_segments=True), repeat)
    ok = all(np.array_equal(back.array == n, m) for n, m in enumerate(masks.values(), start=1))
    print(f"SEG with 100 segments: our read {ours:.2f} s (highdicom's combined get_volume alone {theirs:.2f} s, "
          f"ratio {ours / theirs:.2f}); every segment exact: {ok}")


if __name__ == "__main__":
    main()
