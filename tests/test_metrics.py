"""One Dice implementation for numpy and torch, used by training validation and the CLI demo."""

from __future__ import annotations

import math

import numpy as np

from napari_medseg.metrics import dice_per_class


def test_dice_numpy_and_torch_agree_and_handle_absent_classes():
    import torch

    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, (6, 7, 8))
    target = rng.integers(0, 3, (6, 7, 8))
    mask = rng.random((6, 7, 8)) > 0.3
    want = {}
    for v in (1, 2):
        p, t = (pred == v) & mask, (target == v) & mask
        want[v] = 2 * (p & t).sum() / (p.sum() + t.sum())
    got_np = dice_per_class(pred, target, [0, 1, 2, 5], mask)
    got_t = dice_per_class(torch.from_numpy(pred), torch.from_numpy(target), [0, 1, 2, 5], torch.from_numpy(mask))
    assert set(got_np) == set(got_t) == {1, 2}  # 0 skipped, 5 absent from both: left out
    for v in (1, 2):
        assert math.isclose(got_np[v], want[v]) and math.isclose(got_t[v], want[v], rel_tol=1e-6)
    assert math.isnan(dice_per_class(pred, target, [5], absent=float("nan"))[5])


def test_training_and_cli_use_it():
    import torch

    from napari_medseg.commands.model_commands import dice_per_class as cli_dice
    from napari_medseg.training.loss import dice_per_class as train_dice

    a = np.array([[[0, 1, 1, 2]]])
    b = np.array([[[0, 1, 2, 2]]])
    assert train_dice(torch.from_numpy(a), torch.from_numpy(b), None, 4) == {1: 2 / 3, 2: 2 / 3}
    cli = cli_dice(a, b, [0, 1, 2, 3])
    assert cli[1] == 2 / 3 and math.isnan(cli[3])
