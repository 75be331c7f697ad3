"""Slice-wise operations: shape-based interpolation between painted slices, copy a neighbouring slice,
merge/relabel classes. Same conventions as :mod:`napari_medseg.editing.edit` (array order ``[k, j, i]``,
``spacing`` in ITK ``(i, j, k)`` mm, ``axis`` an array axis with 0 = k = "z")."""

from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy import ndimage as ndi

from napari_medseg.editing.edit import Edit, Scope, check_labels, check_scope, make_edit, run_scoped, spacing_zyx
from napari_medseg.errors import InputError


def signed_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """Signed Euclidean distance (mm) to the boundary of a 2D/3D mask: negative inside, positive outside.

    Inside voxels get ``-(distance to the nearest outside voxel)``, outside voxels ``+(distance to the
    nearest inside voxel)``, so the zero level lies half a voxel outside the mask and thresholding at 0
    returns the mask exactly.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.full(mask.shape, np.inf)
    if mask.all():
        return np.full(mask.shape, -np.inf)
    return ndi.distance_transform_edt(~mask, sampling=spacing) - ndi.distance_transform_edt(mask, sampling=spacing)


def interpolate_slices(labels, label: int, axis: int = 0, *, spacing=None, slices: Iterable[int] | None = None,
                       overwrite: bool = False) -> Edit:
    """Fill the slices between the slices the user painted with a shape-based interpolation of ``label``.

    ``slices`` are the key slices along ``axis`` (default: every slice that contains ``label``). Between
    two consecutive key slices the class is the zero level of the linear blend of their in-plane signed
    distance maps (in mm), weighted by the position between them; key slices and slices outside the first
    and last key slice are not changed. Only background voxels are painted unless ``overwrite``.
    """
    labels = check_labels(labels)
    label, axis = int(label), int(axis)
    check_scope(labels, (axis, 0))
    sp = spacing_zyx(spacing)
    sp2d = tuple(s for a, s in enumerate(sp) if a != axis)
    present = np.moveaxis(labels == label, axis, 0)
    if slices is None:
        keys = [int(i) for i in np.nonzero(present.reshape(present.shape[0], -1).any(axis=1))[0]]
    else:
        keys = sorted({int(i) for i in slices})
        bad = [i for i in keys if not 0 <= i < labels.shape[axis]]
        if bad:
            raise InputError(f"key slices {bad} are out of range along axis {axis} (0..{labels.shape[axis] - 1})")
        keys = [i for i in keys if present[i].any()]
    moved = np.moveaxis(labels, axis, 0)
    new = moved.copy()
    for a, b in zip(keys[:-1], keys[1:]):
        if b - a < 2:
            continue
        da, db = signed_distance(present[a], sp2d), signed_distance(present[b], sp2d)
        for k in range(a + 1, b):
            t = (k - a) / (b - a)
            inside = (1 - t) * da + t * db < 0
            target = inside & (moved[k] != label)
            if not overwrite:
                target &= moved[k] == 0
            new[k][target] = label
    new = np.moveaxis(new, 0, axis)
    full = tuple(slice(0, n) for n in labels.shape)
    return make_edit(labels, full, new, "interpolate between slices",
                     {"op": "interpolate_slices", "label": label, "axis": axis, "key_slices": keys,
                      "overwrite": overwrite, "spacing": list(sp[::-1])})


def copy_slice(labels, axis: int, index: int, *, source: int | None = None, label: int | None = None,
               overwrite: bool = False) -> Edit:
    """Copy slice ``source`` (default: the previous one, ``index - 1``) onto slice ``index`` along ``axis``.

    With ``label`` only that class is copied (painted over background unless ``overwrite``); with
    ``label=None`` the whole slice is replaced by the source slice.
    """
    labels = check_labels(labels)
    axis, index = check_scope(labels, (axis, index))
    source = index - 1 if source is None else int(source)
    if not 0 <= source < labels.shape[axis]:
        raise InputError(f"there is no slice {source} to copy from along axis {axis} (0..{labels.shape[axis] - 1})")
    src = np.take(labels, source, axis=axis)
    dst = np.take(labels, index, axis=axis)
    if label is None:
        new = src.copy()
    else:
        new = dst.copy()
        target = (src == int(label)) & (dst != int(label))
        if not overwrite:
            target &= dst == 0
        new[target] = int(label)
    offset = [slice(0, n) for n in labels.shape]
    offset[axis] = slice(index, index + 1)
    return make_edit(labels, tuple(offset), np.expand_dims(new, axis), f"copy slice {source} to {index}",
                     {"op": "copy_slice", "axis": axis, "index": index, "source": source,
                      "label": None if label is None else int(label), "overwrite": overwrite})


def relabel(labels, sources: int | Iterable[int], target: int, *, where: Scope = None) -> Edit:
    """Merge classes: every voxel of ``sources`` (one value or several) becomes ``target`` (0 erases)."""
    srcs = [int(sources)] if np.isscalar(sources) else [int(s) for s in sources]
    target = int(target)
    if target < 0:
        raise InputError(f"target class must be >= 0, got {target}")
    labels = check_labels(labels)
    limit = 1 if labels.dtype == bool else np.iinfo(labels.dtype).max
    if target > limit:
        raise InputError(f"class {target} does not fit the labels' dtype {labels.dtype}")

    def fn(region, sp):
        new = region.copy()
        new[np.isin(region, srcs)] = target
        return new

    return run_scoped(labels, where, None, fn, f"relabel {srcs} -> {target}",
                      {"op": "relabel", "sources": srcs, "target": target})
