"""The model crop: a box of the image's own axes at the model spacing around the prompts (AutoZoom).

The crop keeps the volume's direction, so source voxels map onto crop voxels by a per-axis scale and shift:
the source voxels inside the crop form an index box, resampling is separable and the result goes back onto
exactly those source voxels. A crop side is a multiple of the network's stride; an object larger than
``max_side`` model voxels is seen at a coarser spacing instead of a larger crop. `grow` enlarges the crop
towards every face the mask touches (unless the face already lies beyond the volume). The shipped model has
``min_side == max_side`` (64, its training crop): its crop never changes size, a large object is seen at a
coarser spacing (growing is a 1.5x coarser rescale shifted towards the touched faces).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from napari_medseg.inference.resample import Grid
from napari_medseg.prompt.model import SIDE_MULTIPLE, PromptSettings

GROW_BY = 32  # model voxels added along an axis per AutoZoom step


def _round_side(n: float) -> int:
    return int(SIDE_MULTIPLE * math.ceil(max(n, 1.0) / SIDE_MULTIPLE))


@dataclass(frozen=True)
class Crop:
    centre: tuple[float, float, float]  # continuous source index (k, j, i) of the crop centre
    shape: tuple[int, int, int]  # crop voxels (k, j, i)
    spacing: tuple[float, float, float]  # crop spacing (i, j, k) mm
    #: a source index (k, j, i) placed exactly on a crop voxel centre (the first click: no rounding of it)
    anchor: tuple[float, float, float] | None = None

    def grid(self, volume) -> Grid:
        n_ijk = np.asarray(self.shape[::-1], float)
        centre_phys = volume.index_to_physical(np.asarray(self.centre[::-1], float))
        d = np.asarray(volume.direction, float)
        sp = np.asarray(self.spacing, float)
        origin = centre_phys - d @ (sp * (n_ijk - 1) / 2)
        if self.anchor is not None:  # shift by under half a crop voxel so the anchor is a voxel centre
            rel = d.T @ (volume.index_to_physical(np.asarray(self.anchor[::-1], float)) - origin) / sp
            origin = origin + d @ (sp * (rel - np.round(rel)))
        return Grid(tuple(self.shape), tuple(self.spacing), tuple(origin), d)

    def source_box(self, volume) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Inclusive-exclusive source index box ``(lo, hi)`` (k, j, i) of the voxels whose centres lie in the crop."""
        half = [(n - 1) / 2 * sp / src for n, sp, src in zip(self.shape, self.spacing[::-1], volume.spacing[::-1])]
        lo = [max(0, math.ceil(c - h - 1e-6)) for c, h in zip(self.centre, half)]
        hi = [min(n, math.floor(c + h + 1e-6) + 1) for c, h, n in zip(self.centre, half, volume.spatial_shape)]
        return tuple(lo), tuple(hi)  # type: ignore[return-value]

    def beyond(self, volume) -> list[tuple[bool, bool]]:
        """Per axis (k, j, i): whether the low / high face already lies outside the volume."""
        out = []
        for c, n, sp, src, nv in zip(self.centre, self.shape, self.spacing[::-1], volume.spacing[::-1], volume.spatial_shape):
            half = (n - 1) / 2 * sp / src
            out.append((c - half <= 0, c + half >= nv - 1))
        return out


def plan_crop(volume, points, spacing_ijk, settings: PromptSettings, extra_box=None, anchor=None) -> Crop:
    """The first crop: covers every prompt point (and ``extra_box``: the previous mask's voxel box) with a margin."""
    pts = np.asarray(points, float).reshape(-1, 3)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if extra_box is not None:
        lo, hi = np.minimum(lo, extra_box[0]), np.maximum(hi, np.asarray(extra_box[1]) - 1)
    src_sp = np.asarray(volume.spacing[::-1], float)  # k, j, i
    model_sp = np.asarray(spacing_ijk[::-1], float)
    vol_n = np.asarray(volume.spatial_shape, float)
    need = (hi - lo) * src_sp / model_sp + 2 * 8  # model voxels, with 8 voxels of margin each side
    vol_side = (vol_n - 1) * src_sp / model_sp + 1
    factor = max(1.0, float(np.max(need / settings.max_side)))
    model_sp = model_sp * factor
    need, vol_side = need / factor, vol_side / factor
    centre = (lo + hi) / 2
    shape = []
    for a in range(3):
        side = max(settings.min_side, _round_side(need[a]))
        if vol_side[a] <= side:  # the whole axis fits: cover the volume, centred on it (never below min_side:
            side = max(settings.min_side, _round_side(vol_side[a]))  # the network knows its trained crop size)
            centre[a] = (vol_n[a] - 1) / 2
        shape.append(min(side, settings.max_side))
    return Crop(tuple(float(c) for c in centre), tuple(shape), tuple(model_sp[::-1]), anchor)  # type: ignore[arg-type]


def touching_faces(probs: np.ndarray, threshold: float) -> list[tuple[bool, bool]]:
    """Per axis (k, j, i): whether the mask reaches the low / high face of the crop."""
    m = probs >= threshold
    return [(bool(m.take(0, axis=a).any()), bool(m.take(-1, axis=a).any())) for a in range(3)]


def grow(crop: Crop, volume, faces, settings: PromptSettings) -> Crop | None:
    """A larger crop towards the touched faces that lie inside the volume; None when there is nothing to grow."""
    beyond = crop.beyond(volume)
    centre, shape, sp = list(crop.centre), list(crop.shape), np.asarray(crop.spacing[::-1], float)
    src_sp = np.asarray(volume.spacing[::-1], float)
    grew = False
    for a in range(3):
        lo_t, hi_t = faces[a][0] and not beyond[a][0], faces[a][1] and not beyond[a][1]
        if not (lo_t or hi_t):
            continue
        grew = True
        add = GROW_BY
        shape[a] += add
        if lo_t != hi_t:  # one side: shift the centre towards it by half the growth
            centre[a] += (add / 2) * sp[a] / src_sp[a] * (-1 if lo_t else 1)
    if not grew:
        return None
    factor = max(1.0, max(s / settings.max_side for s in shape))
    if factor > 1.0:  # too big: the same extent at a coarser spacing
        sp = sp * factor
        shape = [min(settings.max_side, max(settings.min_side, _round_side(s / factor))) for s in shape]
    return Crop(tuple(centre), tuple(shape), tuple(sp[::-1]), crop.anchor)  # type: ignore[arg-type]
