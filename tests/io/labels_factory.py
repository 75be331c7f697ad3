"""Test helpers for DICOM SEG / RTSTRUCT: a CT with realistic geometry, organ-like labels, highdicom SEGs, Dice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from dicom_factory import rotation, write_series

#: oblique (tilted 12 degrees about x, 7 about z), non-square pixels, non-square image, off-centre origin
OBLIQUE = dict(shape=(14, 44, 52), spacing=(0.72, 0.94, 2.5), direction=rotation("x", 12) @ rotation("z", 7),
               origin=(-181.3, -97.6, 412.25))  # fmt: skip
#: what rt-utils handles correctly: square pixels and Rows == Columns (oblique and off-centre still); organs of
#: a realistic size in voxels (rt-utils rounds contour points to whole voxels, which costs small structures)
SQUARE = dict(shape=(12, 128, 128), spacing=(0.8, 0.8, 2.5), direction=rotation("x", 12) @ rotation("z", 7),
              origin=(-181.3, -97.6, 412.25))  # fmt: skip

NAMES = {1: "liver", 2: "spleen", 3: "kidney_left"}


def ct(folder, geometry=OBLIQUE, shuffle=True, seed=0):
    """A CT series (shuffled files) and the `Volume` our reader makes of it."""
    from napari_medseg.io import read_volume

    written = write_series(folder, shuffle=shuffle, seed=seed, **geometry)
    return written, read_volume(folder)


def organs(shape) -> np.ndarray:
    """Three blob labels (1 big, 2 medium, 3 small with a hole on some slices) on a ``[k, j, i]`` grid."""
    nk, nj, ni = shape
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    lab = np.zeros(shape, np.uint8)
    lab[((k - nk * 0.45) / (nk * 0.35)) ** 2 + ((j - nj * 0.4) / (nj * 0.28)) ** 2
        + ((i - ni * 0.35) / (ni * 0.25)) ** 2 < 1] = 1  # fmt: skip
    lab[((k - nk * 0.5) / (nk * 0.3)) ** 2 + ((j - nj * 0.7) / (nj * 0.15)) ** 2
        + ((i - ni * 0.72) / (ni * 0.14)) ** 2 < 1] = 2  # fmt: skip
    ring = ((j - nj * 0.3) ** 2 + (i - ni * 0.78) ** 2)
    lab[(ring < (min(nj, ni) * 0.12) ** 2) & (k >= 2) & (k < nk - 2)] = 3
    lab[(ring < (min(nj, ni) * 0.05) ** 2) & (k >= 4) & (k < nk - 4)] = 0  # a hole (the renal pelvis)
    return lab


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def highdicom_seg(files, masks: dict, path, fractional=False, colors=None, shuffle=True, seed=1, labelmap=False):
    """A SEG made by highdicom (as Slicer/TotalSegmentator write them) from source ``files`` in k order.

    ``masks`` maps segment label -> ``[k, j, i]`` bool mask (or float probabilities for ``fractional``);
    segment numbers follow the dict order from 1. Source images are passed in a shuffled order. ``labelmap``
    writes a Label Map Segmentation (one label array, values = segment numbers; masks must not overlap).
    """
    import highdicom as hd
    from highdicom.sr.coding import CodedConcept
    from pydicom.uid import generate_uid

    sources = [pydicom.dcmread(f) for f in files]
    order = np.random.default_rng(seed).permutation(len(sources)) if shuffle else np.arange(len(sources))
    stack = np.stack([np.asarray(m) for m in masks.values()], axis=-1)[order]
    if not fractional:
        stack = stack.astype(bool)
    if labelmap:
        stack = (stack * np.arange(1, stack.shape[-1] + 1)).max(axis=-1).astype(np.uint8)
    descriptions = []
    for n, name in enumerate(masks, start=1):
        extra = {}
        if colors and name in colors:
            extra["display_color"] = hd.color.CIELabColor.from_rgb(*colors[name])
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n, segment_label=name,
            segmented_property_category=CodedConcept("91723000", "SCT", "Anatomical Structure"),
            segmented_property_type=CodedConcept("10200004", "SCT", "Liver"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL, **extra))  # fmt: skip
    seg = hd.seg.Segmentation(
        source_images=[sources[o] for o in order], pixel_array=stack,
        segmentation_type=getattr(hd.seg.SegmentationTypeValues,
                                  "LABELMAP" if labelmap else "FRACTIONAL" if fractional else "BINARY"),
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=40,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="tests", manufacturer_model_name="tests",
        software_versions="1", device_serial_number="1",
    )  # fmt: skip
    seg.save_as(Path(path))
    return Path(path)
