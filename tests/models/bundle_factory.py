"""Helpers for model tests: a MONAI Model Zoo bundle config (spleen layout), a fitted tiny UNet, blob images."""

from __future__ import annotations

import numpy as np

#: configs/inference.json of MONAI's spleen_ct_segmentation bundle (structure and keys as published),
#: with a smaller network and ROI so the test runs in seconds.
SPLEEN_INFERENCE = {
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "dataset_dir": "/workspace/data/Task09_Spleen",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": {
        "_target_": "UNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "channels": [8, 16, 32],
        "strides": [2, 2],
        "num_res_units": 1,
        "norm": "batch",
    },
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57, "a_max": 164, "b_min": 0, "b_max": 1,
             "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"},
        ],
    },
    "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 4},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 4, "overlap": 0.5},
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "meta_key_postfix": "meta_dict", "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "resample": False, "separate_folder": False},
        ],
    },
    "handlers": [
        {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'", "load_dict": {"model": "@network"}},
        {"_target_": "StatsHandler", "iteration_log": False},
    ],
    "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                  "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                  "val_handlers": "@handlers", "amp": True},
    "initialize": ["$setattr(torch.backends.cudnn, 'benchmark', True)"],
    "run": ["$@evaluator.run()"],
}

SPLEEN_METADATA = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
    "version": "0.5.0",
    "name": "Spleen CT segmentation (test copy)",
    "task": "Decathlon spleen segmentation",
    "description": "test bundle with small fitted weights",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "num_channels": 1, "spatial_shape": [96, 96, 96]}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                             "channel_def": {"0": "background", "1": "spleen"}}},
    },
}


def fit_threshold_unet(args: dict, a_min=-57.0, a_max=164.0, hu=50.0, steps=40, size=32, seed=0):
    """A small MONAI UNet briefly trained so that argmax = (HU > ``hu``) on smooth blobs: a non-trivial,
    deterministic segmentation (random weights give a near-constant output)."""
    import torch
    from monai.networks.nets import UNet
    from scipy import ndimage

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = UNet(**args)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(steps):
        vols = []
        for _b in range(2):
            v = ndimage.gaussian_filter(rng.normal(size=(size,) * 3), 3)
            vols.append(v / v.std() * 120.0)
        hu_img = torch.tensor(np.stack(vols)[:, None], dtype=torch.float32)
        x = ((hu_img - a_min) / (a_max - a_min)).clamp(0, 1)
        y = (hu_img[:, 0] > hu).long()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def blob_image(shape=(48, 40, 26), seed=1, scale=120.0) -> np.ndarray:
    """Smooth random HU field [i, j, k] with structures crossing the 50 HU threshold."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    v = ndimage.gaussian_filter(rng.normal(size=shape), 4)
    return (v / v.std() * scale).astype(np.float32)
