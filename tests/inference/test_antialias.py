"""Anti-aliased downsampling (``ModelCard.antialias``): noise is averaged away, geometry and means are kept."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_medseg.inference.preprocess import antialias_sigma, model_grid, to_model_grid
from napari_medseg.models import ModelCard
from napari_medseg.volume import Volume


def _card(antialias: bool, spacing=(3.0, 3.0, 3.0)) -> ModelCard:
    return ModelCard(name="aa", spacing=spacing, orientation="RAS", antialias=antialias, intensity={"type": "none"})


def test_sigma_follows_the_downsampling_factor_per_axis():
    vol = Volume(np.zeros((20, 40, 50), np.float32), (0.75, 1.0, 3.0), (0.0, 0.0, 0.0), np.eye(3))
    sk, sj, si = antialias_sigma(vol, model_grid(vol, _card(True)))
    assert np.isclose(si, (3.0 / 0.75 - 1) / 2) and np.isclose(sj, 1.0) and sk == 0.0
    # a permuted, oblique direction: each source axis takes the target spacing it runs along
    rot = Rotation.from_euler("z", 20, degrees=True).as_matrix() @ np.array([[0, 0, 1.0], [1, 0, 0], [0, 1, 0]])
    vol2 = Volume(np.zeros((20, 40, 50), np.float32), (0.75, 1.0, 3.0), (0.0, 0.0, 0.0), rot)
    sk2, sj2, si2 = antialias_sigma(vol2, model_grid(vol2, _card(True, spacing=(1.5, 3.0, 6.0))))
    # source i runs along y (target 3 mm), j along z (6 mm), k along x (1.5 mm, finer than 3: no filter)
    assert np.isclose(si2, (3.0 / 0.75 - 1) / 2) and np.isclose(sj2, (6.0 / 1.0 - 1) / 2) and sk2 == 0.0


def test_noise_is_averaged_away_and_the_signal_kept():
    rng = np.random.default_rng(0)
    k, j, i = np.mgrid[0:30, 0:90, 0:90]
    signal = np.where((i - 45) ** 2 + (j - 45) ** 2 < 30**2, 50.0, -100.0).astype(np.float32)
    noisy = signal + rng.normal(0, 80, signal.shape).astype(np.float32)
    vol = Volume(noisy, (1.0, 1.0, 2.0), (5.0, -3.0, 1.0), np.eye(3))
    plain = to_model_grid(vol, _card(False))
    smooth = to_model_grid(vol, _card(True))
    assert plain.same_grid(smooth)  # the filter changes values, never the grid
    core = ((i - 45) ** 2 + (j - 45) ** 2 < 22**2).astype(np.uint8)  # 8 mm inside the disc's edge
    inside = to_model_grid(vol.with_array(core), _card(False), "nearest").array > 0
    assert abs(float(smooth.array[inside].mean()) - 50.0) < 3.0  # the mean tissue value is kept
    assert smooth.array[inside].std() < 0.45 * plain.array[inside].std()  # noise: 80 HU -> well under half
    # labels (nearest) are never filtered
    lab = vol.with_array((signal > 0).astype(np.uint8))
    np.testing.assert_array_equal(to_model_grid(lab, _card(True), "nearest").array,
                                  to_model_grid(lab, _card(False), "nearest").array)


def test_upsampling_and_bundle_cards_leave_the_image_unfiltered():
    rng = np.random.default_rng(1)
    vol = Volume(rng.normal(size=(12, 16, 16)).astype(np.float32), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0), np.eye(3))
    np.testing.assert_array_equal(to_model_grid(vol, _card(True, (1.5, 1.5, 1.5))).array,
                                  to_model_grid(vol, _card(False, (1.5, 1.5, 1.5))).array)
    assert ModelCard(name="x").antialias is False  # MONAI bundles' Spacingd does not filter: off unless asked
    card = _card(True)
    assert ModelCard.from_json(card.to_json()).antialias is True
    assert dataclasses.replace(card, antialias=False).antialias is False


@pytest.mark.parametrize("matrix_max", [256, 0])  # each axis as a matrix product / scipy filter + interpolation
def test_filtered_resample_axis_by_axis_equals_filter_then_resample(monkeypatch, matrix_max):
    """`resample_filtered` interleaves the filter and the interpolation per axis (the prompt crops' fast path):
    the same values as `antialias` on the whole array then `resample`, for shared, flipped and permuted axes
    (per-axis maps) and an oblique target (the fallback)."""
    from napari_medseg.inference.preprocess import antialias
    from napari_medseg.inference import resample as resample_module
    from napari_medseg.inference.resample import Grid, resample, resample_filtered

    monkeypatch.setattr(resample_module, "MATRIX_AXIS_MAX", matrix_max)

    rng = np.random.default_rng(3)
    arr = rng.normal(0, 100, (23, 61, 70)).astype(np.float32)
    perm = np.array([[0, 0, 1.0], [-1, 0, 0], [0, 1, 0]])
    rot = Rotation.from_euler("xz", (10, 25), degrees=True).as_matrix()
    for direction, dst_direction in ((np.eye(3), np.eye(3)), (np.diag([-1.0, 1, -1]), np.diag([-1.0, 1, -1])),
                                     (perm, perm), (np.eye(3), np.diag([1.0, -1, 1])), (np.eye(3), rot)):
        vol = Volume(arr, (0.8, 0.9, 2.0), (4.0, -7.0, 2.5), direction)
        dst = Grid((9, 17, 20), (3.1, 3.0, 4.4), tuple(vol.index_to_physical([3.3, 2.2, 1.7])), dst_direction)
        sigma = antialias_sigma(vol, dst)
        want = resample(antialias(vol, dst), vol, dst, mode="linear", padding="border")
        got = resample_filtered(arr, vol, dst, sigma, padding="border")
        assert got.shape == want.shape == (9, 17, 20) and got.dtype == np.float32
        assert np.abs(got - want).max() < 1e-3 * np.abs(want).max(), direction
        assert max(sigma) > 1.0  # the filter did something
