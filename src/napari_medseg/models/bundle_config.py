"""Reading a MONAI bundle's files and resolving its config values without running them.

`BundleFiles` reads members of a bundle folder or zip. `Resolver` turns config values into plain Python values:
``"@id"`` references are followed, ``"$..."`` expressions are interpreted by
`napari_medseg.models.expressions` (never ``eval``), ``torch.device`` expressions become `DEVICE` (dropped by
the caller with a note). The only file a config may make us read is an architecture checkpoint named by an
expression that is *exactly* ``torch.load(<path inside the bundle>, ...)`` (DiNTS ``arch_ckpt``); it is read
with ``torch.load(weights_only=True)`` (numpy arrays allowed, nothing else unpickled) and becomes nested lists.
"""

from __future__ import annotations

import ast
import io
import json
import posixpath
import zipfile
from pathlib import Path
from typing import Any

from napari_medseg.errors import ModelError
from napari_medseg.models.expressions import DEVICE, Expression, is_expression

REF_SEPARATORS = ("::", "#")
MAX_DEPTH = 40


class BundleFiles:
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


#: the suffixes a bundle's config files may have
CONFIG_EXTS = (".json", ".yaml", ".yml")


def load_config(files: BundleFiles, stem: str) -> tuple[dict, str]:
    """``configs/<stem>.json|yaml|yml`` parsed (YAML with ``safe_load``), and where it was read from."""
    for ext in CONFIG_EXTS:
        blob = files.read(f"configs/{stem}{ext}")
        if blob is None:
            continue
        where = files.where(f"configs/{stem}{ext}")
        try:
            if ext == ".json":
                cfg = json.loads(blob.decode("utf-8"))
            else:
                import yaml

                cfg = yaml.safe_load(blob.decode("utf-8")) or {}
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"{where}: cannot parse the bundle config ({e})") from e
        if not isinstance(cfg, dict):
            raise ModelError(f"{where}: the bundle config is not a mapping of ids to values")
        return cfg, where
    return {}, ""


def bundle_relative(path_text: Any, trail: str, where: str) -> str:
    """A path computed by the config (``@bundle_root`` is ``"."``) as a path inside the bundle, or `ModelError`."""
    if not isinstance(path_text, str):
        raise ModelError(f"{where}: {trail} is not a file path ({path_text!r})")
    rel = posixpath.normpath(path_text.replace("\\", "/"))
    if rel.startswith("/") or rel == ".." or rel.startswith("../") or ":" in rel:
        raise ModelError(f"{where}: {trail} names {path_text!r}, which is outside the bundle; napari-medseg only "
                         "reads files inside the bundle")
    return rel


def _to_literal(value):
    """numpy arrays / tensors (and containers of them) as nested Python lists."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _to_literal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_literal(v) for v in value]
    return value


def load_arch_file(blob: bytes, source: str) -> Any:
    """An architecture checkpoint (dict of arrays) read with ``weights_only=True``; numpy arrays allowed."""
    import numpy as np
    import torch

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    allowed = [_reconstruct, np.ndarray, np.dtype] + [type(np.dtype(t)) for t in "?bBhHiIlLqQefdg"]
    try:
        with torch.serialization.safe_globals(allowed):
            data = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything but plain arrays, or a corrupt file
        raise ModelError(f"{source}: cannot read the architecture file with weights_only=True "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); it must hold only arrays") from e
    return _to_literal(data)


class Resolver:
    """Resolve config values (see the module docstring); ``notes`` collects what was ignored and why."""

    def __init__(self, config: dict, where: str, files: BundleFiles | None = None):
        self.config, self.where, self.files = config, where, files
        self.notes: list[str] = []
        self._stack: list[str] = []
        self._cache: dict[str, Any] = {}

    # ------------------------------------------------------------------ references
    def raw(self, ref: str, trail: str):
        """The config node ``ref`` names (``a#b#0``), unresolved."""
        key = ref
        for sep in REF_SEPARATORS:
            key = key.replace(sep, "\x00")
        node: Any = self.config
        for part in key.split("\x00"):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise ModelError(f"{self.where}: {trail} refers to @{ref}, which is not in the config")
        return node

    def ref(self, ref: str, trail: str):
        """The value of ``@ref``: followed and evaluated one level (nested dicts/lists are left as they are)."""
        if ref == "bundle_root":
            return "."
        if ref in self._cache:
            return self._cache[ref]
        if ref in self._stack or len(self._stack) > MAX_DEPTH:
            raise ModelError(f"{self.where}: {trail}: references nest too deeply or form a cycle "
                             f"({' -> '.join(self._stack + [ref])})")
        self._stack.append(ref)
        try:
            value = self.shallow(self.raw(ref, trail), f"{trail} (@{ref})")
        finally:
            self._stack.pop()
        self._cache[ref] = value
        return value

    def shallow(self, value: Any, trail: str):
        """Follow a reference / evaluate an expression at the top of ``value`` only."""
        if isinstance(value, str):
            if is_expression(value):
                return Expression(value, trail, self.where, self.ref, {"torch.load": self._torch_load}).value()
            if value.startswith("@"):
                return self.ref(value[1:], trail)
            if value.startswith("%"):
                raise ModelError(f"{self.where}: {trail} macro {value!r} (another file) is not supported")
        return value

    def literal(self, value: Any, trail: str, depth: int = 0):
        """``value`` fully resolved to literals; `DEVICE` entries of dicts/lists are dropped with a note."""
        if depth > MAX_DEPTH:
            raise ModelError(f"{self.where}: {trail}: values nest too deeply")
        value = self.shallow(value, trail)
        if isinstance(value, (list, tuple)):
            out = []
            for i, v in enumerate(value):
                r = self.literal(v, f"{trail}[{i}]", depth + 1)
                if r is DEVICE:
                    self.notes.append(f"{trail}[{i}] chooses a device; ignored (napari-medseg chooses the device)")
                    continue
                out.append(r)
            return out
        if isinstance(value, dict):
            return self.args(value, trail, depth, keep_private=True)
        return value

    def args(self, node: dict, trail: str, depth: int = 0, keep_private: bool = False) -> dict:
        """The keyword arguments of a component (keys not starting with ``_``), resolved to literals."""
        out = {}
        for k, v in node.items():
            if str(k).startswith("_") and not (keep_private and k == "_target_"):
                continue  # _requires_, _disabled_, _desc_, _mode_ are instructions to MONAI's parser
            if k == "_target_":
                out[k] = v
                continue
            r = self.literal(v, f"{trail}.{k}", depth + 1)
            if r is DEVICE:
                self.notes.append(f"{trail}.{k} chooses a device ({str(v)[:60]}); ignored (napari-medseg chooses the device)")
                continue
            out[str(k)] = r
        return out

    def member(self, path_text: Any, trail: str) -> str:
        """A path computed by the config as a file inside the bundle. Configs published with an absolute
        ``bundle_root`` (``/workspace/.../<bundle>/models/x.pt``) name the bundle's own ``models/x.pt``."""
        try:
            return bundle_relative(path_text, trail, self.where)
        except ModelError:
            parts = str(path_text).replace("\\", "/").split("/")
            for i in range(len(parts) - 1):
                cand = "/".join(parts[i:])
                if parts[i] == "models" and ".." not in parts[i:] and self.files is not None and self.files.find(cand):
                    self.notes.append(f"{trail}: {path_text!r} read as the bundle's own {cand}")
                    return cand
            raise

    # ------------------------------------------------------------------ the one file read
    def _torch_load(self, node: ast.Call, ev: Expression):
        if node is not ev.tree:
            raise ev.error("uses torch.load inside a larger expression; only an expression that is exactly "
                           "torch.load(<file inside the bundle>, map_location=...) is read")
        if len(node.args) != 1 or any(k.arg not in ("map_location", "weights_only") for k in node.keywords):
            raise ev.error("calls torch.load with arguments other than a path, map_location and weights_only")
        for k in node.keywords:
            if k.arg == "weights_only" and not (isinstance(k.value, ast.Constant) and k.value.value is True):
                raise ev.error("asks torch.load for weights_only=False")
        rel = self.member(ev._eval(node.args[0]), ev.trail)
        blob = self.files.read(rel) if self.files is not None else None
        if blob is None:
            raise ModelError(f"{self.where}: {ev.trail} loads {rel!r}, which is not a file in the bundle")
        self.notes.append(f"{ev.trail}: read {rel} from the bundle with torch.load(weights_only=True)")
        return load_arch_file(blob, self.files.where(rel))
