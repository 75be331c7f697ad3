"""Real-world DICOM (issue 10 part B): images whatever their SOP Class says, missing attributes with a safe
default, single-slice series in info/convert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import write_series

from napari_medseg.errors import InputError
from napari_medseg.io import list_series, read_volume
from napari_medseg.io.dicom_classify import SEG_SOP_CLASS, object_kind

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _strip(files, *keywords, meta=("MediaStorageSOPClassUID",), empty=False):
    for f in files:
        ds = pydicom.dcmread(f)
        for kw in keywords:
            if empty:
                setattr(ds, kw, "")
            elif kw in ds:
                delattr(ds, kw)
        for kw in meta:
            if kw in ds.file_meta:
                delattr(ds.file_meta, kw)
        ds.save_as(f)


def _sitk(folder):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize("syntax", ["jpeg2000", "jpegls", "rle"])
def test_series_without_sop_class_is_an_image(tmp_path, syntax):
    w = write_series(tmp_path / "s", shape=(5, 40, 36), syntax=syntax, shuffle=True)
    _strip(w.files, "SOPClassUID")
    assert pydicom.dcmread(w.files[0]).get("SOPClassUID") is None
    vol = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, w.expected)
    assert vol.spacing == pytest.approx(w.spacing) and vol.origin == pytest.approx(w.origin)
    assert any("5 of 5 file(s): SOPClassUID is missing or empty" in m for m in vol.warnings), vol.warnings


def test_stripped_sop_class_jpeg2000_series_equals_simpleitk_voxel_for_voxel(tmp_path):
    import SimpleITK as sitk

    w = write_series(tmp_path / "s", shape=(8, 48, 40), syntax="jpeg2000", spacing=(0.6, 0.9, 2.0))
    _strip(w.files, "SOPClassUID")
    vol = read_volume(tmp_path / "s")
    ref = _sitk(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref))
    assert vol.spacing == pytest.approx(ref.GetSpacing(), abs=1e-4)
    assert vol.origin == pytest.approx(ref.GetOrigin(), abs=1e-4)
    np.testing.assert_allclose(vol.direction.reshape(-1), ref.GetDirection(), atol=1e-6)


def test_empty_sop_class_and_missing_series_uid_and_pixel_attributes_are_assumed_with_warnings(tmp_path):
    w = write_series(tmp_path / "s", shape=(4, 40, 36), syntax="rle")
    _strip(w.files, "SOPClassUID", empty=True, meta=())
    _strip(w.files, "SeriesInstanceUID", "PhotometricInterpretation", "PixelRepresentation", "BitsStored",
           "SamplesPerPixel", "PixelSpacing")  # fmt: skip
    vol = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, w.expected)
    text = " | ".join(vol.warnings)
    for kw in ("SOPClassUID", "SeriesInstanceUID", "PhotometricInterpretation", "PixelRepresentation",
               "BitsStored", "SamplesPerPixel", "PixelSpacing"):  # fmt: skip
        assert f"{kw} is missing or empty" in text, (kw, text)
    assert vol.spacing[:2] == (1.0, 1.0)


def test_classification_by_sop_class():
    assert object_kind("1.2.840.10008.5.1.4.1.1.2", True)[0] == "image"  # CT
    assert object_kind("1.2.840.10008.5.1.4.1.1.7", True)[0] == "image"  # secondary capture
    assert object_kind("", True)[0] == "image"
    assert object_kind("1.2.3.4.5.6.private", True)[0] == "image"
    assert object_kind(SEG_SOP_CLASS, True)[0] == "seg"
    assert object_kind("1.2.840.10008.5.1.4.1.1.481.3", True)[0] == "rtstruct"
    assert object_kind("1.2.840.10008.5.1.4.1.1.481.5", True)[0] == "non_image"  # RT plan
    assert object_kind("1.2.840.10008.5.1.4.1.1.88.33", True)[0] == "non_image"  # comprehensive SR
    assert object_kind("1.2.840.10008.5.1.4.1.1.2", False)[0] == "non_image"
    assert object_kind("", False)[0] == "non_image"


# ---------------------------------------------------------------------------------------------- single slice
def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "napari_medseg.cli", *map(str, args)], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": SRC}, timeout=300,
    )  # fmt: skip


def test_single_slice_info_and_convert(tmp_path):
    nib = pytest.importorskip("nibabel")
    w = write_series(tmp_path / "one", shape=(1, 40, 36), spacing=(0.7, 0.8, 3.0))
    out = _cli("info", "--json", tmp_path / "one")
    assert out.returncode == 0, out.stderr
    (info,) = json.loads(out.stdout)["series"]
    assert info["shape"] == [1, 40, 36] and info["spacing"] == pytest.approx([0.7, 0.8, 3.0])
    out = _cli("convert", tmp_path / "one", "-o", tmp_path / "one.nii.gz")
    assert out.returncode == 0, out.stderr
    assert "single slice" in out.stderr
    img = nib.load(tmp_path / "one.nii.gz")
    assert img.shape == (36, 40, 1)
    np.testing.assert_allclose(img.header.get_zooms(), (0.7, 0.8, 3.0), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(img.dataobj)[:, :, 0].T, w.expected[0])


def test_segment_still_refuses_a_single_slice(tmp_path):
    from types import SimpleNamespace

    from napari_medseg.inference.pipeline import check_input

    write_series(tmp_path / "one", shape=(1, 40, 36))
    vol = read_volume(tmp_path / "one")
    with pytest.raises(InputError, match="is 2D .* load the whole series/volume, not a single slice"):
        check_input(vol, SimpleNamespace(name="any"), (1, 40, 36))


def test_single_slice_listed_beside_a_volume(tmp_path):
    write_series(tmp_path / "f" / "one", shape=(1, 40, 36), series_number=9)
    write_series(tmp_path / "f" / "ct", shape=(4, 40, 36), series_number=2)
    assert sorted(s.shape[0] for s in list_series(tmp_path / "f")) == [1, 4]
    assert read_volume(tmp_path / "f", series=9).spatial_shape == (1, 40, 36)
