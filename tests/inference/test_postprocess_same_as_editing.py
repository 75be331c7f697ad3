"""The pipeline's post-processing and the editing operations share one implementation of the rules."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_medseg.editing import morphology
from napari_medseg.inference import postprocess


def _blobs(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros((18, 22, 20), np.uint8)
    for value in (1, 2, 3):
        for _ in range(3):
            c = rng.integers(2, 16, 3)
            r = rng.integers(1, 4, 3)
            labels[c[0] - r[0]:c[0] + r[0], c[1] - r[1]:c[1] + r[1], c[2] - r[2]:c[2] + r[2]] = value
    labels[8:12, 8:12, 8:12] = 2
    labels[9:11, 9:11, 9:11] = 0  # a hole in class 2
    return labels


def test_keep_largest_and_fill_holes_match_the_editing_operations():
    for seed in range(5):
        labels = _blobs(seed)
        before = labels.copy()
        expect = labels.copy()
        for v in (1, 2, 3):
            morphology.keep_largest(expect, v).apply(expect)
        got = postprocess.keep_largest(labels, [1, 2, 3])
        np.testing.assert_array_equal(got, expect)
        for v in (1, 2, 3):
            n = ndimage.label(got == v, structure=np.ones((3, 3, 3), bool))[1]
            assert n <= 1
        expect = labels.copy()
        for v in (1, 2, 3):
            morphology.fill_holes(expect, v).apply(expect)
        np.testing.assert_array_equal(postprocess.fill_holes(labels, [1, 2, 3]), expect)
        np.testing.assert_array_equal(labels, before)  # the input is never changed
    assert postprocess.fill_holes(_blobs(0))[9, 9, 9] in (1, 2, 3)
