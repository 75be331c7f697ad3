"""Correction sessions: corrected-slice records, the correction log, and autosave/recovery (no Qt).

* `CorrectionRecord` — which slices ``(axis, index)`` (array axes, 0 = k = "z") of a labels volume the user
  edited, which ones they marked as reviewed/corrected (the input of fine-tuning), and a log of the
  operations applied. It round-trips through a napari layer's ``metadata`` under the keys
  ``medseg_corrected_slices`` / ``medseg_edited_slices`` / ``medseg_correction_log`` (plain lists).
* `Session` — a per-image folder ``<data dir>/sessions/<key>/`` (``$MEDSEG_HOME`` or
  ``platformdirs.user_data_dir("napari-medseg")``) where labels and their record are autosaved
  atomically. The key is derived from the source path / series UID and the image geometry, so reopening
  the same image finds its session; nothing is ever written next to or over the source files.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from napari_medseg._atomic import atomic_path
from napari_medseg._home import HOME_ENV, data_dir  # noqa: F401 - public names of this module
from napari_medseg.errors import GeometryError, InputError
from napari_medseg.geometry import Geometry

CORRECTED_KEY = "medseg_corrected_slices"
EDITED_KEY = "medseg_edited_slices"
LOG_KEY = "medseg_correction_log"
_FORMAT = "napari-medseg-session/1"

SliceId = tuple[int, int]


def _slice_ids(items: Iterable) -> set[SliceId]:
    out = set()
    for item in items or ():
        axis, index = (int(v) for v in item)
        out.add((axis, index))
    return out


@dataclass
class CorrectionRecord:
    """Edited and corrected slices of one labels volume plus the log of operations applied to it."""

    edited: set[SliceId] = field(default_factory=set)
    corrected: set[SliceId] = field(default_factory=set)
    log: list[dict[str, Any]] = field(default_factory=list)

    def note_edit(self, op: str, slices: Iterable[SliceId] = (), **params) -> None:
        """Record that ``op`` changed ``slices`` (``(axis, index)`` pairs) and append it to the log."""
        ids = sorted(_slice_ids(slices))
        self.edited.update(ids)
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "op": op, "slices": [list(s) for s in ids]}
        entry.update({k: _jsonable(v) for k, v in params.items()})
        self.log.append(entry)

    def mark(self, axis: int, index: int, corrected: bool = True) -> None:
        """Mark (or unmark) slice ``index`` along ``axis`` as reviewed/corrected."""
        sid = (int(axis), int(index))
        if corrected:
            self.corrected.add(sid)
        else:
            self.corrected.discard(sid)
        self.log.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "op": "mark" if corrected else "unmark",
                         "slices": [list(sid)]})

    def slices(self) -> list[SliceId]:
        """Every tracked slice (edited or corrected), sorted."""
        return sorted(self.edited | self.corrected)

    def corrected_list(self) -> list[list[int]]:
        return [list(s) for s in sorted(self.corrected)]

    # ---------------------------------------------------------------- metadata / JSON
    def to_metadata(self, metadata: dict) -> dict:
        metadata[CORRECTED_KEY] = self.corrected_list()
        metadata[EDITED_KEY] = [list(s) for s in sorted(self.edited)]
        metadata[LOG_KEY] = list(self.log)
        return metadata

    @classmethod
    def from_metadata(cls, metadata: dict | None) -> "CorrectionRecord":
        metadata = metadata or {}
        try:
            return cls(_slice_ids(metadata.get(EDITED_KEY, [])), _slice_ids(metadata.get(CORRECTED_KEY, [])),
                       list(metadata.get(LOG_KEY, [])))
        except (TypeError, ValueError) as e:
            raise InputError(f"the layer's corrected-slice list is malformed ({e}); expected [[axis, index], ...]") from e

    def to_dict(self) -> dict:
        return self.to_metadata({})

    @classmethod
    def from_dict(cls, d: dict) -> "CorrectionRecord":
        return cls.from_metadata(d)


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


# -------------------------------------------------------------------------------------------- sessions
def sessions_root() -> Path:
    return data_dir() / "sessions"


def _record_of(image) -> dict:
    """Geometry record of a Volume or a ``volume_record`` dict (shape, spacing, origin, direction, meta):
    `Geometry.to_record` with the full array shape and the metadata."""
    if isinstance(image, dict):
        return image
    return {**image.geometry.to_record(), "shape": list(image.shape), "meta": dict(image.meta)}


def session_key(image) -> str:
    """Stable folder name for an image (a `Volume` or its layer record): readable stem + hash of
    source path / series UID and geometry (rounded to 1 µm)."""
    rec = _record_of(image)
    meta = rec.get("meta") or {}
    src = meta.get("source_path")
    geometry = Geometry.from_record(rec, "the session's image record")
    ident = {  # keep these keys and roundings: they name the session folders already on disk
        "source": str(Path(str(src)).expanduser().resolve()) if src else "",
        "series_uid": str(meta.get("series_uid") or ""),
        "shape": list(geometry.shape),
        "spacing": [round(float(v), 3) for v in geometry.spacing],
        "origin": [round(float(v), 3) for v in geometry.origin],
        "direction": [round(float(v), 4) for v in geometry.direction.ravel()],
    }
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    stem = Path(str(src)).name if src else (meta.get("series_description") or "image")
    stem = re.sub(r"[^A-Za-z0-9]+", "-", str(stem)).strip("-")[:40] or "image"
    return f"{stem}-{digest}"


@dataclass
class SavedLabels:
    """One autosaved labels volume of a session."""

    name: str
    array: np.ndarray
    record: CorrectionRecord
    classes: dict[int, str]
    saved_at: str
    info: dict[str, Any]


class Session:
    """Autosave folder of one image. ``Session.for_image(volume_or_record)`` finds (or names) it."""

    def __init__(self, folder: Path, image_record: dict | None = None):
        self.folder = Path(folder)
        self.image_record = image_record

    @classmethod
    def for_image(cls, image, root: Path | None = None) -> "Session":
        rec = _record_of(image)
        return cls((Path(root) if root else sessions_root()) / session_key(rec), rec)

    # ---------------------------------------------------------------- writing
    @staticmethod
    def _slug(name: str) -> str:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "labels"
        return f"{slug[:60]}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"

    def save(self, name: str, labels, record: CorrectionRecord | None = None,
             classes: dict[int, str] | None = None) -> Path:
        """Atomically save ``labels`` (a 3D array) of the labels layer ``name`` with its record.

        The voxels go to a new ``.npy`` file first, then the JSON index pointing at it replaces the old
        one, so a crash at any moment leaves the previous or the new state, never a mixture.
        """
        arr = np.asarray(labels)
        if self.image_record is not None:
            shape = Geometry.from_record(self.image_record, "the session's image record").shape
            if tuple(arr.shape) != shape:
                raise GeometryError(
                    f"labels '{name}' have shape {arr.shape} but the image has {shape}; "
                    "labels must be on the image grid to be autosaved (resample them first)"
                )
        self.folder.mkdir(parents=True, exist_ok=True)
        slug = self._slug(name)
        index_path = self.folder / f"{slug}.json"
        old = self._read_index(index_path)
        serial = int(old.get("serial", 0)) + 1 if old else 1
        npy = f"{slug}.{serial}.npy"
        with atomic_path(self.folder / npy) as tmp:
            np.save(tmp, arr)
        info = {
            "format": _FORMAT,
            "name": name,
            "serial": serial,
            "labels_file": npy,
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "classes": {str(k): str(v) for k, v in (classes or {}).items()},
            "record": (record or CorrectionRecord()).to_dict(),
            "image": _jsonable({k: v for k, v in (self.image_record or {}).items() if k != "meta"}),
            "source_path": str((self.image_record or {}).get("meta", {}).get("source_path") or ""),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        with atomic_path(index_path) as tmp:
            tmp.write_text(json.dumps(info, indent=1))
        if old and old.get("labels_file") and old["labels_file"] != npy:
            (self.folder / old["labels_file"]).unlink(missing_ok=True)
        return index_path

    # ---------------------------------------------------------------- reading
    @staticmethod
    def _read_index(path: Path) -> dict:
        if not path.is_file():
            return {}
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return d if isinstance(d, dict) and d.get("format") == _FORMAT else {}

    def saved_names(self) -> list[str]:
        """Names of the labels layers saved in this session (most recent first)."""
        if not self.folder.is_dir():
            return []
        infos = [self._read_index(p) for p in self.folder.glob("*.json")]
        infos = [d for d in infos if d and (self.folder / d.get("labels_file", "")).is_file()]
        return [d["name"] for d in sorted(infos, key=lambda d: d.get("saved_at", ""), reverse=True)]

    def has_saved(self) -> bool:
        return bool(self.saved_names())

    def load(self, name: str) -> SavedLabels:
        """The saved labels ``name``; raises InputError when missing or damaged."""
        index_path = self.folder / f"{self._slug(name)}.json"
        info = self._read_index(index_path)
        if not info:
            raise InputError(f"no autosaved labels named '{name}' in {self.folder}")
        npy = self.folder / info["labels_file"]
        try:
            arr = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"autosaved labels {npy} are damaged ({e}); discard this session") from e
        if list(arr.shape) != list(info["shape"]):
            raise InputError(f"autosaved labels {npy} have shape {arr.shape}, expected {info['shape']}")
        classes = {int(k): v for k, v in info.get("classes", {}).items()}
        return SavedLabels(name, arr, CorrectionRecord.from_dict(info.get("record", {})), classes,
                           info.get("saved_at", ""), info)

    def load_all(self) -> list[SavedLabels]:
        return [self.load(n) for n in self.saved_names()]

    def discard(self, name: str | None = None) -> None:
        """Delete the saved labels ``name`` (or the whole session)."""
        names = [name] if name else self.saved_names()
        for n in names:
            slug = self._slug(n)
            for p in self.folder.glob(f"{slug}.*"):
                p.unlink(missing_ok=True)
        if name is None and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()
