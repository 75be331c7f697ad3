"""Fine-tuning a MONAI bundle (SegResNet) on 3 corrected slices: a versioned model package with the bundle as parent."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from napari_medseg.errors import InputError
from napari_medseg.models import load_model
from napari_medseg.models.bundle import bundle_card
from napari_medseg.training import versions
from napari_medseg.training.config import FinetuneConfig, TrainConfig
from napari_medseg.training.finetune import finetune
from napari_medseg.volume import Volume

import zoo_factory as zf


def _segresnet_bundle(root):
    import torch
    from monai.networks.nets import SegResNet

    net_def = {"_target_": "SegResNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "init_filters": 8,
               "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}
    pre = zf.ct_pre((1.5, 1.5, 1.5), -700, 300)
    cfg = zf._common(pre, {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 16], "sw_batch_size": 2,
                           "overlap": 0.25}, zf._post(False, False), net_def)
    torch.manual_seed(0)
    net = SegResNet(**{k: v for k, v in net_def.items() if k != "_target_"})
    meta = zf.metadata("SegResNet test", "0.3.2", ["background", "organ", "ball"])
    return zf.write_bundle(root, cfg, meta, {"models/model.pt": net.state_dict()})


def _volumes(seed=0, shape=(32, 32, 32)):
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    r = np.sqrt(((k - 16) / 9) ** 2 + ((j - 12) / 10) ** 2 + ((i - 12) / 8) ** 2)
    r2 = np.sqrt((k - 16) ** 2 + (j - 25) ** 2 + (i - 25) ** 2) / 5
    labels = np.zeros(shape, np.uint8)
    labels[r < 1] = 1
    labels[r2 < 1] = 2
    hu = np.where(labels == 1, 150.0, np.where(labels == 2, -600.0, -100.0)) + rng.normal(0, 15, shape)
    image = Volume(hu.astype(np.int16), spacing=(1.5, 1.5, 1.5), meta={"modality": "CT"})
    return image, image.with_array(labels, classes={0: "background", 1: "organ", 2: "ball"})


@pytest.fixture()
def pulled_bundle(tmp_path, monkeypatch):
    """The bundle stored as a pulled zoo bundle would be: <home>/models/<name>/<version>.zip, active."""
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    src = _segresnet_bundle(tmp_path / "src" / "segresnet_ct_segmentation")
    dest = tmp_path / "home" / "models" / "segresnet_ct_segmentation" / "0.3.2.zip"
    dest.parent.mkdir(parents=True)
    zf.zip_bundle(src, dest, "segresnet_ct_segmentation")
    versions.activate("segresnet_ct_segmentation", "0.3.2")
    return src, dest


def test_finetune_segresnet_bundle_on_three_slices(pulled_bundle):
    from napari_medseg import segment

    src, dest = pulled_bundle
    zip_before = hashlib.sha256(dest.read_bytes()).hexdigest()
    image, labels = _volumes()
    slices = [(0, 12), (0, 16), (0, 20)]
    cfg = FinetuneConfig(train=TrainConfig(steps=12, lr=3e-3, patch_size=(16, 16, 8), batch_size=2, val_every=6,
                                           time_budget_s=None))
    res = finetune(image, labels, slices, model="segresnet_ct_segmentation", config=cfg, activate=True)
    assert res.name == "segresnet_ct_segmentation" and res.version == "v1" and res.check == "cv"
    assert (res.model_path / "model.safetensors").is_file() and (res.model_path / "card.json").is_file()
    parent = res.card.provenance["parent"]
    assert parent["spec"] == "segresnet_ct_segmentation@0.3.2"
    assert parent["bundle"] == {"name": "segresnet_ct_segmentation", "version": "0.3.2",
                                "sha256": hashlib.sha256((src / "models" / "model.pt").read_bytes()).hexdigest()}
    assert parent["sha256"] == parent["bundle"]["sha256"]
    bundle = bundle_card(dest)[0]  # the bundle's preprocessing is kept
    for key in ("architecture", "arch_args", "orientation", "spacing", "intensity", "roi_size", "classes"):
        assert getattr(res.card, key) == getattr(bundle, key), key
    assert versions.active_version("segresnet_ct_segmentation") == "v1"
    assert load_model("segresnet_ct_segmentation").card.version == "v1"
    out_v1 = segment(image, model="segresnet_ct_segmentation", device="cpu", amp=False).labels.array
    versions.activate("segresnet_ct_segmentation", "0.3.2")  # roll back to the bundle
    loaded = load_model("segresnet_ct_segmentation")
    assert loaded.card.provenance["source"] == "MONAI bundle"
    out_b = segment(image, model="segresnet_ct_segmentation", device="cpu", amp=False).labels.array
    assert out_v1.shape == out_b.shape == labels.array.shape
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == zip_before  # the bundle was never touched
    rows = versions.history("segresnet_ct_segmentation")
    assert [r["version"] for r in rows] == ["v1", "0.3.2"]
    assert rows[0]["parent"] == "segresnet_ct_segmentation@0.3.2"


def test_finetune_refuses_sigmoid_bundles(tmp_path):
    import json

    src = _segresnet_bundle(tmp_path / "seg")
    cfg = json.loads((src / "configs" / "inference.json").read_text())
    cfg["postprocessing"]["transforms"][0] = {"_target_": "Activationsd", "keys": "pred", "sigmoid": True}
    (src / "configs" / "inference.json").write_text(json.dumps(cfg))
    image, labels = _volumes()
    with pytest.raises(InputError, match="overlapping-region"):
        finetune(image, labels, [(0, 12), (0, 16)], model=src)
