"""The held-out stopping rule (training/schedule.py): best validated weights, patience."""

from __future__ import annotations

import numpy as np
import torch

from training_helpers import tiny_card, tiny_config


def _res(s):
    return {"dice_mean": s, "dice_fg": s, "dice": {}, "voxels": 1}


def test_best_checkpoint_keeps_the_best_weights_and_counts_drops():
    from napari_medseg.training.schedule import BestCheckpoint

    net = torch.nn.Linear(2, 1)
    best = BestCheckpoint(True, patience=2, drop=0.05)
    for step, s in [(1, 0.5), (2, 0.7)]:
        with torch.no_grad():
            net.weight.fill_(step)
        best.update(step, _res(s), net)
    with torch.no_grad():
        net.weight.fill_(3)
    best.update(3, _res(0.68), net)  # within the drop: not counted
    assert best.worse == 0 and not best.should_stop
    best.update(4, _res(0.6), net)
    best.update(5, _res(0.61), net)
    assert best.should_stop and best.step == 2
    res, step = best.restore(net, _res(0.61), 5)
    assert step == 2 and res["dice_fg"] == 0.7 and float(net.weight.detach()[0, 0]) == 2.0
    # final weights at least as good: nothing restored
    with torch.no_grad():
        net.weight.fill_(9)
    assert best.restore(net, _res(0.7), 6)[1] == 6 and float(net.weight.detach()[0, 0]) == 9.0
    late = BestCheckpoint(True, patience=1, after=0.5)  # validations in the first half of the run do not count
    late.update(1, _res(0.9), net, frac=0.2)
    late.update(2, _res(0.1), net, frac=0.4)
    assert late.state is None and not late.should_stop
    late.update(3, _res(0.5), net, frac=0.6)
    assert late.step == 3
    off = BestCheckpoint(False, patience=1)
    off.update(1, _res(0.9), net)
    assert off.state is None and not off.should_stop


def test_loop_stops_on_the_held_out_curve_and_restores_the_best_step(monkeypatch):
    from napari_medseg.models.network import build_network
    from napari_medseg.progress import run_steps
    from napari_medseg.training import loop
    from napari_medseg.training.data import Case

    shape = (16, 16, 16)
    rng = np.random.default_rng(0)
    case = Case("c", torch.from_numpy(rng.normal(size=(1, *shape)).astype(np.float32)),
                torch.from_numpy((rng.random(shape) > 0.5).astype(np.int64)), torch.ones(shape))
    scores = iter([0.5, 0.6, 0.8, 0.7, 0.65, 0.6, 0.55, 0.5])  # initial, then every 2 steps
    snapshots = {}

    def fake_eval(net, cases, n_classes, roi, names=None):
        snapshots[len(snapshots)] = {k: v.clone() for k, v in net.state_dict().items()}
        return _res(next(scores))

    monkeypatch.setattr(loop, "evaluate_cases", fake_eval)
    card = tiny_card()
    net = build_network(card)
    cfg = tiny_config(40, val_every=2, keep_best=True, stop_patience=2, stop_drop=0.05, stop_after=0.0)
    log = run_steps(loop.training_steps(net, [case], cfg, card.out_channels, [case]))
    # validations: step 0 (0.5), 2 (0.6), 4 (0.8), 6 (0.7: drop 0.1), 8 (0.65: drop again) -> stop at step 8
    assert log.stopped_by == "held-out" and log.steps == 8
    assert log.selected_step == 4 and log.final_val["dice_fg"] == 0.8
    kept = snapshots[2]  # the weights validated at step 4
    assert all(torch.equal(net.state_dict()[k], kept[k]) for k in kept)


def test_the_result_text_names_the_held_out_stop_and_the_kept_step():
    from types import SimpleNamespace

    from napari_medseg.training.safety import describe

    res = SimpleNamespace(name="m", version="v2", activated=True, reason="held-out Dice 0.7 -> 0.8", heldout_slices=[(0, 5)],
                          check="holdout", metrics_before=_res(0.7), metrics_after=_res(0.8), class_changes={},
                          timing={"job_s": 50.0, "budget_s": 120.0, "train_s": 30.0, "steps": 40, "segment_s": 10.0,
                                  "stopped_by": "held-out", "selected_step": 20})
    text = describe(res)
    assert "Training stopped early: the held-out Dice fell" in text and "weights of step 20" in text
    res.timing.update(stopped_by="time", selected_step=40)
    assert "stopped early" not in describe(res) and "weights of step" not in describe(res)
