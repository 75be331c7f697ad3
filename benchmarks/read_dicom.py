"""Benchmark the DICOM reader.

1. Read the 141-slice chest CT (../shared/data/ct_chest_dicom): napari-medseg's ``read_dicom`` against
   SimpleITK's ``ImageSeriesReader`` (GetGDCMSeriesFileNames + Execute), best of N each, with the ratio.
2. The first ``--compressed-slices`` slices of the chest CT re-encoded as RLE, JPEG-LS and JPEG 2000 (lossless):
   ours against SimpleITK again (``--compressed-slices 0`` skips this).
3. List a synthetic folder of 2,000 small slices in several series with ``list_dicom_series``.

Usage:  python benchmarks/read_dicom.py [--repeat 5] [--data ../shared/data/ct_chest_dicom] [--n-files 2000]
                                        [--compressed-slices 40]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "io"))  # dicom_factory


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def read_sitk(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def bench_chest(folder: Path, repeat: int) -> None:
    import SimpleITK as sitk

    from napari_medseg.io.dicom import read_dicom

    read_dicom(folder), read_sitk(folder)  # warm the file cache and imports for both
    t_ours, vol = best_of(lambda: read_dicom(folder), repeat)
    t_sitk, img = best_of(lambda: read_sitk(folder), repeat)
    same = np.array_equal(vol.array, sitk.GetArrayFromImage(img))
    print(f"chest CT {vol.shape} from {folder}")
    print(f"  napari-medseg read_dicom : {t_ours:.3f} s (best of {repeat})")
    print(f"  SimpleITK series reader  : {t_sitk:.3f} s (best of {repeat})")
    print(f"  ratio ours/SimpleITK     : {t_ours / t_sitk:.2f}x (goal <= 1.2x); identical voxels: {same}")


def bench_compressed(folder: Path, n_slices: int, repeat: int) -> None:
    import pydicom
    import SimpleITK as sitk
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    from napari_medseg.io.dicom import read_dicom

    files = sorted(folder.glob("*.dcm"))[:n_slices]
    for uid in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        with tempfile.TemporaryDirectory() as tmp:
            for f in files:
                ds = pydicom.dcmread(f)
                ds.remove_private_tags()  # implicit-VR private tags cannot be re-encoded as explicit VR
                ds.compress(uid)
                ds.save_as(Path(tmp) / f.name)
            t_ours, vol = best_of(lambda: read_dicom(tmp), repeat)
            t_sitk, img = best_of(lambda: read_sitk(Path(tmp)), repeat)
            same = np.array_equal(vol.array, sitk.GetArrayFromImage(img))
            print(f"  {uid.name[:28]:<28} {len(files)} slices: ours {t_ours:.3f} s, SimpleITK {t_sitk:.3f} s, "
                  f"ratio {t_ours / t_sitk:.2f}x; identical voxels: {same}")  # fmt: skip


def bench_listing(n_files: int, repeat: int) -> None:
    from dicom_factory import write_series  # tests/io/dicom_factory.py

    from napari_medseg.io.dicom import list_dicom_series

    with tempfile.TemporaryDirectory() as tmp:
        n_series = 5
        per = n_files // n_series
        t0 = time.perf_counter()
        for s in range(n_series):
            write_series(Path(tmp) / f"s{s}", shape=(per, 32, 32), series_number=s + 1, seed=s)
        print(f"wrote {n_series * per} slices in {n_series} series in {time.perf_counter() - t0:.1f} s")
        t, infos = best_of(lambda: list_dicom_series(tmp), repeat)
        print(f"  list_dicom_series: {t:.3f} s for {sum(len(i.files) for i in infos)} files, "
              f"{len(infos)} series (best of {repeat})")  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ct_chest_dicom")
    parser.add_argument("--n-files", type=int, default=2000)
    parser.add_argument("--compressed-slices", type=int, default=40)
    args = parser.parse_args(argv)
    if args.data.is_dir():
        bench_chest(args.data, args.repeat)
        if args.compressed_slices > 0:
            print("compressed copies of the chest CT (best of 3):")
            bench_compressed(args.data, args.compressed_slices, 3)
    else:
        print(f"{args.data} not found: skipping the chest CT benchmark")
    bench_listing(args.n_files, max(1, args.repeat // 2))


if __name__ == "__main__":
    main()
