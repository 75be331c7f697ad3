"""Safety of fine-tuning: wrong labels are not activated, parents are never touched, rollback is exact."""

import hashlib

import numpy as np
import pytest

from napari_medseg.errors import CancelledError, InputError
from napari_medseg.training import versions
from napari_medseg.training.finetune import finetune

from training_helpers import blob_volumes, ft_config


def _digest_tree(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _predict(spec, image):
    from napari_medseg.inference import segment

    return segment(image, model=spec, device="cpu", amp=False).labels.array


SLICES = [(0, 8), (0, 12), (0, 16), (0, 20), (0, 24)]
HELD = ((0, 16),)


def test_wrong_labels_are_detected_and_not_activated(tiny_parent):
    before = _digest_tree(tiny_parent)
    image, labels = blob_volumes(3, shift=(0, 2, -2))
    wrong = labels.array.copy()
    for axis, index in SLICES:
        if (axis, index) not in HELD:  # the training slices are painted wrong: organ <-> background
            s = wrong[index]
            wrong[index] = np.where(s == 1, 0, np.where(s == 0, 1, s))
    res = finetune(image, labels.with_array(wrong), SLICES, model="tiny",
                   config=ft_config(40, holdout_slices=HELD))
    assert res.check == "holdout" and res.heldout_slices == list(HELD)
    assert res.metrics_after["dice_mean"] < res.metrics_before["dice_mean"]
    assert not res.activated and "worse than parent tiny@v1" in res.reason
    assert versions.active_version("tiny") == "v1"
    assert res.version == "v2" and res.model_path.is_dir()  # kept as a version, just not active
    assert _digest_tree(tiny_parent) == before


def test_good_finetune_is_a_new_active_version_with_provenance(tiny_parent):
    before = _digest_tree(tiny_parent)
    image, labels = blob_volumes(4, shift=(0, -3, 3))
    res = finetune(image, labels, SLICES, model="tiny", config=ft_config(30, holdout_slices=HELD, tolerance=0.05))
    assert _digest_tree(tiny_parent) == before  # parent byte-identical
    prov = res.card.provenance
    assert prov["parent"]["spec"] == "tiny@v1"
    assert prov["parent"]["sha256"] == hashlib.sha256((tiny_parent / "model.safetensors").read_bytes()).hexdigest()
    assert prov["slices"]["heldout"] == [[0, 16]] and len(prov["slices"]["train"]) == 4
    assert prov["metrics"]["before"]["dice_mean"] == res.metrics_before["dice_mean"]
    assert prov["hyper_parameters"]["steps"] == 30 and "date" in prov
    assert res.card.version == res.version == "v2"
    assert [h["step"] for h in res.history][:2] == [0, 1] and res.history[-1]["val_dice"] is not None
    rows = versions.history("tiny")
    assert [r["version"] for r in rows] == ["v1", "v2"] and rows[1]["parent"] == "tiny@v1"
    assert res.activated == (versions.active_version("tiny") == "v2")


def test_rollback_restores_previous_outputs_exactly(tiny_parent):
    image, labels = blob_volumes(5, shift=(2, 0, 0))
    out_v1 = _predict("tiny", image)
    res = finetune(image, labels, SLICES, model="tiny", activate=True,
                   config=ft_config(20, holdout_slices=HELD))
    assert res.activated and versions.active_version("tiny") == "v2"
    out_v2 = _predict("tiny", image)
    assert not np.array_equal(out_v1, out_v2)
    versions.activate("tiny", "v1")
    assert np.array_equal(_predict("tiny", image), out_v1)
    # a further fine-tune from the rolled-back parent gets the next free version, never v2 again
    res3 = finetune(image, labels, SLICES[:2], model="tiny", activate=False, config=ft_config(2))
    assert res3.version == "v3" and not res3.activated and versions.active_version("tiny") == "v1"


def test_cancel_writes_nothing(tiny_parent):
    from napari_medseg.progress import run_steps
    from napari_medseg.training.finetune import finetune_steps

    image, labels = blob_volumes(6)
    seen = []
    with pytest.raises(CancelledError):
        run_steps(finetune_steps(image, labels, SLICES, model="tiny", config=ft_config(50)),
                  progress=seen.append, cancel=lambda: len(seen) >= 3)
    assert versions.history("tiny")[-1]["version"] == "v1"
    assert not (tiny_parent.parent / "v2").exists()


def test_single_slice_is_not_activated_automatically(tiny_parent):
    image, labels = blob_volumes(7)
    res = finetune(image, labels, [(0, 16)], model="tiny", config=ft_config(3))
    assert res.check == "none" and not res.activated and "one corrected slice" in res.reason


def test_unknown_label_values_need_from_scratch(tiny_parent):
    image, labels = blob_volumes(8)
    arr = labels.array.copy()
    arr[16, :4, :4] = 9
    with pytest.raises(InputError, match="from_scratch"):
        finetune(image, labels.with_array(arr), [(0, 16), (0, 10)], model="tiny", config=ft_config(2))


def test_freeze_encoder_trains_only_the_decoder(tiny_parent):
    import dataclasses

    import torch

    from napari_medseg.models.package import load_model_package

    image, labels = blob_volumes(9)
    cfg = ft_config(5)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, freeze_encoder=True))
    res = finetune(image, labels, SLICES, model="tiny", activate=False, config=cfg)
    parent = load_model_package(tiny_parent).network.state_dict()
    child = load_model_package(res.model_path).network.state_dict()
    same = {k for k in parent if torch.equal(parent[k], child[k])}
    assert "model.0.conv.weight" in same  # first encoder block frozen
    assert any(k.startswith("model.2") for k in set(parent) - same)  # last decoder block trained
    assert res.card.provenance["mode"] == "finetune-frozen-encoder"


def test_stop_during_the_final_validation_saves_no_version(tiny_parent):
    """Cancel at the last step ("save"): everything was computed, yet no new version is written."""
    from napari_medseg.progress import run_steps
    from napari_medseg.training.finetune import finetune_steps

    image, labels = blob_volumes(6)
    stages = []
    with pytest.raises(CancelledError):
        run_steps(finetune_steps(image, labels, SLICES, model="tiny", config=ft_config(3)),
                  progress=lambda p: stages.append(p.stage), cancel=lambda: stages[-1:] == ["save"])
    assert stages[-1] == "save" and len(stages) > 1
    assert versions.history("tiny")[-1]["version"] == "v1"
    assert not (tiny_parent.parent / "v2").exists()
