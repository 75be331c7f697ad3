"""Test bundles reproducing the config patterns of MONAI Model Zoo 3D segmentation bundles.

The configs are written here (not copied): each reproduces one pattern the zoo uses (expressions with
``@a#b`` references, YAML with ``$len(@spatial_size)``, SwinUNETR ``img_size``, DiNTS ``arch_ckpt``, a
4-channel sigmoid MR bundle). Weights are seeded and briefly fitted to a deterministic task of the network's
own input, so that segmentations are non-trivial. `monai_reference` runs the bundle with MONAI's own
`ConfigParser` (dataloader, network, inferer, postprocessing, as ``monai.bundle run`` would with its
SupervisedEvaluator, which needs pytorch-ignite).
"""

from __future__ import annotations

import copy
import http.server
import json
import threading
from pathlib import Path

import numpy as np

DEVICE_EXPR = "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')"


def _post(pred_first_discrete: bool, nearest: bool, extra=()):
    steps = [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]
    inv = {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "@image_key",
           "nearest_interp": nearest, "to_tensor": True}
    disc = {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}
    steps += [disc, inv] if pred_first_discrete else [inv, disc]
    steps += list(extra)
    steps.append({"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                  "separate_folder": False, "output_dtype": "$numpy.uint8"})
    return {"_target_": "Compose", "transforms": steps}


def _common(pre, inferer, post, network_def, checkpoint="$@bundle_root + '/models/model.pt'"):
    return {
        "imports": ["$import glob", "$import os", "$import numpy"],
        "bundle_root": ".",
        "image_key": "image",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$list(sorted(glob.glob('/nonexistent/*.nii.gz')))",
        "device": DEVICE_EXPR,
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": pre},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 2},
        "inferer": inferer,
        "postprocessing": post,
        "checkpointloader": {"_target_": "CheckpointLoader", "load_path": checkpoint, "load_dict": {"model": "@network"}},
        "initialize": ["$@checkpointloader(@evaluator)"],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing"},
        "run": ["$@evaluator.run()"],
    }


def _load(keys="@image_key"):
    return [{"_target_": "LoadImaged", "keys": keys}, {"_target_": "EnsureTyped", "keys": keys},
            {"_target_": "EnsureChannelFirstd", "keys": keys}]


def wholebody_like(highres: bool = False):
    """SegResNet, pixdim and checkpoint name chosen by ``@displayable_configs#highres`` conditionals,
    z-score + min-max intensity, replicate padding, argmax before a nearest Invertd."""
    pre = _load() + [
        {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "@image_key", "pixdim": "@pixdim", "mode": "bilinear"},
        {"_target_": "NormalizeIntensityd", "keys": "@image_key", "nonzero": True},
        {"_target_": "ScaleIntensityd", "keys": "@image_key", "minv": -1.0, "maxv": 1.0},
    ]
    net = {"_target_": "SegResNet", "spatial_dims": 3, "in_channels": 1, "out_channels": "@num_classes",
           "init_filters": 8, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "dropout_prob": 0.2}
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32],
               "sw_batch_size": "@displayable_configs#sw_batch_size", "overlap": "@displayable_configs#sw_overlap",
               "padding_mode": "replicate", "mode": "gaussian", "device": DEVICE_EXPR}
    cfg = _common(pre, inferer, _post(True, True), net, "$@bundle_root + '/models/' + @modelname")
    cfg.update({
        "displayable_configs": {"highres": highres, "sw_overlap": 0.25, "sw_batch_size": 1},
        "num_classes": "$len(@class_edges) + 1",
        "class_edges": [-0.3, 0.05, 0.4],
        "pixdim": "$[1.5, 1.5, 1.5] if @displayable_configs#highres else [3.0, 3.0, 3.0]",
        "modelname": "$'model.pt' if @displayable_configs#highres else 'model_lowres.pt'",
    })
    return cfg


def dynunet_yaml_like():
    """DynUNet with spatial_dims = $len(@spatial_size), @references for channels, a CropForegroundd,
    CastToTyped with a torch dtype expression and a CheckpointLoader naming models/dynunet_FT.pt."""
    pre = [{"_target_": "LoadImaged", "keys": "@image_key"}, {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
           {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
           {"_target_": "Spacingd", "keys": ["@image_key"], "pixdim": [1.5, 1.5, 3.0], "mode": ["bilinear"]},
           {"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": -250, "a_max": 400, "b_min": 0,
            "b_max": 1, "clip": True},
           {"_target_": "CropForegroundd", "keys": ["@image_key"], "source_key": "@image_key", "mode": ["minimum"]},
           {"_target_": "EnsureTyped", "keys": "image"},
           {"_target_": "CastToTyped", "keys": "@image_key", "dtype": "$torch.float32"}]
    net = {"_target_": "monai.networks.nets.DynUNet", "spatial_dims": "@spatial_dims", "in_channels": "@input_channels",
           "out_channels": "@output_channels", "kernel_size": [3, 3, 3, 3], "strides": [1, 2, 2, [2, 2, 1]],
           "upsample_kernel_size": [2, 2, [2, 2, 1]], "filters": [8, 16, 32, 32], "norm_name": "instance",
           "deep_supervision": False, "res_block": True}
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": "@spatial_size", "sw_batch_size": 4, "overlap": 0.5}
    cfg = _common(pre, inferer, _post(False, False), net, "$@bundle_root + '/models/dynunet_FT.pt'")
    cfg.update({"input_channels": 1, "output_channels": 3, "spatial_size": [32, 32, 32],
                "spatial_dims": "$len(@spatial_size)", "workflow_type": "inference"})
    del cfg["checkpointloader"]
    cfg["initialize"] = ["$setattr(torch.backends.cudnn, 'benchmark', True)"]
    cfg["handlers"] = [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/dynunet_FT.pt'",
                        "load_dict": {"model": "@network"}}, {"_target_": "StatsHandler", "iteration_log": False}]
    return cfg


def ct_pre(pixdim=(1.5, 1.5, 2.0), a_min=-175, a_max=250):
    return _load() + [{"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
                      {"_target_": "Spacingd", "keys": "@image_key", "pixdim": list(pixdim), "mode": "bilinear"},
                      {"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": a_min, "a_max": a_max,
                       "b_min": 0.0, "b_max": 1.0, "clip": True}]


def swin_like():
    """SwinUNETR passing img_size (removed in MONAI 1.5)."""
    net = {"_target_": "SwinUNETR", "spatial_dims": 3, "img_size": "@roi", "in_channels": 1, "out_channels": 3,
           "feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "norm_name": "batch",
           "use_checkpoint": False}
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": "@roi", "sw_batch_size": 2, "overlap": 0.5}
    cfg = _common(ct_pre(), inferer, _post(False, False), net)
    cfg["roi"] = [32, 32, 32]
    return cfg


def dints_like():
    """DiNTS whose TopologyInstance and node_a come from an architecture checkpoint in the bundle."""
    net = {"_target_": "monai.networks.nets.DiNTS", "dints_space": "@dints_space", "in_channels": "@input_channels",
           "num_classes": "@output_classes", "use_downsample": True,
           "node_a": "$torch.from_numpy(@arch_ckpt['node_a'])"}
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 2, "overlap": 0.625}
    cfg = _common(ct_pre((1.2, 1.2, 1.5), -500, 500), inferer, _post(False, False), net)
    cfg.update({
        "input_channels": 1, "output_classes": 3,
        "arch_ckpt_path": "$@bundle_root + '/models/search_code_1.pt'",
        "arch_ckpt": "$torch.load(@arch_ckpt_path, map_location=torch.device('cuda'))",
        "dints_space": {"_target_": "monai.networks.nets.TopologyInstance", "channel_mul": 0.5, "num_blocks": 4,
                        "num_depths": 3, "use_downsample": True,
                        "arch_code": ["$@arch_ckpt['arch_code_a']", "$@arch_ckpt['arch_code_c']"],
                        "device": "$torch.device('cuda')"},
    })
    return cfg


BRATS_LAMBDA = ("$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, "
                "torch.where(x[[1]] > 0, 2, 0)))")


def brats_like():
    """4-channel MR SegResNet on the native grid, channel-wise z-score, sigmoid regions merged by a Lambdad."""
    pre = [{"_target_": "LoadImaged", "keys": "image"},
           {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True}]
    net = {"_target_": "SegResNet", "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "init_filters": 8,
           "in_channels": 4, "out_channels": 3, "dropout_prob": 0.2}
    inferer = {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 24], "sw_batch_size": 1, "overlap": 0.5}
    post = {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "meta_keys": "pred_meta_dict", "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
        {"_target_": "Lambdad", "keys": "pred", "func": BRATS_LAMBDA},
        {"_target_": "SaveImaged", "keys": "pred", "meta_keys": "pred_meta_dict", "output_dir": "@output_dir",
         "output_postfix": "seg", "output_dtype": "uint8", "resample": False, "squeeze_end_dims": True,
         "separate_folder": False}]}
    cfg = _common(pre, inferer, post, net)
    cfg["dataset"]["data"] = "@datalist"
    cfg["datalist"] = []
    return cfg


def metadata(name, version, classes, inputs=None, in_channels=1, num_out=None):
    meta = {"version": version, "name": name, "task": "test segmentation", "description": f"test bundle {name}",
            "network_data_format": {
                "inputs": {"image": {"type": "image", "num_channels": in_channels}},
                "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": num_out or len(classes),
                                     "channel_def": {str(i): n for i, n in enumerate(classes)}}}}}
    if inputs:
        meta["network_data_format"]["inputs"]["image"]["channel_def"] = {str(i): n for i, n in enumerate(inputs)}
    return meta


def write_bundle(root: Path, cfg: dict, meta: dict, weights: dict, yaml: bool = False, extra: dict | None = None) -> Path:
    """A bundle folder: configs/inference.(json|yaml), configs/metadata.json, weights {relpath: state_dict}."""
    import torch

    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    if yaml:
        import yaml as _yaml

        (root / "configs" / "inference.yaml").write_text("---\n" + _yaml.safe_dump(cfg, sort_keys=False))
    else:
        (root / "configs" / "inference.json").write_text(json.dumps(cfg, indent=2))
    (root / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    for rel, sd in weights.items():
        torch.save(sd, root / rel)
    for rel, obj in (extra or {}).items():
        torch.save(obj, root / rel)
    (root / "LICENSE").write_text("test bundle")
    return root


# ---------------------------------------------------------------------------------------------- weights
def smooth_fields(rng, n, channels, size):
    from scipy import ndimage

    out = np.empty((n, channels, *size), dtype=np.float32)
    for b in range(n):
        for c in range(channels):
            v = ndimage.gaussian_filter(rng.normal(size=size), 3)
            out[b, c] = v / v.std()
    return out


def fit(net, make_batch, steps=40, lr=1e-2, seed=0, loss="ce"):
    """Briefly fit ``net`` on batches ``(x, y) = make_batch(rng)``; seeded, returns the net in eval mode."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        x, y = make_batch(rng)
        out = net(torch.from_numpy(x))
        out = out[0] if isinstance(out, (list, tuple)) else out
        if loss == "ce":
            value = torch.nn.functional.cross_entropy(out, torch.from_numpy(y).long())
        else:
            value = torch.nn.functional.binary_cross_entropy_with_logits(out, torch.from_numpy(y).float())
        opt.zero_grad()
        value.backward()
        opt.step()
    return net.eval()


def bins_task(edges, channels=1, size=(32, 32, 32), scale=(0.0, 1.0), n=2):
    """Inputs: smooth fields mapped to ``scale`` range-ish; target: the bin of channel 0 among ``edges``."""
    lo, hi = scale

    def make(rng):
        f = smooth_fields(rng, n, channels, size)
        x = (lo + (hi - lo) * (f * 0.25 + 0.5)).astype(np.float32)
        return x, np.digitize(x[:, 0], edges)

    return make


def brats_task(size=(32, 32, 24), n=2):
    """4 z-scored channels; regions: TC = ch0 > 0.3, WT = ch3 > 0, ET = ch1 > 0.3."""
    def make(rng):
        x = smooth_fields(rng, n, 4, size)
        y = np.stack([x[:, 0] > 0.3, x[:, 3] > 0.0, x[:, 1] > 0.3], 1)
        return x, y

    return make


def blob_ct(shape=(56, 48, 30), seed=1, scale=150.0, offset=0.0) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    v = ndimage.gaussian_filter(rng.normal(size=shape), 4)
    return (v / v.std() * scale + offset).astype(np.float32)


# ---------------------------------------------------------------------------------------------- MONAI's run
def monai_reference(bundle: Path, image, out_dir: Path, overrides: dict | None = None):
    """Run ``bundle`` with MONAI's ConfigParser on ``image`` (a path, or a list of paths as channels); the
    weights are the file its CheckpointLoader names (``checkpointloader`` or ``handlers``), as MONAI resolves it."""
    import nibabel as nib
    import torch
    from monai.bundle import ConfigParser
    from monai.data import decollate_batch

    cfg_file = next(p for p in (bundle / "configs").iterdir() if p.stem == "inference")
    parser = ConfigParser()
    parser.read_config(str(cfg_file))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    parser["output_dir"] = str(out_dir)
    item = {"image": [str(p) for p in image] if isinstance(image, (list, tuple)) else str(image)}
    parser["dataset"]["data"] = [item]
    parser["device"] = "$torch.device('cpu')"
    parser["dataloader"]["num_workers"] = 0
    for k, v in (overrides or {}).items():
        parser[k] = copy.deepcopy(v)
    network = parser.get_parsed_content("network")
    ids = ["checkpointloader#load_path"] + [f"handlers#{i}#load_path" for i in range(len(parser.get("handlers", [])))]
    weights = next(parser.get_parsed_content(i) for i in ids if parser.get(i) is not None)
    network.load_state_dict(torch.load(weights, weights_only=True))
    network.eval()
    inferer = parser.get_parsed_content("inferer")
    post = parser.get_parsed_content("postprocessing")
    for batch in parser.get_parsed_content("dataloader"):
        with torch.no_grad():
            batch["pred"] = inferer(batch["image"], network)
        for it in decollate_batch(batch):
            post(it)
    (seg,) = list(Path(out_dir).rglob("*_seg.nii.gz"))
    img = nib.load(seg)
    return np.asarray(img.dataobj).squeeze().astype(np.int64), img.affine


def zip_bundle(bundle: Path, path: Path, top: str) -> bytes:
    """``bundle`` zipped as the zoo publishes it (members under one top folder); returns the bytes."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for p in bundle.rglob("*"):
            if p.is_file():
                zf.write(p, f"{top}/" + p.relative_to(bundle).as_posix())
    return path.read_bytes()


def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


class LoopbackServer:
    """Serves ``routes`` {path: bytes}; paths in ``cut`` send a full Content-Length but stop half-way."""

    def __init__(self):
        self.routes, self.cut, self.hits = {}, set(), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                server.hits.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.cut:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
