"""Labels/uncertainty on the source grid without interpolating every class channel: exact against the full
interpolation (the slow reference), for every kind of grid map, and the pipeline's cheap uncertainty option."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from napari_medseg.inference import segment
from napari_medseg.inference.argmax_resample import argmax_resample
from napari_medseg.inference.resample import Grid, resample
from napari_medseg.inference.result import class_stats
from napari_medseg.models import ClassInfo, LoadedModel, ModelCard
from napari_medseg.volume import Volume

MAPS = {
    "upsample": (np.eye(3), np.eye(3)),
    "flipped axis": (np.diag([1.0, -1.0, 1.0]), np.diag([1.0, -1.0, 1.0])),
    "permuted": (np.eye(3)[:, [1, 0, 2]], np.eye(3)[:, [1, 0, 2]]),
    "reoriented": (np.diag([-1.0, -1.0, 1.0]), np.eye(3)),  # model grid RAS, source LPS
    "rotated": (np.eye(3), Rotation.from_euler("xyz", [20, -7, 11], degrees=True).as_matrix()),
}


def _probs(c, shape, seed):
    rng = np.random.default_rng(seed)
    logits = torch.from_numpy(rng.normal(size=(c, *shape)).astype(np.float32))
    logits = torch.nn.functional.avg_pool3d(logits[None], 5, 1, 2, count_include_pad=False)[0] * 8  # real boundaries
    return torch.softmax(logits, 0)


@pytest.mark.parametrize("name", list(MAPS))
@pytest.mark.parametrize("channels", [2, 5])
def test_argmax_resample_equals_full_interpolation(name, channels):
    d_src, d_dst = MAPS[name]
    src = Grid((14, 17, 19), (1.7, 2.1, 3.3), (5.0, -3.0, 10.0), d_src)
    dst = Grid((45, 41, 23), (0.62, 0.71, 1.13), (4.1, -2.2, 9.3), d_dst)
    if name == "reoriented":  # the same box seen from the other corner: an exact axis flip plus scaling
        dst = Grid((45, 41, 23), (0.62, 0.71, 1.13), (4.1 - 16 * 1.7, -2.2 - 18 * 2.1, 9.3), d_dst)
    p = _probs(channels, (14, 17, 19), seed=channels)
    full = resample(p, src, dst, mode="linear")
    labels, unc = argmax_resample(p, src, dst, uncertainty=True)
    np.testing.assert_array_equal(labels, full.argmax(0))
    np.testing.assert_allclose(unc, 1.0 - full.max(0) / full.sum(0), atol=2e-6)
    assert len(np.unique(labels)) > 1  # the case has boundaries to get right
    labels_only, none = argmax_resample(p.numpy(), src, dst)
    assert none is None and np.array_equal(labels_only, labels)


def test_single_plane_axes():
    """A model grid one voxel thick along an axis (no cell to interpolate in) still maps exactly."""
    src = Grid((1, 9, 8), (1.5, 1.5, 1.0), (0.0, 0.0, 0.0))
    dst = Grid((3, 20, 17), (0.7, 0.7, 0.3), (0.0, 0.0, 0.0))
    p = _probs(3, (5, 9, 8), seed=4)[:, 2:3]
    labels, unc = argmax_resample(p, src, dst, uncertainty=True)
    full = resample(p, src, dst, mode="linear")
    np.testing.assert_array_equal(labels, full.argmax(0))
    np.testing.assert_allclose(unc, 1.0 - full.max(0), atol=2e-6)


def _three_class_model():
    card = ModelCard(name="three", spacing=(1.7, 1.7, 1.7), roi_size=(16, 16, 16), overlap=0.25,
                     classes=[ClassInfo(1, "low"), ClassInfo(4, "high")], intensity={"type": "none"})

    def net(x):  # background near 0, "low" below -0.5, "high" above 0.5
        return torch.cat([-x.abs() * 4, -(x + 0.5) * 4, (x - 0.5) * 4], 1)

    return LoadedModel(net, card, None)


def test_pipeline_uncertainty_option_matches_full_probabilities():
    rng = np.random.default_rng(3)
    from scipy import ndimage

    arr = ndimage.gaussian_filter(rng.normal(size=(20, 26, 23)), 2.0).astype(np.float32)
    arr /= arr.std()
    vol = Volume(arr, (0.8, 1.1, 2.3), (3.0, -7.0, 1.0), Rotation.from_euler("z", 30, degrees=True).as_matrix())
    model = _three_class_model()
    full = segment(vol, model, device="cpu", return_probabilities=True)
    cheap = segment(vol, model, device="cpu", return_uncertainty=True)
    plain = segment(vol, model, device="cpu")
    assert cheap.probabilities is None and plain.uncertainty is None
    np.testing.assert_array_equal(cheap.labels.array, full.labels.array)
    np.testing.assert_array_equal(plain.labels.array, full.labels.array)
    assert set(np.unique(plain.labels.array)) == {0, 1, 4}
    assert cheap.uncertainty.same_grid(vol) and cheap.uncertainty.array.dtype == np.float32
    np.testing.assert_allclose(cheap.uncertainty.array, full.uncertainty.array, atol=1e-5)


def test_class_stats_counts_named_absent_and_unnamed_present():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (9, 7, 5)).astype(np.uint8)
    image = rng.normal(0, 100, labels.shape)
    whole = class_stats(labels, image, {0: "background", 1: "a", 2: "b", 5: "never"}, voxel_mm3=2.0)
    assert set(whole) == {1, 2, 3, 5}  # 3 is present but unnamed, 5 named but absent
    for v in (1, 2, 3):
        mask = labels == v
        assert whole[v]["voxels"] == mask.sum()
        assert whole[v]["volume_ml"] == pytest.approx(mask.sum() * 2.0 / 1000)
        assert whole[v]["mean_intensity"] == pytest.approx(image[mask].mean())
        assert whole[v]["std_intensity"] == pytest.approx(image[mask].std())
    assert whole[3]["name"] == "label 3" and whole[5]["voxels"] == 0 and np.isnan(whole[5]["mean_intensity"])
    slabs = class_stats(labels, image, {1: "a", 2: "b", 5: "never"}, 2.0, slab_voxels=70)  # 2 slices a slab
    assert [r["voxels"] for r in slabs.values()] == [r["voxels"] for r in whole.values()]
    np.testing.assert_allclose([r["mean_intensity"] for r in slabs.values() if r["voxels"]],
                               [r["mean_intensity"] for r in whole.values() if r["voxels"]])


def test_mostly_boundary_slabs_take_the_dense_path_with_the_same_result(monkeypatch):
    """Noisy output (boundaries everywhere) is interpolated densely slab by slab: same labels either way."""
    import napari_medseg.inference.argmax_resample as am

    src = Grid((14, 17, 19), (1.7, 2.1, 3.3), (5.0, -3.0, 10.0))
    dst = Grid((45, 41, 23), (0.62, 0.71, 1.13), (4.1, -2.2, 9.3))
    rng = np.random.default_rng(7)
    p = torch.softmax(torch.from_numpy(rng.normal(size=(4, 14, 17, 19)).astype(np.float32)) * 3, 0)  # pure noise
    full = resample(p, src, dst, mode="linear")
    results = []
    for fraction in (0.0, 2.0):  # every slab dense / every slab sparse
        monkeypatch.setattr(am, "DENSE_FRACTION", fraction)
        monkeypatch.setattr(am, "SLAB_VOXELS", 41 * 23 * 4)  # 4 planes a slab: several slabs
        results.append(am.argmax_resample(p, src, dst, uncertainty=True))
    for labels, unc in results:
        np.testing.assert_array_equal(labels, full.argmax(0))
        np.testing.assert_allclose(unc, 1.0 - full.max(0) / full.sum(0), atol=2e-6)
