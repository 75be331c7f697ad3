"""DICOM reading: voxel values and geometry equal SimpleITK's ImageSeriesReader (acceptance), or the
generator's known geometry where SimpleITK cannot read the series correctly."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from napari_medseg.io.dicom import read_dicom, source_datasets
from dicom_factory import SYNTAXES, rotation, write_enhanced, write_series

TOL = 1e-4  # mm


def sitk_read(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_same_as_sitk(vol, img, value_tol=0.0):
    assert vol.spatial_shape == tuple(reversed(img.GetSize()))
    np.testing.assert_allclose(vol.spacing, img.GetSpacing(), atol=TOL)
    np.testing.assert_allclose(vol.origin, img.GetOrigin(), atol=TOL)
    np.testing.assert_allclose(vol.direction.reshape(-1), img.GetDirection(), atol=TOL)
    ref = sitk.GetArrayFromImage(img).astype(np.float64)
    diff = np.abs(vol.array.astype(np.float64) - ref).max()
    assert diff <= value_tol, f"max voxel difference {diff} > {value_tol}"


def assert_geometry(vol, written):
    np.testing.assert_allclose(vol.spacing, written.spacing, atol=TOL)
    np.testing.assert_allclose(vol.origin, written.origin, atol=TOL)
    np.testing.assert_allclose(vol.direction, written.direction, atol=TOL)


OBLIQUE = rotation("x", 30)  # 30 degrees about the patient's left-right axis
OBLIQUE_2 = rotation("x", 30) @ rotation("z", 12)


@pytest.mark.parametrize(
    "case",
    [
        dict(),
        dict(direction=OBLIQUE),
        dict(direction=OBLIQUE_2, shuffle=True),
        dict(spacing=(0.6, 0.9, 1.5)),  # anisotropic pixels: 0.6 between columns, 0.9 between rows
        dict(shuffle=True, spacing=(0.6, 0.9, 3.0), direction=rotation("y", -20), rescale=(1.0, -1000.0)),
        dict(direction=np.diag([-1.0, 1.0, -1.0])),  # flipped axes: k runs towards the feet
    ],
    ids=["axial", "oblique30", "oblique_shuffled", "anisotropic", "all_mixed", "flipped"],
)
def test_matches_simpleitk(tmp_path, case):
    w = write_series(tmp_path / "s", **case)
    vol = read_dicom(tmp_path / "s")
    assert_same_as_sitk(vol, sitk_read(tmp_path / "s"))
    assert_geometry(vol, w)
    np.testing.assert_array_equal(vol.array, w.expected)


@pytest.mark.parametrize("syntax", [s for s in SYNTAXES if s not in ("implicit", "explicit")])
def test_compressed_transfer_syntaxes(tmp_path, syntax):
    w = write_series(tmp_path / syntax, syntax=syntax, direction=OBLIQUE, shuffle=True, spacing=(0.6, 0.9, 2.0))
    ds = pydicom.dcmread(w.files[0], stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == SYNTAXES[syntax]
    vol = read_dicom(tmp_path / syntax)
    if syntax == "jpeg_baseline":
        # lossy: decoders may round the inverse DCT differently by one grey level; the encoder changed values
        assert_same_as_sitk(vol, sitk_read(tmp_path / syntax), value_tol=1)
        assert np.abs(vol.array - w.expected).mean() < 3
    else:
        assert_same_as_sitk(vol, sitk_read(tmp_path / syntax))
        np.testing.assert_array_equal(vol.array, w.expected)
    assert_geometry(vol, w)


def test_shuffled_names_and_instance_numbers_do_not_decide_order(tmp_path):
    w = write_series(tmp_path / "s", shape=(8, 40, 36), shuffle=True, direction=OBLIQUE)
    vol = read_dicom(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, w.expected)
    assert vol.meta["dicom_files"] == [str(f) for f in w.files]  # k order, not name order
    np.testing.assert_allclose(vol.meta["slice_positions"], w.positions, atol=1e-5)


def test_enhanced_multiframe_against_known_geometry(tmp_path):
    # SimpleITK 2.5 reads this enhanced file with unit spacing and frames in stored order (it ignores the
    # per-frame functional groups), so the reference here is the generator's geometry.
    w = write_enhanced(tmp_path / "mf" / "enhanced.dcm", direction=OBLIQUE_2, shuffle_frames=True)
    vol = read_dicom(tmp_path / "mf" / "enhanced.dcm")
    assert_geometry(vol, w)
    np.testing.assert_array_equal(vol.array, w.expected)
    assert vol.meta["rescale"] == (2.0, -1000.0)
    assert vol.meta["dicom_files"] == [str(w.files[0])]
    assert sorted(vol.meta["dicom_reference"]["frame_numbers"]) == [1, 2, 3, 4, 5]
    assert len(source_datasets(vol)) == 1


def test_rescale_dtype_and_metadata(tmp_path):
    write_series(tmp_path / "int", rescale=(1.0, -1024.0))
    vol = read_dicom(tmp_path / "int")
    assert vol.array.dtype == np.int16
    assert vol.meta["original_dtype"] == "uint16"
    assert vol.meta["rescale"] == (1.0, -1024.0)
    w = write_series(tmp_path / "float", rescale=(0.5, -10.25))
    vol = read_dicom(tmp_path / "float")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, w.expected, atol=1e-3)
    for key in ("modality", "series_uid", "series_description", "series_number", "study_uid", "source_path"):
        assert key in vol.meta
    assert vol.meta["series_uid"] == w.series_uid and vol.meta["modality"] == "CT"


def test_per_slice_rescale(tmp_path):
    w = write_series(tmp_path / "s", rescale=(1.0, -1024.0))
    for n, f in enumerate(w.files):  # give each slice its own intercept, as PET/some CTs do
        ds = pydicom.dcmread(f)
        ds.RescaleIntercept = str(-1024 + 10 * n)
        ds.save_as(f)
    vol = read_dicom(tmp_path / "s")
    expected = w.expected + 10 * np.arange(len(w.files))[:, None, None]
    np.testing.assert_array_equal(vol.array, expected)
    assert vol.meta["rescale"] is None and len(vol.meta["rescale_per_slice"]) == len(w.files)


def test_source_datasets_in_k_order(tmp_path):
    w = write_series(tmp_path / "s", shuffle=True)
    vol = read_dicom(tmp_path / "s")
    headers = source_datasets(vol)
    expected_uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in w.files]
    assert [h.SOPInstanceUID for h in headers] == expected_uids
    assert vol.meta["dicom_reference"]["sop_instance_uids"] == expected_uids


def test_chest_ct_matches_simpleitk(shared_data):
    folder = shared_data / "ct_chest_dicom"
    vol = read_dicom(folder)
    assert vol.shape == (141, 512, 512)
    assert_same_as_sitk(vol, sitk_read(folder))
    assert vol.array.dtype == np.int16 and vol.meta["rescale"] == (1.0, -1024.0)
    assert vol.meta["warnings"] == []


def test_source_datasets_are_accepted_by_highdicom(tmp_path):
    import highdicom as hd

    write_series(tmp_path / "s", shuffle=True, direction=OBLIQUE)
    vol = read_dicom(tmp_path / "s")
    headers = source_datasets(vol)
    assert all("PixelData" not in h for h in headers)  # headers only
    mask = np.zeros(vol.array.shape, np.uint8)
    mask[3, 10:20, 10:20] = 1
    seg = hd.seg.Segmentation(
        source_images=headers,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="lesion",
                segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Abnormal Structure"),
                segmented_property_type=hd.sr.CodedConcept("4147007", "SCT", "Mass"),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        ],
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="napari-medseg tests",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    frame = seg.PerFrameFunctionalGroupsSequence[0]
    ref = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
    assert ref == headers[3].SOPInstanceUID
    np.testing.assert_allclose(
        [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient], vol.index_to_physical([0, 0, 3]),
        atol=1e-4,
    )


def test_signed_12_bit_values(tmp_path):
    stored = (np.arange(6 * 40 * 36).reshape(6, 40, 36) % 4000 - 2000).astype(np.int32)  # -2000..1999
    w = write_series(tmp_path / "s", stored=stored, rescale=(1.0, 0.0), shuffle=True)
    for f in w.files:
        ds = pydicom.dcmread(f)
        assert ds.PixelRepresentation == 1
        ds.BitsStored, ds.HighBit = 12, 11
        ds.save_as(f)
    vol = read_dicom(tmp_path / "s")
    assert vol.array.dtype == np.int16 and vol.meta["original_dtype"] == "int16"
    np.testing.assert_array_equal(vol.array, w.expected)
    assert_same_as_sitk(vol, sitk_read(tmp_path / "s"))
