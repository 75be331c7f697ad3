"""RTSTRUCT both ways, checked against two independent peers (rt-utils and plastimatch), and bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from labels_factory import NAMES, OBLIQUE, SQUARE, ct, dice, organs

from napari_medseg.errors import InputError
from napari_medseg.io import read_volume, write_labels

PEER = Path(__file__).with_name("rtutils_peer.py")
PEERS_DIR = Path(__file__).resolve().parents[2] / ".peers"  # scripts/setup.sh installs rt-utils there


def _write_ours(tmp_path, geometry=OBLIQUE):
    written, image = ct(tmp_path / "ct", geometry=geometry)
    lab = organs(image.spatial_shape)
    out = write_labels(image.with_array(lab), tmp_path / "rtss.dcm", classes=NAMES, reference=image, format="rtstruct")
    return written, image, lab, out


def _rt_utils(*args):
    import os

    assert (PEERS_DIR / "rt_utils").is_dir(), f"rt-utils is not in {PEERS_DIR}: run bash scripts/setup.sh"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PEERS_DIR), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, str(PEER), *map(str, args)], capture_output=True, text=True, timeout=300,
                       env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]


def test_our_rtstruct_reads_back_voxel_identical(tmp_path):
    written, image, lab, out = _write_ours(tmp_path)
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" and ds.Modality == "RTSTRUCT"
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["liver", "spleen", "kidney_left"]
    assert [list(rc.ROIDisplayColor) for rc in ds.ROIContourSequence][0] == [219, 120, 89]  # the liver colour
    ref = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == written.series_uid
    sops = {pydicom.dcmread(f).SOPInstanceUID for f in written.files}
    assert {c.ContourImageSequence[0].ReferencedSOPInstanceUID
            for rc in ds.ROIContourSequence for c in rc.ContourSequence} <= sops  # fmt: skip
    back = read_volume(out)  # the CT folder is beside
    assert back.same_grid(image, tol=0)
    np.testing.assert_array_equal(back.array, lab)
    assert back.meta["classes"] == NAMES and not back.warnings


def test_our_rtstruct_read_by_plastimatch(tmp_path):
    """plastimatch is an independent reader: Dice >= 0.95 per structure (oblique, non-square pixels and image)."""
    written, image, lab, out = _write_ours(tmp_path)
    r = subprocess.run(["plastimatch", "convert", "--input", str(out), "--referenced-ct", str(tmp_path / "ct"),
                        "--output-prefix", str(tmp_path / "pl"), "--prefix-format", "nrrd", "--xor-contours"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for value, name in NAMES.items():
        img = sitk.ReadImage(str(tmp_path / "pl" / f"{name}.nrrd"))
        np.testing.assert_allclose(img.GetOrigin(), image.origin, atol=1e-3)
        np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), image.direction, atol=1e-4)
        d = dice(sitk.GetArrayFromImage(img) > 0, lab == value)
        print(f"plastimatch {name}: Dice {d:.4f}")
        assert d >= 0.95, (name, d)


def test_our_rtstruct_read_by_rt_utils(tmp_path):
    """rt-utils only handles square pixels and Rows == Columns correctly (see docs/formats.md): such a CT."""
    written, image, lab, out = _write_ours(tmp_path, geometry=SQUARE)
    _rt_utils("read", tmp_path / "ct", out, tmp_path / "peer.npz")
    with np.load(tmp_path / "peer.npz") as masks:
        assert sorted(masks.files) == sorted(NAMES.values())
        for value, name in NAMES.items():
            d = dice(masks[name], lab == value)
            print(f"rt-utils {name}: Dice {d:.4f}")
            assert d >= 0.95, (name, d)


def test_rtstruct_made_by_rt_utils_read_by_us(tmp_path):
    written, image = ct(tmp_path / "ct", geometry=SQUARE)
    lab = organs(image.spatial_shape)
    np.savez(tmp_path / "masks.npz", **{name: lab == v for v, name in NAMES.items()})
    _rt_utils("write", tmp_path / "ct", tmp_path / "masks.npz", tmp_path / "peer_rt.dcm")
    back = read_volume(tmp_path / "peer_rt.dcm", reference=tmp_path / "ct")
    assert back.same_grid(image, tol=0)
    assert sorted(back.meta["classes"].values()) == sorted(NAMES.values())
    for value, name in NAMES.items():
        ours = [v for v, n in back.meta["classes"].items() if n == name][0]
        d = dice(back.array == ours, lab == value)
        print(f"rt-utils-made {name}: Dice {d:.4f}")
        assert d >= 0.95, (name, d)


def test_rtstruct_cli_convert_and_enhanced_source(tmp_path):
    from dicom_factory import write_enhanced

    from napari_medseg.cli import main

    written, image = ct(tmp_path / "ct")
    lab = organs(image.spatial_shape)
    write_labels(image.with_array(lab), tmp_path / "labels.nii.gz", classes=NAMES)
    out = tmp_path / "x.dcm"
    assert main(["convert", str(tmp_path / "labels.nii.gz"), "-o", str(out), "--format", "rtstruct",
                 "--reference", str(tmp_path / "ct")]) == 0  # fmt: skip
    np.testing.assert_array_equal(read_volume(out, reference=tmp_path / "ct").array, lab)
    assert main(["convert", str(out), "-o", str(tmp_path / "back.nii.gz"), "--reference", str(tmp_path / "ct")]) == 0
    back = read_volume(tmp_path / "back.nii.gz")
    np.testing.assert_array_equal(back.array, lab)
    assert back.meta["classes"] == NAMES
    # an RTSTRUCT on an enhanced multi-frame CT (frames stored out of order) references frames
    enh = write_enhanced(tmp_path / "enh" / "ct.dcm", shuffle_frames=True)
    eimg = read_volume(tmp_path / "enh" / "ct.dcm")
    elab = organs(eimg.spatial_shape)
    eout = write_labels(eimg.with_array(elab), tmp_path / "enh" / "rt.dcm", classes=NAMES, reference=eimg,
                        format="rtstruct")
    assert pydicom.dcmread(eout).ROIContourSequence[0].ContourSequence[0].ContourImageSequence[0].ReferencedFrameNumber
    np.testing.assert_array_equal(read_volume(eout).array, elab)
    assert enh.files


# ---------------------------------------------------------------------------------------------- bad input
def _edit(path, fn, name):
    ds = pydicom.dcmread(path)
    fn(ds)
    out = Path(path).with_name(name)
    ds.save_as(out)
    return out


def test_missing_referenced_series_is_an_error_naming_it(tmp_path):
    written, image, lab, out = _write_ours(tmp_path)
    alone = tmp_path / "alone"
    alone.mkdir()
    moved = shutil.copy(out, alone / "rtss.dcm")
    with pytest.raises(InputError, match=written.series_uid):
        read_volume(moved)
    ct(tmp_path / "other", seed=3)
    with pytest.raises(InputError, match=written.series_uid):
        read_volume(moved, reference=tmp_path / "other")


def test_rtstruct_naming_no_series_goes_on_the_only_series_beside_with_a_warning(tmp_path):
    written, image, lab, out = _write_ours(tmp_path)
    bare = _edit(out, lambda ds: delattr(ds.ReferencedFrameOfReferenceSequence[0], "RTReferencedStudySequence"),
                 "bare.dcm")  # fmt: skip
    back = read_volume(bare)
    np.testing.assert_array_equal(back.array, lab)
    assert any("names no referenced image series" in w and written.series_uid in w for w in back.warnings)
    ct(tmp_path / "second", seed=4)  # two series beside: no guess
    with pytest.raises(InputError, match="none named"):
        read_volume(bare)


def test_bad_contours_are_warnings_never_a_crash(tmp_path):
    written, image, lab, out = _write_ours(tmp_path)

    def damage(ds):
        liver = ds.ROIContourSequence[0].ContourSequence
        liver[0].ContourGeometricType = "OPEN_PLANAR"
        liver[1].ContourGeometricType = "POINT"
        liver[2].ContourData = liver[2].ContourData[:6]  # two points
        pts = np.asarray(liver[3].ContourData, float).reshape(-1, 3)
        far = pts + 500.0 * np.asarray(image.direction[:, 2])  # far above the image
        liver[3].ContourData = [f"{v:.4f}" for v in far.reshape(-1)]
        bow = np.asarray(liver[4].ContourData, float).reshape(-1, 3)[:4]
        liver[4].ContourData = [f"{v:.4f}" for v in bow[[0, 2, 1, 3]].reshape(-1)]  # a bow tie
        liver[4].NumberOfContourPoints = 4
        wide = np.asarray(liver[5].ContourData, float).reshape(-1, 3)
        wide[0] += 300.0 * np.asarray(image.direction[:, 0])  # one point far outside in-plane
        liver[5].ContourData = [f"{v:.4f}" for v in wide.reshape(-1)]
        del ds.ROIContourSequence[2].ContourSequence[:]  # kidney: an empty ROI

    bad = _edit(out, damage, "bad.dcm")
    back = read_volume(bad)
    text = "\n".join(back.warnings)
    for what in ("open (OPEN_PLANAR", "POINT", "malformed ContourData", "above or below the image",
                 "intersect themselves", "clipped", "'kidney_left' is empty"):  # fmt: skip
        assert what in text, (what, text)
    assert back.same_grid(image, tol=0) and back.meta["classes"] == NAMES
    assert dice(back.array == 2, lab == 2) == 1.0  # the spleen is untouched
    assert dice(back.array == 1, lab == 1) > 0.5


def test_rtstruct_without_rois_or_unreadable_is_a_clear_error(tmp_path):
    written, image, lab, out = _write_ours(tmp_path)
    empty = _edit(out, lambda ds: ds.StructureSetROISequence.clear(), "empty.dcm")
    with pytest.raises(InputError, match="lists no ROI"):
        read_volume(empty)
    with pytest.raises(InputError, match="labels are empty"):
        write_labels(image.with_array(np.zeros(image.spatial_shape, np.uint8)), tmp_path / "e.dcm",
                     reference=image, format="rtstruct")  # fmt: skip
    nifti = read_volume(_nifti(tmp_path, image))
    with pytest.raises(InputError, match="reference"):
        write_labels(nifti.with_array(lab), tmp_path / "n.dcm", reference=nifti, format="rtstruct")
    with pytest.raises(InputError, match=r"\*\.dcm"):
        write_labels(image.with_array(lab), tmp_path / "x.nii.gz", reference=image, format="rtstruct")


def _nifti(tmp_path, image):
    from napari_medseg.io import write_volume

    return write_volume(image, tmp_path / "ct.nii.gz")
