"""Each config pattern of the zoo's 3D segmentation bundles, against MONAI's own ConfigParser run of the same bundle."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_medseg import segment
from napari_medseg.errors import ModelError
from napari_medseg.models.bundle import bundle_card, load_bundle

import zoo_factory as zf

AFFINE = np.array([[1.1, 0.0, 0.0, -20.0], [0.0, 0.9, 0.0, 10.0], [0.0, 0.0, 2.6, 3.0], [0, 0, 0, 1.0]])
LPS_AFFINE = np.array([[-0.8, 0.0, 0.0, 30.0], [0.0, -1.2, 0.0, -10.0], [0.0, 0.0, 2.2, 5.0], [0, 0, 0, 1.0]])


def _net(cfg_net: dict, **fixed):
    from monai.networks import nets

    args = {k: v for k, v in cfg_net.items() if not k.startswith("_")}
    args.update(fixed)
    return getattr(nets, cfg_net["_target_"].rsplit(".", 1)[-1])(**args)


def _compare(bundle, tmp_path, image_path, classes, overrides=None, min_fraction=0.02):
    ref, ref_affine = zf.monai_reference(bundle, image_path, tmp_path / "monai_out", overrides)
    ours = segment(image_path, model=bundle, device="cpu")
    arr = ours.labels.nifti_array()
    assert arr.shape == ref.shape
    np.testing.assert_allclose(ours.labels.nifti_affine(), ref_affine, atol=1e-4)
    dices = {}
    for value in classes:
        frac = float((ref == value).mean())
        assert frac > min_fraction, f"class {value} covers {frac:.3%} of MONAI's result: the test needs every class"
        dices[value] = zf.dice(arr == value, ref == value)
    print(f"{bundle.name}: Dice per class, ours vs MONAI's ConfigParser run: "
          + ", ".join(f"{v}: {d:.4f}" for v, d in dices.items()))
    assert all(d >= 0.99 for d in dices.values()), f"Dice per class, ours vs MONAI: {dices}"
    return ours, dices


# ---------------------------------------------------------------------------------------------- wholeBody pattern
@pytest.fixture(scope="module")
def wholebody_bundle(tmp_path_factory):
    cfg = zf.wholebody_like(highres=False)
    net = _net(cfg["network_def"], out_channels=4)
    zf.fit(net, zf.bins_task([-0.3, 0.05, 0.4], scale=(-1.0, 1.0)), steps=25)
    root = tmp_path_factory.mktemp("zoo") / "wholeBody_like_ct_segmentation"
    meta = zf.metadata("wholeBody-like", "0.2.1", ["background", "low", "mid", "high"])
    return zf.write_bundle(root, cfg, meta, {"models/model_lowres.pt": net.state_dict()})


def test_wholebody_conditionals_translate(wholebody_bundle):
    card, warnings = bundle_card(wholebody_bundle)
    assert card.spacing == (3.0, 3.0, 3.0)  # "$[1.5]*3 if @displayable_configs#highres else [3.0]*3", highres false
    assert card.weights_file == "models/model_lowres.pt"  # "$'model.pt' if ... else 'model_lowres.pt'"
    assert card.arch_args["out_channels"] == 4  # "$len(@class_edges) + 1"
    assert card.intensity == {"type": "chain", "steps": [{"type": "zscore", "nonzero": True, "channel_wise": False},
                                                         {"type": "minmax", "minv": -1.0, "maxv": 1.0}]}
    assert card.pad_mode == "replicate" and card.blend_mode == "gaussian" and card.invert_labels
    assert card.sw_batch_size == 1 and card.overlap == 0.25
    assert warnings == []


def test_wholebody_pattern_matches_monai(wholebody_bundle, tmp_path):
    img = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(zf.blob_ct((80, 72, 40)), AFFINE), img)
    _compare(wholebody_bundle, tmp_path, img, [0, 1, 2, 3])


# ---------------------------------------------------------------------------------------------- YAML + DynUNet
@pytest.fixture(scope="module")
def dynunet_bundle(tmp_path_factory):
    cfg = zf.dynunet_yaml_like()
    net = _net(cfg["network_def"], spatial_dims=3, in_channels=1, out_channels=3)
    zf.fit(net, zf.bins_task([0.3, 0.5]), steps=25)
    root = tmp_path_factory.mktemp("zoo") / "pediatric_like_ct_segmentation"
    meta = zf.metadata("DynUNet-like", "0.4.0", ["background", "organ a", "organ b"])
    return zf.write_bundle(root, cfg, meta, {"models/dynunet_FT.pt": net.state_dict()}, yaml=True)


def test_yaml_dynunet_pattern_matches_monai(dynunet_bundle, tmp_path):
    card, _ = bundle_card(dynunet_bundle)
    assert card.arch_args["spatial_dims"] == 3 and card.roi_size == (32, 32, 32) and card.crop_foreground
    assert card.arch_args["strides"] == [1, 2, 2, [2, 2, 1]] and card.weights_file == "models/dynunet_FT.pt"
    img = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(zf.blob_ct((60, 52, 28), offset=-40.0), LPS_AFFINE), img)
    _compare(dynunet_bundle, tmp_path, img, [0, 1, 2])


# ---------------------------------------------------------------------------------------------- SwinUNETR img_size
@pytest.fixture(scope="module")
def swin_bundle(tmp_path_factory):
    cfg = zf.swin_like()
    net_args = {k: v for k, v in cfg["network_def"].items() if k != "img_size"}
    net = _net(net_args)
    zf.fit(net, zf.bins_task([0.35, 0.55]), steps=25)
    root = tmp_path_factory.mktemp("zoo") / "swin_like_segmentation"
    meta = zf.metadata("Swin-like", "0.5.0", ["background", "a", "b"])
    return zf.write_bundle(root, cfg, meta, {"models/model.pt": net.state_dict()})


def test_swin_img_size_is_dropped_with_a_warning(swin_bundle, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(swin_bundle / "configs" / "inference.json"))
    with pytest.raises(Exception, match="img_size"):  # MONAI itself can no longer build it as published
        parser.get_parsed_content("network_def")
    loaded = load_bundle(swin_bundle)
    assert "img_size" not in loaded.card.arch_args
    assert any("img_size" in w and "MONAI 1.5" in w for w in loaded.warnings)
    img = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(zf.blob_ct((56, 48, 30)), AFFINE), img)
    fixed = json.loads((swin_bundle / "configs" / "inference.json").read_text())["network_def"]
    del fixed["img_size"]
    ours, _ = _compare(swin_bundle, tmp_path, img, [0, 1, 2], overrides={"network_def": fixed})
    assert any("img_size" in w for w in ours.warnings)


# ---------------------------------------------------------------------------------------------- DiNTS arch_ckpt
@pytest.fixture(scope="module")
def dints_bundle(tmp_path_factory):
    from monai.networks.nets import DiNTS, TopologyInstance, TopologySearch

    cfg = zf.dints_like()
    space_cfg = cfg["dints_space"]
    torch.manual_seed(3)
    search = TopologySearch(channel_mul=0.5, num_blocks=4, num_depths=3, use_downsample=True, device="cpu")
    node_a, arch_a, arch_c, _ = search.decode()
    arch = {"node_a": node_a, "arch_code_a": arch_a, "arch_code_c": arch_c}
    space = TopologyInstance(channel_mul=0.5, num_blocks=4, num_depths=3, use_downsample=True,
                             arch_code=[arch_a, arch_c], device="cpu")
    net = DiNTS(dints_space=space, in_channels=1, num_classes=3, use_downsample=True, node_a=torch.from_numpy(node_a))
    zf.fit(net, zf.bins_task([0.45, 0.55], scale=(0.25, 0.75)), steps=30)
    root = tmp_path_factory.mktemp("zoo") / "dints_like_segmentation"
    meta = zf.metadata("DiNTS-like", "0.4.5", ["background", "a", "b"])
    assert space_cfg["num_blocks"] == 4
    return zf.write_bundle(root, cfg, meta, {"models/model.pt": net.state_dict()},
                           extra={"models/search_code_1.pt": arch})


def test_dints_arch_ckpt_matches_monai(dints_bundle, tmp_path):
    card, _ = bundle_card(dints_bundle)
    assert card.architecture == "DiNTS" and card.arch_args["dints_space"]["_target_"] == "TopologyInstance"
    assert any("search_code_1.pt" in n and "weights_only=True" in n for n in card.provenance["notes"])
    img = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(zf.blob_ct((56, 48, 30), scale=120.0), AFFINE), img)
    # MONAI's run of the published pattern: torch.load without weights_only (numpy arrays) on the CPU
    overrides = {"arch_ckpt": "$torch.load(@arch_ckpt_path, map_location='cpu', weights_only=False)",
                 "dints_space#device": "cpu"}
    _compare(dints_bundle, tmp_path, img, [0, 1, 2], overrides=overrides)


@pytest.mark.parametrize("expr, needle", [
    ("$torch.load('/etc/passwd')", "outside the bundle"),
    ("$torch.load(@bundle_root + '/../secret.pt')", "outside the bundle"),
    ("$torch.load(@arch_ckpt_path, weights_only=False)", "weights_only=False"),
    ("$torch.load(@arch_ckpt_path, pickle_module=None)", "arguments other than"),
    ("$dict(torch.load(@arch_ckpt_path))", "inside a larger expression|calls dict"),
    ("$torch.load(@bundle_root + '/models/missing.pt')", "not a file in the bundle"),
])
def test_dints_arch_loads_other_than_a_bundle_file_are_refused(dints_bundle, tmp_path, expr, needle):
    bad = tmp_path / "bad"
    shutil.copytree(dints_bundle, bad)
    cfg = json.loads((bad / "configs" / "inference.json").read_text())
    cfg["arch_ckpt"] = expr
    (bad / "configs" / "inference.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=needle):
        bundle_card(bad)


def test_dints_absolute_bundle_root_reads_the_bundles_own_file(dints_bundle, tmp_path):
    """pancreas_ct_dints_segmentation publishes arch_ckpt_path as /workspace/.../<bundle>/models/<file>."""
    other = tmp_path / "other"
    shutil.copytree(dints_bundle, other)
    cfg = json.loads((other / "configs" / "inference.json").read_text())
    cfg["arch_ckpt_path"] = "/workspace/MONAI/model-zoo/models/dints_like_segmentation/models/search_code_1.pt"
    cfg["bundle_root"] = "/workspace/MONAI/model-zoo/models/dints_like_segmentation"
    (other / "configs" / "inference.json").write_text(json.dumps(cfg))
    card, _ = bundle_card(other)
    assert card.arch_args == bundle_card(dints_bundle)[0].arch_args
    assert any("read as the bundle's own models/search_code_1.pt" in n for n in card.provenance["notes"])


def test_dints_arch_file_with_code_is_refused(dints_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(dints_bundle, bad)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"node_a": Evil()}, bad / "models" / "search_code_1.pt")
    with pytest.raises(ModelError, match="weights_only=True"):
        bundle_card(bad)


# ---------------------------------------------------------------------------------------------- 4-channel MR
@pytest.fixture(scope="module")
def brats_bundle(tmp_path_factory):
    cfg = zf.brats_like()
    net = _net(cfg["network_def"])
    zf.fit(net, zf.brats_task(), steps=40, loss="bce")
    root = tmp_path_factory.mktemp("zoo") / "brats_like_mri_segmentation"
    meta = zf.metadata("BraTS-like", "0.5.3", ["Tumor core", "Whole tumor", "Enhancing tumor"],
                       inputs=["T1c", "T1", "T2", "FLAIR"], in_channels=4)
    return zf.write_bundle(root, cfg, meta, {"models/model.pt": net.state_dict()})


def _mr_channels(tmp_path, affine=AFFINE, shape=(48, 44, 30)):
    paths = []
    for c, name in enumerate(["t1c", "t1", "t2", "flair"]):
        arr = zf.blob_ct(shape, seed=10 + c, scale=1.0) * 100 + 400
        arr[:4] = 0  # background outside the head (NormalizeIntensityd nonzero)
        p = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr.astype(np.float32), affine), p)
        paths.append(p)
    return paths


def test_brats_card(brats_bundle):
    card, warnings = bundle_card(brats_bundle)
    assert card.in_channels == 4 and card.channel_names == ["T1c", "T1", "T2", "FLAIR"]
    assert card.activation == "sigmoid" and card.threshold == 0.5
    assert card.label_rules == [[2, 4], [0, 1], [1, 2]] and card.out_channels == 3
    assert card.class_names() == {0: "background", 1: "Tumor core", 2: "Whole tumor", 4: "Enhancing tumor"}
    assert card.spacing is None and card.orientation is None
    assert not any("Lambdad" in w for w in warnings)


def test_brats_four_channels_match_monai(brats_bundle, tmp_path):
    paths = _mr_channels(tmp_path)
    _compare(brats_bundle, tmp_path, paths, [0, 1, 2, 4], min_fraction=0.01)


def test_channels_on_other_grids_are_resampled_onto_the_first(brats_bundle, tmp_path):
    from napari_medseg.inference.channels import stack_channels
    from napari_medseg.io import read_volume

    paths = _mr_channels(tmp_path)
    # the same T2, stored with flipped axes (another orientation, same physical image)
    img = nib.load(paths[2])
    flipped = nib.Nifti1Image(np.asarray(img.dataobj)[::-1, :, ::-1].copy(),
                              img.affine @ np.array([[-1, 0, 0, 47], [0, 1, 0, 0], [0, 0, -1, 29], [0, 0, 0, 1.0]]))
    p_flip = tmp_path / "t2_flipped.nii.gz"
    nib.save(flipped, p_flip)
    stacked = stack_channels([paths[0], paths[1], p_flip, paths[3]])
    ref = read_volume(paths[2])
    assert stacked.is_4d and stacked.array.shape[0] == 4 and stacked.same_grid(read_volume(paths[0]))
    np.testing.assert_allclose(stacked.array[2], ref.array, atol=1e-4)
    a = segment([paths[0], paths[1], p_flip, paths[3]], model=brats_bundle, device="cpu")
    b = segment(paths, model=brats_bundle, device="cpu")
    assert np.array_equal(a.labels.array, b.labels.array)
    with pytest.raises(ModelError, match="4 input channel"):
        segment(paths[:3], model=brats_bundle, device="cpu")


def test_cli_channels(brats_bundle, tmp_path, capsys):
    from napari_medseg.cli import main

    paths = _mr_channels(tmp_path)
    out = tmp_path / "seg.nii.gz"
    rc = main(["predict", "--channels", ",".join(map(str, paths)), "-o", str(out), "--model", str(brats_bundle),
               "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "T1c: " + str(paths[0]) in printed and "FLAIR: " + str(paths[3]) in printed
    expected = segment(paths, model=brats_bundle, device="cpu").labels.nifti_array()
    assert np.array_equal(np.asarray(nib.load(out).dataobj), expected)
    assert main(["predict", "--channels", ",".join(map(str, paths[:2])), "-o", str(tmp_path / "x.nii.gz"),
                 "--model", str(brats_bundle), "--quiet"]) == 2  # a wrong command line, refused before any work
    assert "takes 4 channels (T1c, T1, T2, FLAIR)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- click-guided
@pytest.mark.parametrize("edit", [
    lambda c: c["preprocessing"]["transforms"].append({"_target_": "AddGuidanceSignalDeepEditd", "keys": "image"}),
    lambda c: c.update(network_def="$monai.networks.nets.vista3d132(in_channels=1)"),
    lambda c: c.update(inferer={"_target_": "scripts.inferer.Vista3dInferer", "roi_size": [32, 32, 32]}),
    lambda c: c.update(deepedit_transforms=[]),
])
def test_click_guided_bundles_point_to_the_prompts_feature(swin_bundle, tmp_path, edit):
    bad = tmp_path / "interactive"
    shutil.copytree(swin_bundle, bad)
    cfg = json.loads((bad / "configs" / "inference.json").read_text())
    edit(cfg)
    (bad / "configs" / "inference.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="click-guided.*prompts feature"):
        load_bundle(bad)
