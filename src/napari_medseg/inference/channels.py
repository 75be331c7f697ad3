"""Several images as the channels of one input (e.g. the T1c, T1, T2 and FLAIR of a brain MR).

`stack_channels` reads each (a path or a `Volume`), resamples every image onto the first image's grid
(linear; geometry from each image's own header, so differently oriented or spaced series line up in
physical space), and returns one 4D `Volume` ``[C, k, j, i]`` on the first image's grid, with
``meta["channel_names"]``. The order is the caller's: pass the images in the model's channel order
(`ModelCard.channel_names`).
"""

from __future__ import annotations

import numpy as np

from napari_medseg.errors import InputError
from napari_medseg.volume import Volume


def stack_channels(images, names=None, series=None) -> Volume:
    from napari_medseg.inference.resample import resample

    images = list(images)
    if not images:
        raise InputError("no images given as channels")
    vols = []
    for i, im in enumerate(images):
        if isinstance(im, Volume):
            v = im
        else:
            from napari_medseg.io import read_volume

            v = read_volume(im, series=series)
        if v.is_4d:
            raise InputError(f"channel {i} ({v.meta.get('source_path', 'a Volume')}) is already a 4D image; "
                             "pass one 3D image per channel")
        vols.append(v)
    ref = vols[0]
    arrays, warnings = [], list(ref.warnings)
    for i, v in enumerate(vols):
        if i == 0 or v.same_grid(ref):
            arrays.append(np.asarray(v.array, dtype=np.float32))
            continue
        overlap = _overlap_fraction(v, ref)
        if overlap < 0.5:
            raise InputError(
                f"channel {i} ({v.meta.get('source_path', 'a Volume')}) covers only {overlap:.0%} of the first "
                "image's volume: the images are not of the same region (or their headers disagree)"
            )
        arrays.append(resample(np.asarray(v.array, dtype=np.float32), v, ref, mode="linear", padding="zeros"))
        warnings.append(f"channel {i} was resampled onto the grid of channel 0 "
                        f"({v.meta.get('source_path', 'a Volume')})")
    names = list(names) if names else [str(v.meta.get("source_path") or f"channel {i}") for i, v in enumerate(vols)]
    out = ref.with_array(np.stack(arrays), channel_names=names[: len(vols)])
    out.meta["warnings"] = warnings
    return out


def _overlap_fraction(v: Volume, ref: Volume) -> float:
    """Fraction of ``ref``'s voxel centres (sampled) that fall inside ``v``'s grid."""
    shape = np.asarray(ref.spatial_shape)
    pts = np.stack(np.meshgrid(*[np.linspace(0, n - 1, 6) for n in shape[::-1]], indexing="ij"), -1).reshape(-1, 3)
    ijk = v.physical_to_index(ref.index_to_physical(pts))
    size = np.asarray(v.size_ijk)
    inside = np.all((ijk >= -0.5) & (ijk <= size - 0.5), axis=1)
    return float(inside.mean())
