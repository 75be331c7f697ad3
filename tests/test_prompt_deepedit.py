"""MONAI DeepEdit bundles through `prompt_segment(model=...)`: a small synthetic bundle written at test time
(the layout and config of the Model Zoo's spleen_deepedit_annotation, a tiny DynUNet), read without eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_medseg.prompt import PromptModelError, prompt_segment
from napari_medseg.prompt.deepedit import deepedit_input, load_deepedit_bundle
from napari_medseg.volume import Volume

SPATIAL = [16, 12, 8]  # Resized spatial_size (x, y, z)


def _config(label_names=None, extra=None, signal=True):
    t = lambda name, **kw: {"_target_": name, **kw}  # noqa: E731
    deepedit = [t("scripts.transforms.OrientationGuidanceMultipleLabelDeepEditd", ref_image="@image_key",
                  label_names="@label_names"),
                t("AddGuidanceFromPointsDeepEditd", ref_image="@image_key", guidance="guidance", label_names="@label_names"),
                t("Resized", keys="@image_key", spatial_size="@spatial_size", mode="area"),
                t("ResizeGuidanceMultipleLabelDeepEditd", guidance="guidance", ref_image="@image_key")]
    if signal:
        deepedit.append(t("AddGuidanceSignalDeepEditd", keys="@image_key", guidance="guidance",
                          number_intensity_ch="@number_intensity_ch"))
    pre = [t("LoadImaged", keys="@image_key", reader="ITKReader"), t("EnsureChannelFirstd", keys="@image_key"),
           t("Orientationd", keys="@image_key", axcodes="RAS"),
           t("ScaleIntensityRanged", keys="@image_key", a_min=-175, a_max=250, b_min=0.0, b_max=1.0, clip=True)]
    if extra:
        pre.append(t(extra, keys="@image_key"))
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "image_key": "image",
        "label_names": label_names or {"spleen": 1, "background": 0},
        "spatial_size": SPATIAL,
        "number_intensity_ch": 1,
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "DynUNet", "spatial_dims": 3, "in_channels": "$len(@label_names) + @number_intensity_ch",
                        "out_channels": "$len(@label_names)", "kernel_size": [3, 3, 3], "strides": [1, 2, 2],
                        "upsample_kernel_size": [2, 2], "norm_name": "instance", "deep_supervision": False,
                        "res_block": True},
        "network": "$@network_def.to(@device)",
        "preprocessing_transforms": pre,
        "deepedit_transforms": deepedit,
        "extra_transforms": [t("EnsureTyped", keys="@image_key")],
        "preprocessing": {"_target_": "Compose",
                          "transforms": "$@preprocessing_transforms + @deepedit_transforms + @extra_transforms"},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": [t("Activationsd", keys="pred", softmax=True),
                                                                 t("AsDiscreted", keys="pred", argmax=True)]},
        "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                             "load_dict": {"model": "@network"}},
        # never evaluated: a bundle config is data
        "initialize": ["$__import__('pathlib').Path('PWNED').write_text('x')"],
        "run": ["$@evaluator.run()"],
    }


def write_bundle(root, bias=None, **kw):
    from monai.networks.nets import DynUNet

    cfg = _config(**kw)
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(cfg))
    (root / "configs" / "metadata.json").write_text(json.dumps({"name": "Synthetic DeepEdit", "version": "0.1"}))
    n = len(cfg["label_names"])
    torch.manual_seed(0)
    net = DynUNet(3, 1 + n, n, [3, 3, 3], [1, 2, 2], [2, 2], norm_name="instance", res_block=True)
    if bias is not None:  # a network whose answer is known: constant logits per output channel
        conv = net.output_block.conv.conv
        torch.nn.init.zeros_(conv.weight)
        conv.bias.data = torch.tensor(bias, dtype=torch.float32)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def volume():
    rng = np.random.default_rng(3)
    arr = (rng.normal(40, 80, (10, 14, 18))).astype(np.float32)  # [k, j, i]; LPS axes (direction identity)
    arr[3:7, 4:9, 5:12] += 200
    return Volume(arr, (1.5, 1.0, 2.0), (10.0, -5.0, 3.0), np.eye(3))


def _reference_input(vol, pos, neg, order):
    """The same input made by MONAI's own transforms from the bundle's chain (Orientationd, ScaleIntensityRanged,
    Resized, ResizeGuidanceMultipleLabelDeepEditd, AddGuidanceSignalDeepEditd), clicks oriented by hand."""
    from monai.apps.deepedit.transforms import AddGuidanceSignalDeepEditd, ResizeGuidanceMultipleLabelDeepEditd
    from monai.data import MetaTensor
    from monai.transforms import Orientationd, Resized, ScaleIntensityRanged

    nk, nj, ni = vol.spatial_shape
    aff = np.diag([-vol.spacing[0], -vol.spacing[1], vol.spacing[2], 1.0])  # LPS identity -> RAS affine
    aff[:3, 3] = [-vol.origin[0], -vol.origin[1], vol.origin[2]]
    img = MetaTensor(torch.from_numpy(np.ascontiguousarray(vol.array.transpose(2, 1, 0)[None])), affine=torch.tensor(aff),
                     meta={"spatial_shape": np.array([ni, nj, nk])})
    d = Orientationd("image", axcodes="RAS")({"image": img})
    d = ScaleIntensityRanged("image", a_min=-175, a_max=250, b_min=0.0, b_max=1.0, clip=True)(d)
    ras = lambda p: [ni - 1 - p[2], nj - 1 - p[1], p[0]]  # noqa: E731 - RAS flips the L and P axes of (i, j, k)
    clicks = {"spleen": [ras(p) for p in pos], "background": [ras(p) for p in neg]}
    d["guidance"] = {k: clicks[k] for k in order}
    d = Resized("image", spatial_size=SPATIAL, mode="area")(d)
    d = ResizeGuidanceMultipleLabelDeepEditd(guidance="guidance", ref_image="image")(d)
    d = AddGuidanceSignalDeepEditd("image", guidance="guidance", number_intensity_ch=1)(d)
    return np.asarray(d["image"])


@pytest.mark.parametrize("label_names", [{"spleen": 1, "background": 0}, {"background": 0, "spleen": 1}])
def test_deepedit_input_matches_monai_transforms(tmp_path, label_names):
    bundle = write_bundle(tmp_path / "spleen_deepedit", label_names=label_names)
    model = load_deepedit_bundle(bundle)
    assert model.foreground == "spleen" and model.label_names == label_names and model.card.orientation == "RAS"
    vol = volume()
    pos, neg = [(5, 6, 8), (4, 7, 10)], [(8, 2, 15)]
    x, _, _ = deepedit_input(vol, pos, neg, model)
    ref = _reference_input(vol, pos, neg, list(label_names))
    assert x.shape == (3, *SPATIAL) == ref.shape
    np.testing.assert_allclose(x, ref, atol=1e-5)
    ch = 1 + list(label_names).index("spleen")  # the positive clicks' channel follows label_names' order
    assert x[ch].max() == 1.0 and x[3 - ch].max() == 1.0 and not np.allclose(x[ch], x[3 - ch])
    assert not (tmp_path / "spleen_deepedit" / "PWNED").exists() and not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("bias, expect", [([0.0, 5.0], 1), ([5.0, 0.0], 0)])
def test_prompt_segment_runs_a_deepedit_bundle(tmp_path, bias, expect):
    bundle = write_bundle(tmp_path / "b", bias=bias)  # output channel 1 (spleen) or 0 wins everywhere
    vol = volume()
    out = prompt_segment(vol, positive=[(5, 6, 8)], model=bundle, bf16=False)
    assert out.same_grid(vol) and out.array.dtype == np.uint8
    assert out.meta["prompt"]["backend"] == "MONAI DeepEdit bundle" and out.meta["prompt"]["crop_shape"] == SPATIAL[::-1]
    assert np.all(out.array == expect)


def test_bundles_prompt_segment_cannot_run_are_refused(tmp_path):
    vol = volume()
    with pytest.raises(PromptModelError, match="not a DeepEdit bundle"):  # e.g. VISTA3D: no DeepEdit click signal
        prompt_segment(vol, positive=[(5, 6, 8)], model=write_bundle(tmp_path / "a", signal=False))
    with pytest.raises(Exception, match="RandSomethingd"):  # a transform that cannot be translated is named
        prompt_segment(vol, positive=[(5, 6, 8)], model=write_bundle(tmp_path / "b", extra="RandSomethingd"))
    with pytest.raises(PromptModelError, match="background"):
        prompt_segment(vol, positive=[(5, 6, 8)], model=write_bundle(tmp_path / "c", label_names={"spleen": 1, "liver": 2}))
