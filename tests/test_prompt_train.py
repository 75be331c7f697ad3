"""Training of the prompt model (MONAI click simulation, a few tiny steps), the simulated user, and the
shipped prompt model (loaded and run once)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.prompt.simulate import click_session, dice, first_click, next_click
from napari_medseg.prompt.train import ClickSimulator, TrainCase, TrainSettings, sample_crop, train_steps


def blob_case():
    labels = np.zeros((40, 40, 40), np.int16)
    labels[10:25, 12:30, 8:20] = 4
    labels[28:36, 5:15, 25:35] = 7
    rng = np.random.default_rng(0)
    image = (0.2 + 0.5 * (labels > 0) + 0.05 * rng.standard_normal(labels.shape)).astype(np.float32)
    return TrainCase("blobs", image, labels, [4, 7])


def test_monai_click_simulation_clicks_inside_then_on_errors():
    sim = ClickSimulator(0)
    lab = np.zeros((20, 20, 20), bool)
    lab[5:15, 5:15, 5:15] = True
    import json

    g = json.loads(sim.first(lab))
    assert lab[tuple(g[0][0][-3:])]  # AddInitialSeedPointd: inside the object
    pred = np.zeros_like(lab)
    pred[5:15, 5:15, 5:10] = True  # half missed: the next click is positive, in the missed half
    g = json.loads(sim.correct(json.dumps(g), lab, pred))
    p = g[0][-1][-3:]
    assert lab[tuple(p)] and not pred[tuple(p)] and g[1][-1] == [-1, -1, -1, -1]


def test_a_few_training_steps_change_the_network():
    from napari_medseg.models.network import build_network
    from napari_medseg.prompt.model import prompt_card

    card = prompt_card(arch_args={"spatial_dims": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0})
    torch.manual_seed(0)
    net = build_network(card)
    before = [p.detach().clone() for p in net.parameters()]
    st = TrainSettings(crop=16, batch=2, max_clicks=1, seconds=60, max_steps=3, checkpoint_every=2)
    progress = list(train_steps(net, [blob_case()], st))
    assert [p["step"] for p in progress] == [1, 2, 3] and [p["checkpoint"] for p in progress] == [False, True, True]
    assert all(np.isfinite(p["loss"]) for p in progress)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_training_crops_hold_the_structure():
    case = blob_case()
    rng = np.random.default_rng(1)
    for _ in range(5):
        img, lab = sample_crop(case, 4, rng, 16)
        assert img.shape == lab.shape == (16, 16, 16) and lab.any()


def test_simulated_user():
    truth = np.zeros((20, 20, 20), bool)
    truth[4:16, 4:16, 4:16] = True
    assert first_click(truth) in {(9, 9, 9), (10, 10, 10), (9, 10, 10), (10, 9, 9)} or truth[first_click(truth)]
    pred = truth.copy()
    pred[4:16, 4:16, 4:7] = False  # a missed slab (432 voxels) ...
    pred[0:2, 0:2, 0:2] = True  # ... and a small leak (8 voxels)
    (p, positive) = next_click(truth, pred)
    assert positive and truth[p] and not pred[p]
    assert next_click(truth, truth) is None
    assert dice(truth, truth) == 1.0 and dice(truth, ~truth) == 0.0


def test_shipped_prompt_model_segments_a_phantom_kidney():
    from napari_medseg.prompt import load_prompt_model
    from napari_medseg.sample import SAMPLE_GEOMETRY, make_phantom

    loaded = load_prompt_model()  # integrity-checked package in napari_medseg/models/prompt
    held = loaded.card.provenance["data"]["held_out"]
    assert "liver" in held and "spleen" in held
    assert loaded.card.provenance["training"]["steps"] > 0
    image, labels = make_phantom(7, **SAMPLE_GEOMETRY)
    truth = labels.array == 3  # kidney_right of an unseen phantom seed
    res = click_session(image, truth, clicks=3, model=loaded)
    assert res[0]["dice"] > 0.3, res
    assert max(r["dice"] for r in res) > 0.6, res
    for r in res:  # the error counts agree with the Dice: 2 TP / (2 TP + FN + FP), TP = |truth| - FN
        tp = int(truth.sum()) - r["false_negative"]
        assert r["dice"] == pytest.approx(2 * tp / (2 * tp + r["false_negative"] + r["false_positive"]))
