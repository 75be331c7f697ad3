"""Per-class mask operations in physical units: holes, islands, largest component, dilate/erode/smooth.

All functions take ``labels`` (3D ``[k, j, i]``), the class value ``label``, ``spacing`` in ITK ``(i, j, k)``
mm order and a scope ``where`` (``None`` = whole volume, ``(axis, index)`` = one slice) and return an
`Edit`; see :mod:`napari_medseg.editing.edit`. Growing operations only paint background (0) voxels unless
``overwrite=True``; shrinking operations set removed voxels to background. Distances use Euclidean
distance transforms with the voxel spacing, so anisotropic volumes are handled exactly. Connected
components use full connectivity (8 neighbours in 2D, 26 in 3D).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_medseg.editing.edit import Edit, Scope, bbox_of, run_scoped, spacing_zyx
from napari_medseg.errors import InputError


def _check_distance(distance_mm: float, name: str = "distance_mm") -> float:
    d = float(distance_mm)
    if not np.isfinite(d) or d < 0:
        raise InputError(f"{name} must be a non-negative number of millimetres, got {distance_mm!r}")
    return d


def _margin(distance_mm: float, sp) -> list[int]:
    return [int(np.ceil(distance_mm / s)) + 1 for s in sp]


def _grow(mask: np.ndarray, distance_mm: float, sp) -> np.ndarray:
    """Voxels within ``distance_mm`` of ``mask`` (Euclidean, physical), computed on the mask's bbox only."""
    if distance_mm <= 0 or not mask.any():
        return mask.copy()
    box = bbox_of(mask, _margin(distance_mm, sp))
    out = np.zeros_like(mask)
    sub = mask[box]
    out[box] = ndi.distance_transform_edt(~sub, sampling=sp) <= distance_mm + 1e-9
    return out


def _shrink(mask: np.ndarray, distance_mm: float, sp) -> np.ndarray:
    """Voxels of ``mask`` farther than ``distance_mm`` from any non-mask voxel (the array border is not
    treated as background: a structure cut by the field of view is not eroded at the cut)."""
    if distance_mm <= 0 or not mask.any():
        return mask.copy()
    box = bbox_of(mask, 1)
    out = np.zeros_like(mask)
    sub = mask[box]
    if sub.all():  # no background inside the crop: nothing to erode against
        out[box] = sub
        return out
    out[box] = ndi.distance_transform_edt(sub, sampling=sp) > distance_mm + 1e-9
    return out


def _paint(region: np.ndarray, label: int, add: np.ndarray, remove: np.ndarray, overwrite: bool) -> np.ndarray:
    new = region.copy()
    new[remove & (region == label)] = 0
    target = add & (region != label)
    if not overwrite:
        target &= region == 0
    new[target] = label
    return new


def filled(mask: np.ndarray, per_slice_axis: int | None = None) -> np.ndarray:
    """``mask`` with its holes filled (3D, or 2D on every slice along ``per_slice_axis``). Shared by
    `fill_holes` and the pipeline's post-processing (:mod:`napari_medseg.inference.postprocess`)."""
    if per_slice_axis is not None and mask.ndim == 3:
        f = np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(mask, per_slice_axis, 0)])
        return np.moveaxis(f, 0, per_slice_axis)
    return ndi.binary_fill_holes(mask)


def outside_largest(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` outside its largest fully connected piece (ties: the first found); none when it has
    at most one piece. Shared by `keep_largest` and the pipeline's post-processing."""
    lab, n = _components(mask)
    if n <= 1:
        return np.zeros_like(mask)
    sizes = np.bincount(lab.ravel())
    sizes[0] = -1
    return (lab != int(np.argmax(sizes))) & (lab > 0)


def fill_holes(labels, label: int, *, where: Scope = None, spacing=None, per_slice_axis: int | None = None,
               overwrite: bool = False) -> Edit:
    """Fill the holes of class ``label`` (background voxels enclosed by it).

    On a slice scope holes are 2D. On the whole volume holes are 3D, or 2D on every slice along
    ``per_slice_axis`` when given (an organ open at its ends has no 3D holes but many 2D ones).
    Voxels of other classes inside a hole are kept unless ``overwrite``.
    """
    label = int(label)

    def fn(region, sp):
        mask = region == label
        box = bbox_of(mask)
        out = np.zeros_like(mask)
        if box is not None:
            out[box] = filled(mask[box], per_slice_axis)
        return _paint(region, label, out, np.zeros_like(mask), overwrite)

    return run_scoped(labels, where, spacing, fn, "fill holes",
                      {"op": "fill_holes", "label": label, "per_slice_axis": per_slice_axis, "overwrite": overwrite})


def _components(mask: np.ndarray):
    structure = np.ones((3,) * mask.ndim, bool)
    return ndi.label(mask, structure=structure)


def remove_islands(labels, label: int, min_volume_mm3: float, *, where: Scope = None, spacing=None) -> Edit:
    """Remove connected pieces of ``label`` smaller than ``min_volume_mm3`` (voxel count × voxel volume;
    on a slice scope the voxel volume still includes the slice thickness)."""
    label = int(label)
    min_volume_mm3 = _check_distance(min_volume_mm3, "min_volume_mm3")
    voxel_mm3 = float(np.prod(spacing_zyx(spacing)))

    def fn(region, sp):
        mask = region == label
        box = bbox_of(mask)
        if box is None:
            return region.copy()
        lab, n = _components(mask[box])
        sizes = np.bincount(lab.ravel())[1:] * voxel_mm3
        small = np.zeros(n + 1, bool)
        small[1:] = sizes < min_volume_mm3
        remove = np.zeros_like(mask)
        remove[box] = small[lab]
        return _paint(region, label, np.zeros_like(mask), remove, False)

    return run_scoped(labels, where, spacing, fn, f"remove islands < {min_volume_mm3:g} mm³",
                      {"op": "remove_islands", "label": label, "min_volume_mm3": min_volume_mm3})


def keep_largest(labels, label: int, *, where: Scope = None, spacing=None) -> Edit:
    """Keep only the largest connected piece of ``label`` (ties: the first found)."""
    label = int(label)

    def fn(region, sp):
        mask = region == label
        box = bbox_of(mask)
        if box is None:
            return region.copy()
        drop = outside_largest(mask[box])
        if not drop.any():
            return region.copy()
        remove = np.zeros_like(mask)
        remove[box] = drop
        return _paint(region, label, np.zeros_like(mask), remove, False)

    return run_scoped(labels, where, spacing, fn, "keep largest component", {"op": "keep_largest", "label": label})


def dilate(labels, label: int, distance_mm: float, *, where: Scope = None, spacing=None,
           overwrite: bool = False) -> Edit:
    """Grow ``label`` by ``distance_mm`` (all voxels whose centre is within that distance of the class)."""
    label, distance_mm = int(label), _check_distance(distance_mm)

    def fn(region, sp):
        mask = region == label
        return _paint(region, label, _grow(mask, distance_mm, sp), np.zeros_like(mask), overwrite)

    return run_scoped(labels, where, spacing, fn, f"dilate {distance_mm:g} mm",
                      {"op": "dilate", "label": label, "distance_mm": distance_mm, "overwrite": overwrite})


def erode(labels, label: int, distance_mm: float, *, where: Scope = None, spacing=None) -> Edit:
    """Shrink ``label`` by ``distance_mm``: voxels within that distance of another class become background."""
    label, distance_mm = int(label), _check_distance(distance_mm)

    def fn(region, sp):
        mask = region == label
        keep = _shrink(mask, distance_mm, sp)
        return _paint(region, label, np.zeros_like(mask), mask & ~keep, False)

    return run_scoped(labels, where, spacing, fn, f"erode {distance_mm:g} mm",
                      {"op": "erode", "label": label, "distance_mm": distance_mm})


def smooth(labels, label: int, distance_mm: float, *, where: Scope = None, spacing=None,
           overwrite: bool = False) -> Edit:
    """Smooth ``label``: a closing (fills gaps and notches narrower than ~2×distance) followed by an
    opening (removes spurs and bridges thinner than ~2×distance), both by ``distance_mm``."""
    label, distance_mm = int(label), _check_distance(distance_mm)

    def fn(region, sp):
        mask = region == label
        closed = _shrink(_grow(mask, distance_mm, sp), distance_mm, sp)
        opened = _grow(_shrink(closed, distance_mm, sp), distance_mm, sp) & closed
        return _paint(region, label, opened & ~mask, mask & ~opened, overwrite)

    return run_scoped(labels, where, spacing, fn, f"smooth {distance_mm:g} mm",
                      {"op": "smooth", "label": label, "distance_mm": distance_mm, "overwrite": overwrite})
