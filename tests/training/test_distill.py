"""Distillation from the parent during a fine-tune (issue 14: a one-slice fine-tune must not forget)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from training_helpers import tiny_card, tiny_config


def _case(shape=(24, 24, 48), plane=36):
    """A disc of class 1 (dark) in the low-k half and one of class 2 (bright) in the high-k half; one labelled
    plane at ``plane`` (class 2 and background only: a fine-tune on it alone tends to forget class 1)."""
    from napari_medseg.training.data import Case

    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    disc = (i - 12) ** 2 + (j - 12) ** 2 <= 6 ** 2
    target = np.where(disc, np.where(k < shape[2] // 2, 1, 2), 0).astype(np.int64)
    image = np.where(disc, np.where(k < shape[2] // 2, -1.0, 2.0), 0.0).astype(np.float32)
    image = image + np.random.default_rng(0).normal(0, 0.05, shape).astype(np.float32)
    mask = torch.zeros(shape)
    mask[:, :, plane] = 1.0
    return Case("distill", torch.from_numpy(image[None]), torch.from_numpy(target), mask, 2)


def test_distill_ramp_is_zero_near_the_labelled_planes_and_one_far_away():
    from napari_medseg.training.sparse import distill_ramp

    mask = torch.zeros(4, 4, 40)
    mask[:, :, [10, 30]] = 1
    r = distill_ramp(mask, 2, near=2, far=6)
    line = r[0, 0].numpy()
    assert r.shape == mask.shape and (r[0, 0] == r[3, 2]).all()
    assert line[10] == 0 and line[12] == 0 and line[30] == 0
    assert line[13] == pytest.approx(0.25) and line[14] == pytest.approx(0.5)
    assert line[16] == 1 and line[20] == 1 and line[0] == 1


def test_distill_loss_is_zero_for_the_teacher_itself_and_follows_the_weights():
    from napari_medseg.training.loss import distill_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 4, generator=g)
    probs = torch.softmax(logits, 1)
    w = torch.ones(2, 4, 4, 4)
    assert distill_loss(logits, probs, w).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 3, 4, 4, 4, generator=g)
    full = distill_loss(other, probs, w).item()
    assert full > 0.05
    assert distill_loss(other, probs, torch.zeros_like(w)).item() == 0.0  # nothing to distil: no term
    half = w.clone()
    half[1] = 0
    kl = (probs * (probs.log() - torch.log_softmax(other, 1))).sum(1)
    assert distill_loss(other, probs, half).item() == pytest.approx(kl[0].mean().item(), rel=1e-5)


def test_sparse_case_with_distillation_weights_and_centres_everywhere():
    from napari_medseg.models.network import build_network
    from napari_medseg.training.data import PatchSampler
    from napari_medseg.training.sparse import sparse_case

    case = _case()
    cfg = tiny_config(patch_size=(16, 16, 8), distill_weight=1.0, distill_near=2, distill_far=8,
                      rehearsal_fraction=0.5, rehearsal_boxes=6, batch_size=4)
    out = sparse_case(case, cfg, parent=build_network(tiny_card()).eval(), patch=(16, 16, 8))
    assert out.weak.shape == (3, *case.shape)
    d = out.weak[2]
    assert not d[:, :, 34:39].any() and (d[:, :, :29] == 1).all() and (d[:, :, 44:] == 1).all()
    ks = sorted(c[2] for c in out.rehearsal)
    assert len(ks) == 6 and ks[0] < 24 < 36 < ks[-1]  # spread over the whole image, on both sides of the slice
    img, tgt, w = PatchSampler([out], cfg, n_classes=3).sample()
    assert w.shape == (4, 4, 16, 16, 8)
    # without a parent (a new model) there is nothing to distil
    assert sparse_case(case, cfg, parent=None) is case


def _train(distill: float, seed: int = 0):
    from napari_medseg.models.network import build_network
    from napari_medseg.progress import run_steps
    from napari_medseg.training.data import Case
    from napari_medseg.training.loop import predict_probs, training_steps

    card = tiny_card()
    full = _case()
    torch.manual_seed(0)
    parent = build_network(card)
    # the parent learns the whole volume as it is (class 1 low, class 2 high): what it must not forget
    whole = Case("whole", full.image, full.target, torch.ones(full.shape), None)  # the parent knows both
    run_steps(training_steps(parent, [whole], tiny_config(80, patch_size=(16, 16, 16), lr=2e-2), card.out_channels))
    before = predict_probs(parent, full, (16, 16, 16), tuple(slice(0, n) for n in full.shape))
    net = copy.deepcopy(parent)
    cfg = tiny_config(40, patch_size=(16, 16, 8), lr=2e-2, distill_weight=distill, distill_near=2, distill_far=6,
                      rehearsal_fraction=0.3 if distill else 0.0, rehearsal_boxes=8, seed=seed)
    run_steps(training_steps(net, [full], cfg, card.out_channels))
    after = predict_probs(net, full, (16, 16, 16), tuple(slice(0, n) for n in full.shape))
    return before, after, full


def test_distillation_keeps_the_parent_far_from_the_slice_and_learns_the_slice():
    before, plain, case = _train(0.0)
    _, kept, _ = _train(1.0)
    disc = case.image[0].abs() > 0.5
    low = disc.clone()
    low[:, :, 24:] = False  # class 1, far from the corrected plane 36 (which shows none of it)
    truth = case.target
    parent_ok = (before.argmax(0)[low] == truth[low]).float().mean().item()
    plain_ok = (plain.argmax(0)[low] == truth[low]).float().mean().item()
    kept_ok = (kept.argmax(0)[low] == truth[low]).float().mean().item()
    assert parent_ok > 0.9, "the parent must know class 1 for this test to mean anything"
    assert plain_ok < 0.3  # one slice without class 1: a plain fine-tune forgets it
    assert kept_ok > 0.6 and kept_ok > plain_ok + 0.4
    on = disc[:, :, 36]  # the corrected plane is learnt
    assert (kept.argmax(0)[:, :, 36][on] == 2).float().mean().item() > 0.9


# ------------------------------------------------------------------ the one-slice case: what can be checked
def test_agreement_outside_ignores_the_corrected_slices():
    from napari_medseg.training.safety import agreement_outside

    parent = np.zeros((6, 8, 8), np.uint8)
    parent[:, 2:6, 2:6] = 1
    new = parent.copy()
    new[3] = 0  # the corrected slice changed completely: not counted
    new[3, 0, 0] = 2
    new[5, 2:4, 2:6] = 0  # outside it, half of one plane's class 1 is lost
    res = agreement_outside(parent, new, {1: "organ", 2: "ball"}, [(0, 3)])
    assert res["dice"] == {"organ": pytest.approx(2 * 72 / (80 + 72), abs=1e-4)}  # "ball" only on the slice
    assert res["unchanged"] == pytest.approx(1 - 8 / (5 * 64), abs=1e-6)


def test_check_plan_says_what_a_fine_tune_can_check():
    from napari_medseg.training.safety import check_plan

    one = check_plan(1, from_scratch=False)
    assert "none can be held out" in one and "not activated automatically" in one and "2nd slice" in one
    assert "trial run" in check_plan(3, False) and "held out" in check_plan(5, False)
    assert "none is held out" in check_plan(2, True)


def test_one_slice_report_says_what_was_and_was_not_checked(tiny_parent):
    from napari_medseg.training.finetune import finetune
    from training_helpers import blob_volumes, ft_config

    image, labels = blob_volumes(7)
    res = finetune(image, labels, [(0, 16)], model="tiny", config=ft_config(4))
    assert res.check == "none" and not res.activated
    assert res.metrics_before["on"].startswith("training slices") and res.metrics_after["dice_fg"] is not None
    assert set(res.agreement["dice"]) <= {"organ", "ball"} and 0 < res.agreement["unchanged"] <= 1
    text = res.summary()
    assert "NOT checked is how the new model does on slices you did not correct" in text
    assert "fit on the corrected slice it trained on" in text and "current model" in text
    assert "agreement of the new model with the current one outside the corrected slice" in text
    assert "Agreement with your corrections on those slices" not in text  # no held-out figures claimed


@pytest.mark.parametrize("cont", [True, False])
def test_cv_trial_weights_carry_into_the_final_run(tiny_parent, cont):
    import dataclasses

    from napari_medseg.progress import run_steps
    from napari_medseg.training import finetune_stages as st
    from napari_medseg.training.finetune import check_slices
    from training_helpers import blob_volumes, ft_config

    image, labels = blob_volumes(7)
    slices = [(0, 12), (0, 16), (0, 20)]
    cfg = dataclasses.replace(ft_config(3), cv_continue=cont)
    start = st.start_model(image, labels, slices, "tiny", False, None, cfg, None)
    split = st.split_slices(slices, cfg, True, labels.spatial_shape, check_slices)
    assert split.check == "cv"
    cases = st.build_cases(image, labels, slices, start.card, split)
    parent = {k: v.clone() for k, v in start.parent_net.state_dict().items()}
    before, after, held = run_steps(st.cross_validate(start, cases, image, slices, cfg.train, cfg, lambda g: g))
    assert held == [(0, 16)] and before is not None and after is not None
    moved = any(not torch.equal(start.net.state_dict()[k], parent[k]) for k in parent)
    assert moved == cont  # continued: the final run starts from the trial's weights; else from the parent
    assert all(torch.equal(start.parent_net.state_dict()[k], parent[k]) for k in parent)  # the teacher is intact


def test_new_model_head_copies_the_classes_its_source_knows_by_name(tiny_parent):
    from napari_medseg.models import load_model
    from napari_medseg.models.network import build_network
    from napari_medseg.training.train import unet_card
    from napari_medseg.training.transfer import head_channels, init_from
    from training_helpers import TINY_PATCH

    src = load_model("tiny")  # classes 1 organ, 2 ball
    card = unet_card("new", {1: "Ball", 2: "lesion"}, spacing=(1.5, 1.5, 1.5), channels=(4, 8), strides=(2,),
                     num_res_units=0, roi_size=TINY_PATCH)
    assert head_channels(src.card, card) == {0: 0, 1: 2}
    torch.manual_seed(3)
    net = build_network(card)
    rep = init_from(net, card, "tiny", scope="all", classes=True)
    assert "output channels of Ball" in rep.note
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = net.eval()(x), src.network.eval()(x)
    assert torch.allclose(a[:, 1], b[:, 2], atol=1e-5) and torch.allclose(a[:, 0], b[:, 0], atol=1e-5)
    assert not torch.allclose(a[:, 2], b[:, 1], atol=1e-3)  # the new class is not the source's "organ"
    torch.manual_seed(3)
    plain = build_network(card)
    init_from(plain, card, "tiny", scope="all", classes=False)
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(x)[:, 1], b[:, 2], atol=1e-3)  # without it the head is new


def test_hard_distillation_is_dice_ce_to_the_teachers_labels():
    from napari_medseg.training.loss import distill_loss, masked_dice_ce

    g = torch.Generator().manual_seed(1)
    logits, teacher = torch.randn(1, 3, 4, 4, 4, generator=g), torch.softmax(torch.randn(1, 3, 4, 4, 4, generator=g), 1)
    w = torch.ones(1, 4, 4, 4)
    ref = masked_dice_ce(logits, teacher.argmax(1), w)
    assert distill_loss(logits, teacher, w, hard=True).item() == pytest.approx(ref.item(), rel=1e-5)
    # the teacher itself still pays for its uncertainty under the soft term only
    assert distill_loss(torch.log(teacher), teacher, w).item() == pytest.approx(0.0, abs=1e-5)
    assert distill_loss(torch.log(teacher), teacher, w, hard=True).item() > 0
