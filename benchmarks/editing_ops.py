"""Time each correction operation on a full-size CT (../shared/data/ct_chest_dicom: 141 x 512 x 512,
0.98 x 0.98 x 2 mm) and, with --viewer, the same operations applied to a napari Labels layer as one
undoable step (apply + undo). The class edited is the lungs (air inside the body, HU < -400), a large
real structure. Prints a table; asserts nothing.

    nice python benchmarks/editing_ops.py [--viewer] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_medseg import editing


def lung_labels(hu: np.ndarray) -> np.ndarray:
    body = ndi.binary_fill_holes(hu > -400, structure=np.ones((1, 3, 3), bool))
    lungs = (hu < -400) & body
    lab = np.zeros(hu.shape, np.uint8)
    lab[lungs] = 1
    return lab


def operations(lab, spacing, k):
    z = lab.copy()
    z[k - 5:k + 5] = 0  # a gap for interpolation
    yield "interpolate (volume, 9-slice gap)", lambda: editing.interpolate_slices(z, 1, 0, spacing=spacing)
    for where, tag in (((0, k), "slice"), (None, "volume")):
        yield f"fill holes ({tag}, 2D per slice)", lambda w=where: editing.fill_holes(lab, 1, where=w, spacing=spacing, per_slice_axis=0)
        yield f"remove islands < 100 mm3 ({tag})", lambda w=where: editing.remove_islands(lab, 1, 100, where=w, spacing=spacing)
        yield f"keep largest ({tag})", lambda w=where: editing.keep_largest(lab, 1, where=w, spacing=spacing)
        yield f"dilate 3 mm ({tag})", lambda w=where: editing.dilate(lab, 1, 3.0, where=w, spacing=spacing)
        yield f"erode 3 mm ({tag})", lambda w=where: editing.erode(lab, 1, 3.0, where=w, spacing=spacing)
        yield f"smooth 2 mm ({tag})", lambda w=where: editing.smooth(lab, 1, 2.0, where=w, spacing=spacing)
    yield "copy previous slice", lambda: editing.copy_slice(lab, 0, k, label=1)
    yield "relabel 1 -> 2 (volume)", lambda: editing.relabel(lab, 1, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--viewer", action="store_true", help="also apply + undo on a napari Labels layer (needs a display)")
    args = ap.parse_args()
    from napari_medseg.io import read_volume

    vol = read_volume(Path(args.data) / "ct_chest_dicom")
    lab = lung_labels(vol.array)
    k = lab.shape[0] // 2
    print(f"chest CT {vol.shape} spacing (i,j,k) {tuple(round(s, 3) for s in vol.spacing)} mm; "
          f"lung voxels {int(lab.sum())}")
    layer = None
    if args.viewer:
        import napari

        from napari_medseg._napari.tracking import apply_edit

        viewer = napari.Viewer(show=False)
        layer = viewer.add_labels(lab.copy(), scale=vol.spacing[::-1])
    print(f"{'operation':40s} {'compute s':>10s} {'voxels changed':>15s}" + (f" {'apply s':>8s} {'undo s':>8s}" if layer else ""))
    for name, fn in operations(lab, vol.spacing, k):
        t = time.perf_counter()
        edit = fn()
        dt = time.perf_counter() - t
        line = f"{name:40s} {dt:10.3f} {edit.n_changed:15d}"
        if layer is not None and not name.startswith("interpolate"):
            t = time.perf_counter()
            apply_edit(layer, edit)
            ta = time.perf_counter() - t
            t = time.perf_counter()
            layer.undo()
            tu = time.perf_counter() - t
            assert np.array_equal(layer.data, lab)
            line += f" {ta:8.3f} {tu:8.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
