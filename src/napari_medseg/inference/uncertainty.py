"""The uncertainty map (1 - max probability) on the model grid, placed exactly over the source image.

The network's probabilities live on the model grid (e.g. 3 mm voxels: 2.6 M voxels for a 141 × 512 × 512
chest CT of 37 M). Inverting an uncertainty map onto every source voxel costs seconds and a 150 MB float
array that napari then uploads as a texture on the GUI thread. The map says no more on the finer grid than
on the network's own voxels, so it is kept there: `model_grid_uncertainty` returns it as a `Volume` with the
model grid's exact geometry.

Its array axes are re-indexed to run along the source's axes (a signed permutation of the model grid's,
which `model_grid` reorients to the card's orientation): the voxels and their physical positions are
unchanged, only the index order is, so a viewer shows it over the source with the same rotation (napari:
the same affine up to scale and origin) even for flipped or permuted directions. A model grid that is
oblique to the source (no signed permutation) keeps its own axes; its geometry is exact either way.

`uncertainty_on` resamples such a map onto another grid (e.g. the labels') when a per-voxel comparison needs it.
"""

from __future__ import annotations

import numpy as np

from napari_medseg.volume import Volume

KIND = "uncertainty (1 - max probability)"


def model_grid_uncertainty(probs, model_grid, source=None) -> Volume:
    """``1 - max_c p_c / sum_c p_c`` of ``probs`` (``[C, k, j, i]`` on ``model_grid``, torch or numpy) as a
    float32 `Volume` on the model grid, its axes aligned with ``source``'s when given (see `align_axes`)."""
    import torch

    p = probs if isinstance(probs, torch.Tensor) else torch.from_numpy(np.asarray(probs))
    p = p.to(torch.float32)
    unc = 1.0 - p.max(0).values / p.sum(0).clamp(min=1e-8)
    vol = Volume(unc.cpu().numpy().astype(np.float32, copy=False), model_grid.spacing, model_grid.origin,
                 np.asarray(model_grid.direction, dtype=float), {"kind": KIND, "grid": "model"})
    return align_axes(vol, source) if source is not None else vol


def axis_map(direction, ref_direction, tol: float = 1e-6):
    """``(axes, signs)`` with ``axes[d]`` the axis of ``direction`` along ``ref_direction``'s axis ``d`` (ITK
    order i, j, k) and ``signs[d]`` = ±1; None when the two are not related by a signed permutation."""
    r = np.asarray(direction, dtype=float).T @ np.asarray(ref_direction, dtype=float)
    rr = np.round(r)
    if np.abs(r - rr).max() > tol or not (np.abs(rr).sum(0) == 1).all() or not (np.abs(rr).sum(1) == 1).all():
        return None
    axes = [int(np.flatnonzero(rr[:, d])[0]) for d in range(3)]
    return axes, [int(rr[axes[d], d]) for d in range(3)]


def align_axes(vol: Volume, ref) -> Volume:
    """The same voxels as ``vol`` (3D), re-indexed so that its axes run along ``ref``'s (positive steps).

    Exact: every voxel keeps its physical position; only the array order, origin (the new first voxel) and
    direction columns change. ``vol`` is returned as is when the grids are oblique to each other.
    """
    found = axis_map(vol.direction, ref.direction)
    if found is None:
        return vol
    axes, signs = found
    size = vol.size_ijk
    a = np.asarray(vol.array).transpose(2, 1, 0).transpose(axes)  # [i, j, k] in ref's axis order
    a = a[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in signs)]
    first = [0.0, 0.0, 0.0]  # vol's (i, j, k) index of the new first voxel
    for d in range(3):
        if signs[d] < 0:
            first[axes[d]] = size[axes[d]] - 1
    direction = np.stack([signs[d] * np.asarray(vol.direction, dtype=float)[:, axes[d]] for d in range(3)], axis=1)
    if np.allclose(direction, ref.direction, atol=1e-9):
        direction = np.asarray(ref.direction, dtype=float)
    origin = tuple(float(x) for x in vol.index_to_physical(first))
    spacing = tuple(float(vol.spacing[axes[d]]) for d in range(3))
    return Volume(np.ascontiguousarray(a.transpose(2, 1, 0)), spacing, origin, direction, dict(vol.meta))


def uncertainty_on(unc: Volume, grid) -> np.ndarray:
    """``unc`` linearly resampled onto ``grid`` (a `Volume`/`Grid`; border padding), ``[k, j, i]`` float32."""
    if unc.same_grid(grid) if isinstance(grid, Volume) else False:
        return np.asarray(unc.array, dtype=np.float32)
    from napari_medseg.inference.resample import resample

    return resample(np.asarray(unc.array, dtype=np.float32), unc, grid, mode="linear", padding="border")
