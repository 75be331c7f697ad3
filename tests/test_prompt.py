"""Click/box prompts: encoding (= MONAI's), prompt checks, crop geometry, AutoZoom, component and box rules.

A "predictor" network that maps the click channels to logits makes every result exact and checkable (the
MONAI-inferer idea): the mask is then a ball around each click, wherever the crop and the resampling put it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medseg import Volume
from napari_medseg.models.package import LoadedModel
from napari_medseg.prompt import PromptError, PromptModelError, parse_prompts, prompt_segment
from napari_medseg.prompt.encode import fast_signal, guidance_json, guidance_signal
from napari_medseg.prompt.model import PromptSettings, prompt_card


class ClickBalls(torch.nn.Module):
    """Logits > 0 where the positive (and optionally negative / previous) click signal exceeds 0.5."""

    def __init__(self, channels=(1,), everything=False):
        super().__init__()
        self.channels, self.everything = list(channels), everything

    def forward(self, x):
        if self.everything:
            return torch.full_like(x[:, :1], 10.0)
        return 10.0 * (x[:, self.channels].amax(dim=1, keepdim=True) - 0.5)


def fake_model(net, **settings) -> LoadedModel:
    return LoadedModel(network=net, card=prompt_card(settings=PromptSettings(**settings)), path=Path("<test>"))


def volume(shape=(30, 40, 50), spacing=(1.5, 1.2, 2.5), direction=None):
    rng = np.random.default_rng(0)
    d = np.eye(3) if direction is None else direction
    return Volume(rng.normal(40, 20, shape).astype(np.float32), spacing, (10.0, -20.0, 5.0), d)


@pytest.mark.parametrize("sigma", [2.0, 3.0])
def test_fast_signal_equals_monai_add_guidance_signal(sigma):
    img = np.zeros((20, 25, 30), np.float32)
    pos = [(3, 4, 5), (19, 0, 29), (3, 4, 5), (10, 12, 14)]  # a duplicate and a corner point
    neg = [(0, 24, 0)]
    g = guidance_json(pos, neg)
    ref = guidance_signal(img, g, sigma)
    for ch, pts in ((1, pos), (2, neg)):
        np.testing.assert_allclose(fast_signal(img.shape, pts, sigma), ref[ch], atol=1e-6)
    assert fast_signal(img.shape, [], sigma).max() == 0  # no click: an empty channel, as MONAI's


def test_prompt_checks():
    shape = (10, 20, 30)
    p = parse_prompts(shape, positive=[(1, 2, 3.4)], box=(4, (15, 20), (5, 2)))
    assert p.positive == ((1, 2, 3),) and p.box == ((4, 5, 2), (4, 15, 20)) and p.box_slice == 4
    assert parse_prompts(shape, box=((1, 2, 3), (5, 6, 7))).box_slice is None
    with pytest.raises(PromptError, match="outside the volume"):
        parse_prompts(shape, positive=[(10, 0, 0)])
    with pytest.raises(PromptError, match="outside the volume"):
        parse_prompts(shape, positive=[(0, 0, 0)], negative=[(-1, 0, 0)])
    with pytest.raises(PromptError, match="no prompt"):
        parse_prompts(shape, positive=[], negative=[(1, 1, 1)])
    with pytest.raises(PromptError, match="three"):
        parse_prompts(shape, positive=[(1, 2)])
    with pytest.raises(PromptError, match="finite"):
        parse_prompts(shape, positive=[(1, 2, float("nan"))])
    with pytest.raises(PromptError, match="no area"):
        parse_prompts(shape, box=(2, (3, 3), (3, 9)))
    # negative clicks alone are fine when refining a previous mask
    assert parse_prompts(shape, negative=[(1, 1, 1)], has_previous=True).negative == ((1, 1, 1),)


def _centroid(mask):
    return np.argwhere(mask).mean(axis=0)


@pytest.mark.parametrize("direction", [None, np.diag([-1.0, 1.0, -1.0]), np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1.0]])])
def test_mask_lands_on_the_click_on_anisotropic_flipped_grids(direction):
    vol = volume(direction=direction)
    click = (12, 17, 31)
    out = prompt_segment(vol, positive=[click], model=fake_model(ClickBalls()), bf16=False)
    assert out.same_grid(vol) and out.array.dtype == np.uint8 and out.spatial_shape == vol.spatial_shape
    m = out.array > 0
    assert m[click] and m.sum() > 10
    np.testing.assert_allclose(_centroid(m), click, atol=0.6)
    # the ball is round in millimetres, whatever the voxel spacing: its extent along i and k in mm agree
    idx = np.argwhere(m)
    ext = (idx.max(0) - idx.min(0) + 1) * np.asarray(vol.spacing[::-1])
    assert abs(ext[0] - ext[2]) <= 2 * max(vol.spacing) + 1e-6
    assert out.meta["prompt"]["runs"] == 1 and out.meta["prompt"]["positive"] == [list(click)]


def test_autozoom_grows_the_crop_until_the_limit():
    vol = volume(shape=(60, 200, 200), spacing=(1.0, 1.0, 1.0))
    out = prompt_segment(vol, positive=[(30, 100, 100)], bf16=False,
                         model=fake_model(ClickBalls(everything=True), min_side=32, max_side=64, grow_steps=2))
    info = out.meta["prompt"]
    assert info["runs"] == 3  # the mask always touches the crop border: grew twice (32 -> 64 -> 64 at 4.5 mm)
    assert info["crop_shape"][1:] == [64, 64] and info["crop_spacing"] == [4.5, 4.5, 4.5]  # k: 60 mm fit in 32
    m = out.array > 0
    idx = np.argwhere(m)
    assert idx[:, 1].min() == 0 and idx[:, 1].max() == 199  # 64 x 4.5 mm = 288 mm: covers the 200 mm


def test_the_crop_covers_the_previous_mask_at_a_coarser_spacing():
    vol = volume(shape=(60, 200, 200), spacing=(1.0, 1.0, 1.0))
    prev = np.zeros(vol.spatial_shape, np.uint8)
    prev[28:33, 0:5, 0:5] = 1  # far from the click
    out = prompt_segment(vol, positive=[(30, 190, 190)], previous=prev, bf16=False,
                         model=fake_model(ClickBalls(channels=(1, 3)), min_side=32, max_side=64, grow_steps=0))
    m = out.array > 0
    assert m[30, 190, 190] and m[30, 2, 2]  # the previous mask was seen by the network (channel 3)
    assert out.meta["prompt"]["crop_spacing"][0] > 3.0


def test_small_volume_crop_covers_it_without_growing():
    vol = volume(shape=(12, 20, 20), spacing=(2.0, 2.0, 2.0))
    out = prompt_segment(vol, positive=[(6, 10, 10)], bf16=False, model=fake_model(ClickBalls(everything=True)))
    assert out.meta["prompt"]["runs"] == 1 and out.array.all()


def test_components_without_a_positive_click_are_dropped():
    vol = volume(shape=(40, 60, 60), spacing=(1.0, 1.0, 1.0))
    net = ClickBalls(channels=(1, 2))  # balls around positive AND negative clicks
    out = prompt_segment(vol, positive=[(20, 15, 15)], negative=[(20, 45, 45)], bf16=False, model=fake_model(net))
    m = out.array > 0
    assert m[20, 15, 15] and not m[20, 45, 45]


def test_box_bounds_the_result():
    vol = volume(shape=(40, 60, 60), spacing=(1.0, 1.0, 1.0))
    out = prompt_segment(vol, box=((10, 20, 20), (30, 40, 45)), bf16=False, model=fake_model(ClickBalls(everything=True)))
    m = out.array > 0
    assert m[10:31, 20:41, 20:46].all() and m.sum() == 21 * 21 * 26
    out = prompt_segment(vol, box=(20, (20, 20), (40, 40)), bf16=False, model=fake_model(ClickBalls(everything=True)))
    m = out.array > 0
    assert m[20, 20:41, 20:41].all() and m[20].sum() == 21 * 21  # exact on its slice
    assert m[25].sum() == 33 * 33  # other slices: the box plus 25 % each side (ceil(21 / 4) = 6)


def test_bad_inputs_raise_prompt_errors():
    vol = volume()
    model = fake_model(ClickBalls())
    with pytest.raises(PromptError, match="outside"):
        prompt_segment(vol, positive=[(100, 0, 0)], model=model)
    with pytest.raises(PromptError, match="previous mask"):
        prompt_segment(vol, positive=[(1, 1, 1)], previous=np.zeros((3, 3, 3)), model=model)
    with pytest.raises(PromptError, match="4D"):
        prompt_segment(Volume(np.zeros((2, 5, 5, 5))), positive=[(1, 1, 1)], model=model)
    with pytest.raises(PromptError, match="Volume"):
        prompt_segment(np.zeros((5, 5, 5)), positive=[(1, 1, 1)], model=model)


def test_a_segmentation_model_is_not_a_prompt_model():
    from napari_medseg.models.card import ModelCard

    seg = LoadedModel(network=ClickBalls(), card=ModelCard(name="seg"), path=Path("<seg>"))
    with pytest.raises(PromptModelError, match="not a promptable model"):
        prompt_segment(volume(), positive=[(1, 1, 1)], model=seg)
    with pytest.raises(PromptModelError, match="no such prompt model"):
        prompt_segment(volume(), positive=[(1, 1, 1)], model="/nonexistent/prompt-model")


def test_merge_indices_new_refine_overwrite():
    from napari_medseg.prompt.apply import merge_indices, touched_slices

    labels = np.zeros((4, 5, 5), np.uint8)
    labels[0, 0, :] = 2  # another class
    labels[3, 4, 4] = 1  # the class, outside the new mask
    mask = np.zeros_like(labels, bool)
    mask[0:2, 0:2, 0:2] = True
    idx, val = merge_indices(labels, mask, 1)
    assert len(val) == 8 - 2 and set(val) == {1}  # two voxels belong to class 2: kept
    idx, val = merge_indices(labels, mask, 1, overwrite=True)
    assert len(val) == 8
    idx, val = merge_indices(labels, mask, 1, refine=True)
    out = labels.copy()
    out[idx] = val
    assert out[3, 4, 4] == 0 and (out[mask] != 0).all() and touched_slices(idx) == [0, 1, 3]


@pytest.mark.parametrize("refine", [False, True])
@pytest.mark.parametrize("overwrite", [False, True])
def test_merge_indices_follow_the_rule_voxel_by_voxel(refine, overwrite):
    from napari_medseg.prompt.apply import merge_indices

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, (6, 7, 8)).astype(np.uint8)
    mask = rng.random(labels.shape) > 0.5
    want = labels.copy()
    for p in np.ndindex(labels.shape):
        if mask[p] and (labels[p] in (0, 2) or overwrite):
            want[p] = 2
        elif refine and labels[p] == 2 and not mask[p]:
            want[p] = 0
    idx, val = merge_indices(labels, mask, 2, refine=refine, overwrite=overwrite)
    out = labels.copy()
    out[idx] = val
    assert np.array_equal(out, want) and val.dtype == labels.dtype
    assert (labels[idx] != val).all()  # only voxels that change are listed


def test_a_box_keeps_the_previous_mask_outside_it_and_the_source_box_is_reported():
    vol = volume(shape=(40, 60, 60), spacing=(1.0, 1.0, 1.0))
    prev = np.zeros(vol.spatial_shape, np.uint8)
    prev[5:8, 50:55, 50:55] = 1
    out = prompt_segment(vol, box=((10, 20, 20), (30, 40, 45)), previous=prev, bf16=False,
                         model=fake_model(ClickBalls(everything=True)))
    m = out.array > 0
    assert m[5:8, 50:55, 50:55].all() and m[10:31, 20:41, 20:46].all()
    assert m.sum() == 21 * 21 * 26 + 3 * 5 * 5
    lo, hi = out.meta["prompt"]["source_box"]
    assert all(0 <= a < b <= n for a, b, n in zip(lo, hi, vol.spatial_shape))


def test_merge_in_box_equals_the_whole_array_merge():
    from napari_medseg.prompt.apply import merge_in_box, merge_indices, union_box

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, (10, 12, 14)).astype(np.uint8)
    mask = np.zeros(labels.shape, bool)
    mask[2:6, 3:9, 4:10] = rng.random((4, 6, 6)) > 0.3
    box = union_box([[[2, 3, 4], [5, 9, 10]], [[3, 3, 4], [6, 8, 8]]], labels.shape)
    assert box == (slice(2, 6), slice(3, 9), slice(4, 10))
    a, va = merge_indices(labels, mask, 1, overwrite=True)
    b, vb = merge_in_box(labels, mask, 1, box, overwrite=True)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and np.array_equal(va, vb)


class Nothing(torch.nn.Module):
    def forward(self, x):
        return torch.full_like(x[:, :1], -10.0)


def test_a_refining_click_removes_only_the_region_it_touches():
    vol = volume(shape=(40, 60, 60), spacing=(1.0, 1.0, 1.0))
    prev = np.zeros(vol.spatial_shape, np.uint8)
    prev[18:23, 10:20, 10:20] = 1  # the negative click lands here: removed
    prev[18:23, 40:50, 40:50] = 1  # the network also drops this part, far from any click: kept
    out = prompt_segment(vol, negative=[(20, 15, 15)], previous=prev, bf16=False, model=fake_model(Nothing()))
    m = out.array > 0
    assert not m[18:23, 10:20, 10:20].any() and m[18:23, 40:50, 40:50].all()


def test_a_fixed_size_model_grows_by_a_coarser_spacing_never_a_bigger_crop():
    vol = volume(shape=(120, 200, 200), spacing=(1.0, 1.0, 1.0))
    out = prompt_segment(vol, positive=[(60, 100, 100)], bf16=False,
                         model=fake_model(ClickBalls(everything=True), min_side=32, max_side=32, grow_steps=2))
    info = out.meta["prompt"]
    assert info["runs"] == 3 and info["crop_shape"] == [32, 32, 32]  # the trained size, after two growths
    assert info["crop_spacing"] == [12.0, 12.0, 12.0]  # 3 mm x (32 + 32) / 32, twice (a 64³ crop: x 1.5)


class ThreadSpy(ClickBalls):
    """ClickBalls that records torch's intra-op thread count while it runs."""

    seen: list

    def forward(self, x):
        self.seen.append(torch.get_num_threads())
        return super().forward(x)


@pytest.mark.parametrize("fixed", ["1", "2"])
def test_a_click_runs_with_the_planned_threads_and_restores_torchs_setting(monkeypatch, fixed):
    monkeypatch.setenv("MEDSEG_CALIBRATE", "1")
    monkeypatch.setenv("MEDSEG_THREADS", fixed)  # the planner's fixed count (calibrate.run_threads)
    before = torch.get_num_threads()
    net = ThreadSpy()
    net.seen = []
    out = prompt_segment(volume(), positive=[(15, 20, 25)], bf16=False, model=fake_model(net))
    assert net.seen and set(net.seen) == {int(fixed)}
    assert out.meta["prompt"]["threads"] == int(fixed)
    assert torch.get_num_threads() == before
    monkeypatch.setenv("MEDSEG_CALIBRATE", "0")  # calibration off: torch's own setting
    net.seen = []
    out = prompt_segment(volume(), positive=[(15, 20, 25)], bf16=False, model=fake_model(net))
    assert set(net.seen) == {before} and out.meta["prompt"]["threads"] == before


def test_mask_box_equals_argwhere_bounds():
    from napari_medseg.prompt.segment import _mask_box

    rng = np.random.default_rng(5)
    for density in (1e-4, 0.01, 0.5):
        m = rng.random((17, 23, 29)) < density
        m[rng.integers(17), rng.integers(23), rng.integers(29)] = True
        idx = np.argwhere(m)
        lo, hi = _mask_box(m)
        assert lo.tolist() == idx.min(axis=0).tolist() and hi.tolist() == (idx.max(axis=0) + 1).tolist()
    one = np.zeros((5, 6, 7), bool)
    one[4, 0, 6] = True
    assert [v.tolist() for v in _mask_box(one)] == [[4, 0, 6], [5, 1, 7]]


def test_a_click_next_to_a_removed_region_outside_its_box_still_removes_it():
    from napari_medseg.prompt.segment import _click_local_removals

    prev = np.zeros((20, 20, 20), bool)
    prev[5:10, 5:10, 5:10] = True   # removed by the network, the click is one voxel beyond its corner
    prev[14:18, 14:18, 14:18] = True  # removed too, far from the click: restored
    sub = np.zeros_like(prev)
    out = _click_local_removals(sub, prev, [(10, 10, 10)])
    assert not out[5:10, 5:10, 5:10].any() and out[14:18, 14:18, 14:18].all()
    assert out.sum() == 4 ** 3 and not sub.any()  # the caller's array is not modified
