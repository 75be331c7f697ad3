"""The uncertainty map on the model grid: exact geometry (every voxel keeps its physical position and value),
axes running along the source's, for flipped and permuted directions; the pipeline's ``uncertainty="model"``."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.inference import segment
from napari_medseg.inference.config import InferenceConfig
from napari_medseg.inference.preprocess import model_grid
from napari_medseg.inference.uncertainty import align_axes, model_grid_uncertainty, uncertainty_on
from napari_medseg.volume import Volume

from test_pipeline import DIRECTIONS, smooth_image, threshold_model

FLIP_PERM = {
    "LPS": np.eye(3),
    "RAS": DIRECTIONS["RAS"],
    "permuted": DIRECTIONS["permuted"],
    "flipped-permuted": np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]),
}


def _same_voxels(a: Volume, b: Volume):
    """Every voxel of ``a`` sits at a voxel centre of ``b`` with the same value."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in a.spatial_shape], indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], 1)
    back = b.physical_to_index(a.index_to_physical(ijk))
    np.testing.assert_allclose(back, np.round(back), atol=1e-6)
    bi = np.round(back).astype(int)
    np.testing.assert_array_equal(a.array[ijk[:, 2], ijk[:, 1], ijk[:, 0]], b.array[bi[:, 2], bi[:, 1], bi[:, 0]])


@pytest.mark.parametrize("name", list(FLIP_PERM))
@pytest.mark.parametrize("ref", list(FLIP_PERM))
def test_align_axes_keeps_every_voxel_in_place(name, ref):
    rng = np.random.default_rng(1)
    vol = Volume(rng.random((5, 6, 7)).astype(np.float32), (1.5, 2.0, 3.0), (10.0, -4.0, 2.5), FLIP_PERM[name])
    target = Volume(np.zeros((3, 3, 3)), direction=FLIP_PERM[ref])
    out = align_axes(vol, target)
    np.testing.assert_allclose(out.direction, target.direction, atol=1e-12)  # the source's axes, positive steps
    _same_voxels(vol, out)
    _same_voxels(out, vol)


def test_oblique_grids_keep_their_own_axes():
    vol = Volume(np.ones((3, 4, 5), np.float32), direction=DIRECTIONS["oblique"])
    assert align_axes(vol, Volume(np.zeros((2, 2, 2)))) is vol


@pytest.mark.parametrize("name", list(FLIP_PERM))
def test_pipeline_model_grid_uncertainty_overlays_the_source(name):
    arr = smooth_image()
    vol = Volume(arr, (0.8, 1.1, 1.9), (3.0, -2.0, 7.0), FLIP_PERM[name])
    model = threshold_model(spacing=(1.6, 1.5, 2.5))
    res = segment(vol, model, config=InferenceConfig(device="cpu", uncertainty="model"))
    src = segment(vol, model, device="cpu", return_uncertainty=True)
    np.testing.assert_array_equal(res.labels.array, src.labels.array)  # the labels do not change
    unc = res.uncertainty
    grid = model_grid(vol, model.card)
    assert unc.array.size == int(np.prod(grid.spatial_shape)) < arr.size  # the model's voxels, not the source's
    np.testing.assert_allclose(unc.direction, vol.direction, atol=1e-12)  # drawn with the source's rotation
    assert np.all(np.asarray(unc.spacing) > 0) and unc.meta["grid"] == "model"
    # the same voxels as the model grid (its own geometry), each at its exact position
    on_grid = Volume(np.zeros(grid.spatial_shape, np.float32), grid.spacing, grid.origin, grid.direction)
    _same_voxels(Volume(unc.array, unc.spacing, unc.origin, unc.direction), align_axes(on_grid.with_array(
        _unaligned(unc, on_grid)), vol))
    # resampled onto the source (for a per-voxel use) it is high where the model is unsure: at its threshold
    on_source = uncertainty_on(unc, vol)
    assert on_source.shape == arr.shape and 0 <= on_source.min() and on_source.max() <= 0.5 + 1e-6
    assert on_source[np.abs(arr) < 0.05].mean() > 5 * on_source[np.abs(arr) > 1].mean()


def _unaligned(unc: Volume, grid: Volume) -> np.ndarray:
    """``unc``'s values put back into ``grid``'s own index order (the inverse of `align_axes`)."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.spatial_shape], indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], 1)
    at = np.round(unc.physical_to_index(grid.index_to_physical(ijk))).astype(int)
    return unc.array[at[:, 2], at[:, 1], at[:, 0]].reshape(grid.spatial_shape)


def test_model_grid_uncertainty_values():
    p = np.zeros((3, 2, 2, 2), np.float32)
    p[0], p[1] = 0.7, 0.3
    p[:, 0, 0, 0] = (0.2, 0.2, 0.6)
    grid = Volume(np.zeros((2, 2, 2)))
    unc = model_grid_uncertainty(p, grid)
    assert unc.array[0, 0, 0] == pytest.approx(0.4) and unc.array[1, 1, 1] == pytest.approx(0.3)
