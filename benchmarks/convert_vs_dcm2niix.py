"""Compare ``medseg convert`` with dcm2niix (an independent DICOM-to-NIfTI converter) on generated series.

Cases: axial, oblique, gantry tilt, enhanced multi-frame, a missing slice, a single slice, non-square pixels,
a series without SOP Class UID (JPEG 2000). Each series is written by ``tests/io/dicom_factory.py`` with known
geometry and values, converted by both tools (``medseg convert DIR -o x.nii.gz``; ``dcm2niix -z y -b n``),
and the NIfTI files compared after bringing both to the closest canonical (RAS) orientation with nibabel:

* ``grid``: same shape and affine within 1e-3 mm (max |difference| of the 4x4 affines printed);
* ``values``: same voxel values (max |difference| printed); ``truth`` compares each file with the values the
  factory wrote (for gantry tilt, lossless only on the first slice, as both resample the others).

dcm2niix writes extra files for some cases (``*_Tilt_1`` tilt-corrected, ``*_Eq_1`` equidistant); every
output is compared. See docs/dicom.md ("Compared with dcm2niix") for who is right where they differ.

Usage:  python benchmarks/convert_vs_dcm2niix.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "io"))  # dicom_factory


def cases(base: Path):
    import pydicom
    from dicom_factory import rotation, write_enhanced, write_series

    yield "axial", write_series(base / "axial", shape=(8, 48, 40))
    yield "oblique", write_series(base / "oblique", shape=(8, 48, 40), direction=rotation("x", 25) @ rotation("z", 15))
    yield "gantry tilt 12 deg", write_series(base / "tilt", shape=(8, 48, 40), tilt_degrees=12.0)
    yield "multi-frame (enhanced)", write_enhanced(base / "enhanced" / "mf.dcm", shape=(8, 48, 40))
    yield "missing slice", write_series(base / "missing", shape=(9, 48, 40), drop_slices=(4,))
    yield "single slice", write_series(base / "single", shape=(1, 48, 40), spacing=(0.7, 0.7, 3.0))
    yield "non-square pixels", write_series(base / "nonsquare", shape=(8, 48, 40), spacing=(0.6, 0.9, 2.0))
    w = write_series(base / "nosop", shape=(8, 48, 40), syntax="jpeg2000")
    for f in w.files:
        ds = pydicom.dcmread(f)
        del ds.SOPClassUID
        del ds.file_meta.MediaStorageSOPClassUID
        ds.save_as(f)
    yield "no SOP Class UID, JPEG 2000", w


def canonical(path: Path):
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    return img.affine, np.asarray(img.get_fdata(dtype=np.float64))


def position_error(path: Path, w) -> float:
    """Max error (mm) of the slice positions along the slice normal: the file's k-th slice against the k-th
    slice as written (ImagePositionPatient), both in order along the normal. 0 when every slice is where
    the file says it is."""
    import nibabel as nib

    img = nib.load(str(path))
    aff, shape = img.affine, img.shape
    normal = np.asarray(w.direction, float)[:, 2] * np.array([-1.0, -1.0, 1.0])  # LPS -> RAS
    axis = int(np.argmax(np.abs(aff[:3, :3].T @ normal)))
    centre = [0.0, 0.0, 0.0]
    ks = np.arange(shape[axis])
    vox = np.zeros((4, len(ks)))
    vox[3] = 1
    vox[axis] = ks
    for ax in range(3):
        if ax != axis:
            vox[ax] = centre[ax]
    d_file = np.sort((aff @ vox)[:3].T @ normal)
    d_true = np.sort((np.asarray(w.positions, float) * np.array([-1.0, -1.0, 1.0])) @ normal)
    if len(d_file) != len(d_true):
        return float("nan")
    return float(np.abs(d_file - d_true).max())


def physical_diff(ours: Path, other: Path) -> str:
    """Max |ours - other| at our voxel centres, the other file linearly interpolated there (voxels inside
    its grid only): the two agree in physical space even when their grids differ (tilt: sheared vs resampled)."""
    import nibabel as nib
    from scipy import ndimage

    a, b = nib.load(str(ours)), nib.load(str(other))
    va, vb = np.asarray(a.get_fdata()), np.asarray(b.get_fdata())
    ijk = np.indices(va.shape).reshape(3, -1)
    world = a.affine @ np.r_[ijk, np.ones((1, ijk.shape[1]))]
    idx = np.linalg.solve(b.affine, world)[:3]
    inside = np.all((idx >= 0) & (idx <= np.array(vb.shape)[:, None] - 1), axis=0)
    vals = ndimage.map_coordinates(vb, idx[:, inside], order=1)
    diff = np.abs(va.reshape(-1)[inside] - vals)
    return f"max {diff.max():.3g}, mean {diff.mean():.3g} over {inside.mean():.0%} of our voxels"


def shear(path: Path) -> float:
    """Largest |cosine| between two axes of the file's affine (0 for an orthogonal grid)."""
    import nibabel as nib

    m = nib.load(str(path)).affine[:3, :3]
    m = m / np.linalg.norm(m, axis=0)
    return float(np.abs(m.T @ m - np.eye(3)).max())


def run_case(name, w, folder: Path, out: Path, env) -> list[str]:
    import nibabel as nib

    from napari_medseg.volume import Volume

    src = folder if not str(w.files[0]).endswith("mf.dcm") else w.files[0].parent
    ours = out / f"{src.name}_medseg.nii.gz"
    r = subprocess.run([sys.executable, "-m", "napari_medseg.cli", "convert", str(src), "-o", str(ours)],
                       capture_output=True, text=True, env=env)  # fmt: skip
    lines = [f"== {name}"]
    if r.returncode != 0:
        return lines + [f"   medseg convert failed: {r.stderr.strip()[-300:]}"]
    d2n = out / f"{src.name}_dcm2niix"
    d2n.mkdir()
    r2 = subprocess.run(["dcm2niix", "-z", "y", "-b", "n", "-f", "%s", "-o", str(d2n), str(src)],
                        capture_output=True, text=True)  # fmt: skip
    outputs = sorted(d2n.glob("*.nii.gz"))
    a_aff, a_val = canonical(ours)
    # ground truth on our grid: the factory's expected values as a Volume written the same way
    exp = Volume(w.expected, w.spacing, w.origin, w.direction)
    t_img = nib.as_closest_canonical(nib.Nifti1Image(np.ascontiguousarray(exp.array.transpose(2, 1, 0)), exp.nifti_affine()))
    t_val = np.asarray(t_img.get_fdata())
    lines.append(f"   medseg : shape {a_val.shape}; slice positions off the grid by up to "
                 f"{position_error(ours, w):.3g} mm; shear {shear(ours):.2g}; values = as written: {_same(a_val, t_val)}")  # fmt: skip
    if not outputs:
        return lines + [f"   dcm2niix wrote nothing: {(r2.stdout + r2.stderr).strip()[-300:]}"]
    for o in outputs:
        b_aff, b_val = canonical(o)
        same_shape = a_val.shape == b_val.shape
        d_aff = float(np.abs(a_aff - b_aff).max()) if same_shape else float("nan")
        grid = same_shape and d_aff < 1e-3
        values = _same(a_val, b_val) if same_shape else "n/a (shapes differ)"
        truth = _same(b_val, t_val) if b_val.shape == t_val.shape else "n/a"
        lines.append(
            f"   dcm2niix {o.name}: shape {b_val.shape}; same grid: {grid} (max |affine diff| {d_aff:.3g} mm); "
            f"same values: {values}; dcm2niix = as written: {truth}; slice positions off the grid by up to "
            f"{position_error(o, w):.3g} mm; shear {shear(o):.2g}"
        )
        if not grid:
            lines.append(f"   physical space, dcm2niix interpolated at medseg's voxels: |diff| {physical_diff(ours, o)}")
    notes = [ln for ln in (r2.stdout + r2.stderr).splitlines() if "warning" in ln.lower() or "tilt" in ln.lower()]
    lines.extend(f"   dcm2niix says: {n.strip()[:160]}" for n in notes[:3])
    return lines


def _same(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape:
        return f"n/a (shapes {a.shape} vs {b.shape})"
    diff = float(np.abs(a - b).max())
    if diff == 0:
        return "True (identical)"
    k_ok = [bool(np.array_equal(a[..., k], b[..., k])) for k in range(a.shape[2])]
    return f"False (max |diff| {diff:.4g}; {sum(k_ok)}/{len(k_ok)} slices identical)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="keep the generated series and NIfTI files here")
    args = ap.parse_args()
    if shutil.which("dcm2niix") is None:
        sys.exit("dcm2niix is not installed (apt-get install dcm2niix; scripts/setup.sh installs it)")
    version = subprocess.run(["dcm2niix", "-v"], capture_output=True, text=True).stdout.strip().splitlines()
    print(f"dcm2niix: {version[0] if version else '?'}")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        (base / "series").mkdir(parents=True, exist_ok=True)
        (base / "nifti").mkdir(parents=True, exist_ok=True)
        for name, w in cases(base / "series"):
            print("\n".join(run_case(name, w, w.files[0].parent, base / "nifti", env)), flush=True)


if __name__ == "__main__":
    main()
