"""segment(): labels overlay the source exactly (LPS, RAS, oblique), bad inputs, cancellation, TTA, stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from napari_medseg.errors import CancelledError, InputError, ModelError
from napari_medseg.inference import segment
from napari_medseg.inference.postprocess import contained_in, fill_holes, keep_largest
from napari_medseg.models import ClassInfo, LoadedModel, ModelCard, build_network, save_model_package
from napari_medseg.volume import Volume

DIRECTIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "oblique": Rotation.from_euler("xyz", [17, -9, 28], degrees=True).as_matrix(),
    "permuted": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
}


def threshold_model(spacing=None, orientation="RAS", threshold=0.0, roi=(16, 16, 16)) -> LoadedModel:
    """A 'network' that predicts class 1 where the (untransformed) intensity exceeds ``threshold``."""
    card = ModelCard(name="threshold", spacing=spacing, orientation=orientation, roi_size=roi, overlap=0.5,
                     classes=[ClassInfo(1, "bright")], intensity={"type": "none"})
    return LoadedModel(lambda x: torch.cat([threshold - x, x - threshold], 1) * 10.0, card, None)


def smooth_image(shape=(22, 30, 26), seed=0):
    rng = np.random.default_rng(seed)
    v = ndimage.gaussian_filter(rng.normal(size=shape), 2.5)
    return (v / v.std()).astype(np.float32)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_labels_overlay_source_exactly(name):
    arr = smooth_image()
    vol = Volume(arr, (0.9, 1.3, 2.1), (12.0, -40.0, 7.5), DIRECTIONS[name])
    res = segment(vol, threshold_model(spacing=None), device="cpu")
    assert res.labels.same_grid(vol) and res.labels.array.dtype == np.uint8
    np.testing.assert_array_equal(res.labels.array, (arr > 0).astype(np.uint8))


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_labels_overlay_source_after_resampling(name):
    """With resampling to another spacing the labels are still where the bright voxels are."""
    arr = smooth_image()
    vol = Volume(arr, (0.9, 1.3, 2.1), (12.0, -40.0, 7.5), DIRECTIONS[name])
    res = segment(vol, threshold_model(spacing=(1.2, 1.2, 1.2)), device="cpu")
    truth = arr > 0
    assert res.labels.same_grid(vol)
    agree = (res.labels.array.astype(bool) == truth).mean()
    assert agree > 0.97, agree
    # disagreement only where the intensity is near the threshold (a boundary effect, not a shift)
    wrong = res.labels.array.astype(bool) != truth
    assert np.abs(arr[wrong]).max() < 0.35
    com_truth = np.array(ndimage.center_of_mass(truth))
    com_ours = np.array(ndimage.center_of_mass(res.labels.array > 0))
    assert np.abs(com_truth - com_ours).max() < 0.1  # voxels


def test_four_d_input_channels_and_class_values():
    arr = smooth_image()
    card = ModelCard(name="two-channel", spacing=None, in_channels=2, roi_size=(16, 16, 16),
                     classes=[ClassInfo(3, "a"), ClassInfo(7, "b")], intensity={"type": "none"})
    # channel 1 wins where channel 0 > 0, channel 2 where channel 1 > 0.5 (values 3 and 7)
    model = LoadedModel(lambda x: torch.stack([torch.zeros_like(x[:, 0]), x[:, 0], x[:, 1] * 4 - 2], 1), card, None)
    vol4 = Volume(np.stack([arr, arr + 0.3]), (1.0, 1.0, 2.0))
    res = segment(vol4, model, device="cpu")
    expect = np.zeros(arr.shape, np.uint8)
    logits = np.stack([np.zeros_like(arr), arr, (arr + 0.3) * 4 - 2])
    expect = np.array([0, 3, 7], np.uint8)[logits.argmax(0)]
    np.testing.assert_array_equal(res.labels.array, expect)
    assert res.classes == {0: "background", 3: "a", 7: "b"}
    with pytest.raises(ModelError, match="expects 2 input channel"):
        segment(Volume(arr), model, device="cpu")
    with pytest.raises(ModelError, match="expects 1 input channel"):
        segment(vol4, threshold_model(), device="cpu")


def test_two_d_image_is_refused_clearly():
    with pytest.raises(InputError, match="2D"):
        segment(np.zeros((30, 40), np.float32), threshold_model(), device="cpu")
    with pytest.raises(InputError, match="2D"):
        segment(Volume(np.zeros((1, 30, 40), np.float32)), threshold_model(), device="cpu")


def test_spacing_that_does_not_fit_the_image():
    vol = Volume(smooth_image((20, 20, 20)), (400.0, 400.0, 400.0))  # wrong units in the header: metres as mm*1000
    with pytest.raises(ModelError, match="do not fit"):
        segment(vol, threshold_model(spacing=(0.5, 0.5, 0.5)), device="cpu")
    coarse = Volume(smooth_image((20, 20, 8)), (1.0, 1.0, 8.0))
    res = segment(coarse, threshold_model(spacing=(1.0, 1.0, 1.0)), device="cpu")
    assert any("upsampled" in w for w in res.warnings)


def test_volume_smaller_than_roi():
    arr = smooth_image((4, 9, 7))
    res = segment(Volume(arr), threshold_model(spacing=None, roi=(32, 32, 32)), device="cpu")
    np.testing.assert_array_equal(res.labels.array, (arr > 0).astype(np.uint8))


def test_cancellation_mid_run():
    arr = smooth_image((40, 40, 40))
    seen = []

    def cancel():
        return sum(1 for p in seen if p.stage == "inference") >= 2

    with pytest.raises(CancelledError):
        segment(Volume(arr), threshold_model(roi=(16, 16, 16)), device="cpu", progress=seen.append, cancel=cancel)
    assert seen[-1].stage == "inference" and seen[-1].done < seen[-1].total


def test_tta_probabilities_and_uncertainty():
    arr = smooth_image()
    vol = Volume(arr, (1.0, 1.1, 1.9), direction=DIRECTIONS["oblique"])
    res = segment(vol, threshold_model(), device="cpu", tta=True, return_probabilities=True)
    p = res.probabilities
    assert p.shape == (2, *arr.shape) and p.same_grid(vol)
    np.testing.assert_allclose(p.array.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(res.labels.array, p.array.argmax(0))
    u = res.uncertainty.array
    assert u.shape == arr.shape and 0 <= u.min() and u.max() <= 0.5 + 1e-6
    assert u[np.abs(arr) < 0.02].mean() > u[np.abs(arr) > 1].mean()  # uncertain at the threshold
    np.testing.assert_array_equal(res.labels.array, (arr > 0).astype(np.uint8))


def test_stats_and_csv(tmp_path):
    arr = np.zeros((10, 12, 14), np.float32)
    arr[2:5, 3:9, 4:10] = 100.0
    arr[2:5, 3:9, 4:7] = 50.0
    vol = Volume(arr, (0.5, 1.0, 2.0))
    res = segment(vol, threshold_model(threshold=10.0), device="cpu")
    row = res.stats_table()[0]
    assert row["voxels"] == 3 * 6 * 6 and row["name"] == "bright"
    assert row["volume_ml"] == pytest.approx(108 * 1.0 / 1000)
    assert row["mean_intensity"] == pytest.approx(75.0) and row["std_intensity"] == pytest.approx(25.0)
    out = res.to_csv(tmp_path / "stats.csv")
    lines = out.read_text().splitlines()
    assert lines[0] == "value,name,voxels,volume_ml,mean_intensity,std_intensity" and lines[1].startswith("1,bright,108,")
    assert set(res.timings) >= {"preprocess", "inference", "invert"}


def test_postprocessing():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[1:5, 1:5, 1:5] = 1
    lab[7:9, 7:9, 7:9] = 1  # small island
    lab[2:4, 2:4, 2:4] = 0  # a hole
    lab[6, 1, 1] = 2
    out = fill_holes(keep_largest(lab, [1]))
    assert out[8, 8, 8] == 0 and out[3, 3, 3] == 1 and out[6, 1, 1] == 2
    assert lab[8, 8, 8] == 1  # input untouched


def test_contained_in_drops_components_outside_their_container():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:12, 2:12, 2:12] = 1  # liver
    lab[5:8, 5:8, 5:8] = 5  # a tumour inside it: kept
    lab[10:14, 10:14, 10:14] = 5  # one at its edge, a quarter of it inside: most of its shell is background
    lab[15:18, 2:5, 15:18] = 5  # one far away (the heart of a chest CT): dropped
    out = contained_in(lab, {5: 1})
    assert (out[5:8, 5:8, 5:8] == 5).all()
    assert (out[15:18, 2:5, 15:18] == 0).all() and (out[12:14, 12:14, 12:14] == 0).all()
    assert (out[10:12, 10:12, 10:12] == 0).all()  # the whole component goes, also its part inside the liver
    assert (lab[15:18, 2:5, 15:18] == 5).all()  # input untouched
    assert contained_in(lab, {}) is lab and contained_in(lab, {3: 1}) is lab  # nothing to do: no copy


def test_card_postprocessing_rules_survive_json_and_run(tmp_path):
    card = ModelCard(name="pp", classes=[ClassInfo(1, "liver"), ClassInfo(5, "liver_tumour")], contained_in={5: 1},
                     keep_largest=[1])
    again = ModelCard.from_json(card.to_json())
    assert again.contained_in == {5: 1}  # JSON keys are strings; read back as class values
    for bad in ({"5": "liver"}, [[5, 1]]):
        with pytest.raises(ModelError, match="malformed"):
            ModelCard.from_dict({**card.to_dict(), "contained_in": bad})
    # a predictor that paints a 'tumour' far from any liver: the card's rule removes it
    arr = np.zeros((24, 24, 24), np.float32)
    arr[4:14, 4:14, 4:14] = 1.0
    arr[18:22, 18:22, 18:22] = 2.0
    vol = Volume(arr, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))

    def net(x):  # channels: background, liver (value 1), tumour (value 5)
        return torch.cat([(x < 0.5).float(), ((x > 0.5) & (x < 1.5)).float(), (x > 1.5).float()], 1) * 10.0

    again = ModelCard(**{**again.__dict__, "spacing": None, "orientation": None, "roi_size": (16, 16, 16),
                         "intensity": {"type": "none"}})
    out = segment(vol, LoadedModel(net, again, None), device="cpu").labels.array
    assert (out == 5).sum() == 0 and (out == 1).sum() == 1000
    raw = segment(vol, LoadedModel(net, again, None), device="cpu", postprocess=False).labels.array
    assert (raw == 5).sum() == 64


def test_real_package_from_path_and_lazy_api(tmp_path):
    import napari_medseg as ms

    card = ModelCard(name="tiny", arch_args=dict(spatial_dims=3, channels=(4, 8), strides=(2,), num_res_units=1),
                     classes=[ClassInfo(1, "liver")], roi_size=(16, 16, 16), spacing=(2.0, 2.0, 2.0))
    torch.manual_seed(0)
    path = save_model_package(build_network(card), card, tmp_path / "tiny")
    vol = Volume(smooth_image() * 100, (1.5, 1.5, 2.5))
    res = ms.segment(vol, model=str(path))
    assert isinstance(res, ms.LabelResult) and res.labels.same_grid(vol)
    assert res.model["sha256"] == card.weights_sha256 or len(res.model["sha256"]) == 64
    assert "precision=bfloat16" in res.plan or "precision=float32" in res.plan
