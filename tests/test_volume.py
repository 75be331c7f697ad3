import numpy as np
import pytest

from napari_medseg.errors import GeometryError, InputError
from napari_medseg.volume import Volume


def _rot(deg):
    t = np.deg2rad(deg)
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


def test_index_physical_roundtrip_oblique():
    v = Volume(np.zeros((4, 5, 6)), (0.7, 0.8, 2.5), (10, -20, 30), _rot(30))
    ijk = np.array([[1.0, 2.0, 3.0], [5, 4, 0]])
    xyz = v.index_to_physical(ijk)
    np.testing.assert_allclose(v.physical_to_index(xyz), ijk, atol=1e-9)
    np.testing.assert_allclose(xyz[0], np.array([10, -20, 30]) + _rot(30) @ (np.array([0.7, 0.8, 2.5]) * [1, 2, 3]))


def test_nifti_affine_roundtrip_is_exact():
    aff = np.array([[-0.8, 0, 0, 90.0], [0, 0.9, 0, -100], [0, 0, 2.0, 12.0], [0, 0, 0, 1]])
    arr_ijk = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    v = Volume.from_nifti(arr_ijk, aff)
    assert v.shape == (4, 3, 2)
    assert v.array[3, 2, 1] == arr_ijk[1, 2, 3]
    np.testing.assert_allclose(v.nifti_affine(), aff, atol=1e-12)
    # i points to -x in RAS (patient left), j to +y RAS (anterior), k superior
    assert v.orientation_code() == "LAS"


def test_orientation_codes():
    assert Volume(np.zeros((2, 2, 2))).orientation_code() == "LPS"
    ras = Volume.from_nifti(np.zeros((2, 2, 2)), np.eye(4))
    assert ras.orientation_code() == "RAS"


def test_napari_kwargs_roundtrip_identity_and_oblique():
    v = Volume(np.zeros((4, 5, 6)), (0.7, 0.8, 2.5), (10, -20, 30))
    kw = v.napari_kwargs()
    assert kw["scale"] == [2.5, 0.8, 0.7] and kw["translate"] == [30, -20, 10] and "affine" not in kw
    w = Volume.from_napari(v.array, **kw)
    assert w.same_grid(v)
    o = Volume(np.zeros((4, 5, 6)), (0.7, 0.8, 2.5), (10, -20, 30), _rot(30) @ np.diag([1, -1, -1]))
    kw = o.napari_kwargs()
    w = Volume.from_napari(o.array, **kw)
    assert w.same_grid(o)
    # world (z, y, x) of voxel (k, j, i) equals reversed LPS position
    k, j, i = 3, 2, 1
    world = kw["affine"][:3, :3] @ (np.array(kw["scale"]) * [k, j, i]) + kw["affine"][:3, 3]
    np.testing.assert_allclose(world[::-1], o.index_to_physical([i, j, k]), atol=1e-9)


def test_bad_geometry_is_rejected():
    with pytest.raises(GeometryError, match="orthonormal"):
        Volume(np.zeros((2, 2, 2)), direction=[[1, 0.3, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(GeometryError, match="positive"):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))
    with pytest.raises(InputError, match="3D"):
        Volume(np.zeros((2, 2)))
