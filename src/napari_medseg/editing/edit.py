"""`Edit`: the result of a mask operation, as the changed region of a label array.

Every operation in :mod:`napari_medseg.editing` is a pure function: it reads a label array and returns an
`Edit` (bounding box + values before/after) without touching its input. The napari correction widget
applies an `Edit` through the Labels layer's undo history; scripts call :meth:`Edit.apply`.

Conventions shared by all operations:

* ``labels`` is a 3D integer array in array order ``[k, j, i]`` (as `Volume.array`).
* ``spacing`` is in **ITK order** ``(i, j, k)`` in millimetres, exactly `Volume.spacing` (napari's
  ``layer.scale`` is the reverse). Distances and volumes are physical, so anisotropic voxels are exact.
* ``where`` is the scope: ``None`` for the whole volume, or ``(axis, index)`` for one slice, with ``axis``
  an array axis (0 = k = "z", the axial slice of a standard CT).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from napari_medseg.errors import InputError

Scope = Optional[tuple[int, int]]


@dataclass
class Edit:
    """A change of ``labels[bbox]`` from ``before`` to ``after`` (both arrays of the bbox's shape)."""

    bbox: tuple[slice, ...]
    before: np.ndarray
    after: np.ndarray
    description: str = ""
    params: dict = field(default_factory=dict)

    @property
    def changed(self) -> np.ndarray:
        """Boolean mask (bbox-shaped) of the voxels this edit changes."""
        return self.before != self.after

    @property
    def n_changed(self) -> int:
        return int(np.count_nonzero(self.changed))

    @property
    def is_empty(self) -> bool:
        return self.n_changed == 0

    def indices(self) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """Full-array fancy indices of the changed voxels and their new values (for ``data_setitem``)."""
        local = np.nonzero(self.changed)
        idx = tuple(ix + (s.start or 0) for ix, s in zip(local, self.bbox))
        return idx, self.after[local]

    def slices(self, axis: int = 0) -> list[int]:
        """Indices along ``axis`` of the slices this edit changes."""
        if self.is_empty:
            return []
        other = tuple(a for a in range(self.changed.ndim) if a != axis)
        hit = np.nonzero(self.changed.any(axis=other))[0]
        return [int(i + (self.bbox[axis].start or 0)) for i in hit]

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Apply the edit to ``labels`` in place and return it."""
        region = labels[self.bbox]
        ch = self.changed
        region[ch] = self.after[ch]
        return labels

    def revert(self, labels: np.ndarray) -> np.ndarray:
        """Undo the edit on ``labels`` in place and return it."""
        region = labels[self.bbox]
        ch = self.changed
        region[ch] = self.before[ch]
        return labels


# ---------------------------------------------------------------------------------------------- helpers
def check_labels(labels) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise InputError(
            f"label operations need a 3D [k, j, i] label array, got shape {arr.shape}; "
            "use a 3D labels layer (2D, RGB and 4D layers are not supported)"
        )
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise InputError(f"labels must be an integer array, got dtype {arr.dtype}")
    return arr


def spacing_zyx(spacing) -> tuple[float, float, float]:
    """ITK-order ``(i, j, k)`` spacing -> array-order ``(k, j, i)``; checks it is 3 positive numbers."""
    sp = np.asarray(spacing if spacing is not None else (1.0, 1.0, 1.0), dtype=float).reshape(-1)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"spacing must be 3 positive numbers in (i, j, k) order (mm), got {sp.tolist()}")
    return tuple(float(s) for s in sp[::-1])  # type: ignore[return-value]


def check_scope(labels: np.ndarray, where: Scope) -> Scope:
    if where is None:
        return None
    try:
        axis, index = (int(v) for v in where)
    except (TypeError, ValueError) as e:
        raise InputError(f"scope must be None (whole volume) or (axis, index), got {where!r}") from e
    if not 0 <= axis < labels.ndim:
        raise InputError(f"scope axis {axis} is out of range for a {labels.ndim}D label array")
    if not 0 <= index < labels.shape[axis]:
        raise InputError(f"slice {index} is out of range along axis {axis} (0..{labels.shape[axis] - 1})")
    return axis, index


def make_edit(full_before: np.ndarray, offset: tuple[slice, ...], new_region: np.ndarray, description: str,
              params: dict) -> Edit:
    """Build the minimal `Edit` from a region of ``full_before`` (at ``offset``) and its new values."""
    old_region = full_before[offset]
    changed = old_region != new_region
    if not changed.any():
        empty = tuple(slice(s.start, s.start) for s in offset)
        z = np.zeros((0,) * full_before.ndim, full_before.dtype)
        return Edit(empty, z, z.copy(), description, params)
    nz = np.nonzero(changed)
    local = tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in nz)
    bbox = tuple(slice((o.start or 0) + s.start, (o.start or 0) + s.stop) for o, s in zip(offset, local))
    return Edit(bbox, np.array(old_region[local], copy=True), np.array(new_region[local], copy=True),
                description, params)


def bbox_of(mask: np.ndarray, margin=0) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``margin`` voxels per axis (scalar or per axis), clipped."""
    if not mask.any():
        return None
    margins = np.broadcast_to(np.asarray(margin, dtype=int), (mask.ndim,))
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        hit = np.nonzero(mask.any(axis=other))[0]
        out.append(slice(max(0, int(hit[0]) - int(margins[ax])), min(mask.shape[ax], int(hit[-1]) + 1 + int(margins[ax]))))
    return tuple(out)


def run_scoped(labels, where: Scope, spacing, fn: Callable[[np.ndarray, tuple[float, ...]], np.ndarray],
               description: str, params: dict) -> Edit:
    """Run ``fn(region, spacing_in_array_order) -> new_region`` on the whole volume or on one slice.

    ``fn`` gets a 3D array (whole volume) or a 2D slice with its in-plane spacing, and must return a new
    array of the same shape (it must not modify its input).
    """
    labels = check_labels(labels)
    where = check_scope(labels, where)
    sp = spacing_zyx(spacing)
    params = {**params, "scope": "volume" if where is None else list(where), "spacing": list(sp[::-1])}
    if where is None:
        full = tuple(slice(0, n) for n in labels.shape)
        return make_edit(labels, full, fn(labels, sp), description, params)
    axis, index = where
    region2d = np.take(labels, index, axis=axis)
    sp2d = tuple(s for a, s in enumerate(sp) if a != axis)
    new2d = fn(region2d, sp2d)
    offset = [slice(0, n) for n in labels.shape]
    offset[axis] = slice(index, index + 1)
    return make_edit(labels, tuple(offset), np.expand_dims(new2d, axis), description, params)
