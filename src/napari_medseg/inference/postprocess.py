"""Label post-processing: keep the largest connected component per class, drop components of a class that lie
outside the class that must contain them (a liver tumour outside the liver), fill holes per class."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_medseg.editing.edit import bbox_of
from napari_medseg.editing.morphology import filled, outside_largest


def keep_largest(labels: np.ndarray, values) -> np.ndarray:
    """Voxels of each class in ``values`` outside its largest 26-connected component become background
    (the component rule of `napari_medseg.editing.morphology.keep_largest`, on each class's bounding box)."""
    out = labels
    for v in values:
        mask = out == v
        box = bbox_of(mask)
        if box is None:
            continue
        drop = outside_largest(mask[box])
        if not drop.any():
            continue
        if out is labels:
            out = labels.copy()
        out[box][drop] = 0
    return out


def fill_holes(labels: np.ndarray, values=None) -> np.ndarray:
    """Background voxels fully enclosed by one class (3D) take that class (the hole rule of
    `napari_medseg.editing.morphology.fill_holes`, on each class's bounding box)."""
    values = [int(v) for v in np.unique(labels) if v != 0] if values is None else values
    out = labels
    for v in values:
        mask = out == v
        box = bbox_of(mask)
        if box is None:
            continue
        add = filled(mask[box]) & (out[box] == 0)
        if add.any():
            if out is labels:
                out = labels.copy()
            out[box][add] = v
    return out


def contained_in(labels: np.ndarray, rules, min_fraction: float = 0.5) -> np.ndarray:
    """Drop (to background) each 26-connected component of a class that its container class does not hold.

    ``rules`` maps a class value to the value that must contain it, e.g. ``{5: 1}``: a liver tumour lies in
    the liver. A component is kept when at least ``min_fraction`` of the voxels just around it (its one-voxel
    outer shell, 6-connected) carry the container's value.
    """
    out = labels
    shell_struct = ndimage.generate_binary_structure(3, 1)
    for child, parent in dict(rules).items():
        child, parent = int(child), int(parent)
        mask = out == child
        if not mask.any():
            continue
        comp, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        for c, box in enumerate(ndimage.find_objects(comp), start=1):
            if box is None:
                continue
            # the component's box with one voxel of margin, so that its shell is seen (clipped at the border)
            box = tuple(slice(max(0, b.start - 1), min(n, b.stop + 1)) for b, n in zip(box, out.shape))
            m = comp[box] == c
            shell = ndimage.binary_dilation(m, shell_struct) & ~m
            if shell.any() and (out[box][shell] == parent).mean() >= min_fraction:
                continue
            if out is labels:
                out = labels.copy()
            out[box][m] = 0
    return out
