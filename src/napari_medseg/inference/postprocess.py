"""Label post-processing: keep the largest connected component per class, fill holes per class."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_medseg.editing.edit import bbox_of


def keep_largest(labels: np.ndarray, values) -> np.ndarray:
    """Voxels of each class in ``values`` outside its largest 26-connected component become background."""
    out = labels
    for v in values:
        mask = out == v
        box = bbox_of(mask)
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
        box = bbox_of(mask)
        if box is None:
            continue
        filled = ndimage.binary_fill_holes(mask[box])
        add = filled & (out[box] == 0)
        if add.any():
            if out is labels:
                out = labels.copy()
            out[box][add] = v
    return out
