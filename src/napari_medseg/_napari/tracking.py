"""napari side of the `CorrectionStore`: one store per Labels layer, from the moment the layer exists.

`ensure_correction_stores(viewer)` — called by every napari-medseg widget when it is created (whichever
comes first; later calls do nothing) — attaches a store to each Labels layer already in the viewer and to
every one inserted later. The adapter

* records each history item of the layer (napari's ``paint`` event: brush, fill, eraser, polygon, and any
  ``layer.data_setitem`` outside a ``block_history`` group or at its end) as edited slices along the slice
  axis shown in the viewer;
* prunes the edited slices when the data changes without a paint event (undo/redo emit ``set_data``);
* writes the record to ``layer.metadata`` (``medseg_corrected_slices``, ``medseg_edited_slices``,
  ``medseg_correction_log``) on every change: the metadata is only the store's saved form (it travels with
  the layer to the writers and to a reopened session).

`apply_edit` applies an `Edit` of :mod:`napari_medseg.editing` as one undo step and records it.
"""

from __future__ import annotations

import weakref

import numpy as np

from napari_medseg.editing.store import CorrectionStore

_STORES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_VIEWERS: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()
PAINT_MODES = ("paint", "fill", "erase", "polygon")


def _is_labels(layer) -> bool:
    return layer.__class__.__name__ == "Labels"


def ensure_correction_stores(viewer) -> None:
    """Attach a `CorrectionStore` to every Labels layer of ``viewer``, now and whenever one is added."""
    if _VIEWERS.get(id(viewer)) is viewer:
        return
    _VIEWERS[id(viewer)] = viewer
    vref = weakref.ref(viewer)

    def on_inserted(event):
        layer = event.value
        if _is_labels(layer):
            attach_store(layer, vref())

    viewer.layers.events.inserted.connect(on_inserted)
    for layer in list(viewer.layers):
        if _is_labels(layer):
            attach_store(layer, viewer)


def store_for(layer, create: bool = True) -> CorrectionStore | None:
    """The store of a Labels layer (attached now, with axis 0 for strokes, if it has none and ``create``)."""
    try:
        store = _STORES.get(layer)
    except TypeError:
        return None
    if store is None and create and _is_labels(layer):
        store = attach_store(layer, None)
    return store


def follow_store(current: CorrectionStore | None, layer, slot) -> CorrectionStore | None:
    """Move the subscription of ``slot`` to ``changed`` from the ``current`` store to ``layer``'s; returns it."""
    store = store_for(layer) if layer is not None else None
    if store is not current:
        if current is not None:
            try:
                current.events.changed.disconnect(slot)
            except (TypeError, ValueError, RuntimeError):
                pass
        if store is not None:
            store.events.changed.connect(slot)
    return store


def slice_axis(viewer, layer) -> int:
    """Layer axis of the slices shown (the last non-displayed axis in 2D view; 0 in 3D view or no viewer)."""
    if viewer is None or layer is None:
        return 0
    dims = viewer.dims
    if dims.ndisplay != 2:
        return 0
    offset = dims.ndim - layer.ndim
    axis = int(dims.not_displayed[-1]) - offset
    return axis if 0 <= axis < layer.ndim else 0


def attach_store(layer, viewer=None) -> CorrectionStore:
    """Create the store of ``layer`` (from its metadata) and connect it; returns the existing one if any."""
    existing = _STORES.get(layer)
    if existing is not None:
        return existing
    lref = weakref.ref(layer)
    vref = weakref.ref(viewer) if viewer is not None else (lambda: None)
    try:
        store = CorrectionStore.from_metadata(lambda: _data_of(lref), layer.metadata)
    except Exception:  # noqa: BLE001 - a malformed saved record must not stop the layer: start empty
        store = CorrectionStore(lambda: _data_of(lref))
    _STORES[layer] = store

    def on_paint(event):
        l = lref()
        if l is None or store.suspended:
            return
        atoms = list(getattr(event, "value", None) or [])
        axis = slice_axis(vref(), l)
        touched: set[int] = set()
        for atom in atoms:
            try:
                touched |= atom_slices(atom, axis)
            except (IndexError, TypeError, AttributeError):  # an unknown atom type: ignore, never break painting
                continue
        if touched:
            store.capture_baseline(lambda base: revert_atoms(base, atoms))
            mode = str(getattr(l, "mode", "paint"))
            store.note_paint(mode if mode in PAINT_MODES else "paint", axis, touched)

    def on_data(event=None):
        if not store.suspended:
            store.prune()

    def save_form():
        l = lref()
        if l is not None:
            store.to_metadata(l.metadata)

    layer.events.paint.connect(on_paint)
    layer.events.set_data.connect(on_data)
    store.events.changed.connect(save_form)
    return store


def _data_of(lref):
    layer = lref()
    return None if layer is None else layer.data


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


def revert_atoms(array: np.ndarray, atoms) -> None:
    """Undo a napari history item on ``array`` in place (its atoms' old values, last atom first)."""
    for atom in reversed(list(atoms)):
        slice_key = getattr(atom, "slice_key", None)
        if slice_key is not None:
            if atom.mask is None:
                array[slice_key] = atom.old_values
            else:
                region = array[slice_key]
                region[atom.mask] = atom.old_values
        else:
            indices, old, _new = atom
            array[indices] = old


def apply_edit(layer, edit, store: CorrectionStore | None = None, axis: int = 0, fast: bool = True,
               whole_volume: bool = False) -> int:
    """Apply an `Edit` to a Labels layer as ONE undoable step of napari's history (``layer.undo()``).

    With ``fast`` (and a numpy-backed layer on a napari that has masked history atoms) the edit is stored
    as one masked atom per new value over its bounding box — ~15x faster than ``data_setitem`` for
    millions of voxels (0.09 s vs 1.4 s for 11 M voxels); otherwise ``Labels.data_setitem`` is used.
    Returns the number of voxels changed; records the changed slices in ``store`` (default: the layer's).
    """
    if edit.is_empty:
        return 0
    store = store if store is not None else store_for(layer)
    with store.suspend() if store is not None else _null():
        if not (fast and _apply_masked(layer, edit)):
            idx, values = edit.indices()
            values = values.astype(layer.data.dtype, copy=False)
            with layer.block_history():
                layer.data_setitem(idx, values)
    if store is not None:
        store.capture_baseline(edit.revert)
        store.note_edit(edit.params.get("op", edit.description), axis, edit.slices(axis),
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
