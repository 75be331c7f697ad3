"""Label post-processing: keep the largest connected component per class, fill holes per class."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _bbox(mask: np.ndarray):
    idx = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != 0)))[0]
    if idx.size == 0:
        return None
    sl = []
    for ax in range(3):
        proj = mask.any(axis=tuple(a for a in range(3) if a != ax))
        nz = np.nonzero(proj)[0]
        sl.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(sl)


def keep_largest(labels: np.ndarray, values) -> np.ndarray:
    """Voxels of each class in ``values`` outside its largest 26-connected component become background."""
    out = labels
    for v in values:
        mask = out == v
        box = _bbox(mask)
        if box is None:
            continue
        sub = mask[box]
        lab, n = ndimage.label(sub, structure=np.ones((3, 3, 3), bool))
        if n <= 1:
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        drop = sub & (lab != int(np.argmax(sizes)))
        if out is labels:
            out = labels.copy()
        out[box][drop] = 0
    return out


def fill_holes(labels: np.ndarray, values=None) -> np.ndarray:
    """Background voxels fully enclosed by one class (3D) take that class."""
    values = [int(v) for v in np.unique(labels) if v != 0] if values is None else values
    out = labels
    for v in values:
        mask = out == v
        box = _bbox(mask)
        if box is None:
            continue
        filled = ndimage.binary_fill_holes(mask[box])
        add = filled & (out[box] == 0)
        if add.any():
            if out is labels:
                out = labels.copy()
            out[box][add] = v
    return out
