"""MONAI Model Zoo bundles: translation to a card, refusal of code, and agreement with MONAI's own run."""

from __future__ import annotations

import json
import shutil
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_medseg.errors import ModelError
from napari_medseg.models import load_model
from napari_medseg.models.bundle import bundle_card, load_bundle

from bundle_factory import blob_image
from zoo_factory import monai_reference


def _copy_with(bundle, tmp_path, edit) -> object:
    dst = tmp_path / bundle.name
    shutil.copytree(bundle, dst)
    cfg = json.loads((dst / "configs" / "inference.json").read_text())
    edit(cfg)
    (dst / "configs" / "inference.json").write_text(json.dumps(cfg))
    return dst


def test_bundle_translates_to_card(spleen_bundle):
    card, warnings = bundle_card(spleen_bundle)
    assert card.architecture == "UNet"
    assert card.arch_args["channels"] == [8, 16, 32]
    assert card.orientation == "RAS"
    assert card.spacing == (1.5, 1.5, 2.0)
    assert card.intensity == {"type": "ct_window", "a_min": -57.0, "a_max": 164.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
    assert card.roi_size == (32, 32, 32) and card.sw_batch_size == 4 and card.overlap == 0.5
    assert card.class_names() == {0: "background", 1: "spleen"}
    assert warnings == []


def test_bundle_zip_loads(spleen_bundle, tmp_path):
    z = tmp_path / "spleen_ct_segmentation.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in spleen_bundle.rglob("*"):
            if p.is_file():
                zf.write(p, "spleen_ct_segmentation/" + p.relative_to(spleen_bundle).as_posix())
    loaded = load_model(z)
    assert isinstance(loaded.network, torch.nn.Module) and not loaded.network.training
    assert loaded.card.class_names()[1] == "spleen"


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda c: c["network_def"].update(channels="$__import__('os').listdir('.')"), "network_def.channels"),
        (lambda c: c["network_def"].update(channels="$[c for c in (8, 16, 32)]"), "network_def.channels"),
        (lambda c: c["network_def"].update(_target_="torch.nn.Identity"), "torch.nn.Identity"),
        (lambda c: c["network_def"].update(_target_="$__import__('os').system('echo hi')"), "_target_"),
        (lambda c: c["preprocessing"]["transforms"].insert(2, {"_target_": "Lambdad", "keys": "image", "func": "$lambda x: x"}),
         "Lambdad"),
        (lambda c: c["preprocessing"]["transforms"].insert(2, {"_target_": "RandFlipd", "keys": "image"}), "RandFlipd"),
        (lambda c: c["inferer"].update(roi_size="$torch.zeros(3).tolist()"), "inferer.roi_size"),
        (lambda c: c["inferer"].update(roi_size="$scripts.utils.roi()"), "scripts/"),
    ],
)
def test_bundle_with_code_or_unsupported_parts_is_refused(spleen_bundle, tmp_path, edit, needle):
    bad = _copy_with(spleen_bundle, tmp_path, edit)
    with pytest.raises(ModelError, match=needle.replace("(", r"\(").replace("$", r"\$").replace("[", r"\[")):
        load_bundle(bad)


def test_bundle_refs_resolve_to_literals(spleen_bundle, tmp_path):
    def edit(c):
        c["num_classes"] = 2
        c["network_def"]["out_channels"] = "@num_classes"
        c["pixdim"] = [1.5, 1.5, 2.0]
        c["preprocessing"]["transforms"][3]["pixdim"] = "@pixdim"

    card, _ = bundle_card(_copy_with(spleen_bundle, tmp_path, edit))
    assert card.arch_args["out_channels"] == 2 and card.spacing == (1.5, 1.5, 2.0)


def test_bundle_wrong_weights_and_torchscript(spleen_bundle, tmp_path):
    def edit(c):
        c["network_def"]["channels"] = [4, 8, 16]

    with pytest.raises(ModelError, match="model.pt"):
        load_bundle(_copy_with(spleen_bundle, tmp_path, edit))
    ts = tmp_path / "ts_only"
    shutil.copytree(spleen_bundle, ts)
    (ts / "models" / "model.pt").rename(ts / "models" / "model.ts")
    with pytest.raises(ModelError, match="TorchScript"):
        load_bundle(ts)


def _dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([1.1, 0.9, 2.6, 1.0]),  # RAS-ish NIfTI
        np.array([[-0.8, 0.0, 0.0, 30.0], [0.0, -1.2, 0.0, -10.0], [0.0, 0.0, 3.0, 5.0], [0, 0, 0, 1.0]]),  # LPS axes
        None,  # oblique
    ],
    ids=["ras", "lps", "oblique"],
)
def test_bundle_matches_monai_bundle_run(spleen_bundle, tmp_path, affine):
    from scipy.spatial.transform import Rotation

    from napari_medseg import segment

    if affine is None:
        affine = np.eye(4)
        affine[:3, :3] = Rotation.from_euler("xyz", [12, -8, 20], degrees=True).as_matrix() @ np.diag([1.0, 1.1, 2.4])
        affine[:3, 3] = [5.0, -3.0, 12.0]
    data = blob_image()
    img_path = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), img_path)
    ref_labels, ref_affine = monai_reference(spleen_bundle, img_path, tmp_path / "monai_out")

    ours = segment(img_path, model=spleen_bundle, device="cpu")
    ours_ijk = ours.labels.nifti_array()
    assert ours_ijk.shape == ref_labels.shape
    np.testing.assert_allclose(ours.labels.nifti_affine(), ref_affine, atol=1e-4)
    fg = ref_labels == 1
    assert 0.05 < fg.mean() < 0.95, "the fitted network must give a non-trivial segmentation"
    for value in (0, 1):
        d = _dice(ours_ijk == value, ref_labels == value)
        assert d >= 0.99, f"class {value}: Dice {d:.4f} between napari-medseg and monai.bundle"
