"""Writers: NIfTI/NRRD/MHA labels and images, DICOM series, DICOM SEG; geometry kept exactly, atomic, no overwrite."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from napari_medseg.errors import GeometryError, InputError, OutputExistsError
from napari_medseg.io import read_volume, write_labels, write_volume
from napari_medseg.io.dicom_write import write_dicom_series
from napari_medseg.volume import Volume

CLASSES = {1: "liver", 2: "spleen", 7: "lesion of interest"}


def _rotation(axis: int, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    m = np.eye(3)
    i, j = [x for x in range(3) if x != axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _volume(shape=(5, 6, 7), spacing=(0.7, 0.9, 2.5), origin=(-20.5, 31.25, 12.0), direction=None, dtype=np.int16):
    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 1500, size=shape).astype(dtype)
    return Volume(arr, spacing, origin, np.eye(3) if direction is None else direction, {"modality": "CT"})


def _labels_for(vol: Volume, max_label=7) -> Volume:
    lab = np.zeros(vol.spatial_shape, np.int32)
    lab[1:4, 2:5, 1:3] = 1
    lab[2, 0, :] = 2
    lab[-1, -1, -1] = max_label
    return vol.with_array(lab, classes=None)


def _sitk_series(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _assert_grid_equals_sitk(vol_or_img, ref: sitk.Image, atol=1e-4):
    if isinstance(vol_or_img, sitk.Image):
        spacing, origin, direction = vol_or_img.GetSpacing(), vol_or_img.GetOrigin(), vol_or_img.GetDirection()
        size = vol_or_img.GetSize()
    else:
        spacing, origin, direction = vol_or_img.spacing, vol_or_img.origin, vol_or_img.direction.reshape(-1)
        size = vol_or_img.size_ijk
    assert tuple(size) == tuple(ref.GetSize())
    np.testing.assert_allclose(spacing, ref.GetSpacing(), atol=atol)
    np.testing.assert_allclose(origin, ref.GetOrigin(), atol=atol)
    np.testing.assert_allclose(direction, ref.GetDirection(), atol=atol)


# ---------------------------------------------------------------------------------------------- NIfTI labels
def test_nifti_round_trip_read_labels_write_read_identical_affine(tmp_path):
    aff = np.eye(4)
    aff[:3, :3] = _rotation(2, 30) @ _rotation(0, -12) @ np.diag([0.8, 0.75, 3.0])
    aff[:3, 3] = [101.5, -33.25, 7.125]
    src = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((7, 6, 5), np.int16), aff), str(src))
    image = read_volume(src)
    labels = _labels_for(image)
    out = write_labels(labels, tmp_path / "labels.nii.gz", classes=CLASSES, reference=image)
    back = nib.load(str(out))
    assert back.shape == nib.load(str(src)).shape
    np.testing.assert_array_equal(back.affine, nib.load(str(src)).affine)
    np.testing.assert_allclose(back.header.get_qform(), back.affine, atol=1e-4)
    assert int(back.header["sform_code"]) >= 1 and int(back.header["qform_code"]) >= 1
    again = read_volume(out)
    assert again.same_grid(image, tol=0) and again.shape == image.shape
    np.testing.assert_array_equal(again.array, labels.array)
    assert again.meta["classes"] == CLASSES
    assert again.warnings == []


def test_nifti_labels_dtype_by_max_label(tmp_path):
    vol = _volume()
    assert nib.load(str(write_labels(_labels_for(vol, 255), tmp_path / "a.nii.gz"))).get_data_dtype() == np.uint8
    assert nib.load(str(write_labels(_labels_for(vol, 256), tmp_path / "b.nii"))).get_data_dtype() == np.uint16
    with pytest.raises(InputError, match="exceeds 65535"):
        write_labels(_labels_for(vol, 70000), tmp_path / "c.nii.gz")
    neg = vol.with_array(np.full(vol.spatial_shape, -1, np.int16))
    with pytest.raises(InputError, match=">= 0"):
        write_labels(neg, tmp_path / "d.nii.gz")
    frac = vol.with_array(np.full(vol.spatial_shape, 0.5, np.float32))
    with pytest.raises(InputError, match="whole numbers"):
        write_labels(frac, tmp_path / "e.nii.gz")
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_class_names_and_colours_in_nifti_extension(tmp_path):
    vol = _volume()
    classes = {1: ("liver", (0.86, 0.47, 0.35, 1.0)), 2: ("spleen", (0.1, 0.2, 0.3, 1.0))}
    out = write_labels(_labels_for(vol, 2), tmp_path / "l.nii.gz", classes=classes)
    back = read_volume(out)
    assert back.meta["classes"] == {1: "liver", 2: "spleen"}
    assert back.meta["class_colors"][2] == (0.1, 0.2, 0.3, 1.0)
    assert int(nib.load(str(out)).header["intent_code"]) == 1002  # NIFTI_INTENT_LABEL


def test_labels_on_another_grid_is_a_geometry_error(tmp_path):
    vol = _volume()
    moved = Volume(_labels_for(vol).array, vol.spacing, (0.0, 0.0, 0.0), vol.direction)
    with pytest.raises(GeometryError, match="differs from the reference"):
        write_labels(moved, tmp_path / "x.nii.gz", reference=vol)
    assert not (tmp_path / "x.nii.gz").exists()


def test_plain_array_with_reference(tmp_path):
    vol = _volume(direction=_rotation(2, 30))
    arr = _labels_for(vol).array
    back = read_volume(write_labels(arr, tmp_path / "a.nii.gz", reference=vol))
    assert back.same_grid(vol) and np.array_equal(back.array, arr)
    with pytest.raises(GeometryError, match="shape"):
        write_labels(arr[:-1], tmp_path / "b.nii.gz", reference=vol)
    with pytest.raises(InputError, match="needs a Volume"):
        write_labels(arr, tmp_path / "c.nii.gz")


def test_overwrite_refused_without_force(tmp_path):
    vol = _volume()
    target = tmp_path / "l.nii.gz"
    target.write_bytes(b"user data")
    with pytest.raises(OutputExistsError, match="l.nii.gz"):
        write_labels(_labels_for(vol), target)
    with pytest.raises(OutputExistsError):
        write_volume(vol, target)
    assert target.read_bytes() == b"user data"
    write_labels(_labels_for(vol), target, force=True)
    assert read_volume(target).shape == vol.shape


def test_unknown_extension(tmp_path):
    with pytest.raises(InputError, match="unknown output format"):
        write_labels(_labels_for(_volume()), tmp_path / "l.png")
    with pytest.raises(InputError, match="series folder"):
        write_volume(_volume(), tmp_path / "ct.dcm")


# ---------------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_write_volume_round_trip_oblique(tmp_path, suffix):
    vol = _volume(direction=_rotation(1, 30) @ _rotation(2, 15))
    out = write_volume(vol, tmp_path / f"ct{suffix}")
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.dtype == np.int16
    assert back.same_grid(vol, tol=1e-4)
    _assert_grid_equals_sitk(back, sitk.ReadImage(str(out)))


def test_write_4d_volume_keeps_channel_axis(tmp_path):
    arr = np.random.default_rng(2).random((2, 3, 4, 5)).astype(np.float32)
    vol = Volume(arr, (1.0, 2.0, 3.0), (1, 2, 3))
    back = read_volume(write_volume(vol, tmp_path / "multi.nii.gz"))
    assert back.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(back.array, arr)


# ---------------------------------------------------------------------------------------------- NRRD / MHA labels
@pytest.mark.parametrize("name", ["labels.seg.nrrd", "labels.mha"])
def test_itk_labels_carry_slicer_segment_metadata(tmp_path, name):
    vol = _volume(direction=_rotation(0, 20))
    out = write_labels(_labels_for(vol), tmp_path / name, classes=CLASSES)
    img = sitk.ReadImage(str(out))
    _assert_grid_equals_sitk(vol, img, atol=1e-9)
    assert img.GetPixelID() == sitk.sitkUInt8
    names = {img.GetMetaData(f"Segment{n}_Name"): img.GetMetaData(f"Segment{n}_LabelValue") for n in range(3)}
    assert names == {"liver": "1", "spleen": "2", "lesion of interest": "7"}
    back = read_volume(out)
    assert back.meta["classes"] == CLASSES
    np.testing.assert_array_equal(back.array, _labels_for(vol).array)


# ---------------------------------------------------------------------------------------------- DICOM series
@pytest.mark.parametrize(
    "direction",
    [np.eye(3), _rotation(0, 30), _rotation(1, 30) @ _rotation(2, -20)],
    ids=["axial", "oblique30", "double-oblique"],
)
def test_dicom_series_reads_back_in_simpleitk_with_same_geometry(tmp_path, direction):
    vol = _volume(shape=(6, 5, 7), spacing=(0.6, 0.9, 2.0), direction=direction)
    files = write_dicom_series(vol, tmp_path / "series", series_description="test", patient_name="Test^Patient")
    assert len(files) == 6 and all(f.is_file() for f in files)
    img = _sitk_series(tmp_path / "series")
    _assert_grid_equals_sitk(vol, img)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol.array)
    ds = pydicom.dcmread(files[2])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
    assert [float(v) for v in ds.PixelSpacing] == [0.9, 0.6]  # row spacing (j), column spacing (i)
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], vol.index_to_physical((0, 0, 2)), atol=1e-6)
    assert ds.pixel_array.dtype == np.int16 and float(ds.RescaleSlope) == 1.0
    assert not list(tmp_path.glob(".*"))  # the temporary folder was renamed into place


def test_dicom_series_mr(tmp_path):
    vol = _volume(direction=_rotation(1, 90))  # sagittal
    vol = vol.with_array(np.abs(vol.array))
    files = write_dicom_series(vol, tmp_path / "mr", modality="MR", series_description="T1")
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "MR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    img = _sitk_series(tmp_path / "mr")
    _assert_grid_equals_sitk(vol, img)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol.array)
    with pytest.raises(InputError, match="modality"):
        write_dicom_series(vol, tmp_path / "pet", modality="PT")


def test_dicom_series_float_values_use_rescale(tmp_path):
    arr = np.linspace(-3.5, 1234.25, 5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    vol = Volume(arr, (1.0, 1.0, 2.0))
    write_dicom_series(vol, tmp_path / "s")
    back = sitk.GetArrayFromImage(_sitk_series(tmp_path / "s"))
    slope = float(pydicom.dcmread(next((tmp_path / "s").iterdir())).RescaleSlope)
    assert slope != 1.0
    np.testing.assert_allclose(back, arr, atol=slope)


def test_left_handed_volume_is_written_as_the_same_physical_image(tmp_path):
    direction = np.diag([1.0, 1.0, -1.0])
    vol = _volume(direction=direction)
    write_dicom_series(vol, tmp_path / "s")
    img = _sitk_series(tmp_path / "s")
    back = sitk.GetArrayFromImage(img)
    np.testing.assert_array_equal(back, vol.array[::-1])
    np.testing.assert_allclose(img.GetOrigin(), vol.index_to_physical((0, 0, vol.spatial_shape[0] - 1)), atol=1e-4)


def test_dicom_series_refuses_to_overwrite(tmp_path):
    vol = _volume()
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty"):
        write_dicom_series(vol, folder)
    with pytest.raises(OutputExistsError, match="other than .dcm"):
        write_dicom_series(vol, folder, force=True)
    assert (folder / "notes.txt").read_text() == "mine"
    first = write_dicom_series(vol, tmp_path / "t")
    first_uid = pydicom.dcmread(first[0]).SeriesInstanceUID
    second = write_dicom_series(vol, tmp_path / "t", force=True)
    assert len(list((tmp_path / "t").iterdir())) == len(second) == len(first)
    assert pydicom.dcmread(second[0]).SeriesInstanceUID != first_uid
    assert not list(tmp_path.glob(".*"))  # the replaced series was removed


# ---------------------------------------------------------------------------------------------- labels for a DICOM source
def _labels_for_dicom_source_match_grid(image: Volume, series_folder, tmp_path):
    labels = _labels_for(image)
    out = write_labels(labels, tmp_path / "labels.nii.gz", classes=CLASSES, reference=image)
    ref = _sitk_series(series_folder)
    lab_itk = sitk.ReadImage(str(out))
    _assert_grid_equals_sitk(lab_itk, ref)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(lab_itk), labels.array)
    nimg = nib.load(str(out))
    ref_vol = Volume(np.zeros((1, 1, 1)), ref.GetSpacing(), ref.GetOrigin(), np.reshape(ref.GetDirection(), (3, 3)))
    assert nimg.shape == tuple(ref.GetSize())
    np.testing.assert_allclose(nimg.affine, ref_vol.nifti_affine(), atol=1e-4)


def test_labels_for_generated_dicom_source_are_on_the_source_grid(tmp_path):
    vol = _volume(shape=(6, 8, 9), spacing=(0.65, 0.8, 2.5), direction=_rotation(0, 30))
    write_dicom_series(vol, tmp_path / "series")
    image = read_volume(tmp_path / "series")
    _labels_for_dicom_source_match_grid(image, tmp_path / "series", tmp_path)


@pytest.mark.shared_data
def test_labels_for_chest_ct_are_on_the_source_grid(shared_data, tmp_path):
    folder = shared_data / "ct_chest_dicom"
    image = read_volume(folder)
    _labels_for_dicom_source_match_grid(image, folder, tmp_path)


# ---------------------------------------------------------------------------------------------- DICOM SEG
def test_dicom_seg_references_the_source_series(tmp_path):
    vol = _volume(shape=(5, 8, 9), spacing=(0.7, 0.7, 2.0), direction=_rotation(0, 30))
    files = write_dicom_series(vol, tmp_path / "series")
    image = read_volume(tmp_path / "series")
    labels = _labels_for(image)
    out = write_labels(labels, tmp_path / "seg.dcm", classes=CLASSES, reference=image)
    seg = pydicom.dcmread(out)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen", "lesion of interest"]
    source_uids = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == source_uids
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(files[0]).SeriesInstanceUID
    assert seg.FrameOfReferenceUID == pydicom.dcmread(files[0]).FrameOfReferenceUID
    import highdicom as hd

    back = hd.seg.segread(out)
    for n, value in enumerate((1, 2, 7), start=1):
        frames = back.get_pixels_by_source_instance(
            source_sop_instance_uids=[pydicom.dcmread(f).SOPInstanceUID for f in files],
            segment_numbers=[n],
            assert_missing_frames_are_empty=True,
        )[..., 0]
        np.testing.assert_array_equal(frames.astype(bool), labels.array == value)


def test_dicom_seg_needs_a_dicom_reference(tmp_path):
    vol = _volume()
    with pytest.raises(InputError, match="not read from DICOM"):
        write_labels(_labels_for(vol), tmp_path / "seg.dcm", reference=vol)
    with pytest.raises(InputError, match="not read from DICOM"):
        write_labels(_labels_for(vol), tmp_path / "seg.dcm")


@pytest.mark.shared_data
def test_real_nifti_labels_round_trip(shared_data, tmp_path):
    import json

    folder = shared_data / "ct_abdomen_3mm"
    image = read_volume(folder / "ct.nii.gz")
    labels = read_volume(folder / "labels.nii.gz")
    classes = {int(k): v for k, v in json.loads((folder / "classes.json").read_text()).items()}
    out = write_labels(labels, tmp_path / "labels.nii.gz", classes=classes, reference=image)
    src, back = nib.load(str(folder / "labels.nii.gz")), nib.load(str(out))
    assert back.shape == src.shape
    np.testing.assert_array_equal(back.affine, src.affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(src.dataobj))
    again = read_volume(out)
    assert again.meta["classes"] == {k: v for k, v in classes.items() if k != 0}


def _seg_frames(seg_path, source_uid, frames, segment_number):
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    return seg.get_pixels_by_source_frame(
        source_sop_instance_uid=source_uid,
        source_frame_numbers=frames,
        segment_numbers=[segment_number],
        assert_missing_frames_are_empty=True,
    )[..., 0]


def test_dicom_seg_from_shuffled_oblique_series(tmp_path):
    from dicom_factory import rotation, write_series

    written = write_series(tmp_path / "s", shuffle=True, direction=rotation("x", 30))
    image = read_volume(tmp_path / "s")
    lab = np.zeros(image.spatial_shape, np.uint8)
    lab[1, 3:9, 2:7] = 1
    lab[3:5, 10:12, 4:6] = 2
    out = write_labels(image.with_array(lab), tmp_path / "seg.dcm", classes={1: "liver", 2: "tumour"}, reference=image)
    import highdicom as hd

    seg = hd.seg.segread(out)
    for k, f in enumerate(written.files):  # written.files are in k order
        uid = pydicom.dcmread(f).SOPInstanceUID
        for n in (1, 2):
            pix = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[uid], segment_numbers=[n], assert_missing_frames_are_empty=True
            )[0, ..., 0]
            np.testing.assert_array_equal(pix.astype(bool), lab[k] == n)


def test_dicom_seg_from_enhanced_multiframe_with_shuffled_frames(tmp_path):
    from dicom_factory import write_enhanced

    written = write_enhanced(tmp_path / "enh.dcm", shuffle_frames=True)
    image = read_volume(tmp_path / "enh.dcm")
    lab = np.zeros(image.spatial_shape, np.uint8)
    for k in range(lab.shape[0]):
        lab[k, k : k + 3, 5:9] = 1  # a different mask on every slice
    out = write_labels(image.with_array(lab), tmp_path / "seg.dcm", classes={1: "liver"}, reference=image)
    uid = pydicom.dcmread(written.files[0]).SOPInstanceUID
    frames = image.meta["dicom_reference"]["frame_numbers"]  # file frame number of each slice k
    assert frames != sorted(frames)
    pix = _seg_frames(out, uid, frames, 1)
    np.testing.assert_array_equal(pix.astype(bool), lab == 1)


def test_dicom_seg_refuses_labels_on_another_grid(tmp_path):
    vol = _volume(shape=(4, 6, 6))
    write_dicom_series(vol, tmp_path / "s")
    image = read_volume(tmp_path / "s")
    shifted = Volume(np.ones(image.spatial_shape, np.uint8), image.spacing, (0, 0, 0), image.direction)
    with pytest.raises(GeometryError):
        write_labels(shifted, tmp_path / "seg.dcm", reference=image)
    assert not (tmp_path / "seg.dcm").exists()
