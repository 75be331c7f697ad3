"""The restated MONAI grid and blending functions agree exactly with the installed MONAI's."""

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map
from monai.data.utils import compute_shape_offset as monai_shape_offset
from monai.data.utils import zoom_affine as monai_zoom

from napari_medseg.inference.monai_parity import compute_shape_offset, importance_map, zoom_affine


def _affines(rng, n):
    out = []
    for i in range(n):
        a = np.eye(4)
        if i % 3 == 0:  # axis-aligned, flips and permutations (what scanners write)
            perm = rng.permutation(3)
            a[:3, :3] = np.eye(3)[perm] * rng.choice([-1, 1], 3) * rng.uniform(0.3, 5, 3)
        else:  # oblique: a random rotation (QR) times spacing
            q, _ = np.linalg.qr(rng.normal(size=(3, 3)) * (1 if i % 3 == 1 else 1e-3) + (np.eye(3) if i % 3 == 2 else 0))
            a[:3, :3] = q @ np.diag(rng.uniform(0.3, 5, 3))
        a[:3, 3] = rng.uniform(-300, 300, 3)
        out.append(a)
    return out


def test_grid_functions_match_monai_on_random_and_oblique_grids():
    rng = np.random.default_rng(0)
    for a in _affines(rng, 120):
        target = rng.uniform(0.5, 4, 3)
        shape = tuple(int(v) for v in rng.integers(1, 300, 3))
        z = zoom_affine(a, target)
        np.testing.assert_array_equal(z, monai_zoom(a, target, diagonal=False))
        got_shape, got_off = compute_shape_offset(shape, a, z)
        want_shape, want_off = monai_shape_offset(shape, a, z, False)
        np.testing.assert_array_equal(got_shape, want_shape)
        np.testing.assert_array_equal(got_off, want_off)


def test_zoom_affine_keeps_non_positive_scale_from_the_affine():
    a = np.diag([2.0, 3.0, 4.0, 1.0])
    np.testing.assert_array_equal(zoom_affine(a, [1.0, 0.0, -1.0]), monai_zoom(a, [1.0, 0.0, -1.0], diagonal=False))


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
@pytest.mark.parametrize("roi", [(96, 96, 96), (64, 80, 33), (7, 1, 5)])
@pytest.mark.parametrize("sigma", [0.125, 0.3, 0.01])
def test_importance_map_matches_monai(mode, roi, sigma):
    want = compute_importance_map(roi, mode=mode, sigma_scale=sigma, device="cpu", dtype=torch.float32)
    got = importance_map(roi, mode=mode, sigma_scale=sigma, device="cpu")
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.equal(got, want)


def test_importance_map_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="constant or gaussian"):
        importance_map((4, 4, 4), mode="cosine")
