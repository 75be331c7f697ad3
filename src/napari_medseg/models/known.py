"""What an earlier run already checked about a model, so a later process need not import MONAI to know it again.

Importing ``monai`` loads every one of its submodules (about 2 s on a laptop CPU, more than the whole network
costs on a small CT). A run whose plan is cached and whose network runs in a converted runtime (OpenVINO, ONNX
Runtime) needs no MONAI class at all, so it should not pay for it. Two small
records in the cache folder (``$MEDSEG_CACHE``) make that safe:

* `network_args` / `remember_network_args`: a bundle's ``network_def`` as checked against the installed MONAI
  (``monai.networks.nets`` class, removed/renamed arguments rewritten with their warnings), keyed by the
  definition and MONAI's version. Building the network still checks the class again (`network.network_class`).
* `is_validated` / `mark_validated`: the weights file (by SHA-256) was loaded into the card's network (by its
  architecture, arguments and channels) strictly, with these torch/MONAI versions. Only then does
  `load_model(lazy=True)` leave the network unbuilt; an unseen model is built and checked at load, as always.

Each record is a tiny JSON file written atomically; a missing, damaged or foreign record only means the work
is done again. Nothing here is code: a record is read as JSON data and never decides what is executed.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("monai", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = ""
    return out


def _digest(doc) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _folder(kind: str):
    from napari_medseg.inference.runtimes import cache_dir

    return cache_dir() / "known" / kind


def _read(path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _write(path, doc: dict) -> None:
    from napari_medseg._atomic import atomic_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, force=True) as tmp:
            tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    except OSError:  # a read-only cache only costs the work next time
        pass


def _args_key(name: str, args: dict) -> str | None:
    try:
        return _digest({"name": name, "args": args, "versions": _versions()})
    except (TypeError, ValueError):  # not JSON (e.g. arrays read from a file): never cached
        return None


def network_args(name: str, args: dict) -> tuple[dict, list[str]] | None:
    """``(args, warnings)`` checked for this ``network_def`` by an earlier run, or None."""
    key = _args_key(name, args)
    doc = _read(_folder("network_args") / f"{key}.json") if key else None
    if doc is None or doc.get("key") != key or not isinstance(doc.get("args"), dict):
        return None
    return dict(doc["args"]), [str(w) for w in doc.get("warnings", [])]


def remember_network_args(name: str, raw: dict, args: dict, warnings: list[str]) -> None:
    key = _args_key(name, raw)
    if key is None:
        return
    try:
        json.dumps(args)
    except (TypeError, ValueError):
        return
    _write(_folder("network_args") / f"{key}.json", {"key": key, "args": args, "warnings": list(warnings)})


def network_identity(card, weights_file_sha256: str) -> str:
    """What a built network depends on: the weights file and the card's architecture, arguments and channels."""
    return _digest({"weights": weights_file_sha256, "architecture": card.architecture, "args": card.arch_args,
                    "in": int(card.in_channels), "out": int(card.out_channels), "versions": _versions()})


def is_validated(card, weights_file_sha256: str) -> bool:
    if not weights_file_sha256:
        return False
    ident = network_identity(card, weights_file_sha256)
    doc = _read(_folder("validated") / f"{ident}.json")
    return bool(doc) and doc.get("identity") == ident


def mark_validated(card, weights_file_sha256: str) -> None:
    if weights_file_sha256:
        ident = network_identity(card, weights_file_sha256)
        _write(_folder("validated") / f"{ident}.json", {"identity": ident, "model": card.name})
