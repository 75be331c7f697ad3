"""Training from scratch on sparse slices, `train`, and the CLI (train, finetune, models)."""

import json

import numpy as np
import pytest

from napari_medseg.cli import main
from napari_medseg.training import versions
from napari_medseg.training.finetune import finetune

from training_helpers import blob_volumes, ft_config, tiny_card, tiny_config


def test_from_scratch_learns_classes_present_with_their_names(medseg_home):
    import dataclasses

    image, labels = blob_volumes(0)
    cfg = ft_config(100)
    cfg = dataclasses.replace(cfg, scratch_channels=(4, 8), scratch_strides=(2,), scratch_res_units=0, scratch_lr=1e-2)
    res = finetune(image, labels, [(0, 10), (0, 14), (0, 18), (0, 22)], from_scratch=True, name="blobs", config=cfg)
    assert res.card.class_names() == {0: "background", 1: "organ", 2: "ball"}
    assert res.card.spacing == (1.5, 1.5, 1.5)  # native spacing (>= min in-plane spacing)
    assert res.card.provenance["parent"] is None and res.card.provenance["mode"] == "scratch"
    assert res.metrics_before is None and res.metrics_after["dice_mean"] is not None
    assert res.version == "v1" and (medseg_home / "models" / "blobs" / "v1" / "card.json").is_file()
    # it learned something real from the sparse slices: organ Dice on the slices between them it never saw
    # (windows far outside the labelled range hold pure noise, which this tiny instance-normed net never saw)
    from napari_medseg.inference import segment

    pred = segment(image, model="blobs", device="cpu", amp=False).labels.array
    other = [k for k in range(11, 22) if k not in (10, 14, 18, 22)]
    p, t = pred[other] == 1, labels.array[other] == 1
    assert 2 * (p & t).sum() / (p.sum() + t.sum()) > 0.6


def test_train_writes_a_loadable_package_with_heldout_dice(tmp_path):
    from napari_medseg.models.package import load_model_package
    from napari_medseg.training.train import train

    imgs, labs = zip(*[blob_volumes(s) for s in (0, 1)])
    vimg, vlab = blob_volumes(2)
    res = train(list(imgs), list(labs), tmp_path / "m", card=tiny_card("blobs"), config=tiny_config(30),
                val_images=[vimg], val_labels=[vlab])
    loaded = load_model_package(tmp_path / "m")
    assert loaded.card.provenance["steps"] == 30
    assert loaded.card.provenance["metrics"]["heldout_dice_mean"] == res.metrics["heldout_dice_mean"] > 0.3
    with pytest.raises(Exception, match="already exists"):
        train(list(imgs), list(labs), tmp_path / "m", card=tiny_card("blobs"), config=tiny_config(1))


def _write(vol, path):
    from napari_medseg.io import write_volume

    write_volume(vol, path)
    return str(path)


def test_cli_train_finetune_models_history_and_rollback(tmp_path, medseg_home, capsys):
    image, labels = blob_volumes(0)
    img = _write(image, tmp_path / "img.nii.gz")
    lab = _write(labels.with_array(labels.array * 10), tmp_path / "lab.nii.gz")  # values 10, 20
    out = tmp_path / "model"
    rc = main(["train", img, lab, "-o", str(out), "--map", "10:1,20:2", "--classes", "1:organ,2:ball",
               "--spacing", "1.5", "--channels", "4,8", "--steps", "4", "--patch", "16,16,16", "-q"])
    assert rc == 0 and (out / "card.json").is_file()
    card = json.loads((out / "card.json").read_text())
    assert [c["name"] for c in card["classes"]] == ["organ", "ball"]
    assert card["provenance"]["data"]["label_map"] == {"10": 1, "20": 2} or card["provenance"]["data"]["label_map"]

    lab1 = _write(labels, tmp_path / "lab1.nii.gz")
    # NIfTI axis order: z = third NIfTI axis = array axis 0
    rc = main(["finetune", img, lab1, "--slices", "z:8,z:12,z:16,z:20,z:24", "--model", str(out), "--name", "blobs",
               "--steps", "3", "--patch", "16,16,8", "--activate", "yes", "-q"])
    assert rc == 0
    assert "blobs@v1" in capsys.readouterr().out
    rc = main(["finetune", img, lab1, "--slices", "z:8,z:16", "--model", "blobs", "--steps", "2", "--patch", "16,16,8",
               "--activate", "yes", "-q"])
    assert rc == 0 and versions.active_version("blobs") == "v2"
    capsys.readouterr()
    assert main(["models", "--history", "blobs"]) == 0
    text = capsys.readouterr().out
    assert "* v2" in text and "parent=blobs@v1" in text
    assert main(["models", "--activate", "blobs@v1"]) == 0 and versions.active_version("blobs") == "v1"
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "* blobs@v1" in capsys.readouterr().out
    assert main(["models", "--activate", "blobs@v9"]) == 2
    assert "no version 'v9'" in capsys.readouterr().err
    assert main(["finetune", img, lab1, "--slices", "q:1", "-q"]) == 2
