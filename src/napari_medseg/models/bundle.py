"""MONAI Model Zoo bundles (``configs/inference.json`` + ``configs/metadata.json`` + ``models/model.pt``).

Nothing in a bundle's config is ever evaluated. We read three parts and translate them into a `ModelCard`:

* ``network_def``: a class of `monai.networks.nets` with literal arguments (``"@name"`` references to
  literal values elsewhere in the config are resolved; a ``"$"`` expression or any other ``_target_``
  raises `ModelError` naming it);
* ``preprocessing``: the standard transforms (see `SUPPORTED`); anything else is a `ModelError` naming it;
* ``inferer``: ``SlidingWindowInferer`` roi_size / sw_batch_size / overlap / mode;
* ``postprocessing`` (optional): KeepLargestConnectedComponentd / FillHolesd are honoured, the standard
  Activationsd/Invertd/AsDiscreted/SaveImaged steps are what our pipeline does anyway; others are skipped
  with a warning.

Class names come from ``metadata.json`` (``network_data_format.outputs.pred.channel_def``) where present.
Weights (``models/model.pt``) load with ``torch.load(weights_only=True)``; TorchScript files are refused.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from napari_medseg.errors import ModelError
from napari_medseg.models.card import ClassInfo, ModelCard
from napari_medseg.models.package import LoadedModel, load_state_dict_bytes, load_weights

#: transforms that need no translation (loading, typing, channel handling)
NO_OPS = {"LoadImaged", "LoadImage", "EnsureChannelFirstd", "EnsureChannelFirst", "AddChanneld", "EnsureTyped",
          "EnsureType", "ToTensord", "ToTensor", "CastToTyped", "ToDeviced", "Identityd"}
SUPPORTED = NO_OPS | {"Orientationd", "Spacingd", "ScaleIntensityRanged", "NormalizeIntensityd", "CropForegroundd",
                      "ScaleIntensityd"}
POST_KNOWN = {"Activationsd", "Invertd", "AsDiscreted", "SaveImaged", "EnsureTyped", "CopyItemsd", "Lambdad"}
_REF_SEPARATORS = ("::", "#")


class _Files:
    """Read files of a bundle folder or zip (whose members sit under one top folder)."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = None
        if path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile as e:
                raise ModelError(f"{path}: not a readable bundle zip ({e})") from e
            self.members = {n: n for n in self.zip.namelist() if not n.endswith("/")}

    def find(self, rel: str) -> str | None:
        if self.zip is None:
            p = self.path / rel
            return str(p) if p.is_file() else None
        for n in self.members:
            if n == rel or n.endswith("/" + rel):
                return n
        return None

    def read(self, rel: str) -> bytes | None:
        name = self.find(rel)
        if name is None:
            return None
        return Path(name).read_bytes() if self.zip is None else self.zip.read(name)

    def where(self, rel: str) -> str:
        return f"{self.path}/{rel}" if self.zip is None else f"{self.path}!{self.find(rel) or rel}"


def _load_config(files: _Files, stem: str) -> tuple[dict, str]:
    for ext in (".json", ".yaml", ".yml"):
        blob = files.read(f"configs/{stem}{ext}")
        if blob is None:
            continue
        where = files.where(f"configs/{stem}{ext}")
        try:
            if ext == ".json":
                return json.loads(blob.decode("utf-8")), where
            import yaml

            return yaml.safe_load(blob.decode("utf-8")) or {}, where
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"{where}: cannot parse the bundle config ({e})") from e
    return {}, ""


class _Resolver:
    """Resolve ``"@id"`` references to literal config values; refuse ``"$"`` expressions."""

    def __init__(self, config: dict, where: str):
        self.config, self.where = config, where

    def lookup(self, ref: str, trail: str):
        node: Any = self.config
        key = ref
        for sep in _REF_SEPARATORS:
            key = key.replace(sep, "\x00")
        for part in key.split("\x00"):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise ModelError(f"{self.where}: {trail} refers to @{ref}, which is not in the config")
        return node

    def literal(self, value: Any, trail: str, depth: int = 0):
        if depth > 20:
            raise ModelError(f"{self.where}: {trail}: references nest too deeply (a cycle?)")
        if isinstance(value, str):
            if value.startswith("$"):
                raise ModelError(
                    f"{self.where}: {trail} is code ({value[:80]!r}); napari-medseg never evaluates bundle code. "
                    "Replace it by a literal value or use a model package"
                )
            if value.startswith("@"):
                return self.literal(self.lookup(value[1:], trail), f"{trail} (@{value[1:]})", depth + 1)
            if value.startswith("%"):
                raise ModelError(f"{self.where}: {trail} macro {value!r} (another file) is not supported")
            return value
        if isinstance(value, list):
            return [self.literal(v, f"{trail}[{i}]", depth) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.literal(v, f"{trail}.{k}", depth) for k, v in value.items()}
        return value


def _target_name(target: Any, trail: str, where: str) -> str:
    if not isinstance(target, str):
        raise ModelError(f"{where}: {trail}._target_ must be a class name, got {target!r}")
    if target.startswith("$"):
        raise ModelError(f"{where}: {trail}._target_ is code ({target[:80]!r}); refusing to evaluate it")
    return target.rsplit(".", 1)[-1]


def _network(cfg: dict, res: _Resolver) -> tuple[str, dict]:
    net = cfg.get("network_def")
    if isinstance(net, str) and net.startswith("@"):
        net = res.lookup(net[1:], "network_def")
    if not isinstance(net, dict) or "_target_" not in net:
        raise ModelError(f"{res.where}: no network_def with a _target_ (expected e.g. {{'_target_': 'UNet', ...}})")
    target = net["_target_"]
    if isinstance(target, str) and target.startswith("@"):
        target = res.literal(target, "network_def._target_")
    name = _target_name(target, "network_def", res.where)
    if "." in str(target) and not str(target).startswith("monai.networks.nets."):
        raise ModelError(f"{res.where}: network_def._target_ {target!r} is not in monai.networks.nets; refusing it")
    from napari_medseg.models.network import network_class

    try:
        network_class(name)
    except ModelError as e:
        raise ModelError(f"{res.where}: network_def._target_ {target!r}: {e}") from e
    args = {k: res.literal(v, f"network_def.{k}") for k, v in net.items() if not k.startswith("_")}
    return name, args


def _transforms(node, res: _Resolver, trail: str) -> list[dict]:
    if isinstance(node, str) and node.startswith("@"):
        node = res.lookup(node[1:], trail)
    if node is None:
        return []
    if isinstance(node, dict) and _target_name(node.get("_target_"), trail, res.where) == "Compose":
        node = node.get("transforms", [])
        if isinstance(node, str) and node.startswith("@"):
            node = res.lookup(node[1:], trail)
    if not isinstance(node, list):
        raise ModelError(f"{res.where}: {trail} must be a Compose or a list of transforms")
    out = []
    for i, t in enumerate(node):
        if isinstance(t, str) and t.startswith("@"):
            t = res.lookup(t[1:], f"{trail}[{i}]")
        if not isinstance(t, dict):
            raise ModelError(f"{res.where}: {trail}[{i}] is not a transform definition: {str(t)[:80]!r}")
        out.append(t)
    return out


def _translate_pre(transforms: list[dict], res: _Resolver, card: dict) -> None:
    card.update(orientation=None, spacing=None, intensity={"type": "none"}, crop_foreground=False)
    for i, t in enumerate(transforms):
        trail = f"preprocessing[{i}]"
        name = _target_name(t.get("_target_"), trail, res.where)
        if name not in SUPPORTED:
            raise ModelError(
                f"{res.where}: unsupported preprocessing transform {name!r} ({trail}); napari-medseg translates "
                f"{', '.join(sorted(SUPPORTED))}"
            )
        args = {k: res.literal(v, f"{trail}.{k}") for k, v in t.items() if not k.startswith("_")}
        if name == "Orientationd":
            card["orientation"] = str(args.get("axcodes", "RAS"))
        elif name == "Spacingd":
            pix = args.get("pixdim")
            card["spacing"] = tuple(float(p) for p in (pix if isinstance(pix, (list, tuple)) else [pix] * 3))
        elif name == "ScaleIntensityRanged":
            card["intensity"] = {"type": "ct_window", "a_min": float(args["a_min"]), "a_max": float(args["a_max"]),
                                 "b_min": float(args.get("b_min", 0.0) if args.get("b_min") is not None else 0.0),
                                 "b_max": float(args.get("b_max", 1.0) if args.get("b_max") is not None else 1.0),
                                 "clip": bool(args.get("clip", False))}
        elif name == "NormalizeIntensityd":
            if args.get("subtrahend") is not None or args.get("divisor") is not None:
                raise ModelError(f"{res.where}: NormalizeIntensityd with subtrahend/divisor ({trail}) is not supported")
            card["intensity"] = {"type": "zscore", "nonzero": bool(args.get("nonzero", False)),
                                 "channel_wise": bool(args.get("channel_wise", False))}
        elif name == "ScaleIntensityd":
            card["intensity"] = {"type": "minmax", "minv": float(args.get("minv", 0.0)), "maxv": float(args.get("maxv", 1.0))}
        elif name == "CropForegroundd":
            card["crop_foreground"] = True


def _translate_inferer(node, res: _Resolver, card: dict) -> None:
    if isinstance(node, str) and node.startswith("@"):
        node = res.lookup(node[1:], "inferer")
    if not isinstance(node, dict):
        raise ModelError(f"{res.where}: no inferer definition (expected SlidingWindowInferer)")
    name = _target_name(node.get("_target_"), "inferer", res.where)
    if name not in ("SlidingWindowInferer", "SlidingWindowInfererAdapt"):
        raise ModelError(f"{res.where}: inferer {name!r} is not supported (napari-medseg runs SlidingWindowInferer)")
    args = {k: res.literal(v, f"inferer.{k}") for k, v in node.items() if not k.startswith("_")}
    roi = args.get("roi_size", [96, 96, 96])
    card["roi_size"] = tuple(int(r) for r in (roi if isinstance(roi, (list, tuple)) else [roi] * 3))
    card["sw_batch_size"] = int(args.get("sw_batch_size", 1))
    card["overlap"] = float(args.get("overlap", 0.25))
    card["blend_mode"] = str(args.get("mode", "constant"))


def _translate_post(transforms: list[dict], res: _Resolver, card: dict, warnings: list[str]) -> None:
    for i, t in enumerate(transforms):
        trail = f"postprocessing[{i}]"
        name = _target_name(t.get("_target_"), trail, res.where)
        if name == "KeepLargestConnectedComponentd":
            labels = t.get("applied_labels")
            labels = res.literal(labels, f"{trail}.applied_labels") if labels is not None else None
            card["keep_largest"] = [int(v) for v in (labels if isinstance(labels, list) else [labels])] if labels else ["*"]
        elif name == "FillHolesd":
            card["fill_holes"] = True
        elif name not in POST_KNOWN:
            warnings.append(f"bundle postprocessing transform {name!r} is not applied by napari-medseg")


def bundle_card(path) -> tuple[ModelCard, list[str]]:
    """Translate a bundle's configs into a `ModelCard` (and warnings), without loading weights."""
    path = Path(path)
    files = _Files(path)
    cfg, where = _load_config(files, "inference")
    if not cfg:
        raise ModelError(f"{path}: not a MONAI bundle (no configs/inference.json or .yaml)")
    meta, _ = _load_config(files, "metadata")
    res = _Resolver(cfg, where)
    warnings: list[str] = []
    arch, args = _network(cfg, res)
    card: dict[str, Any] = {}
    _translate_pre(_transforms(cfg.get("preprocessing"), res, "preprocessing"), res, card)
    _translate_inferer(cfg.get("inferer"), res, card)
    _translate_post(_transforms(cfg.get("postprocessing"), res, "postprocessing"), res, card, warnings)
    in_ch = int(args.get("in_channels", 1))
    out_ch = int(args.get("out_channels", 2))
    chdef = (((meta.get("network_data_format") or {}).get("outputs") or {}).get("pred") or {}).get("channel_def") or {}
    classes = []
    for c in range(1, out_ch):
        name = chdef.get(str(c), chdef.get(c)) if isinstance(chdef, dict) else None
        classes.append(ClassInfo(c, str(name) if name else f"class_{c}"))
    if card.get("keep_largest") == ["*"]:
        card["keep_largest"] = [c.value for c in classes]
    name = str(meta.get("name") or PurePosixPath(path.name).stem)
    return ModelCard(
        name=name, architecture=arch, arch_args=args, in_channels=in_ch, classes=classes,
        version=str(meta.get("version", "")), description=str(meta.get("description", ""))[:2000],
        provenance={"source": "MONAI bundle", "bundle_path": str(path),
                    **{k: meta[k] for k in ("authors", "copyright", "data_source", "references") if k in meta}},
        weights_file="models/model.pt", pad_mode="constant", **card,
    ), warnings


def load_bundle(path) -> LoadedModel:
    """A `LoadedModel` from a MONAI Model Zoo bundle folder or zip (see the module docstring)."""
    from napari_medseg.models.network import build_network

    path = Path(path)
    card, warnings = bundle_card(path)
    files = _Files(path)
    blob = files.read("models/model.pt")
    if blob is None:
        if files.find("models/model.ts") is not None:
            raise ModelError(f"{path}: only a TorchScript model (models/model.ts) is present; napari-medseg loads "
                             "state dicts (models/model.pt) only, since TorchScript is executable code")
        raise ModelError(f"{path}: bundle has no models/model.pt weights")
    source = files.where("models/model.pt")
    sd = load_state_dict_bytes(blob, "model.pt", source)
    net = build_network(card)
    load_weights(net, sd, source, card.architecture)
    net.eval()
    warnings.append(f"{path.name}: MONAI bundle weights carry no SHA-256 in the bundle; not integrity-checked")
    return LoadedModel(network=net, card=card, path=path, warnings=warnings)
