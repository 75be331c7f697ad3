"""Model versions: ``<home>/models/<name>/vN`` package folders and the ``active`` pointer.

Builds on :mod:`napari_medseg.models.registry` (layout and name resolution). A new version never
overwrites an existing one; activating a version only rewrites the small ``active`` text file
(atomically), so rolling back is exact: the previous package's bytes were never touched.
"""

from __future__ import annotations

from pathlib import Path

from napari_medseg.errors import ModelError
from napari_medseg.models import registry
from napari_medseg.models.registry import BUILTIN_VERSION, active_version, list_versions, models_dir

__all__ = ["history", "activate", "active_version", "next_version", "version_path", "version_spec", "parse_spec"]


def parse_spec(spec: str) -> tuple[str, str]:
    """``"name@version"`` -> ``(name, version)``; `ModelError` when the version part is missing."""
    name, sep, version = str(spec).partition("@")
    if not sep or not name or not version:
        raise ModelError(f"expected NAME@VERSION (e.g. default@v2 or default@builtin), got {spec!r}")
    return name, version


def version_path(name: str, version: str) -> Path:
    path = registry._version_path(name, version)
    if path is None:
        raise ModelError(
            f"model {name!r} has no version {version!r}; available: {', '.join(list_versions(name)) or 'none'}"
        )
    return path


def next_version(name: str) -> str:
    """The next free ``vN`` of ``name`` (``v1`` for a new name)."""
    nums = [int(v[1:]) for v in list_versions(name) if v.startswith("v") and v[1:].isdigit()]
    folder = models_dir() / name
    if folder.is_dir():  # count half-written or foreign folders too, never reuse a name
        nums += [int(p.name[1:]) for p in folder.iterdir() if p.name.startswith("v") and p.name[1:].isdigit()]
    return f"v{max(nums, default=0) + 1}"


def activate(name: str, version: str) -> Path:
    """Make ``name@version`` the active version (what ``"name"`` resolves to); returns its path."""
    from napari_medseg._atomic import atomic_path

    path = version_path(name, version)
    pointer = models_dir() / name / "active"
    with atomic_path(pointer, force=True) as tmp:
        tmp.write_text(version + "\n", encoding="utf-8")
    return path


def version_spec(path) -> str:
    """``name@version`` of a package path in the models home or the built-in default, else the path."""
    path = Path(path).resolve()
    if path == registry.builtin_default_path().resolve():
        return f"{registry.DEFAULT_NAME}@{BUILTIN_VERSION}"
    try:
        rel = path.relative_to(models_dir().resolve())
    except ValueError:
        return str(path)
    parts = rel.parts
    if len(parts) == 2:
        return f"{parts[0]}@{Path(parts[1]).stem if parts[1].endswith('.zip') else parts[1]}"
    return str(path)


def history(name: str) -> list[dict]:
    """The versions of ``name``, oldest first: version, path, active, date, parent, metrics, slices."""
    from napari_medseg.models.package import read_card

    versions = list_versions(name)
    if not versions:
        raise ModelError(f"no model named {name!r} (models home: {registry.models_home()})")
    act = active_version(name)
    rows = []
    for v in versions:
        path = version_path(name, v)
        row = {"version": v, "path": str(path), "active": v == act}
        try:
            card = read_card(path)
            prov = card.provenance or {}
            parent = prov.get("parent")
            row.update(
                date=prov.get("date"),
                parent=parent.get("spec") if isinstance(parent, dict) else parent,
                mode=prov.get("mode"),
                slices=prov.get("slices"),
                metrics=prov.get("metrics"),
                activated=prov.get("activation"),
                description=card.description,
            )
        except ModelError as e:
            row["error"] = str(e)
        rows.append(row)
    return rows
