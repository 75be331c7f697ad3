"""Few-slice learning mechanisms (issue 14): patch centres, weak targets, augmentation, transfer, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training_helpers import tiny_card, tiny_config


def _plane_case(shape=(24, 24, 40), planes=(10, 26), thin_axis=2):
    """A model-space case whose image holds each voxel's k index; a disc of class 1 on the labelled planes."""
    from napari_medseg.training.data import Case

    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    image = torch.from_numpy(k[None].astype(np.float32))
    disc = ((i - 12) ** 2 + (j - 12) ** 2 <= 6 ** 2).astype(np.int64)
    target = torch.from_numpy(disc)
    mask = torch.zeros(shape)
    for p in planes:
        mask[:, :, p] = 1.0
    return Case("planes", image, target, mask, thin_axis)


def test_patches_are_centred_on_labelled_slices_and_thin_across_them():
    from napari_medseg.training.data import PatchSampler

    case = _plane_case()
    cfg = tiny_config(patch_size=(16, 16, 8), scale_jitter=0.0, intensity_jitter=0.0, batch_size=4, fg_fraction=0.5)
    sampler = PatchSampler([case], cfg, n_classes=2)
    for _ in range(30):
        img, tgt, w = sampler.sample()
        assert img.shape == (4, 1, 16, 16, 8) and w.shape == (4, 3, 16, 16, 8)
        assert not w[:, 1:].any()  # no weak targets in this case
        for b in range(4):
            ks = set(np.unique(img[b, 0].numpy()).astype(int).tolist())
            assert ks & {10, 26}, f"patch k range {sorted(ks)} misses both labelled planes"
            # the loss weight is exactly the labelled plane(s) inside the patch
            assert set(np.unique(w[b, 0].numpy()).tolist()) <= {0.0, 1.0} and w[b, 0].sum() > 0


def test_interpolated_weak_labels_follow_the_shape_and_carry_lower_weights():
    from napari_medseg.training.sparse import interpolate_planes

    shape = (32, 32, 21)
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    target = np.zeros(shape, np.int64)
    target[:, :, 0][(i - 16) ** 2 + (j - 16) ** 2 <= 4 ** 2] = 1  # radius 4 on plane 0
    target[:, :, 20][(i - 16) ** 2 + (j - 16) ** 2 <= 12 ** 2] = 1  # radius 12 on plane 20
    target[:, :, 10] = 1  # an unlabelled plane: its "truth" must not leak into the weak labels
    mask = np.zeros(shape)
    mask[:, :, [0, 20]] = 1
    lab, w = interpolate_planes(target, mask, axis=2, margin=1.5, max_gap=24)
    assert (w[:, :, [0, 20]] == 0).all()  # the strong labels apply there
    mid = lab[:, :, 10]
    r_mid = np.sqrt(mid.sum() / np.pi)
    assert 7 < r_mid < 9  # halfway between radius 4 and 12
    assert w[16, 16, 1] == pytest.approx(1 - 1 / 20) and w[16, 16, 10] == pytest.approx(0.5)
    # voxels at the interpolated boundary are left out; the centre and the far corner are confident
    edge = int(round(16 + r_mid))
    assert w[edge, 16, 10] == 0 and w[16, 16, 10] > 0 and w[0, 0, 10] > 0
    # a gap larger than max_gap is not bridged
    _, w2 = interpolate_planes(target, mask, axis=2, max_gap=10)
    assert w2.sum() == 0


def test_a_class_on_one_plane_only_shrinks_away_and_ends_are_extended_eroded():
    from napari_medseg.training.sparse import interpolate_planes

    shape = (30, 30, 13)
    i, j = np.meshgrid(np.arange(30), np.arange(30), indexing="ij")
    target = np.zeros(shape, np.int64)
    target[:, :, 3][(i - 15) ** 2 + (j - 15) ** 2 <= 6 ** 2] = 2
    mask = np.zeros(shape)
    mask[:, :, [3, 9]] = 1  # plane 9 is all background
    lab, w = interpolate_planes(target, mask, axis=2, margin=1.0, extend=2)
    areas = [(lab[:, :, k] == 2).sum() for k in range(4, 9)]
    assert areas[0] > 0 and areas == sorted(areas, reverse=True) and areas[-1] == 0
    # extension beyond plane 3: the disc copied, eroded one voxel per plane, weight 0.5
    conf = (lab == 2) & (w > 0)  # the copied label is confident ever further inside it
    assert conf[:, :, 2].sum() > conf[:, :, 1].sum() > 0
    assert w[15, 15, 2] == 0.5 and w[:, :, 0].sum() == 0  # not beyond `extend`
    assert lab[15, 15, 10] == 0 and w[15, 15, 10] == 0.5 and w[15, 15, 12] == 0  # background end plane copied too


class _ConstNet(torch.nn.Module):
    """A "parent" that predicts class 1 with probability ``p`` inside a box and background elsewhere."""

    def __init__(self, p=0.95):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.p = p

    def forward(self, x):
        n, _, *s = x.shape
        logit = float(np.log(self.p / (1 - self.p)))
        fg = (x[:, :1] >= 14).float() * (x[:, :1] <= 22).float()  # image = k index: class 1 on k 14..22
        return torch.cat([torch.zeros_like(fg), (2 * fg - 1) * logit], dim=1) + self.w * 0


def test_sparse_case_combines_strong_interpolated_and_confident_parent_targets():
    from napari_medseg.training.sparse import sparse_case

    case = _plane_case()
    cfg = tiny_config(patch_size=(16, 16, 8), weak_weight=0.5, parent_weight=0.2, parent_confidence=0.9)
    out = sparse_case(case, cfg, parent=_ConstNet(0.95), patch=(16, 16, 8))
    strong = case.mask > 0
    assert torch.equal(out.mask, case.mask) and torch.equal(out.target[strong], case.target[strong])
    assert not out.weak[:, strong].any()  # the labelled planes carry only their strong labels
    interp, par = out.weak
    # between the planes the interpolated labels win over the parent's (which remain at unsure boundary voxels)
    assert (interp[12, 12, 11:26] > 0).all() and (out.target[12, 12, 11:26] == 1).all()
    assert not ((par > 0) & (interp > 0)).any() and par[:, :, 11:26].sum() < 0.2 * par[:, :, 11:26].numel()
    assert interp.max() <= 1 and interp[12, 12, 18] == pytest.approx(0.5)
    # outside the planes' span only the parent's confident label remains, within patch reach of the planes
    assert par[12, 12, 5] == 1 and interp[12, 12, 5] == 0 and out.target[12, 12, 5] == 0
    assert par[12, 12, 0] == 0  # beyond what a patch through a labelled plane can reach (k 10 - 8 = 2)
    # an unconfident parent gives no target
    out2 = sparse_case(case, tiny_config(patch_size=(16, 16, 8), weak_weight=0.0, parent_weight=0.2,
                                         parent_confidence=0.99), parent=_ConstNet(0.95), patch=(16, 16, 8))
    assert not out2.weak.any()


def test_sparse_loss_gives_each_kind_of_target_its_share():
    from napari_medseg.training.loss import masked_dice_ce, sparse_loss

    torch.manual_seed(0)
    logits, tgt = torch.randn(2, 3, 8, 8, 4), torch.randint(0, 3, (2, 8, 8, 4))
    w = torch.zeros(2, 3, 8, 8, 4)
    w[:, 0, :, :, 0] = 1
    w[:, 1, :, :, 1:3] = 0.5
    w[:, 2, :, :, 3] = 1
    cfg = tiny_config(weak_weight=0.3, parent_weight=0.1)
    expect = masked_dice_ce(logits, tgt, w[:, 0]) + 0.3 * masked_dice_ce(logits, tgt, w[:, 1]) + 0.1 * masked_dice_ce(
        logits, tgt, w[:, 2])
    assert torch.allclose(sparse_loss(logits, tgt, w, cfg), expect)
    # doubling the interpolated voxels' weights or count does not change their share
    w2 = w.clone()
    w2[:, 1] *= 2
    assert torch.allclose(sparse_loss(logits, tgt, w2, cfg), expect)
    assert torch.allclose(sparse_loss(logits, tgt, w, tiny_config()), masked_dice_ce(logits, tgt, w[:, 0]))


def test_few_slice_augment_keeps_labels_and_weights_aligned_and_is_seeded():
    from napari_medseg.training.augment import FewSliceAugment

    case = _plane_case()
    img = case.image[:, :, :, 6:14].clone() / 40.0
    tgt, w = case.target[:, :, 6:14].clone(), case.mask[None, :, :, 6:14].clone()
    cfg = tiny_config(augment="few_slice", rotate_deg=20.0, intensity_jitter=0.1, elastic_prob=0.5)
    outs = [[FewSliceAugment(cfg, seed=3)(img, tgt, w, thin_axis=2) for _ in range(6)] for _ in range(2)]
    for (a_img, a_tgt, a_w), (b_img, b_tgt, b_w) in zip(*outs):
        assert torch.equal(a_img, b_img) and torch.equal(a_tgt, b_tgt) and torch.equal(a_w, b_w)  # same seed
        assert a_img.shape == img.shape and a_tgt.dtype == torch.long and set(a_tgt.unique().tolist()) <= {0, 1}
        assert set(a_w.unique().tolist()) <= {0.0, 1.0}  # nearest: no blended weights
        assert a_w.shape == w.shape and a_w[0, :, :, 4].sum() > 0.8 * a_w[0, :, :, 4].numel()  # plane 10 stays labelled
    other = FewSliceAugment(cfg, seed=4)(img, tgt, w, thin_axis=2)
    assert not torch.equal(other[0], outs[0][0][0])


def test_weight_average_is_the_mean_of_the_late_steps():
    from napari_medseg.training.loop import WeightAverage

    net = torch.nn.Linear(2, 1)
    avg = WeightAverage(net, start=0.5)
    seen = []
    for n, frac in enumerate([0.0, 0.25, 0.5, 0.75, 0.9]):
        with torch.no_grad():
            net.weight.fill_(float(n))
        avg.update(frac)
        if frac >= 0.5:
            seen.append(float(n))
    avg.apply()
    assert torch.allclose(net.weight, torch.full_like(net.weight, np.mean(seen)))


def test_transfer_copies_matching_weights_and_refuses_a_mismatched_model(tiny_parent):
    from napari_medseg.errors import ModelError
    from napari_medseg.models import load_model
    from napari_medseg.models.network import build_network
    from napari_medseg.training.train import unet_card
    from napari_medseg.training.transfer import init_from, is_encoder

    src = load_model("tiny").network.state_dict()
    card = unet_card("new", {7: "vessel"}, spacing=(1.5, 1.5, 1.5), channels=(4, 8), strides=(2,), num_res_units=0,
                     roi_size=(16, 16, 16))
    for scope in ("all", "encoder"):
        torch.manual_seed(0)
        net = build_network(card)
        fresh = {k: v.clone() for k, v in net.state_dict().items()}
        rep = init_from(net, card, "tiny", scope=scope)
        assert rep.source.startswith("tiny") and rep.copied > 0 and rep.kept > 0
        for k, v in net.state_dict().items():
            if k in rep.names:
                assert torch.equal(v, src[k]) and (scope == "all" or is_encoder(k))
            else:  # the output head (2 classes + background vs 1 + background), or the decoder for "encoder"
                assert torch.equal(v, fresh[k])
                assert tuple(src[k].shape) != tuple(v.shape) or (scope == "encoder" and not is_encoder(k))
    wider = unet_card("new", {7: "vessel"}, spacing=(1.5, 1.5, 1.5), channels=(8, 16), strides=(2,), num_res_units=0)
    with pytest.raises(ModelError, match=r"cannot start the new model from tiny.*channels \[4, 8\] vs \[8, 16\]"):
        init_from(build_network(wider), wider, "tiny")
    mr = unet_card("new", {7: "vessel"}, spacing=(1.5, 1.5, 1.5), channels=(4, 8), strides=(2,), num_res_units=0,
                   intensity={"type": "zscore", "nonzero": False})
    with pytest.raises(ModelError, match="different input normalisation: ct_window vs zscore"):
        init_from(build_network(mr), mr, "tiny")
    # the implicit default (16..128 channels) does not fit: a note, random start, no error
    rep = init_from(build_network(card), card, "default")
    assert rep.source is None and "not transferred" in rep.note and "channels" in rep.note


def _three_slice_case():
    """A tiny card and a blob case labelled on axial slices 10, 16 and 22 (thin patches across them)."""
    from napari_medseg.training.data import Case, model_axis_of_array_axis, prepare_case
    from training_helpers import blob_volumes

    image, labels = blob_volumes(0)
    card = tiny_card()
    mask = np.zeros(labels.spatial_shape, np.int16)
    mask[[10, 16, 22]] = 1
    c = prepare_case(image, labels, card, mask=mask)
    return card, Case(c.name, c.image, c.target, c.mask, thin_axis=model_axis_of_array_axis(image, card, 0))


def test_seeded_few_slice_training_is_reproducible():
    from napari_medseg.models.network import build_network
    from napari_medseg.progress import run_steps
    from napari_medseg.training.loop import training_steps

    card, case = _three_slice_case()
    cfg = tiny_config(6, patch_size=(16, 16, 8), augment="few_slice", weak_weight=0.5, average_from=0.5,
                      intensity_jitter=0.1, scale_jitter=0.1)

    def train(seed):
        torch.manual_seed(123)  # the same initial weights; the seed below drives everything else
        net = build_network(card)
        run_steps(training_steps(net, [case], cfg.__class__(**{**cfg.to_dict(), "seed": seed}), card.out_channels))
        return net.state_dict()

    a, b, other = train(0), train(0), train(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], other[k]) for k in a)


def test_rehearsal_patches_come_from_parent_boxes_far_from_the_slices():
    from napari_medseg.training.data import PatchSampler
    from napari_medseg.training.sparse import sparse_case

    case = _plane_case(shape=(24, 24, 80), planes=(10, 26))
    cfg = tiny_config(patch_size=(16, 16, 8), weak_weight=0.5, parent_weight=0.2, parent_confidence=0.9,
                      rehearsal_fraction=1.0, rehearsal_boxes=4, scale_jitter=0.0, batch_size=2)
    out = sparse_case(case, cfg, parent=_ConstNet(0.95), patch=(16, 16, 8))
    ks = [c[2] for c in out.rehearsal]
    assert len(ks) == 4 and all(k >= 26 + 8 + 1 for k in ks)  # beyond what slice patches reach (k <= 34)
    assert out.weak[1][:, :, 40:76].any()  # the parent teaches there
    sampler = PatchSampler([out], cfg, n_classes=2)
    for _ in range(10):
        img, _, w = sampler.sample()
        assert img.min() >= 26 and not w[:, 0].any() and w[:, 2].any()  # no labelled plane, parent targets only
    off = sparse_case(case, tiny_config(patch_size=(16, 16, 8), parent_weight=0.2), parent=_ConstNet(0.95))
    assert off.rehearsal == () and not off.weak[1][:, :, 40:].any()


def test_blend_keeps_that_share_of_the_change_only_without_held_out_cases():
    """TrainConfig.blend (WiSE-FT): with no validation case the result is start + blend x (trained - start);
    with a held-out case the held-out rule selects and the blend is not applied."""
    import dataclasses

    from napari_medseg.errors import InputError
    from napari_medseg.models.network import build_network
    from napari_medseg.progress import run_steps
    from napari_medseg.training.loop import training_steps

    card, case = _three_slice_case()
    cfg = tiny_config(5, patch_size=(16, 16, 8), average_from=None)

    def train(blend, val=None):
        torch.manual_seed(123)
        net = build_network(card)
        start = {k: v.clone() for k, v in net.state_dict().items()}
        log = run_steps(training_steps(net, [case], dataclasses.replace(cfg, blend=blend), card.out_channels,
                                       val_cases=val, initial_validation=False))
        return start, net.state_dict(), log

    start, full, log_full = train(None)
    _, half, log_half = train(0.5)
    floats = [k for k in full if full[k].is_floating_point() and not torch.equal(full[k], start[k])]
    assert floats and log_full.blend is None and log_half.blend == 0.5
    for k in floats:
        torch.testing.assert_close(half[k], start[k] + 0.5 * (full[k] - start[k]), rtol=1e-5, atol=1e-6)
    _, validated, log_val = train(0.5, val=[case])
    assert log_val.blend is None
    with pytest.raises(InputError):
        dataclasses.replace(cfg, blend=0.0)
