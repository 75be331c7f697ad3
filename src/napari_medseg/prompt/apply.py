"""Turning a prompt result into a labels edit (pure numpy: the napari widget writes it as one undoable step)."""

from __future__ import annotations

import numpy as np


def merge_indices(labels: np.ndarray, mask: np.ndarray, value: int, refine: bool = False, overwrite: bool = False):
    """``(indices, values)`` of the voxels of ``labels`` that change when ``mask`` becomes class ``value``.

    New object: mask voxels that are background (or any class, with ``overwrite``) become ``value``.
    Refine: additionally the voxels of ``value`` outside the mask become background, so the class equals the
    mask (other classes are kept unless ``overwrite``). The indices are full-array fancy indices, ready for
    napari's ``Labels.data_setitem``.
    """
    labels = np.asarray(labels)
    mask = np.asarray(mask, bool)
    if mask.shape != labels.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the labels {labels.shape}")
    value = int(value)
    is_value = labels == value
    # mask voxels that become the class: not it yet, and background (or any class with overwrite)
    changed = mask & ~is_value
    if not overwrite:
        changed &= labels == 0
    if refine:  # and the class's voxels outside the mask become background
        changed |= is_value & ~mask
    idx = np.nonzero(changed)
    values = np.where(mask[idx], value, 0) if refine else np.full(idx[0].size, value)
    return idx, values.astype(labels.dtype, copy=False)


def union_box(boxes, shape):
    """Slices of the smallest box holding every ``[lo, hi]`` box (the whole array when there is none)."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return tuple(slice(0, n) for n in shape)
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def merge_in_box(labels: np.ndarray, mask: np.ndarray, value: int, box, refine: bool = False, overwrite: bool = False):
    """`merge_indices` computed inside ``box`` only (where the prompt results can differ from the labels)."""
    local, values = merge_indices(labels[box], mask[box], value, refine, overwrite)
    return tuple(ix + s.start for ix, s in zip(local, box)), values


def touched_slices(indices, axis: int = 0) -> list[int]:
    ix = np.asarray(indices[axis])
    return [int(i) for i in np.unique(ix)] if ix.size else []
