import numpy as np
import pytest
import torch

from napari_medseg.errors import InputError
from napari_medseg.training.finetune import check_slices, parse_slices, split_holdout
from napari_medseg.training.loop import freeze_encoder, lr_factor
from napari_medseg.training.loss import masked_dice_ce

from training_helpers import blob_volumes, tiny_card


def test_loss_ignores_masked_out_voxels():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 8, 8, 8)
    target = torch.randint(0, 3, (1, 8, 8, 8))
    mask = torch.zeros(1, 8, 8, 8)
    mask[..., 3] = 1  # one "corrected slice"
    base = masked_dice_ce(logits, target, mask)
    other = logits.clone()
    other[..., :3] = torch.randn_like(other[..., :3]) * 10  # change everything off the slice
    other_t = target.clone()
    other_t[..., 5:] = 0
    assert torch.allclose(base, masked_dice_ce(other, other_t, mask))
    other[:, 0, ..., 3] += 5.0  # raise one class on the slice
    assert not torch.allclose(base, masked_dice_ce(other, target, mask))
    assert masked_dice_ce(logits, target, torch.zeros_like(mask)).item() == 0.0


def test_perfect_prediction_has_low_loss():
    target = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6, 2:6] = 1
    logits = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float() * 20
    assert masked_dice_ce(logits, target, torch.ones(1, 8, 8, 8)).item() < 1e-3


def test_parse_and_check_slices():
    assert parse_slices("z:12, x:40,y:3") == [(0, 12), (2, 40), (1, 3)]
    with pytest.raises(InputError, match="AXIS:INDEX"):
        parse_slices("q:3")
    with pytest.raises(InputError, match="outside the image"):
        check_slices([(0, 40)], (32, 32, 32))
    assert check_slices([(0, 5), (0, 5), (2, 1)], (32, 32, 32)) == [(0, 5), (2, 1)]


def test_split_holdout_spreads_and_keeps_training_slices():
    sl = [(0, i) for i in range(0, 40, 5)]  # 8 slices
    train, held = split_holdout(sl, 2)
    assert len(held) == 2 and not set(held) & set(train) and len(train) == 6
    assert sl[0] not in held and sl[-1] not in held


def test_lr_schedule_warms_up_and_decays():
    assert lr_factor(0.0, 0.1, "cosine") < lr_factor(0.1, 0.1, "cosine") == pytest.approx(1.0)
    assert lr_factor(1.0, 0.1, "cosine") == pytest.approx(0.02)
    assert lr_factor(0.55, 0.1, "linear") == pytest.approx(0.5)


def test_freeze_encoder_freezes_down_path_only():
    from napari_medseg.models.network import build_network

    from napari_medseg.training.train import unet_card

    net = build_network(unet_card("x", {1: "a"}, channels=(4, 8, 16), strides=(2, 2), num_res_units=1))
    n = freeze_encoder(net)
    frozen = [k for k, p in net.named_parameters() if not p.requires_grad]
    trainable = [k for k, p in net.named_parameters() if p.requires_grad]
    assert n == len(frozen) > 0 and trainable
    assert all(".2." in k or k.startswith("model.2") for k in trainable)  # up-path blocks only


def test_prepare_case_rejects_unknown_labels_and_grid_mismatch():
    from napari_medseg.training.data import prepare_case

    image, labels = blob_volumes(0)
    bad = labels.with_array(np.where(labels.array == 2, 7, labels.array).astype(np.uint8))
    with pytest.raises(InputError, match=r"values \[7\]"):
        prepare_case(image, bad, tiny_card())
    moved = labels.with_array(labels.array)
    moved.origin = (5.0, 0.0, 0.0)
    with pytest.raises(InputError, match="differs from the image grid: position"):
        prepare_case(image, moved, tiny_card())
    case = prepare_case(image, labels, tiny_card(), label_map={1: 1})  # ball dropped to background
    assert int(case.target.max()) == 1 and case.image.shape[1:] == case.target.shape
