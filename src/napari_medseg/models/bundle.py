"""MONAI Model Zoo bundles (``configs/inference.json|yaml`` + ``configs/metadata.json`` + weights).

No bundle code is ever run. Config values are resolved by `napari_medseg.models.bundle_config.Resolver`
(``@id`` references followed, ``$`` expressions interpreted by `napari_medseg.models.expressions`, never
``eval``), and these parts are translated into a `ModelCard`:

* ``network_def``: a class of `monai.networks.nets`; arguments removed/renamed by MONAI releases are fixed
  with a warning (`napari_medseg.models.stale_args`); DiNTS takes its ``TopologyInstance`` and ``node_a``
  from an architecture file read with ``torch.load(weights_only=True)``;
* ``preprocessing``: the standard transforms (see `SUPPORTED`); anything else is a `ModelError` naming it;
* ``inferer``: ``SlidingWindowInferer`` roi_size / sw_batch_size / overlap / mode;
* ``postprocessing`` (`napari_medseg.models.bundle_post`): softmax/argmax or sigmoid/threshold (with a
  label-merging ``Lambdad`` recognised by its syntax tree), KeepLargestConnectedComponentd, FillHolesd.

Class and input channel names come from ``metadata.json`` (``network_data_format``). Weights (the
CheckpointLoader's ``load_path``, default ``models/model.pt``) load with ``torch.load(weights_only=True)``;
TorchScript files and click-guided (interactive) bundles are refused.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from napari_medseg.errors import ModelError
from napari_medseg.models.bundle_config import BundleFiles, Resolver, load_config
from napari_medseg.models.card import ModelCard
from napari_medseg.models.expressions import DEVICE
from napari_medseg.models.package import LoadedModel, load_state_dict_bytes, sha256_bytes

#: transforms that need no translation (loading, typing, channel handling)
NO_OPS = {"LoadImaged", "LoadImage", "EnsureChannelFirstd", "EnsureChannelFirst", "AddChanneld", "EnsureTyped",
          "EnsureType", "ToTensord", "ToTensor", "CastToTyped", "ToDeviced", "Identityd"}
SUPPORTED = NO_OPS | {"Orientationd", "Spacingd", "ScaleIntensityRanged", "NormalizeIntensityd", "CropForegroundd",
                      "ScaleIntensityd"}
#: marks of click-guided (interactive) bundles: transform/network/inferer names and config ids
_INTERACTIVE = re.compile(r"deepedit|guidance|vista3d|pointbased|addclick|clicksignal|interactive|sam2?\b|"
                          r"segment_anything|label_prompt|point_prompt", re.IGNORECASE)


def target_name(target: Any, trail: str, where: str) -> str:
    if not isinstance(target, str):
        raise ModelError(f"{where}: {trail}._target_ must be a class name, got {target!r}")
    if target.startswith("$"):
        raise ModelError(f"{where}: {trail}._target_ is code ({target[:80]!r}); refusing to evaluate it")
    return target.rsplit(".", 1)[-1]


def _check_interactive(cfg: dict, meta: dict, path: Path, where: str) -> None:
    hits: list[str] = []

    def walk(node, trail):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "_target_" and isinstance(v, str) and _INTERACTIVE.search(v):
                    hits.append(f"{trail}: {v}")
                elif isinstance(k, str) and _INTERACTIVE.search(k) and trail == "":
                    hits.append(k)
                walk(v, f"{trail}.{k}" if trail else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{trail}[{i}]")
        elif isinstance(node, str) and node.startswith("$") and _INTERACTIVE.search(node) and trail.startswith("network"):
            hits.append(f"{trail}: {node[:60]}")

    walk({k: v for k, v in cfg.items() if k in ("network_def", "network", "inferer", "preprocessing",
                                                   "preprocessing_transforms", "deepedit_transforms")}, "")
    walk({k: None for k in cfg}, "")  # top-level ids such as deepedit_transforms
    text = " ".join(str(meta.get(k, "")) for k in ("name", "task"))
    if "deepedit" in text.lower() or "interactive" in text.lower() or "vista3d" in text.lower():
        hits.append(f"metadata: {text[:80]}")
    if hits:
        raise ModelError(
            f"{path}: a click-guided (interactive) bundle ({'; '.join(hits[:3])}). Automatic segmentation "
            f"(segment, medseg predict, the Segment widget) runs automatic segmentation bundles only; a DeepEdit "
            f"bundle runs through the prompts feature instead (prompt_segment(volume, positive=[...], model=<this "
            f"bundle>), or the Prompt widget); VISTA3D and SAM-style bundles are not supported yet"
        )


# ---------------------------------------------------------------------------------------------- network
def _dints_args(args: dict, res: Resolver) -> dict:
    space = args.get("dints_space")
    if not isinstance(space, dict) or target_name(space.get("_target_"), "dints_space", res.where) != "TopologyInstance":
        raise ModelError(f"{res.where}: DiNTS needs dints_space = a monai.networks.nets.TopologyInstance definition")
    space = {k: v for k, v in space.items() if k == "_target_" or not str(k).startswith("_")}
    space["_target_"] = "TopologyInstance"
    space.pop("device", None)
    args = dict(args, dints_space=space)
    for key in ("node_a",):
        if key in args and not isinstance(args[key], list):
            raise ModelError(f"{res.where}: DiNTS {key} must be an array (read from the architecture file)")
    return args


def _network(cfg: dict, res: Resolver, warnings: list[str]) -> tuple[str, dict]:
    from napari_medseg.models.known import network_args, remember_network_args
    from napari_medseg.models.network import network_class
    from napari_medseg.models.stale_args import apply_stale_args

    net = cfg.get("network_def")
    if isinstance(net, str) and net.startswith("@"):
        net = res.ref(net[1:], "network_def")
    if isinstance(net, str) and net.startswith("$"):
        raise ModelError(f"{res.where}: network_def is code ({net[:80]!r}); napari-medseg builds networks only from "
                         "a {'_target_': 'monai.networks.nets.<Class>', ...} definition")
    if not isinstance(net, dict) or "_target_" not in net:
        raise ModelError(f"{res.where}: no network_def with a _target_ (expected e.g. {{'_target_': 'UNet', ...}})")
    target = net["_target_"]
    if isinstance(target, str) and target.startswith("@"):
        target = res.literal(target, "network_def._target_")
    name = target_name(target, "network_def", res.where)
    if "." in str(target) and not str(target).startswith("monai.networks.nets."):
        raise ModelError(f"{res.where}: network_def._target_ {target!r} is not in monai.networks.nets; refusing it")
    raw = res.args(net, "network_def")
    known = network_args(name, raw) if name != "DiNTS" else None  # checked by an earlier run: no MONAI import
    if known is not None:
        args, stale = known
    else:
        try:
            cls = network_class(name)
        except ModelError as e:
            raise ModelError(f"{res.where}: network_def._target_ {target!r}: {e}") from e
        args, stale = apply_stale_args(cls, name, dict(raw))
        if name != "DiNTS":
            remember_network_args(name, raw, args, stale)
    warnings += stale
    if name == "DiNTS":
        args = _dints_args(args, res)
    else:
        nested = [k for k, v in args.items() if isinstance(v, dict) and "_target_" in v]
        if nested:
            raise ModelError(f"{res.where}: network_def.{nested[0]} is a component ({args[nested[0]]['_target_']}); "
                             "only literal network arguments are supported")
    return name, args


# ---------------------------------------------------------------------------------------------- transforms
def transforms(node, res: Resolver, trail: str) -> list[dict]:
    """The transform definitions of a Compose / list (references and list expressions followed)."""
    node = res.shallow(node, trail)
    if node is None:
        return []
    if isinstance(node, dict) and target_name(node.get("_target_"), trail, res.where) == "Compose":
        node = res.shallow(node.get("transforms", []), f"{trail}.transforms")
    if not isinstance(node, list):
        raise ModelError(f"{res.where}: {trail} must be a Compose or a list of transforms")
    out = []
    for i, t in enumerate(node):
        t = res.shallow(t, f"{trail}[{i}]")
        if not isinstance(t, dict):
            raise ModelError(f"{res.where}: {trail}[{i}] is not a transform definition: {str(t)[:80]!r}")
        if res.literal(t.get("_disabled_", False), f"{trail}[{i}]._disabled_") is True:
            continue
        out.append(t)
    return out


def _arg(t: dict, key: str, res: Resolver, trail: str, default=None):
    if key not in t:
        return default
    v = res.literal(t[key], f"{trail}.{key}")
    return default if v is DEVICE else v


def _chain(card: dict, step: dict) -> None:
    """Add an intensity step: one step is the card's intensity, several are {"type": "chain", "steps": [...]}."""
    cur = card["intensity"]
    if cur.get("type") in (None, "none"):
        card["intensity"] = step
    elif cur.get("type") == "chain":
        cur["steps"].append(step)
    else:
        card["intensity"] = {"type": "chain", "steps": [cur, step]}


def _translate_pre(items: list[dict], res: Resolver, card: dict) -> None:
    card.update(orientation=None, spacing=None, intensity={"type": "none"}, crop_foreground=False)
    for i, t in enumerate(items):
        trail = f"preprocessing[{i}]"
        name = target_name(t.get("_target_"), trail, res.where)
        if name not in SUPPORTED:
            raise ModelError(
                f"{res.where}: unsupported preprocessing transform {name!r} ({trail}); napari-medseg translates "
                f"{', '.join(sorted(SUPPORTED))}"
            )
        if name == "Orientationd":
            card["orientation"] = str(_arg(t, "axcodes", res, trail, "RAS"))
        elif name == "Spacingd":
            pix = _arg(t, "pixdim", res, trail)
            pix = pix if isinstance(pix, (list, tuple)) else [pix] * 3
            try:
                card["spacing"] = tuple(float(p) for p in pix)
            except (TypeError, ValueError) as e:
                raise ModelError(f"{res.where}: {trail}.pixdim {pix!r} is not 3 numbers") from e
        elif name == "ScaleIntensityRanged":
            b_min, b_max = _arg(t, "b_min", res, trail), _arg(t, "b_max", res, trail)
            _chain(card, {"type": "ct_window", "a_min": float(_arg(t, "a_min", res, trail)),
                                 "a_max": float(_arg(t, "a_max", res, trail)),
                                 "b_min": float(0.0 if b_min is None else b_min), "b_max": float(1.0 if b_max is None else b_max),
                                 "clip": bool(_arg(t, "clip", res, trail, False))})
        elif name == "NormalizeIntensityd":
            if _arg(t, "subtrahend", res, trail) is not None or _arg(t, "divisor", res, trail) is not None:
                raise ModelError(f"{res.where}: NormalizeIntensityd with subtrahend/divisor ({trail}) is not supported")
            _chain(card, {"type": "zscore", "nonzero": bool(_arg(t, "nonzero", res, trail, False)),
                          "channel_wise": bool(_arg(t, "channel_wise", res, trail, False))})
        elif name == "ScaleIntensityd":
            _chain(card, {"type": "minmax", "minv": float(_arg(t, "minv", res, trail, 0.0)),
                          "maxv": float(_arg(t, "maxv", res, trail, 1.0))})
        elif name == "CropForegroundd":
            card["crop_foreground"] = True


def _translate_inferer(node, res: Resolver, card: dict) -> None:
    node = res.shallow(node, "inferer")
    if not isinstance(node, dict):
        raise ModelError(f"{res.where}: no inferer definition (expected SlidingWindowInferer)")
    name = target_name(node.get("_target_"), "inferer", res.where)
    if name not in ("SlidingWindowInferer", "SlidingWindowInfererAdapt"):
        raise ModelError(f"{res.where}: inferer {name!r} is not supported (napari-medseg runs SlidingWindowInferer)")
    roi = _arg(node, "roi_size", res, "inferer", [96, 96, 96])
    card["roi_size"] = tuple(int(r) for r in (roi if isinstance(roi, (list, tuple)) else [roi] * 3))
    card["sw_batch_size"] = int(_arg(node, "sw_batch_size", res, "inferer", 1))
    card["overlap"] = float(_arg(node, "overlap", res, "inferer", 0.25))
    card["blend_mode"] = str(_arg(node, "mode", res, "inferer", "constant"))
    pad = str(_arg(node, "padding_mode", res, "inferer", "constant"))
    if pad not in ("constant", "replicate"):
        raise ModelError(f"{res.where}: inferer.padding_mode {pad!r} is not supported (constant or replicate)")
    card["pad_mode"] = pad


def _weights_file(cfg: dict, res: Resolver) -> str:
    """The CheckpointLoader's ``load_path`` inside the bundle (default ``models/model.pt``)."""
    found: list[Any] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str) and node["_target_"].rsplit(".", 1)[-1] == "CheckpointLoader":
                found.append(node.get("load_path"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk({k: v for k, v in cfg.items() if k in ("handlers", "checkpointloader", "evaluator", "initialize")})
    for lp in found:
        if lp is not None:
            try:
                return res.member(res.literal(lp, "CheckpointLoader.load_path"), "CheckpointLoader.load_path")
            except ModelError as e:
                res.notes.append(f"{e}; using models/model.pt")
    return "models/model.pt"


def _bundle_name(path: Path, meta: dict) -> str:
    stem = PurePosixPath(path.name).stem if path.suffix.lower() == ".zip" else path.name
    if re.fullmatch(r"\d+(\.\d+)*", stem) and path.parent.name:  # <home>/models/<name>/<version>(.zip)
        stem = path.parent.name
    stem = re.sub(r"_v\d+(\.\d+)*$", "", stem)
    return stem or str(meta.get("name") or "bundle")


def bundle_card(path) -> tuple[ModelCard, list[str]]:
    """Translate a bundle's configs into a `ModelCard` (and warnings), without loading weights."""
    from napari_medseg.models.bundle_post import class_infos, input_channel_names, translate_post

    path = Path(path)
    files = BundleFiles(path)
    cfg, where = load_config(files, "inference")
    if not cfg:
        raise ModelError(f"{path}: not a MONAI bundle (no configs/inference.json or .yaml)")
    meta, _ = load_config(files, "metadata")
    _check_interactive(cfg, meta, path, where)
    res = Resolver(cfg, where, files)
    warnings: list[str] = []
    arch, args = _network(cfg, res, warnings)
    card: dict[str, Any] = {}
    _translate_pre(transforms(cfg.get("preprocessing"), res, "preprocessing"), res, card)
    _translate_inferer(cfg.get("inferer"), res, card)
    in_ch = int(args.get("in_channels", 1))
    out_ch = int(args.get("out_channels", args.get("num_classes", 2)))
    translate_post(transforms(cfg.get("postprocessing"), res, "postprocessing"), res, card, warnings, out_ch)
    classes = class_infos(meta, card, out_ch)
    if card.get("keep_largest") == ["*"]:
        card["keep_largest"] = [c.value for c in classes]
    weights_file = _weights_file(cfg, res)
    name = _bundle_name(path, meta)
    provenance = {"source": "MONAI bundle", "bundle_name": name, "bundle_version": str(meta.get("version", "")),
                  "bundle_path": str(path), "weights_file": weights_file,
                  **{k: meta[k] for k in ("name", "authors", "copyright", "data_source", "references") if k in meta}}
    if res.notes:
        provenance["notes"] = list(dict.fromkeys(res.notes))
    return ModelCard(
        name=name, architecture=arch, arch_args=args, in_channels=in_ch, classes=classes,
        channel_names=input_channel_names(meta, in_ch),
        version=str(meta.get("version", "")), description=str(meta.get("description", ""))[:2000],
        provenance=provenance, weights_file=weights_file, **card,
    ), warnings


def load_bundle(path, lazy: bool = False) -> LoadedModel:
    """A `LoadedModel` from a MONAI Model Zoo bundle folder or zip (see the module docstring); ``lazy``: as
    `package.loaded_model`."""
    from napari_medseg.models.package import built_network, loaded_model

    path = Path(path)
    card, warnings = bundle_card(path)
    files = BundleFiles(path)
    rel = card.weights_file
    blob = files.read(rel)
    if blob is None:
        ts = PurePosixPath(rel).with_suffix(".ts").as_posix()
        if files.find(ts) is not None or files.find("models/model.ts") is not None:
            raise ModelError(f"{path}: only a TorchScript model ({ts}) is present; napari-medseg loads "
                             "state dicts (.pt) only, since TorchScript is executable code")
        raise ModelError(f"{path}: bundle has no {rel} weights (named by its CheckpointLoader)")
    source = files.where(rel)
    sd = load_state_dict_bytes(blob, PurePosixPath(rel).name, source)
    card.weights_sha256 = sha256_bytes(blob)
    card.provenance["bundle_sha256"] = card.weights_sha256
    warnings.append(f"{path.name}: MONAI bundle weights carry no SHA-256 in the bundle; not integrity-checked")
    return loaded_model(card, path, warnings, lambda: built_network(card, sd, source),
                        card.weights_sha256, lazy)
