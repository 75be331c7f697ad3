"""napari-side edit tracking: which slices of a labels layer the user painted or changed.

A `SliceTracker` listens to a Labels layer's ``paint`` event (emitted by napari for every brush stroke,
fill, eraser stroke and for our own operations) and keeps a `CorrectionRecord` in the layer's metadata:
``layer.metadata["medseg_corrected_slices"]`` (slices marked reviewed/corrected, the input of fine-tuning),
``medseg_edited_slices`` and ``medseg_correction_log``. Slices are ``[axis, index]`` in array order
(axis 0 = k = "z"); the axis of a brush stroke is the slice axis shown in the viewer.
"""

from __future__ import annotations

import weakref
from typing import Callable, Iterable

import numpy as np

from napari_medseg.session import CorrectionRecord

#: keep a copy of the labels as first seen (to tell undone and untouched slices) up to this many voxels
BASELINE_MAX_VOXELS = 300_000_000
#: a class with fewer voxels than this on a ticked slice is named as a possible stray
STRAY_VOXELS = 20
_TRACKERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def tracker_for(layer) -> "SliceTracker | None":
    """The tracker of a labels layer (created by the correction widget), if any."""
    try:
        ref = _TRACKERS.get(layer)
    except TypeError:
        return None
    return None if ref is None else ref()


def atom_slices(atom, axis: int) -> set[int]:
    """Indices along ``axis`` touched by one napari Labels history atom (masked atom or index tuple)."""
    slice_key = getattr(atom, "slice_key", None)
    if slice_key is not None:  # napari's _MaskedPaintAtom (bounding box + optional mask)
        box = slice_key[axis]
        start = box.start or 0
        mask = getattr(atom, "mask", None)
        if mask is None:
            return set(range(start, box.stop))
        other = tuple(a for a in range(mask.ndim) if a != axis)
        return {int(i) + start for i in np.nonzero(mask.any(axis=other))[0]}
    indices = atom[0]
    ix = np.asarray(indices[axis])
    return {int(i) for i in np.unique(ix)} if ix.size else set()


class SliceTracker:
    """Keeps a `CorrectionRecord` in sync with one Labels layer (see the module docstring)."""

    def __init__(self, layer, axis_getter: Callable[[], int] | None = None):
        self.layer = layer
        self.record = CorrectionRecord.from_metadata(layer.metadata)
        self._axis_getter = axis_getter or (lambda: 0)
        self._suspended = 0
        self.dirty = False
        self.listeners: list[Callable[[], None]] = []
        self._set_baseline()
        layer.events.paint.connect(self._on_paint)
        try:
            _TRACKERS[layer] = weakref.ref(self)  # a strong value would keep the (weak) layer key alive
        except TypeError:
            pass

    def _set_baseline(self) -> None:
        """Remember the labels as they are now: slices edited later and then undone are equal to it again.

        Slices already recorded as edited (a restored session) have no known original: they are never pruned.
        """
        data = self.layer.data
        ok = isinstance(data, np.ndarray) and data.size <= BASELINE_MAX_VOXELS
        self.baseline = np.array(data, copy=True) if ok else None
        self._pre_edited = set(self.record.edited)

    def disconnect(self) -> None:
        try:
            self.layer.events.paint.disconnect(self._on_paint)
        except (TypeError, ValueError, RuntimeError):
            pass

    # ---------------------------------------------------------------- recording
    def _on_paint(self, event) -> None:
        if self._suspended:
            return
        axis = int(self._axis_getter())
        touched: set[int] = set()
        for atom in getattr(event, "value", None) or []:
            try:
                touched |= atom_slices(atom, axis)
            except (IndexError, TypeError, AttributeError):  # an unknown atom type: ignore, never break painting
                continue
        if touched:
            mode = str(getattr(self.layer, "mode", "paint"))
            mode = mode if mode in ("paint", "fill", "erase", "polygon") else "paint"
            self.record.note_edit(mode, [(axis, i) for i in sorted(touched)])
            self._changed()

    def note_edit(self, op: str, axis: int, slices: Iterable[int], params: dict | None = None,
                  whole_volume: bool = False) -> None:
        """Record one of our own operations (the widget suspends paint tracking while applying it).

        A whole-volume operation is logged with the number of slices it changed but does not list them as
        edited (they were not painted by the user, and would flood the list).
        """
        extra = {k: v for k, v in (params or {}).items() if k not in ("op", "slices", "time")}
        ids = [(int(axis), int(i)) for i in slices]
        if whole_volume:
            self.record.note_edit(op, (), **{**extra, "scope": "volume", "n_slices_changed": len(ids)})
        else:
            self.record.note_edit(op, ids, **extra)
        self._changed()

    def painted_slices(self, axis: int) -> list[int]:
        """Indices along ``axis`` the user painted or filled with napari's tools (still edited, not undone)."""
        out = set()
        for entry in self.record.log:
            if entry.get("op") in ("paint", "fill", "polygon"):
                out |= {int(i) for a, i in entry.get("slices", []) if int(a) == int(axis)}
        return sorted(i for i in out if (int(axis), i) in self.record.edited)

    def prune(self) -> bool:
        """Drop slices from "edited" whose labels equal the baseline again (e.g. after an undo); True if any."""
        if self.baseline is None or self.baseline.shape != np.shape(self.layer.data):
            return False
        gone = [sid for sid in self.record.edited - self._pre_edited
                if np.array_equal(_take(self.layer.data, sid), _take(self.baseline, sid))]
        if not gone:
            return False
        self.record.edited.difference_update(gone)
        self._changed()
        return True

    def review_warnings(self, slices, classes: dict[int, str] | None = None) -> list[str]:
        """Warnings for ticked ``slices``: classes left exactly as first seen (not reviewed?) and stray bits."""
        names = classes or {}
        untouched: dict[str, list[str]] = {}
        stray: list[str] = []
        for sid in sorted(slices):
            cur = np.asarray(_take(self.layer.data, sid))
            base = None if self.baseline is None or sid in self._pre_edited else np.asarray(_take(self.baseline, sid))
            values, counts = np.unique(cur, return_counts=True)
            where = f"{'zyx'[sid[0]]} {sid[1]}"
            for v, n in zip(values.tolist(), counts.tolist()):
                if v == 0:
                    continue
                name = names.get(int(v), f"label {v}")
                if n < STRAY_VOXELS:
                    stray.append(f"{name} ({n} voxels) on {where}")
                elif base is not None and np.array_equal(cur == v, base == v):
                    untouched.setdefault(name, []).append(where)
        out = []
        if untouched:
            out.append("left as the model had it on ticked slices (check them: they will be learnt): "
                       + "; ".join(f"{n} on {', '.join(w)}" for n, w in untouched.items()))
        if stray:
            out.append("possible stray labels on ticked slices: " + "; ".join(stray))
        return out

    def mark(self, axis: int, index: int, corrected: bool = True) -> None:
        self.record.mark(axis, index, corrected)
        self._changed()

    def suspend(self):
        tracker = self

        class _Ctx:
            def __enter__(self):
                tracker._suspended += 1

            def __exit__(self, *exc):
                tracker._suspended -= 1

        return _Ctx()

    def _changed(self) -> None:
        self.dirty = True
        self.record.to_metadata(self.layer.metadata)
        for fn in list(self.listeners):
            fn()

    def reload(self) -> None:
        """Re-read the record from the layer metadata (after a restore)."""
        self.record = CorrectionRecord.from_metadata(self.layer.metadata)
        self._set_baseline()
        for fn in list(self.listeners):
            fn()


def _take(data, sid):
    sl = [slice(None)] * np.ndim(data)
    sl[int(sid[0])] = int(sid[1])
    return data[tuple(sl)]


def apply_edit(layer, edit, tracker: SliceTracker | None = None, axis: int = 0, fast: bool = True,
               whole_volume: bool = False) -> int:
    """Apply an `Edit` to a Labels layer as ONE undoable step of napari's history (``layer.undo()``).

    With ``fast`` (and a numpy-backed layer on a napari that has masked history atoms) the edit is stored
    as one masked atom per new value over its bounding box — ~15x faster than ``data_setitem`` for
    millions of voxels (0.09 s vs 1.4 s for 11 M voxels); otherwise ``Labels.data_setitem`` is used.
    Returns the number of voxels changed; records the changed slices in ``tracker``.
    """
    if edit.is_empty:
        return 0
    ctx = tracker.suspend() if tracker is not None else _null()
    with ctx:
        if not (fast and _apply_masked(layer, edit)):
            idx, values = edit.indices()
            values = values.astype(layer.data.dtype, copy=False)
            with layer.block_history():
                layer.data_setitem(idx, values)
    if tracker is not None:
        tracker.note_edit(edit.params.get("op", edit.description), axis, edit.slices(axis),
                          {**edit.params, "n_changed": edit.n_changed}, whole_volume=whole_volume)
    return edit.n_changed


def _apply_masked(layer, edit) -> bool:
    try:
        from napari.layers.labels.labels import _MaskedPaintAtom
    except ImportError:  # another napari version: use the public data_setitem
        return False
    if not isinstance(layer.data, np.ndarray) or not hasattr(layer, "_save_history"):
        return False
    changed = edit.changed
    region = np.array(layer.data[edit.bbox], copy=True)
    after = edit.after.astype(layer.data.dtype, copy=False)
    with layer.block_history():
        for value in np.unique(after[changed]):
            mask = changed & (after == value)
            layer._save_history(_MaskedPaintAtom(edit.bbox, mask, region[mask].copy(), value.item()))
        layer.data[edit.bbox] = np.where(changed, after, region)
    layer.refresh()
    return True


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
