"""`CorrectionStore`: the corrected-slice state of one labels volume, evented (psygnal), no Qt, no napari.

One store belongs to one labels array (in napari: one per Labels layer, attached by
:func:`napari_medseg._napari.stores.ensure_correction_stores` from the moment the layer exists). It owns

* ``edited`` — slices ``(axis, index)`` (array axes, 0 = k = "z") the user painted or changed with an
  operation, still different from the labels as first seen (an undo takes a slice off the list, a redo puts
  it back: `prune`, run by the napari adapter whenever the layer's data changes without a paint event);
* ``corrected`` — slices the user marked reviewed/corrected (one state: "checked" in the Correction widget,
  the input of fine-tuning);
* the log of every edit and mark (a `napari_medseg.session.CorrectionRecord`);
* a baseline (the labels before the first edit) to tell undone slices and classes left as the model had them.

Events (``store.events``; psygnal signals, emitted synchronously in the caller's thread):

* ``changed()`` — after any change of the state (edit, mark, prune, reload); subscribe to this for lists;
* ``edited(axis: int, indices: list)`` — slices newly recorded by an edit (empty for whole-volume operations);
* ``marked(axis: int, index: int, corrected: bool)``;
* ``pruned(slices: list)`` — ``[(axis, index), ...]`` taken off "edited" (they equal the baseline again);
* ``reloaded()`` — the record was replaced (`reload`, e.g. a restored session).

Saved form: `to_metadata` writes the record under the ``medseg_*`` keys of a metadata dict (the napari
adapter does it on every ``changed``); `from_metadata` builds a store from it. ``dirty`` says whether
anything changed since `mark_saved`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable

import numpy as np
from psygnal import Signal, SignalGroup

from napari_medseg.session import CorrectionRecord

#: keep a copy of the labels as first edited (to tell undone and untouched slices) up to this many voxels
BASELINE_MAX_VOXELS = 300_000_000
#: a class with fewer voxels than this on a ticked slice is named as a possible stray
STRAY_VOXELS = 20
#: ops of the log that count as "painted by the user" (the key slices of the interpolation)
PAINT_OPS = ("paint", "fill", "polygon")
AXIS_LETTERS = "zyx"

SliceId = tuple[int, int]


class StoreEvents(SignalGroup):
    changed = Signal()
    edited = Signal(int, list)
    marked = Signal(int, int, bool)
    pruned = Signal(list)
    reloaded = Signal()


def take_slice(data, sid: SliceId):
    """``data[..., index, ...]`` along ``axis`` of ``sid = (axis, index)`` (a view for numpy arrays)."""
    sl = [slice(None)] * np.ndim(data)
    sl[int(sid[0])] = int(sid[1])
    return data[tuple(sl)]


class CorrectionStore:
    """Edited / corrected slices of one labels array with undo awareness (see the module docstring)."""

    def __init__(self, get_data: Callable[[], object], record: CorrectionRecord | None = None):
        self.events = StoreEvents()
        self._get_data = get_data
        self.record = record if record is not None else CorrectionRecord()
        self.dirty = False
        self._suspended = 0
        self.baseline: np.ndarray | None = None
        self._seen_edit = False  # an edit was recorded (then a missing baseline means "unknown", not "as now")
        self._pre_edited = set(self.record.edited)  # restored from a session: no known original, never pruned

    @classmethod
    def from_metadata(cls, get_data: Callable[[], object], metadata: dict | None) -> "CorrectionStore":
        return cls(get_data, CorrectionRecord.from_metadata(metadata))

    def to_metadata(self, metadata: dict) -> dict:
        return self.record.to_metadata(metadata)

    # ---------------------------------------------------------------- state
    @property
    def data(self):
        return self._get_data()

    @property
    def edited(self) -> frozenset[SliceId]:
        return frozenset(self.record.edited)

    @property
    def corrected(self) -> frozenset[SliceId]:
        return frozenset(self.record.corrected)

    def slices(self) -> list[SliceId]:
        """Every listed slice (edited or corrected), sorted."""
        return self.record.slices()

    def corrected_slices(self) -> list[SliceId]:
        return sorted(self.record.corrected)

    def corrected_on(self, axis: int) -> list[int]:
        return sorted(i for a, i in self.record.corrected if a == int(axis))

    def edited_unmarked(self) -> list[SliceId]:
        """Slices edited but not marked corrected (not used for fine-tuning yet)."""
        return sorted(self.record.edited - self.record.corrected)

    def painted_slices(self, axis: int) -> list[int]:
        """Indices along ``axis`` the user painted or filled (still edited, not undone)."""
        out = set()
        for entry in self.record.log:
            if entry.get("op") in PAINT_OPS:
                out |= {int(i) for a, i in entry.get("slices", []) if int(a) == int(axis)}
        return sorted(i for i in out if (int(axis), i) in self.record.edited)

    # ---------------------------------------------------------------- recording
    def capture_baseline(self, revert: Callable[[np.ndarray], object] | None = None) -> None:
        """Remember the labels before the first edit: a copy of the data with ``revert`` applied (it undoes,
        in place on the copy, the change that is being recorded). Later calls keep the first baseline."""
        if self.baseline is not None or self._seen_edit:
            return
        self._seen_edit = True
        data = self.data
        if not isinstance(data, np.ndarray) or data.size > BASELINE_MAX_VOXELS:
            return
        base = np.array(data, copy=True)
        if revert is not None:
            revert(base)
        self.baseline = base

    @contextmanager
    def suspend(self):
        """While active, `note_paint` ignores events (our own operations record themselves with `note_edit`)."""
        self._suspended += 1
        try:
            yield self
        finally:
            self._suspended -= 1

    @property
    def suspended(self) -> bool:
        return self._suspended > 0

    def note_paint(self, mode: str, axis: int, indices: Iterable[int]) -> None:
        """Record a stroke of the user's tools (brush, fill, eraser, polygon, or any ``data_setitem``)."""
        if self._suspended:
            return
        ids = sorted({int(i) for i in indices})
        if not ids:
            return
        self._seen_edit = True
        self.record.note_edit(mode, [(int(axis), i) for i in ids])
        self.events.edited.emit(int(axis), ids)
        self._changed()

    def note_edit(self, op: str, axis: int, indices: Iterable[int], params: dict | None = None,
                  whole_volume: bool = False) -> None:
        """Record one of our operations. A whole-volume operation is logged with the number of slices it
        changed but does not list them as edited (not painted by the user; they would flood the list)."""
        extra = {k: v for k, v in (params or {}).items() if k not in ("op", "slices", "time")}
        ids = sorted({int(i) for i in indices})
        self._seen_edit = True
        if whole_volume:
            self.record.note_edit(op, (), **{**extra, "scope": "volume", "n_slices_changed": len(ids)})
            self.events.edited.emit(int(axis), [])
        else:
            self.record.note_edit(op, [(int(axis), i) for i in ids], **extra)
            self.events.edited.emit(int(axis), ids)
        self._changed()

    def mark(self, axis: int, index: int, corrected: bool = True) -> None:
        """Mark (or unmark) a slice as reviewed/corrected."""
        self.record.mark(axis, index, corrected)
        self.events.marked.emit(int(axis), int(index), bool(corrected))
        self._changed()

    def prune(self) -> list[SliceId]:
        """Follow an undo/redo: take off "edited" the slices whose labels equal the baseline again (returned),
        and put back the slices recorded before whose labels differ from it again (a redo)."""
        data = self.data
        if self.baseline is None or self.baseline.shape != np.shape(data):
            return []

        def same(sid):
            return np.array_equal(take_slice(data, sid), take_slice(self.baseline, sid))

        gone = sorted(sid for sid in self.record.edited - self._pre_edited if same(sid))
        logged = {(int(a), int(i)) for e in self.record.log if e.get("op") not in ("mark", "unmark")
                  for a, i in e.get("slices", [])}
        back = sorted(sid for sid in logged - self.record.edited - self._pre_edited - set(gone) if not same(sid))
        if gone:
            self.record.edited.difference_update(gone)
            self.events.pruned.emit(gone)
        if back:
            self.record.edited.update(back)
            for axis in sorted({a for a, _ in back}):
                self.events.edited.emit(axis, [i for a, i in back if a == axis])
        if gone or back:
            self._changed()
        return gone

    def reload(self, record: CorrectionRecord) -> None:
        """Replace the record (e.g. restored from a session) and forget the baseline."""
        self.record = record
        self.baseline, self._seen_edit = None, False
        self._pre_edited = set(record.edited)
        self.events.reloaded.emit()
        self._changed()

    def mark_saved(self) -> None:
        self.dirty = False

    def _changed(self) -> None:
        self.dirty = True
        self.events.changed.emit()

    # ---------------------------------------------------------------- review
    def review_warnings(self, slices: Iterable[SliceId], classes: dict[int, str] | None = None) -> list[str]:
        """Warnings for ticked ``slices``: classes left exactly as the model had them (before the first edit:
        not reviewed?) and stray bits (fewer than `STRAY_VOXELS` voxels of a class), naming class and slice."""
        names = classes or {}
        data = self.data
        untouched: dict[str, list[str]] = {}
        stray: list[str] = []
        base_ok = self.baseline is not None and self.baseline.shape == np.shape(data)
        for sid in sorted(slices):
            cur = np.asarray(take_slice(data, sid))
            if sid in self._pre_edited:
                base = None
            elif base_ok:
                base = np.asarray(take_slice(self.baseline, sid))
            else:  # nothing edited since the store exists: the labels are still as first seen
                base = None if self._seen_edit else cur
            values, counts = np.unique(cur, return_counts=True)
            where = f"{AXIS_LETTERS[sid[0]]} {sid[1]}"
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
