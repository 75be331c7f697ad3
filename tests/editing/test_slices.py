import numpy as np
import pytest

from napari_medseg.editing import copy_slice, interpolate_slices, next_slice_to_check, relabel, signed_distance
from napari_medseg.errors import InputError


def square(lab, k, half, value=1, c=8):
    lab[k, c - half:c + half + 1, c - half:c + half + 1] = value


def test_signed_distance_threshold_reproduces_mask():
    m = np.zeros((7, 7), bool)
    m[2:5, 1:6] = True
    d = signed_distance(m, (2.0, 1.0))
    assert np.array_equal(d < 0, m)
    assert d[3, 3] == -3.0 and d[3, 0] == 1.0 and d[0, 3] == 4.0


def test_interpolate_between_squares_exact():
    lab = np.zeros((5, 17, 17), np.uint8)
    square(lab, 0, 2)
    square(lab, 4, 6)
    e = interpolate_slices(lab, 1, axis=0)
    out = e.apply(lab.copy())
    assert e.slices(0) == [1, 2, 3]
    assert np.array_equal(out[0], lab[0]) and np.array_equal(out[4], lab[4])
    mid = np.zeros((17, 17), np.uint8)
    mid[4:13, 4:13] = 1  # half-width 4 exactly halfway between 2 and 6
    assert np.array_equal(out[2], mid)
    # monotone growth between the key slices
    areas = [(out[k] == 1).sum() for k in range(5)]
    assert areas == sorted(areas) and areas[1] > areas[0] and areas[3] < areas[4]


def test_interpolate_identical_shapes_and_other_axis_and_no_overwrite():
    lab = np.zeros((6, 17, 17), np.uint8)
    square(lab, 1, 3)
    square(lab, 5, 3)
    lab[3, 8, 8] = 2
    out = interpolate_slices(lab, 1).apply(lab.copy())
    for k in (2, 4):
        assert np.array_equal(out[k], out[1])
    assert out[3, 8, 8] == 2 and (out[3] == 1).sum() == 48
    assert out[0].sum() == 0
    # along axis 2 with explicit key slices
    lab2 = np.zeros((9, 9, 6), np.uint8)
    lab2[2:7, 2:7, 0] = 1
    lab2[2:7, 2:7, 3] = 1
    e = interpolate_slices(lab2, 1, axis=2, slices=[0, 3])
    assert e.slices(2) == [1, 2] and e.n_changed == 50
    with pytest.raises(InputError):
        interpolate_slices(lab2, 1, axis=2, slices=[0, 9])


def test_copy_slice_class_and_whole():
    lab = np.zeros((3, 4, 4), np.uint8)
    lab[0, 0:2, 0:2] = 1
    lab[0, 3, 3] = 2
    lab[1, 0, 0] = 3
    out = copy_slice(lab, 0, 1, label=1).apply(lab.copy())
    assert out[1, 0, 0] == 3 and out[1, 0:2, 0:2].sum() == 3 + 3 and out[1, 3, 3] == 0
    out = copy_slice(lab, 0, 1).apply(lab.copy())
    assert np.array_equal(out[1], lab[0])
    out = copy_slice(lab, 0, 1, source=2).apply(lab.copy())
    assert out[1].sum() == 0
    with pytest.raises(InputError, match="no slice"):
        copy_slice(lab, 0, 0)


def test_relabel_merge_and_scope():
    lab = np.zeros((2, 3, 3), np.uint8)
    lab[0, 0, :] = [1, 2, 3]
    lab[1, 0, :] = [1, 2, 3]
    out = relabel(lab, [1, 2], 5).apply(lab.copy())
    assert out[:, 0, :].tolist() == [[5, 5, 3], [5, 5, 3]]
    out = relabel(lab, 3, 0, where=(0, 1)).apply(lab.copy())
    assert out[:, 0, :].tolist() == [[1, 2, 3], [1, 2, 0]]
    with pytest.raises(InputError, match="dtype"):
        relabel(lab, 1, 300)


def test_next_slice_to_check_skips_reviewed():
    u = np.zeros((4, 3, 3), np.float32)
    u[1] = 0.5
    u[2] = 0.9
    assert next_slice_to_check(u) == 2
    assert next_slice_to_check(u, reviewed=[2]) == 1
    assert next_slice_to_check(u, reviewed=[0, 1, 2, 3]) is None
    assert next_slice_to_check(u, axis=1) in (0, 1, 2)
