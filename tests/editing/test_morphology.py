import numpy as np
import pytest

from napari_medseg.editing import dilate, erode, fill_holes, keep_largest, remove_islands, smooth
from napari_medseg.errors import InputError


def vol(shape=(3, 9, 9)):
    return np.zeros(shape, np.uint8)


def test_fill_holes_2d_slice_and_3d_keep_other_classes():
    lab = vol()
    lab[1, 2:7, 2:7] = 1
    lab[1, 4, 4] = 0  # a background hole
    lab[1, 3, 3] = 2  # another class inside: kept
    e = fill_holes(lab, 1, where=(0, 1))
    assert e.n_changed == 1 and e.slices(0) == [1]
    out = e.apply(lab.copy())
    assert out[1, 4, 4] == 1 and out[1, 3, 3] == 2
    # whole volume in 3D: the hole opens onto the empty slices 0 and 2, so it is no 3D hole
    assert fill_holes(lab, 1).is_empty
    assert fill_holes(lab, 1, per_slice_axis=0).n_changed == 1
    # a tube open at both ends has no 3D hole but a 2D hole on every slice
    tube = vol()
    tube[:, 2:7, 2:7] = 1
    tube[:, 4, 4] = 0
    assert fill_holes(tube, 1).is_empty
    e2 = fill_holes(tube, 1, per_slice_axis=0)
    assert e2.n_changed == 3 and np.all(e2.apply(tube.copy())[:, 4, 4] == 1)
    # overwrite paints other classes in the hole too
    assert fill_holes(lab, 1, where=(0, 1), overwrite=True).n_changed == 2


def test_input_not_modified_and_undo_restores():
    lab = vol()
    lab[1, 2:7, 2:7] = 1
    lab[1, 4, 4] = 0
    before = lab.copy()
    e = fill_holes(lab, 1, per_slice_axis=0)
    assert np.array_equal(lab, before)
    e.apply(lab)
    assert not np.array_equal(lab, before)
    e.revert(lab)
    assert np.array_equal(lab, before)
    idx, values = e.indices()
    assert [tuple(int(i) for i in ix) for ix in idx] == [(1,), (4,), (4,)] and values.tolist() == [1]


def test_remove_islands_uses_physical_volume():
    lab = vol((4, 10, 10))
    lab[0:2, 0:4, 0:4] = 1  # 32 voxels
    lab[3, 8, 8] = 1  # 1 voxel
    lab[3, 8:10, 0:2] = 1  # 4 voxels
    # spacing (i, j, k) = (0.5, 0.5, 2) mm -> voxel 0.5 mm³: islands are 0.5 and 2 mm³, big one 16 mm³
    e = remove_islands(lab, 1, 1.0, spacing=(0.5, 0.5, 2.0))
    out = e.apply(lab.copy())
    assert out[3, 8, 8] == 0 and out[3, 8:10, 0:2].sum() == 4 and out[0:2, 0:4, 0:4].sum() == 32
    out = remove_islands(lab, 1, 3.0, spacing=(0.5, 0.5, 2.0)).apply(lab.copy())
    assert out.sum() == 32
    # unit spacing: 1 mm³ voxels; threshold 2 removes only the single voxel
    assert remove_islands(lab, 1, 2.0).n_changed == 1
    with pytest.raises(InputError):
        remove_islands(lab, 1, -1)


def test_keep_largest_slice_and_volume():
    lab = vol((2, 8, 8))
    lab[0, 0:3, 0:3] = 1
    lab[0, 6:8, 6:8] = 1
    lab[1, 6:8, 0:2] = 1
    lab[0, 5, 0] = 2
    out = keep_largest(lab, 1, where=(0, 0)).apply(lab.copy())
    assert out[0].tolist() == np.where(np.arange(64).reshape(8, 8) < 0, 0, out[0]).tolist()
    assert out[0, 6:8, 6:8].sum() == 0 and out[0, 0:3, 0:3].sum() == 9 and out[1].sum() == 4 and out[0, 5, 0] == 2
    out3 = keep_largest(lab, 1).apply(lab.copy())
    assert (out3 == 1).sum() == 9


def test_dilate_anisotropic_exact():
    lab = vol((5, 5, 9))
    lab[2, 2, 4] = 1
    # spacing i=1, j=2, k=3 mm; dilate 2 mm: i neighbours at 1 and 2 mm, j at 2 mm, k none (3 mm)
    out = dilate(lab, 1, 2.0, spacing=(1.0, 2.0, 3.0)).apply(lab.copy())
    expect = lab.copy()
    expect[2, 2, 2:7] = 1
    expect[2, 1, 4] = expect[2, 3, 4] = 1
    assert np.array_equal(out, expect)
    # does not paint over other classes unless overwrite
    lab[2, 2, 5] = 3
    out = dilate(lab, 1, 1.0, spacing=(1.0, 2.0, 3.0)).apply(lab.copy())
    assert out[2, 2, 5] == 3 and out[2, 2, 3] == 1
    out = dilate(lab, 1, 1.0, spacing=(1.0, 2.0, 3.0), overwrite=True).apply(lab.copy())
    assert out[2, 2, 5] == 1


def test_erode_and_slice_scope():
    lab = vol((3, 7, 7))
    lab[:, 1:6, 1:6] = 1
    e = erode(lab, 1, 1.0, where=(0, 1))
    out = e.apply(lab.copy())
    assert e.slices(0) == [1]
    assert (out[1] == 1).sum() == 9 and out[1, 2:5, 2:5].all()
    assert np.array_equal(out[0], lab[0])
    # whole volume with slice thickness 5 mm: erosion by 1 mm is in-plane only... except where the
    # structure meets background through z: here it fills all slices of the array, so no z erosion
    outv = erode(lab, 1, 1.0, spacing=(1, 1, 5)).apply(lab.copy())
    assert (outv == 1).sum() == 27
    assert erode(lab, 1, 0).is_empty


def test_smooth_removes_spur_and_fills_notch():
    lab = vol((1, 17, 17))
    lab[0, 3:12, 3:12] = 1
    lab[0, 7, 12:15] = 1  # a 1-voxel-thin spur
    lab[0, 3, 7] = 0  # a 1-voxel notch
    e = smooth(lab, 1, 1.5, where=(0, 0))
    expect = vol((1, 17, 17))
    expect[0, 3:12, 3:12] = 1  # exactly the square again
    assert np.array_equal(e.apply(lab.copy()), expect) and e.n_changed == 4


def test_bad_input():
    with pytest.raises(InputError, match="3D"):
        fill_holes(np.zeros((4, 4), np.uint8), 1)
    with pytest.raises(InputError, match="out of range"):
        fill_holes(vol(), 1, where=(0, 5))
    with pytest.raises(InputError, match="spacing"):
        dilate(vol(), 1, 1.0, spacing=(1, 0, 1))
    with pytest.raises(InputError, match="integer"):
        fill_holes(np.zeros((2, 2, 2), float), 1)


def test_edit_slices_and_indices_on_offset_bbox():
    lab = vol((6, 9, 9))
    lab[4, 4, 4] = 1
    e = dilate(lab, 1, 1.0, where=(0, 4))
    assert e.slices(0) == [4] and e.slices(1) == [3, 4, 5] and e.n_changed == 4
    idx, values = e.indices()
    assert sorted(zip(*(ix.tolist() for ix in idx))) == [(4, 3, 4), (4, 4, 3), (4, 4, 5), (4, 5, 4)]
    assert values.tolist() == [1, 1, 1, 1]
