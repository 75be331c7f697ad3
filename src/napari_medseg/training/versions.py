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

__all__ = ["history", "activate", "roll_back", "active_history", "active_version", "next_version", "version_path", "version_spec", "parse_spec"]


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


HISTORY_FILE = "active_history.json"


def active_history(name: str) -> list[dict]:
    """The versions of ``name`` that were made active, oldest first: ``{"version", "time", "reason"}``.

    Only activations enter it (a version that was never active, e.g. a rejected fine-tune, never does);
    roll backs are entries with ``"rollback": True``. Missing or unreadable: an empty list.
    """
    import json

    f = models_dir() / name / HISTORY_FILE
    try:
        rows = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("version"), str)] if isinstance(rows, list) else []


def _write_history(name: str, rows: list[dict]) -> None:
    import json

    from napari_medseg._atomic import atomic_path

    with atomic_path(models_dir() / name / HISTORY_FILE, force=True) as tmp:
        tmp.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


def _stack(rows: list[dict]) -> list[str]:
    """Replay the history: an activation pushes its version, a roll back pops the version it left."""
    stack: list[str] = []
    for r in rows:
        if r.get("rollback") and len(stack) >= 2 and stack[-2] == r["version"]:
            stack.pop()
        elif not stack or stack[-1] != r["version"]:
            stack.append(r["version"])
    return stack


def activate(name: str, version: str, reason: str = "activated", _rollback: bool = False) -> Path:
    """Make ``name@version`` the active version (what ``"name"`` resolves to); returns its path.

    The ``active`` pointer and the activation history (`active_history`, what `roll_back` follows) are both
    rewritten atomically; no package is touched.
    """
    import time

    from napari_medseg._atomic import atomic_path

    path = version_path(name, version)
    rows = active_history(name)
    before = active_version(name)
    if not rows and before is not None and before != version:  # the first recorded activation: keep what was active
        rows.append({"version": before, "time": None, "reason": "active before the history was recorded"})
    rows.append({"version": version, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "reason": str(reason),
                 **({"rollback": True} if _rollback else {})})
    pointer = models_dir() / name / "active"
    with atomic_path(pointer, force=True) as tmp:
        tmp.write_text(version + "\n", encoding="utf-8")
    _write_history(name, rows)
    return path


def roll_back(name: str) -> str:
    """Make the version that was active before the current one active again; returns its id.

    Follows `active_history`, so a version that was never active (a rejected fine-tune) is never chosen;
    versions deleted since are skipped. `ModelError` when there is no earlier active version.
    """
    current = active_version(name)
    available = set(list_versions(name))
    stack = _stack(active_history(name))
    if stack and stack[-1] == current:
        stack.pop()
    while stack and (stack[-1] == current or stack[-1] not in available):
        stack.pop()
    if not stack:
        raise ModelError(f"model {name!r} has no earlier active version to roll back to (active: {current})")
    target = stack[-1]
    activate(name, target, reason=f"roll back from {current}", _rollback=True)
    return target


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
