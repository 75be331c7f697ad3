"""NIfTI / NRRD / MHA readers: geometry, dtypes, 4D, and every bad input the issue names."""

from __future__ import annotations

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg.errors import GeometryError, InputError
from napari_medseg.io import list_series, read_volume
from napari_medseg.io.formats import info_single_file, read_itk, read_nifti


def _oblique_ras_affine(spacing=(0.7, 0.9, 2.5), angle_deg=30.0, origin=(12.5, -40.25, 7.0)):
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def _save(tmp_path, data, affine, name="img.nii.gz", sform_code=1, qform_code=1, qform=None):
    img = nib.Nifti1Image(data, affine)
    img.header.set_sform(affine, code=sform_code)
    img.header.set_qform(affine if qform is None else qform, code=qform_code)
    path = tmp_path / name
    nib.save(img, str(path))
    return path


def _ijk_data(shape=(6, 5, 4), dtype=np.int16):
    return (np.arange(np.prod(shape)).reshape(shape) - 50).astype(dtype)


# ---------------------------------------------------------------------------------------------- NIfTI
def test_nifti_geometry_matches_nibabel_affine_and_array_order(tmp_path):
    aff = _oblique_ras_affine()
    data = _ijk_data()
    path = _save(tmp_path, data, aff)
    vol = read_nifti(path)
    assert vol.shape == (4, 5, 6)  # [k, j, i]
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, data.transpose(2, 1, 0))
    np.testing.assert_allclose(vol.nifti_affine(), nib.load(str(path)).affine, atol=1e-6)
    # voxel (i, j, k) = (1, 2, 3): LPS position = RAS with x, y negated
    ras = nib.load(str(path)).affine @ [1, 2, 3, 1]
    np.testing.assert_allclose(vol.index_to_physical((1, 2, 3)), [-ras[0], -ras[1], ras[2]], atol=1e-5)
    assert vol.meta["format"] == "nifti" and vol.warnings == []


def test_nifti_agrees_with_simpleitk(tmp_path):
    path = _save(tmp_path, _ijk_data(dtype=np.float32), _oblique_ras_affine(angle_deg=-17))
    vol = read_nifti(path)
    ref = sitk.ReadImage(str(path))
    np.testing.assert_allclose(vol.spacing, ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.direction.reshape(-1), ref.GetDirection(), atol=1e-4)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref))


def test_sform_takes_precedence_and_disagreement_warns(tmp_path):
    sform = _oblique_ras_affine()
    qform = sform.copy()
    qform[:3, 3] += [0.0, 0.0, 5.0]  # 5 mm shift
    path = _save(tmp_path, _ijk_data(), sform, qform=qform)
    vol = read_nifti(path)
    np.testing.assert_allclose(vol.nifti_affine(), sform, atol=1e-5)
    assert any("sform and qform disagree" in w and "5 mm" in w for w in vol.warnings)


def test_qform_only_is_used(tmp_path):
    qform = _oblique_ras_affine(angle_deg=10)
    path = _save(tmp_path, _ijk_data(), qform, sform_code=0, qform_code=1)
    vol = read_nifti(path)
    np.testing.assert_allclose(vol.nifti_affine(), qform, atol=1e-5)
    assert vol.warnings == []


def test_small_sform_qform_roundoff_does_not_warn(tmp_path):
    aff = _oblique_ras_affine()
    q = aff.copy()
    q[0, 3] += 1e-5
    assert read_nifti(_save(tmp_path, _ijk_data(), aff, qform=q)).warnings == []


def test_4d_nifti_has_visible_channel_axis(tmp_path):
    data = np.stack([_ijk_data(), _ijk_data() * 2, _ijk_data() * 3], axis=-1)  # [i, j, k, t]
    vol = read_nifti(_save(tmp_path, data, np.diag([2.0, 2.0, 3.0, 1.0])))
    assert vol.shape == (3, 4, 5, 6) and vol.is_4d
    assert vol.meta["channel_names"] == ["volume 0", "volume 1", "volume 2"]
    np.testing.assert_array_equal(vol.array[2], data[..., 2].transpose(2, 1, 0))


def test_scaling_keeps_integers_when_integral(tmp_path):
    data = np.array([[[0, 100], [2000, 4095]]], dtype=np.uint16).reshape(2, 2, 1)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, str(tmp_path / "ct.nii"))
    vol = read_nifti(tmp_path / "ct.nii")
    assert np.issubdtype(vol.array.dtype, np.integer)
    np.testing.assert_array_equal(vol.array.transpose(2, 1, 0), data.astype(int) - 1024)
    assert vol.meta["rescale"] == (1.0, -1024.0) and vol.meta["original_dtype"] == "uint16"

    img.header.set_slope_inter(0.5, 0.25)
    nib.save(img, str(tmp_path / "pet.nii"))
    vol = read_nifti(tmp_path / "pet.nii")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array.transpose(2, 1, 0), data * 0.5 + 0.25)


def test_rgb_nifti_becomes_channels(tmp_path):
    rgb = np.zeros((4, 3, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = 200
    rgb["B"][1, 2, 1] = 9
    vol = read_nifti(_save(tmp_path, rgb, np.eye(4)))
    assert vol.shape == (3, 2, 3, 4) and vol.array.dtype == np.uint8
    assert np.all(vol.array[1] == 200) and vol.array[2, 1, 2, 1] == 9
    assert vol.meta["channel_names"] == ["volume 0", "volume 1", "volume 2"]


def test_uint8_labels_stay_uint8(tmp_path):
    data = np.zeros((4, 4, 3), np.uint8)
    data[1:3, 1:3, 1] = 7
    vol = read_nifti(_save(tmp_path, data, np.eye(4)))
    assert vol.array.dtype == np.uint8 and int(vol.array.max()) == 7


def test_nan_and_inf_are_replaced_and_counted(tmp_path):
    data = np.arange(60, dtype=np.float32).reshape(5, 4, 3)
    data[0, 0, 0] = np.nan
    data[1, 0, 0] = np.nan
    data[2, 0, 0] = np.inf
    data[3, 0, 0] = -np.inf
    vol = read_nifti(_save(tmp_path, data, np.eye(4)))
    assert np.all(np.isfinite(vol.array))
    warning = next(w for w in vol.warnings if "non-finite" in w)
    assert "4 non-finite voxels (2 NaN, 2 inf)" in warning
    arr = vol.nifti_array()
    finite = np.delete(np.arange(60.0), [0, 12, 24, 36])
    assert arr[0, 0, 0] == arr[3, 0, 0] == finite.min()  # NaN and -inf -> min finite value
    assert arr[2, 0, 0] == finite.max()  # +inf -> max finite value


def test_all_nan_is_an_error(tmp_path):
    path = _save(tmp_path, np.full((3, 3, 3), np.nan, np.float32), np.eye(4))
    with pytest.raises(InputError, match="every voxel is NaN"):
        read_nifti(path)


def test_corrupt_gzip_stream_names_the_file(tmp_path):
    path = _save(tmp_path, np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32), np.eye(4))
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(64)  # zero a block in the middle of the deflate stream
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="corrupt.nii.gz") as exc:
        read_nifti(bad)
    assert "gzip" in str(exc.value)


def test_not_gzip_at_all(tmp_path):
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(b"this is not a gzip stream" * 10)
    with pytest.raises(InputError, match="garbage.nii.gz"):
        read_nifti(bad)


def test_truncated_files_fail_with_input_error(tmp_path):
    path = _save(tmp_path, _ijk_data((30, 30, 30), np.int16), np.eye(4), name="full.nii")
    cut = tmp_path / "cut.nii"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(InputError, match="cut.nii.*truncated"):
        read_nifti(cut)
    gz = _save(tmp_path, np.random.default_rng(1).normal(size=(30, 30, 30)).astype(np.float32), np.eye(4), name="f.nii.gz")
    cutgz = tmp_path / "cut.nii.gz"
    cutgz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.nii.gz"):
        read_nifti(cutgz)


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_absurd_dimensions_fail_fast_without_allocating(tmp_path, name):
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    hdr = img.header
    hdr["dim"][1:4] = [30000, 30000, 30000]  # 108 TB of float32
    raw = hdr.binaryblock + b"\x00" * 4 + np.zeros(8, np.float32).tobytes()
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="declares") as exc:
            read_nifti(path)
        with pytest.raises(InputError, match="declares"):
            info_single_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6
    assert name in str(exc.value)


def test_sheared_affine_is_a_geometry_error_naming_the_file(tmp_path):
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    aff[0, 1] = 0.4  # shear: i and j axes not orthogonal
    path = _save(tmp_path, _ijk_data(), aff, qform_code=0)
    with pytest.raises(GeometryError, match="not orthonormal") as exc:
        read_nifti(path)
    assert "img.nii.gz" in str(exc.value)


def test_missing_file():
    with pytest.raises(InputError, match="no such file"):
        read_nifti("/nonexistent/x.nii.gz")


def test_info_single_file_reads_header_only(tmp_path):
    path = _save(tmp_path, _ijk_data(), _oblique_ras_affine())
    info = info_single_file(path)
    vol = read_nifti(path)
    assert info.shape == vol.shape and info.format == "nifti"
    np.testing.assert_allclose(info.spacing, vol.spacing)
    np.testing.assert_allclose(info.origin, vol.origin)
    np.testing.assert_allclose(info.direction, vol.direction.reshape(-1))
    assert info.orientation == vol.orientation_code()
    assert [s.uid for s in list_series(path)] == [str(path)]


# ---------------------------------------------------------------------------------------------- NRRD / MHA
def _sitk_oblique(dtype=np.int16, angle_deg=30.0):
    arr = _ijk_data((7, 6, 5), dtype).transpose(2, 1, 0).copy()  # [k, j, i]
    img = sitk.GetImageFromArray(arr)
    a = np.deg2rad(angle_deg)
    d = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    img.SetDirection(d.reshape(-1).tolist())
    img.SetSpacing((0.6, 0.8, 3.0))
    img.SetOrigin((-10.0, 20.5, 33.25))
    return arr, img


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nhdr", ".mhd"])
def test_itk_formats_match_simpleitk(tmp_path, suffix):
    arr, img = _sitk_oblique()
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(img, str(path), suffix in (".nrrd", ".mha"))
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.spacing, img.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(vol.origin, img.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(vol.direction.reshape(-1), img.GetDirection(), atol=1e-9)
    info = info_single_file(path)
    assert info.shape == vol.shape and info.orientation == vol.orientation_code()


def test_vector_nrrd_becomes_channel_axis(tmp_path):
    arr = np.random.default_rng(0).random((4, 5, 6, 3)).astype(np.float32)  # [k, j, i, c]
    img = sitk.GetImageFromArray(arr, isVector=True)
    sitk.WriteImage(img, str(tmp_path / "rgb.nrrd"))
    vol = read_itk(tmp_path / "rgb.nrrd")
    assert vol.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(vol.array[1], arr[..., 1])
    assert info_single_file(tmp_path / "rgb.nrrd").shape == (3, 4, 5, 6)


def _nrrd_header(sizes, directions, data_bytes=b"", encoding="raw"):
    dirs = " ".join("(" + ",".join(str(v) for v in d) + ")" for d in directions)
    head = (
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
        f"sizes: {' '.join(str(s) for s in sizes)}\nspace directions: {dirs}\nkinds: domain domain domain\n"
        f"endian: little\nencoding: {encoding}\nspace origin: (0,0,0)\n\n"
    )
    return head.encode() + data_bytes


def test_non_orthonormal_nrrd_direction_is_a_geometry_error(tmp_path):
    path = tmp_path / "sheared.nrrd"
    path.write_bytes(_nrrd_header((3, 3, 3), [(1, 0, 0), (0.5, 1, 0), (0, 0, 2)], bytes(2 * 27)))
    with pytest.raises(GeometryError, match="sheared.nrrd") as exc:
        read_itk(path)
    assert "not orthonormal" in str(exc.value)


def test_absurd_nrrd_dimensions_fail_fast(tmp_path):
    path = tmp_path / "huge.nrrd"
    path.write_bytes(_nrrd_header((50000, 50000, 50000), [(1, 0, 0), (0, 1, 0), (0, 0, 1)], bytes(64)))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="huge.nrrd.*declares"):
            read_itk(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6


def test_truncated_mha_is_an_input_error(tmp_path):
    _, img = _sitk_oblique()
    sitk.WriteImage(img, str(tmp_path / "ok.mha"))
    raw = (tmp_path / "ok.mha").read_bytes()
    (tmp_path / "cut.mha").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(InputError, match="cut.mha"):
        read_itk(tmp_path / "cut.mha")


def test_nrrd_nan_voxels_warn(tmp_path):
    arr = np.ones((3, 4, 5), np.float32)
    arr[0, 0, :2] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "nan.nrrd"))
    vol = read_itk(tmp_path / "nan.nrrd")
    assert np.all(np.isfinite(vol.array)) and any("2 non-finite voxels" in w for w in vol.warnings)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["ct.nii.gz", "labels.nii.gz"])
def test_real_abdomen_nifti_matches_simpleitk(shared_data, name):
    path = shared_data / "ct_abdomen_3mm" / name
    vol = read_nifti(path)
    ref = sitk.ReadImage(str(path))
    np.testing.assert_allclose(vol.spacing, ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.direction.reshape(-1), ref.GetDirection(), atol=1e-4)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref))
    assert np.issubdtype(vol.array.dtype, np.integer)


_MHA_HEADER = """ObjectType = Image
NDims = 3
BinaryData = True
BinaryDataByteOrderMSB = False
CompressedData = False
TransformMatrix = {matrix}
Offset = 0 0 0
ElementSpacing = 1 1 2
DimSize = {dims}
ElementType = MET_SHORT
ElementDataFile = LOCAL
"""


def test_non_orthonormal_mha_direction_is_a_geometry_error(tmp_path):
    path = tmp_path / "sheared.mha"
    path.write_bytes(_MHA_HEADER.format(matrix="1 0 0 0.5 1 0 0 0 1", dims="3 3 3").encode() + bytes(54))
    with pytest.raises(GeometryError, match="sheared.mha.*not orthonormal"):
        read_itk(path)
    with pytest.raises(GeometryError, match="not orthonormal"):
        info_single_file(path)


def test_absurd_mha_dimensions_fail_fast(tmp_path):
    path = tmp_path / "huge.mha"
    path.write_bytes(_MHA_HEADER.format(matrix="1 0 0 0 1 0 0 0 1", dims="40000 40000 40000").encode() + bytes(54))
    with pytest.raises(InputError, match="huge.mha.*declares"):
        read_itk(path)
