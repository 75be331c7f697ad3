"""Time the sample phantom and the writers. Prints a table; asserts nothing.

* ``make_phantom`` at the default size (48 x 128 x 128) and at 96 x 256 x 256;
* ``write_sample("abdomen")`` and ``write_sample("abdomen-dicom")`` (write + read back through the readers);
* with ../shared/data: labels for the 141-slice chest CT written as NIfTI and as DICOM SEG, and the
  abdomen NIfTI read.

    nice python benchmarks/sample_and_writers.py [--data ../shared/data] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from napari_medseg.io import read_volume, write_labels
    from napari_medseg.sample import make_phantom, write_sample

    make_phantom(seed=0)  # warm imports (scipy)
    rows = [
        ("make_phantom 48x128x128", best_of(lambda: make_phantom(seed=1), args.repeat)),
        ("make_phantom 96x256x256", best_of(lambda: make_phantom(seed=1, shape=(96, 256, 256)), args.repeat)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("abdomen", "abdomen-dicom"):
            rows.append((f"write_sample {name} (+ read back)",
                         best_of(lambda n=name: write_sample(n, Path(tmp) / n, force=True), args.repeat)))
        data = Path(args.data)
        chest = data / "ct_chest_dicom"
        if chest.is_dir():
            image = read_volume(chest)
            lab = np.zeros(image.spatial_shape, np.uint8)
            lab[20:120, 100:400, 100:300] = 1
            lab[40:80, 200:260, 300:400] = 2
            labels = image.with_array(lab)
            classes = {1: "region", 2: "lesion"}
            rows.append(("chest CT labels -> NIfTI (.nii.gz)", best_of(
                lambda: write_labels(labels, Path(tmp) / "l.nii.gz", classes, reference=image, force=True), args.repeat)))
            rows.append(("chest CT labels -> DICOM SEG", best_of(
                lambda: write_labels(labels, Path(tmp) / "l.dcm", classes, reference=image, force=True), args.repeat)))
        ct = data / "ct_abdomen_3mm" / "ct.nii.gz"
        if ct.is_file():
            rows.append(("read abdomen ct.nii.gz (122x101x112)", best_of(lambda: read_volume(ct), args.repeat)))
    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  best of {args.repeat} (s)")
    for name, t in rows:
        print(f"{name:<{width}}  {t:8.3f}")


if __name__ == "__main__":
    main()
