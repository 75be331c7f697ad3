"""Where models live and how a name becomes a path.

Layout (shared with `napari_medseg.training`)::

    <models home>/models/<name>/<version>/      package folders (or <version>.zip); versions "v1", "v2", ...
    <models home>/models/<name>/active          text file holding the active version id

The models home is ``$MEDSEG_HOME`` if set, else ``platformdirs.user_data_dir("napari-medseg")``. The built-in
default model is the package folder ``napari_medseg/models/default/`` (version id ``"builtin"``).

`resolve_model` spec forms: an existing path -> that path; ``"name@version"`` -> that version;
``"name"`` -> its active version (the newest when no ``active`` file exists; the built-in package for
``"default"``); anything else -> `ModelError` listing the available names.
"""

from __future__ import annotations

import re
from pathlib import Path

from napari_medseg._home import data_dir
from napari_medseg.errors import ModelError

BUILTIN_VERSION = "builtin"
DEFAULT_NAME = "default"
_VERSION_RE = re.compile(r"^v(\d+)$")
#: a model name or version id is one plain folder name: no separators, no "..", no hidden/dot names
_NAME_BAD = re.compile(r"[/\\:@*?\"<>|\x00-\x1f\x7f]")
MAX_NAME_LEN = 100


def validate_model_name(name, what: str = "model name") -> str:
    """``name`` if it is a safe single folder name in the models home, else `ModelError` (path escape etc.).

    Used for model names and version ids by the registry, `napari_medseg.training.versions`, the CLI and
    the API, so ``"../../x"`` can never place a model or its ``active`` file outside the models home.
    """
    text = str(name) if name is not None else ""
    if (
        not text
        or text != text.strip()
        or text.startswith(".")
        or len(text) > MAX_NAME_LEN
        or _NAME_BAD.search(text)
    ):
        raise ModelError(
            f"invalid {what} {text!r}: use one plain name of letters, digits, spaces, '.', '_' or '-' (not "
            f"starting with '.', no '/', '\\', ':', '@', at most {MAX_NAME_LEN} characters), e.g. 'liver-ct'"
        )
    return text


def model_folder(name: str) -> Path:
    """``<models home>/models/<name>`` for a validated ``name``."""
    return models_dir() / validate_model_name(name)


def models_home() -> Path:
    """The napari-medseg data folder (``$MEDSEG_HOME`` or the per-user data directory): the same folder as
    `napari_medseg.session.data_dir`."""
    return data_dir()


def models_dir() -> Path:
    return models_home() / "models"


def builtin_default_path() -> Path:
    return Path(__file__).resolve().parent / "default"


def _builtin_available() -> bool:
    return (builtin_default_path() / "card.json").is_file()


def _version_key(v: str):
    m = _VERSION_RE.match(v)
    return (0, int(m.group(1)), v) if m else (1, 0, v)


def list_versions(name: str) -> list[str]:
    """Version ids of a user model, oldest first (``v1, v2, ...``); includes ``builtin`` for the default."""
    folder = model_folder(name)
    versions = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_dir() and (p / "card.json").is_file():
                versions.append(p.name)
            elif p.is_file() and p.suffix == ".zip":
                versions.append(p.stem)
    versions.sort(key=_version_key)
    if name == DEFAULT_NAME and _builtin_available():
        versions.insert(0, BUILTIN_VERSION)
    return versions


def active_version(name: str) -> str | None:
    """The active version id of ``name`` (``active`` file, else the newest version, else ``builtin``)."""
    f = model_folder(name) / "active"
    versions = list_versions(name)
    if f.is_file():
        v = f.read_text(encoding="utf-8").strip()
        if v in versions:
            return v
    if name == DEFAULT_NAME:
        return BUILTIN_VERSION if BUILTIN_VERSION in versions else (versions[-1] if versions else None)
    return versions[-1] if versions else None


def _version_path(name: str, version: str) -> Path | None:
    if name == DEFAULT_NAME and version == BUILTIN_VERSION:
        return builtin_default_path() if _builtin_available() else None
    base = model_folder(name)
    validate_model_name(version, "model version")
    for p in (base / version, base / f"{version}.zip"):
        if p.exists():
            return p
    return None


def model_names() -> list[str]:
    names = set()
    if models_dir().is_dir():
        names |= {p.name for p in models_dir().iterdir() if p.is_dir() and _valid(p.name) and list_versions(p.name)}
    if _builtin_available():
        names.add(DEFAULT_NAME)
    return sorted(names)


def _valid(name: str) -> bool:
    try:
        validate_model_name(name)
    except ModelError:
        return False
    return True


def resolve_model(spec=None) -> Path:
    """Path of the model package or bundle that ``spec`` names (see the module docstring)."""
    spec = DEFAULT_NAME if spec is None else spec
    p = Path(str(spec)).expanduser()
    if p.exists():
        return p
    text = str(spec)
    name, _, version = text.partition("@")
    if name and "/" not in name and "\\" not in name:
        if version:
            found = _version_path(name, version)
            if found is not None:
                return found
            raise ModelError(
                f"model {name!r} has no version {version!r}; available: {', '.join(list_versions(name)) or 'none'}"
            )
        v = active_version(name)
        if v is not None:
            found = _version_path(name, v)
            if found is not None:
                return found
    avail = ", ".join(model_names()) or "none installed"
    if name == DEFAULT_NAME:
        raise ModelError(
            "the built-in default model is not installed in this copy of napari-medseg "
            f"({builtin_default_path()}); pass --model PATH to a model package or bundle. Available: {avail}"
        )
    raise ModelError(f"unknown model {text!r}: not a file or folder, and not a model name. Available models: {avail} "
                     f"(models home: {models_home()})")


def list_models() -> list[dict]:
    """One dict per installed model version: name, version, active, builtin, path, description, classes."""
    from napari_medseg.models.package import read_card

    rows = []
    for name in model_names():
        act = active_version(name)
        for v in list_versions(name):
            path = _version_path(name, v)
            row = {"name": name, "version": v, "active": v == act, "builtin": v == BUILTIN_VERSION, "path": str(path)}
            try:
                card = read_card(path)
                row.update(description=card.description, classes=card.class_names(), parent=card.provenance.get("parent"),
                           metrics=card.provenance.get("metrics"))
            except ModelError as e:
                row.update(error=str(e))
            rows.append(row)
    return rows
