"""Two-volume comparison (core): per-class Dice and the difference map."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.editing.compare import DIFFERENT, ONLY_A, ONLY_B, compare_labels, difference_map
from napari_medseg.errors import GeometryError


def test_dice_and_difference():
    a = np.zeros((4, 10, 10), np.uint8)
    b = np.zeros_like(a)
    a[1, 0:4, 0:4] = 1  # 16 voxels
    b[1, 0:4, 0:2] = 1  # 8 voxels, all inside A's
    a[2, 5, 5] = 2  # class 2 only in A
    b[3, 5, 5] = 3  # class 3 only in B
    a[3, 0, 0], b[3, 0, 0] = 1, 2  # labelled in both, different classes
    cmp = compare_labels(a, b, {1: "liver", 2: "spleen", 3: "kidney", 4: "aorta"})
    rows = {r["value"]: r for r in cmp.table()}
    assert rows[1]["name"] == "liver" and rows[1]["voxels_a"] == 17 and rows[1]["voxels_b"] == 8
    assert rows[1]["dice"] == pytest.approx(2 * 8 / (17 + 8))
    assert rows[2]["dice"] == 0.0 and rows[3]["dice"] == 0.0 and np.isnan(rows[4]["dice"])
    assert (cmp.only_a, cmp.only_b, cmp.different) == (8 + 1, 1, 1)
    diff = difference_map(a, b)
    np.testing.assert_array_equal(diff, cmp.diff)
    assert diff[1, 0, 3] == ONLY_A and diff[3, 5, 5] == ONLY_B and diff[3, 0, 0] == DIFFERENT and diff[1, 0, 0] == 0
    with pytest.raises(GeometryError, match="same grid"):
        compare_labels(a, b[:2])
