"""Review aids: which slice should the user check next?"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from napari_medseg.errors import InputError


def slice_scores(uncertainty, axis: int = 0, labels=None) -> np.ndarray:
    """Per-slice uncertainty along ``axis``: the mean voxel uncertainty of each slice.

    With ``labels`` given, slices are scored on the voxels that are labelled (foreground) or uncertain
    (> 0.05), so that large empty background does not dilute a small uncertain organ boundary.
    """
    u = np.asarray(uncertainty, dtype=np.float32)
    if u.ndim != 3:
        raise InputError(f"the uncertainty map must be 3D [k, j, i], got shape {u.shape}")
    moved = np.moveaxis(u, axis, 0).reshape(u.shape[axis], -1)
    if labels is None:
        return moved.mean(axis=1)
    lab = np.moveaxis(np.asarray(labels), axis, 0).reshape(u.shape[axis], -1)
    if lab.shape != moved.shape:
        raise InputError(f"labels shape {np.shape(labels)} differs from the uncertainty map's {u.shape}")
    roi = (lab > 0) | (moved > 0.05)
    sums = np.where(roi, moved, 0).sum(axis=1)
    counts = roi.sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def next_slice_to_check(uncertainty, axis: int = 0, reviewed: Iterable[int] = (), labels=None) -> int | None:
    """The unreviewed slice index along ``axis`` the model is least sure about (None when all reviewed)."""
    scores = slice_scores(uncertainty, axis, labels).astype(float)
    done = [int(i) for i in reviewed if 0 <= int(i) < scores.size]
    scores[done] = -np.inf
    if not np.isfinite(scores).any():
        return None
    return int(np.argmax(scores))
