"""Bad DICOM input: each case is a specific InputError naming the file and saying what to do, never a crash."""

from __future__ import annotations

import pydicom
import pytest
from dicom_factory import truncate, write_enhanced, write_junk, write_series
from pydicom.uid import RLELossless

from napari_medseg.errors import InputError
from napari_medseg.io import detect_format
from napari_medseg.io.dicom import list_dicom_series, read_dicom, read_dicom_all, source_datasets
from napari_medseg.volume import Volume


def test_folder_without_images(tmp_path):
    junk = write_junk(tmp_path / "j")
    with pytest.raises(InputError, match=r"no DICOM image series found \(3 file\(s\) scanned: 3 unreadable"):
        list_dicom_series(tmp_path / "j")
    assert detect_format(tmp_path / "j") is None
    with pytest.raises(InputError, match="no DICOM image series"):
        read_dicom(junk[1].parent)


def test_non_image_dicom_only(tmp_path):
    ds = pydicom.dcmread(write_series(tmp_path / "s", shape=(2, 40, 36)).files[0])
    for kw in ("Rows", "Columns", "PixelData"):
        delattr(ds, kw)
    folder = tmp_path / "sr"
    folder.mkdir()
    ds.save_as(folder / "report.dcm")
    with pytest.raises(InputError, match="object without Rows/Columns"):
        read_dicom(folder)


def test_single_slice_series_reads_with_slice_thickness(tmp_path):
    w = write_series(tmp_path / "one", shape=(1, 40, 36), spacing=(0.7, 0.8, 3.0))
    for path in (tmp_path / "one", w.files[0]):
        vol = read_dicom(path)
        assert vol.spatial_shape == (1, 40, 36)
        assert vol.spacing == pytest.approx((0.7, 0.8, 3.0))  # k spacing from SliceThickness
        assert vol.origin == pytest.approx(w.origin)
        assert (vol.array == w.expected).all()
        assert any("single slice" in m and "SliceThickness" in m for m in vol.warnings)


def test_single_slice_spacing_between_slices_wins_and_default_warns(tmp_path):
    w = write_series(tmp_path / "one", shape=(1, 40, 36), spacing=(0.7, 0.7, 3.0))
    ds = pydicom.dcmread(w.files[0])
    ds.SpacingBetweenSlices = "2.5"
    ds.save_as(w.files[0])
    assert read_dicom(w.files[0]).spacing[2] == pytest.approx(2.5)
    del ds.SpacingBetweenSlices, ds.SliceThickness
    ds.save_as(w.files[0])
    vol = read_dicom(w.files[0])
    assert vol.spacing[2] == 1.0
    assert any("1 mm (no SpacingBetweenSlices or SliceThickness)" in m for m in vol.warnings)


def test_single_slice_series_is_skipped_by_read_all(tmp_path):
    write_series(tmp_path / "f" / "one", shape=(1, 40, 36), series_number=9, description="dose report")
    w = write_series(tmp_path / "f" / "ct", series_number=2)
    (vol,) = read_dicom_all(tmp_path / "f")
    assert vol.meta["series_uid"] == w.series_uid
    assert any("dose report" in m and "not loaded" in m for m in vol.warnings)


def test_missing_pixel_data_uncompressed(tmp_path):
    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    for f in w.files:
        ds = pydicom.dcmread(f)
        del ds.PixelData
        ds.save_as(f)
    with pytest.raises(InputError, match="image header but no pixel data") as err:
        read_dicom(tmp_path / "s")
    assert str(tmp_path / "s") in str(err.value)


def test_missing_pixel_data_in_one_file_is_skipped(tmp_path):
    w = write_series(tmp_path / "s", shape=(4, 40, 36))
    ds = pydicom.dcmread(w.files[0])
    del ds.PixelData
    ds.save_as(w.files[0])
    vol = read_dicom(tmp_path / "s")
    assert vol.spatial_shape == (3, 40, 36)
    assert any("without pixel data" in m and str(w.files[0]) in m for m in vol.warnings)


def test_missing_pixel_data_compressed(tmp_path):
    w = write_series(tmp_path / "s", shape=(3, 40, 36), syntax="rle")
    ds = pydicom.dcmread(w.files[1])
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    del ds.PixelData
    ds.save_as(w.files[1])
    with pytest.raises(InputError, match="no pixel data") as err:
        read_dicom(tmp_path / "s")
    assert str(w.files[1]) in str(err.value)


def test_truncated_compressed_file(tmp_path):
    w = write_series(tmp_path / "s", shape=(3, 40, 36), syntax="jpegls")
    truncate(w.files[2], 0.9)
    with pytest.raises(InputError, match="truncated|cannot decode") as err:
        read_dicom(tmp_path / "s")
    assert str(w.files[2]) in str(err.value)


def test_absurd_dimensions_fail_fast(tmp_path):
    w = write_enhanced(tmp_path / "e" / "huge.dcm")
    ds = pydicom.dcmread(w.files[0])
    ds.Rows, ds.Columns = 65535, 65535
    ds.save_as(w.files[0])
    with pytest.raises(InputError, match="declares an image far larger") as err:
        read_dicom(w.files[0])
    assert str(w.files[0]) in str(err.value)


def test_absurd_series_size_fails_before_allocating(tmp_path, monkeypatch):
    # a compressed series cannot be checked against its file size; the total is checked before allocation
    import napari_medseg.io.dicom_pixels as pixels

    write_series(tmp_path / "s", shape=(3, 40, 36), syntax="rle")
    monkeypatch.setattr(pixels, "memory_budget", lambda: 3 * 40 * 36 * 4 - 1)
    monkeypatch.setattr(pixels, "_read_file", lambda *a: pytest.fail("pixels were read"))
    with pytest.raises(InputError, match="more than the"):
        read_dicom(tmp_path / "s")


@pytest.mark.parametrize("value", ["NaN", "inf"])
def test_nan_or_inf_rescale(tmp_path, value):
    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    ds = pydicom.dcmread(w.files[1])
    ds.RescaleSlope = value
    ds.save_as(w.files[1])
    with pytest.raises(InputError, match="NaN, infinite or unreadable") as err:
        read_dicom(tmp_path / "s")
    assert str(w.files[1]) in str(err.value)


def test_corrupt_orientation(tmp_path):
    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    for f in w.files:
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [1, 0, 0, 0.5, 0.5, 0]
        ds.save_as(f)
    with pytest.raises(InputError, match="ImageOrientationPatient"):
        list_dicom_series(tmp_path / "s")


def test_source_datasets_needs_a_dicom_volume(tmp_path):
    import numpy as np

    with pytest.raises(InputError, match="not read from DICOM"):
        source_datasets(Volume(np.zeros((2, 2, 2))))
