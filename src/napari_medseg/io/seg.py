"""Reading DICOM SEG (Segmentation Storage) as a labels `Volume`, with highdicom.

highdicom decodes the frames (BINARY bit-packed, FRACTIONAL, LABELMAP; any transfer syntax pydicom reads)
and gives, per segment, its frames as a volume with an affine (`Segmentation.get_volume`). We place each
segment exactly onto the target grid (see :mod:`napari_medseg.io.derived` for which grid) by whole-voxel
index mapping: a SEG whose frames are not slices of the target grid is refused (given reference) or read on
its own geometry (found one), never interpolated.

* **Values**: a SEG written by napari-medseg keeps its original label values (its segments carry the
  TrackingID ``"label N"``); any other SEG gets value = segment number. Above 255 the array is uint16.
* **Names and colours**: SegmentLabel (else the segmented property type's meaning) -> ``meta["classes"]``;
  RecommendedDisplayCIELabValue -> ``meta["class_colors"]`` (RGBA in 0..1).
* **FRACTIONAL** segments are thresholded at 0.5 of the maximum fractional value (a warning says so).
* **Overlaps**: the smaller segment wins, with a warning naming the pair.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from napari_medseg.errors import GeometryError, InputError
from napari_medseg.io.derived import (
    check_target,
    guess_warning,
    labels_volume,
    index_map,
    own_grid_volume,
    paint,
    paste,
    place,
    resolve_reference,
)
from napari_medseg.volume import Volume

_OUR_TRACKING = re.compile(r"^label (\d+)$")


def _open(path: Path):
    """(highdicom Segmentation, warnings). A SEG whose SOP Class UID an anonymiser removed is read as one."""
    import highdicom as hd
    import pydicom

    from napari_medseg.io.derived import LABELMAP_SEG_STORAGE, SEG_STORAGE, open_object

    warnings = []
    try:
        ds = pydicom.dcmread(open_object(path), force=True)  # files without the DICM preamble too
        if not str(ds.get("SOPClassUID", "") or ""):
            labelmap = str(ds.get("SegmentationType", "")).upper() == "LABELMAP"
            ds.SOPClassUID = LABELMAP_SEG_STORAGE if labelmap else SEG_STORAGE
            warnings.append("the file has no SOP Class UID; it was read as a DICOM SEG (Modality SEG)")
        return hd.seg.Segmentation.from_dataset(ds, copy=False), warnings
    except Exception as e:  # noqa: BLE001 - any decoding failure is a bad file
        raise InputError(
            f"{path}: not a readable DICOM SEG ({type(e).__name__}: {e}); re-export the segmentation"
        ) from e


def _segment_table(seg, path: Path) -> tuple[dict[int, int], dict[int, str], dict[int, tuple]]:
    """({segment number: label value}, {value: name}, {value: rgba})."""
    import highdicom as hd

    numbers = [int(n) for n in seg.segment_numbers]
    if not numbers:
        raise InputError(f"{path}: the DICOM SEG holds no segment")
    descs = {n: seg.get_segment_description(n) for n in numbers}
    tracked = {n: _OUR_TRACKING.match(str(d.get("TrackingID", "") or "")) for n, d in descs.items()}
    ours = all(tracked.values()) and len({int(m.group(1)) for m in tracked.values()}) == len(numbers)
    values = {n: int(tracked[n].group(1)) if ours else n for n in numbers}
    values = {n: v for n, v in values.items() if 0 < v <= 65535} if ours else values
    if len(values) != len(numbers):
        values = {n: n for n in numbers}
    names, colors = {}, {}
    for n, d in descs.items():
        name = str(d.get("SegmentLabel", "") or "").strip()
        if not name:
            prop = d.get("SegmentedPropertyTypeCodeSequence")
            name = str(prop[0].CodeMeaning) if prop else f"segment {n}"
        names[values[n]] = name
        lab = d.get("RecommendedDisplayCIELabValue")
        if lab is not None:
            try:
                rgb = hd.color.CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb(clip=True)
                colors[values[n]] = tuple(float(c) / 255.0 for c in rgb) + (1.0,)
            except (ValueError, TypeError):
                pass
    return values, names, colors


def _referenced_series(seg) -> str:
    refs = seg.get("ReferencedSeriesSequence") or []
    if refs:
        return str(refs[0].get("SeriesInstanceUID", "") or "")
    return ""


def _segment_volume(seg, number: int, path: Path):
    try:
        vol = seg.get_volume(segment_numbers=[number], combine_segments=False, rescale_fractional=True)
    except (ValueError, RuntimeError, KeyError, IndexError) as e:
        raise GeometryError(
            f"{path}: the frames of segment {number} do not form a regular stack of parallel slices ({e}); "
            "this SEG cannot be placed on a 3D grid"
        ) from e
    arr = vol.array[..., 0] if vol.array.ndim == 4 else vol.array
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr >= 0.5
    return arr.astype(bool, copy=False), vol.affine


def _combined(seg, values: dict[int, int], names: dict[int, str], target: Volume):
    """Non-overlapping BINARY/LABELMAP SEGs in one pass (highdicom checks the overlap): (labels, warnings),
    or None when the segments overlap or do not map onto ``target`` (the per-segment path then says why)."""
    try:
        vol = seg.get_volume(combine_segments=True, relabel=False)
    except (ValueError, RuntimeError, KeyError, IndexError):
        return None
    mapping = index_map(vol.affine, target)
    if mapping is None:
        return None
    arr = np.asarray(vol.array)
    top = max(values.values())
    lut = np.zeros(max(max(values), int(arr.max(initial=0))) + 1, np.uint8 if top <= 255 else np.uint16)
    for number, value in values.items():
        lut[number] = value
    labels, outside = paste(arr, mapping, target.spatial_shape, lut)
    counts = np.bincount(arr.reshape(-1), minlength=lut.size)
    present = {n for n in values if counts[n]}
    warnings = [f"DICOM SEG: {names[v]!r} is empty (no voxel on this grid)" for n, v in values.items()
                if n not in present]  # fmt: skip
    if outside:
        warnings.append(f"{outside} voxel(s) of the SEG lie outside the image and were dropped")
    return labels, warnings


def _own_geometry(seg, path: Path, meta: dict) -> Volume:
    geom = None
    try:
        geom = seg.get_volume_geometry()
    except (ValueError, RuntimeError, KeyError, AttributeError):
        geom = None
    if geom is None:
        raise GeometryError(
            f"{path}: the SEG's frames do not form a regular 3D grid and its referenced series is not available; "
            "give the image series it was made on (reference= / --reference)"
        )
    return own_grid_volume(geom.affine, geom.spatial_shape, meta)


def read_seg(path, reference=None, candidates=()) -> Volume:
    """Read a DICOM SEG file as a labels `Volume` on its referenced series' grid (see the module docstring)."""
    path = Path(str(path))
    seg, open_warnings = _open(path)
    values, names, colors = _segment_table(seg, path)
    uid = _referenced_series(seg)
    ref, how = resolve_reference(path, "DICOM SEG", uid, reference, candidates)
    warnings: list[str] = open_warnings + guess_warning(how, ref, "DICOM SEG")
    meta = {
        "modality": "SEG",
        "series_uid": str(seg.get("SeriesInstanceUID", "")),
        "series_description": str(seg.get("SeriesDescription", "") or "DICOM SEG"),
        "series_number": int(seg.SeriesNumber) if seg.get("SeriesNumber") not in (None, "") else None,
        "source_path": str(path),
        "derived_from": {"kind": "seg", "series_uid": uid, "grid": "reference" if ref is not None else "own"},
    }
    if ref is None:
        warnings.append(
            f"the referenced image series {uid or '(none named)'} is not beside the SEG and none was given, so the "
            "labels are on the SEG's own frame geometry; give the image series (reference= / --reference) to get "
            "them on its grid"
        )
        target = _own_geometry(seg, path, {})
    else:
        check_target(ref, path, "DICOM SEG")
        target = ref
    fractional = str(seg.get("SegmentationType", "")).upper() == "FRACTIONAL"
    if fractional:
        warnings.append("fractional segments were thresholded at 0.5 (a voxel belongs to a segment at >= 50 %)")
    fast = None if fractional else _combined(seg, values, names, target)
    if fast is not None:
        labels, fast_warnings = fast
        return labels_volume(target, labels, names, colors, meta, warnings + fast_warnings, ref)
    segments, mismatched = [], []
    for number, value in values.items():
        arr, affine = _segment_volume(seg, number, path)
        mapping = index_map(affine, target)
        if mapping is None:
            mismatched.append(number)
            continue
        flat, outside = place(arr, mapping, target.spatial_shape)
        if outside:
            warnings.append(f"{outside} voxel(s) of segment {names[value]!r} lie outside the image and were dropped")
        segments.append((value, flat))
    if mismatched:
        if how == "given" or ref is None:
            raise GeometryError(
                f"{path}: the frames of segment(s) {mismatched} match no slice of "
                + ("the reference series " + uid if ref is not None else "the SEG's own grid")
                + " (different spacing, orientation or a sub-voxel shift); the SEG was not made on this series"
            )
        warnings.append(
            f"the SEG's frames do not coincide with the slices of series {uid} found {how}; the labels are on the "
            "SEG's own frame geometry instead"
        )
        return _reread_on_own_grid(seg, path, values, names, colors, meta, warnings)
    labels, paint_warnings = paint(target.spatial_shape, segments, names, "DICOM SEG")
    return labels_volume(target, labels, names, colors, meta, warnings + paint_warnings, ref)


def _reread_on_own_grid(seg, path, values, names, colors, meta, warnings) -> Volume:
    target = _own_geometry(seg, path, {})
    meta["derived_from"]["grid"] = "own"
    segments = []
    for number, value in values.items():
        arr, affine = _segment_volume(seg, number, path)
        mapping = index_map(affine, target)
        if mapping is None:
            raise GeometryError(f"{path}: segment {number} is not on the SEG's own frame grid")
        segments.append((value, place(arr, mapping, target.spatial_shape)[0]))
    labels, paint_warnings = paint(target.spatial_shape, segments, names, "DICOM SEG")
    return labels_volume(target, labels, names, colors, meta, warnings + paint_warnings, None)
