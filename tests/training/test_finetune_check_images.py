"""The class check on other recent images: a model that forgets a class on another image is not activated."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_medseg.errors import InputError
from napari_medseg.io import write_volume
from napari_medseg.training import versions
from napari_medseg.training.finetune import finetune

from training_helpers import blob_volumes, ft_config

SLICES = [(0, 8), (0, 12), (0, 16), (0, 20), (0, 24)]
HELD = ((0, 16),)


class ForgetsOrganOnBrightImages(torch.nn.Module):
    """The parent, except that it predicts no "organ" (channel 1) in windows with saturated voxels: the second
    image's organ is brighter (+150 HU, at the top of the CT window), the corrected image's never is."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        if bool((x >= 0.999).any()):
            out = out.clone()
            out[:, 1] = -1e4
        return out

    def state_dict(self, *a, **k):  # saved as the parent's architecture
        return self.inner.state_dict(*a, **k)


def _second_image():
    image, labels = blob_volumes(11, shift=(1, 1, -1))
    arr = image.array.astype(np.int16) + 150  # a brighter scan of the same anatomy
    return image.with_array(arr, source_path="/data/second_ct.nii.gz")


@pytest.fixture
def forgetting_training(monkeypatch):
    import napari_medseg.training.finetune_stages as stages

    real = stages.train_final

    def train_then_forget(start, cases, split, cfg, run, time_left=None):
        out = yield from real(start, cases, split, cfg, run, time_left)
        start.net = ForgetsOrganOnBrightImages(start.net).eval()
        return out

    monkeypatch.setattr(stages, "train_final", train_then_forget)


def test_a_model_that_drops_a_class_on_another_image_is_not_activated(tiny_parent, forgetting_training):
    image, labels = blob_volumes(4, shift=(0, -3, 3))
    cfg = ft_config(2, holdout_slices=HELD, tolerance=0.5)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=1e-9))
    res = finetune(image, labels, SLICES, model="tiny", config=cfg, check_images=[_second_image()])
    # on the corrected image nothing changed: the held-out Dice and the whole-image class check pass
    assert all(row["status"] in ("ok", "too small") for row in res.class_changes.values()), res.class_changes
    organ = res.other_changes["second_ct.nii.gz"]["organ"]
    assert organ["status"] == "vanished" and organ["before_ml"] > 1 and organ["after_ml"] == 0
    assert not res.activated and versions.active_version("tiny") == "v1"
    assert "organ vanished" in res.reason and "on second_ct.nii.gz" in res.reason
    text = res.summary()
    assert "Predicted volume on second_ct.nii.gz" in text and "organ:" in text and "VANISHED" in text
    assert res.card.provenance["class_check"]["other_images"]["second_ct.nii.gz"]["organ"]["status"] == "vanished"
    # the same job without the other image would have activated the model
    t = res.timing["stages_s"]
    assert t["check images (parent)"] > 0 and t["check images (new model)"] > 0


def test_check_images_by_path_are_capped_and_a_missing_one_is_refused(tiny_parent, tmp_path):
    from napari_medseg.training.check_images import MAX_CHECK_IMAGES

    image, labels = blob_volumes(4, shift=(0, -3, 3))
    paths = [write_volume(blob_volumes(20 + n)[0], tmp_path / f"other{n}.nii.gz") for n in range(MAX_CHECK_IMAGES + 1)]
    with pytest.raises(InputError, match="missing.nii.gz"):
        finetune(image, labels, SLICES, model="tiny", config=ft_config(2, holdout_slices=HELD),
                 check_images=[tmp_path / "missing.nii.gz"])
    assert versions.list_versions("tiny") == ["v1"]
    res = finetune(image, labels, SLICES, model="tiny", config=ft_config(2, holdout_slices=HELD), check_images=paths)
    assert sorted(res.other_changes) == [f"other{n}.nii.gz" for n in range(MAX_CHECK_IMAGES)]
    assert any("1 other image(s) not checked" in n for n in res.check_notes)
    assert "Note: 1 other image(s) not checked" in res.summary()


def test_cli_check_image(tiny_parent, tmp_path, capsys):
    from napari_medseg.cli import main

    image, labels = blob_volumes(4, shift=(0, -3, 3))
    write_volume(image, tmp_path / "img.nii.gz")
    write_volume(labels, tmp_path / "lab.nii.gz")
    write_volume(blob_volumes(21)[0], tmp_path / "other.nii.gz")
    assert main(["finetune", str(tmp_path / "img.nii.gz"), str(tmp_path / "lab.nii.gz"), "--model", "tiny",
                 "--slices", "z:8,z:12,z:16,z:20,z:24", "--steps", "2", "--patch", "16,16,8", "-q",
                 "--check-image", str(tmp_path / "other.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "Predicted volume on other.nii.gz" in out
