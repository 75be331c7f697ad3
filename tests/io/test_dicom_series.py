"""DICOM series discovery and selection: several series, localizers, missing slices, tilt, zips, junk."""

from __future__ import annotations

import re

import numpy as np
import pytest
from dicom_factory import rotation, truncate, write_junk, write_localizer, write_series, zip_folder

from napari_medseg.errors import SeriesSelectionError
from napari_medseg.io import detect_format, list_series, read_all, read_volume
from napari_medseg.io.dicom import folder_has_dicom, is_dicom_file, list_dicom_series, read_dicom, read_dicom_all


@pytest.fixture
def two_series(tmp_path):
    folder = tmp_path / "study"
    a = write_series(folder / "a", series_number=3, description="arterial", seed=1)
    b = write_series(folder / "b" / "deep", shape=(4, 40, 36), series_number=5, description="venous", seed=2,
                     study_uid=a.study_uid, direction=rotation("z", 90))  # fmt: skip
    return folder, a, b


def test_two_series_require_a_choice(two_series):
    folder, a, b = two_series
    infos = list_dicom_series(folder)
    assert [i.uid for i in infos] == [a.series_uid, b.series_uid]  # sorted by series number
    assert [i.shape for i in infos] == [(6, 40, 36), (4, 40, 36)]
    with pytest.raises(SeriesSelectionError) as err:
        read_dicom(folder)
    msg = str(err.value)
    assert a.series_uid in msg and b.series_uid in msg and "arterial" in msg and "venous" in msg
    assert len(err.value.series) == 2


def test_each_series_matches_simpleitk(two_series):
    import SimpleITK as sitk
    from test_dicom_read import assert_same_as_sitk

    folder, a, b = two_series
    for w in (a, b):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), w.series_uid, False, True))  # recursive
        assert_same_as_sitk(read_dicom(folder, series=w.series_uid), reader.Execute())


@pytest.mark.parametrize("choice", ["uid", 5, "5", "venous", "VENOUS"])
def test_select_series_by_uid_number_or_description(two_series, choice):
    folder, a, b = two_series
    vol = read_dicom(folder, series=b.series_uid if choice == "uid" else choice)
    assert vol.meta["series_uid"] == b.series_uid
    np.testing.assert_array_equal(vol.array, b.expected)
    np.testing.assert_allclose(vol.direction, b.direction, atol=1e-6)


def test_unknown_series_lists_the_available_ones(two_series):
    folder, a, b = two_series
    with pytest.raises(SeriesSelectionError, match="no series matches 'portal'") as err:
        read_dicom(folder, series="portal")
    assert "arterial" in str(err.value) and "venous" in str(err.value)


def test_read_all_and_io_dispatch(two_series):
    folder, a, b = two_series
    vols = read_dicom_all(folder)
    assert [v.meta["series_uid"] for v in vols] == [a.series_uid, b.series_uid]
    assert detect_format(folder) == "dicom"
    assert len(list_series(folder)) == 2 and len(read_all(folder)) == 2
    assert read_volume(folder, series=3).meta["series_description"] == "arterial"


def test_series_info_geometry(tmp_path):
    w = write_series(tmp_path / "s", direction=rotation("x", 30), spacing=(0.6, 0.9, 2.0))
    (info,) = list_dicom_series(tmp_path / "s")
    np.testing.assert_allclose(info.spacing, (0.6, 0.9, 2.0))
    np.testing.assert_allclose(info.origin, w.origin, atol=1e-5)
    np.testing.assert_allclose(np.reshape(info.direction, (3, 3)), w.direction, atol=1e-6)
    assert info.orientation == "LPS"
    assert info.format == "dicom" and info.modality == "CT" and len(info.files) == 6
    assert info.to_json_dict()["n_files"] == 6


def test_localizer_is_dropped_with_a_warning(tmp_path):
    w = write_series(tmp_path / "s", shuffle=True)
    write_localizer(tmp_path / "s", w)
    (info,) = list_dicom_series(tmp_path / "s")
    assert info.shape == (6, 40, 36)
    assert any("localizer" in m for m in info.warnings)
    vol = read_dicom(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, w.expected)
    assert any("localizer" in m for m in vol.meta["warnings"])


def test_second_stack_in_one_series_is_listed_separately(tmp_path):
    w = write_series(tmp_path / "s", series_uid=None)
    write_series(tmp_path / "s", shape=(3, 40, 36), series_uid=w.series_uid, study_uid=w.study_uid,
                 direction=rotation("y", 90), prefix="COR")  # fmt: skip
    infos = list_dicom_series(tmp_path / "s")
    assert [i.uid for i in infos] == [w.series_uid, w.series_uid + "#2"]
    assert infos[1].shape == (3, 40, 36)
    assert read_dicom(tmp_path / "s", series=w.series_uid + "#2").spatial_shape == (3, 40, 36)


def test_missing_slice_is_reported(tmp_path):
    w = write_series(tmp_path / "s", shape=(8, 40, 36), drop_slices=(4,))
    vol = read_dicom(tmp_path / "s")
    assert vol.spatial_shape == (7, 40, 36)
    assert any("1 slice(s) missing" in m for m in vol.warnings)
    # documented behaviour: slices kept in order at the mean step (first to last); exact positions in meta
    assert vol.spacing[2] == pytest.approx(7 * 2.5 / 6)
    assert any("off by up to 1.25 mm" in m for m in vol.warnings)
    np.testing.assert_allclose(vol.meta["slice_positions"], w.positions, atol=1e-5)
    np.testing.assert_array_equal(vol.array, w.expected)
    # the same as SimpleITK (which warns about 'non uniform sampling or missing slices' on stderr)
    from test_dicom_read import assert_same_as_sitk, sitk_read

    assert_same_as_sitk(vol, sitk_read(tmp_path / "s"))


def test_non_uniform_spacing_is_reported(tmp_path):
    w = write_series(tmp_path / "s", shape=(6, 40, 36))
    import pydicom

    ds = pydicom.dcmread(w.files[-1])
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.7
    ds.save_as(w.files[-1])
    (info,) = list_dicom_series(tmp_path / "s")
    assert any("non-uniform slice spacing" in m for m in info.warnings)


def test_gantry_tilt_is_resampled_to_a_regular_grid(tmp_path):
    # SimpleITK cannot represent a sheared stack, so the reference is the generator's geometry: with a step of
    # 2.0 mm and tan(tilt) = 0.35, each slice drifts exactly one row (0.7 mm) along j, so the resampled
    # slice k equals the stored slice shifted by k rows.
    tilt = np.degrees(np.arctan(0.35))
    w = write_series(tmp_path / "t", shape=(4, 40, 36), spacing=(0.7, 0.7, 2.0), tilt_degrees=tilt)
    vol = read_dicom(tmp_path / "t")
    assert vol.meta["tilt_handling"] == "resampled"
    assert vol.meta["tilt_degrees"] == pytest.approx(tilt, abs=1e-3)
    assert any("gantry tilt" in m for m in vol.warnings)
    np.testing.assert_allclose(vol.direction, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(vol.spacing, (0.7, 0.7, 2.0), atol=1e-4)
    np.testing.assert_allclose(vol.origin, w.origin, atol=1e-4)
    for k in range(4):
        np.testing.assert_array_equal(vol.array[k, k:], w.expected[k, : 40 - k])
    # a physical point of the tilted slice 3 maps to the same value in the resampled grid
    p = w.positions[3] + np.array([0.7 * 5, 0.7 * 10, 0])  # stored pixel (i=5, j=10) of slice 3
    i, j, k = np.round(vol.physical_to_index(p)).astype(int)
    assert vol.array[k, j, i] == w.expected[3, 10, 5]


def test_junk_and_truncated_files_are_skipped_with_a_count(tmp_path):
    w = write_series(tmp_path / "s", shape=(6, 40, 36))
    write_junk(tmp_path / "s")
    extra = write_series(tmp_path / "x", shape=(2, 40, 36), series_uid=w.series_uid, study_uid=w.study_uid)
    full_size = extra.files[0].stat().st_size
    truncated = truncate(extra.files[0].rename(tmp_path / "s" / "cut.dcm"))
    (info,) = list_dicom_series(tmp_path / "s")
    msg = " ".join(info.warnings)
    assert "skipped 3 unreadable or non-DICOM file(s)" in msg, msg
    # the header's length varies with the generated UIDs, so the cut point does too: the message counts the bytes
    # present and missing up to where the pixel data should end (the end of the uncut file)
    m = re.search(rf"skipped 1 truncated file\(s\) \(e\.g\. {re.escape(str(truncated))}: the file ends (\d+) bytes "
                  r"before the end of its pixel data \((\d+) of (\d+) bytes", msg)
    assert m, msg
    missing, present, total = map(int, m.groups())
    assert total == full_size and present == truncated.stat().st_size and missing == total - present, msg
    vol = read_dicom(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, w.expected)
    assert str(truncated) not in vol.meta["dicom_files"]


def test_zip_archive(tmp_path):
    w = write_series(tmp_path / "s", shuffle=True, direction=rotation("x", 30))
    archive = zip_folder(tmp_path / "s", tmp_path / "export.zip")
    assert detect_format(archive) == "dicom"
    vol = read_dicom(archive)
    np.testing.assert_array_equal(vol.array, w.expected)
    # SimpleITK cannot read zips: the reference is the same series read from the folder
    folder_vol = read_dicom(tmp_path / "s")
    assert vol.same_grid(folder_vol)
    assert all(f.startswith(f"{archive}::export/") for f in vol.meta["dicom_files"])
    from napari_medseg.io.dicom import source_datasets

    assert [h.SOPInstanceUID for h in source_datasets(vol)] == [h.SOPInstanceUID for h in source_datasets(folder_vol)]


def test_detection_helpers(tmp_path):
    w = write_series(tmp_path / "s", shape=(2, 40, 36))
    junk = write_junk(tmp_path / "j")
    assert is_dicom_file(w.files[0])
    assert not any(is_dicom_file(f) for f in junk)
    assert not is_dicom_file(tmp_path / "does-not-exist")
    assert folder_has_dicom(tmp_path) and not folder_has_dicom(tmp_path / "j")
    assert not folder_has_dicom(tmp_path / "nope")
    # a preamble-less file (raw dataset starting with the 0002 group) is still DICOM
    raw = tmp_path / "raw" / "noprefix"
    raw.parent.mkdir()
    raw.write_bytes(w.files[0].read_bytes()[132:])
    assert is_dicom_file(raw)


def test_preambleless_files_are_read(tmp_path):
    w = write_series(tmp_path / "s", shuffle=True, direction=rotation("x", 30))
    raw = tmp_path / "raw"
    raw.mkdir()
    for n, f in enumerate(w.files):
        (raw / f"IMG{n}").write_bytes(f.read_bytes()[132:])  # no 128-byte preamble, no 'DICM'
    vol = read_dicom(raw)
    np.testing.assert_array_equal(vol.array, w.expected)
    np.testing.assert_allclose(vol.direction, w.direction, atol=1e-6)
    assert vol.meta["warnings"] == []


def test_repeated_acquisitions_in_one_series_become_stacks(tmp_path):
    import pydicom

    a = write_series(tmp_path / "s", shape=(5, 40, 36), seed=1, prefix="A")
    b = write_series(tmp_path / "s", shape=(5, 40, 36), seed=2, prefix="B", series_uid=a.series_uid,
                     study_uid=a.study_uid)  # fmt: skip  # same positions: a second phase in the same series
    for files, acq in ((a.files, 1), (b.files, 2)):
        for f in files:
            ds = pydicom.dcmread(f)
            ds.AcquisitionNumber = acq
            ds.save_as(f)
    infos = list_dicom_series(tmp_path / "s")
    assert [i.uid for i in infos] == [a.series_uid, a.series_uid + "#2"]
    np.testing.assert_array_equal(read_dicom(tmp_path / "s", series=a.series_uid).array, a.expected)
    np.testing.assert_array_equal(read_dicom(tmp_path / "s", series=a.series_uid + "#2").array, b.expected)


def test_duplicate_positions_keep_the_first_instance(tmp_path):
    a = write_series(tmp_path / "s", shape=(4, 40, 36), seed=1, prefix="A")
    write_series(tmp_path / "s", shape=(2, 40, 36), seed=2, prefix="B", series_uid=a.series_uid,
                 study_uid=a.study_uid)  # fmt: skip
    (info,) = list_dicom_series(tmp_path / "s")
    assert info.shape == (4, 40, 36)
    assert any("share a slice position" in m for m in info.warnings)


def test_zip_with_several_series_and_junk(two_series, tmp_path):
    folder, a, b = two_series
    write_junk(folder / "junk")
    archive = zip_folder(folder, tmp_path / "study.zip")
    infos = list_dicom_series(archive)
    assert [i.uid for i in infos] == [a.series_uid, b.series_uid]
    assert all("skipped 3 unreadable" in " ".join(i.warnings) for i in infos)
    with pytest.raises(SeriesSelectionError, match="2 image series"):
        read_dicom(archive)
    vol = read_dicom(archive, series="venous")
    np.testing.assert_array_equal(vol.array, b.expected)
    assert [v.meta["series_number"] for v in read_dicom_all(archive)] == [3, 5]


def test_gantry_tilt_with_half_pixel_drift_interpolates(tmp_path):
    # drift 0.35 mm = half a row per slice: resampled slice 1 is the mean of neighbouring stored rows
    w = write_series(tmp_path / "t", shape=(3, 40, 36), spacing=(0.7, 0.7, 2.0),
                     tilt_degrees=np.degrees(np.arctan(0.175)))  # fmt: skip
    vol = read_dicom(tmp_path / "t")
    assert vol.meta["tilt_handling"] == "resampled"
    expected_row = 0.5 * (w.expected[1, :-1] + w.expected[1, 1:])  # out[j] = in[j - 0.5]
    np.testing.assert_allclose(vol.array[1, 1:], expected_row, atol=0.51)
    np.testing.assert_array_equal(vol.array[2, 1:], w.expected[2, :-1])  # slice 2 drifted exactly one row
    np.testing.assert_array_equal(vol.array[0], w.expected[0])
