"""From one DICOM header to its image frames: classification, header checks and geometry values.

`frames_from_header` turns a header (a `pydicom.Dataset` or the scanner's fast header) into `Frame` records,
one per 2D image, or refuses the file with a bucket name and a reason (`Skip`): a non-image object, a
localizer, missing geometry, invalid values (Rows = 0, NaN/inf ImagePositionPatient, ImageOrientationPatient
or PixelSpacing, BitsStored > BitsAllocated, ...). Every reason names the tag and its value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from napari_medseg.io.dicom_classify import object_kind, pixel_default_warnings

ZIP_SEP = "::"

@dataclass
class Frame:
    """One 2D image (a single-frame file, or one frame of a multi-frame file) with what we need to place it."""

    key: str
    frame: int | None  # 0-based frame index in a multi-frame file; None for single-frame files
    series_uid: str
    position: np.ndarray  # ImagePositionPatient (LPS mm)
    row: np.ndarray  # direction of increasing column index i (first 3 of ImageOrientationPatient)
    col: np.ndarray  # direction of increasing row index j
    pixel_spacing: tuple[float, float]  # (between rows, between columns) as in DICOM
    rows: int
    columns: int
    slope: float = 1.0
    intercept: float = 0.0
    instance_number: int = 0
    sop_uid: str = ""
    n_frames: int = 1
    info: dict = field(default_factory=dict)  # series-level attributes (modality, description, ...)
    #: (SpacingBetweenSlices, SliceThickness) from the header (None when absent): the k spacing of a
    #: single-slice series
    slice_spacing: tuple = (None, None)


#: Why files were skipped, in the order messages list them: bucket -> what the files are.

class Skip(Exception):
    """A file that is not (usable as) an image: ``bucket`` and ``reason``."""

    def __init__(self, bucket: str, reason: str = ""):
        super().__init__(reason)
        self.bucket, self.reason = bucket, reason


def _floats(value, n) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) else None


def _geometry_value(item, keyword: str, n: int, key: str, required: bool = True) -> np.ndarray | None:
    """A multi-valued DS (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) as floats: None when
    absent; `Skip` ('bad_header') naming the tag when present but malformed, NaN or infinite."""
    value = item.get(keyword) if item is not None else None
    if value in (None, "") or (not isinstance(value, str) and hasattr(value, "__len__") and len(value) == 0):
        return None
    arr = _floats(value if not isinstance(value, (str, bytes)) else [value], n)
    if arr is None:
        raise Skip("bad_header", f"{keyword} is {_text(value)}, not {n} numbers; the header is corrupt")
    if not np.all(np.isfinite(arr)):
        raise Skip("bad_header", f"{keyword} is {_text(value)} (NaN or infinite); the header is corrupt")
    return arr


def _text(value) -> str:
    try:
        items = [value] if isinstance(value, (str, bytes)) else list(value)
    except TypeError:
        items = [value]
    text = "\\".join(str(v) for v in items)
    return repr(text if len(text) < 80 else text[:77] + "...")


@lru_cache(maxsize=256)
def _plane_ok(iop: tuple) -> bool:
    """Two (nearly) orthogonal unit vectors; cached: the files of a series share their orientation."""
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    nr, nc = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    if nr < 1e-6 or nc < 1e-6:
        return False
    return abs(float(row @ col)) / (nr * nc) <= 1e-3 and abs(nr - 1) <= 0.01 and abs(nc - 1) <= 0.01


def _check_plane(iop: np.ndarray, ps: np.ndarray | None) -> None:
    if not _plane_ok(tuple(iop.tolist())):
        raise Skip(
            "bad_header",
            f"ImageOrientationPatient {[round(float(v), 6) for v in iop]} is not two orthogonal unit vectors; "
            "the header is corrupt",
        )
    if ps is not None and not (ps[0] > 0 and ps[1] > 0):
        raise Skip("bad_header", f"PixelSpacing {[float(v) for v in ps]} is not positive; the header is corrupt")


def _first(seq_owner, seq_name):
    seq = getattr(seq_owner, seq_name, None) if seq_owner is not None else None
    return seq[0] if seq else None


def _rescale(item) -> tuple[float, float]:
    slope = item.get("RescaleSlope", 1.0) if item is not None else 1.0
    inter = item.get("RescaleIntercept", 0.0) if item is not None else 0.0
    try:
        return float(slope if slope not in (None, "") else 1.0), float(inter if inter not in (None, "") else 0.0)
    except (TypeError, ValueError):
        return float("nan"), float("nan")


def _int(value, default: int) -> int:
    """IS values written as '3.0' or with spaces are common; unreadable ones give ``default``."""
    try:
        return int(float(value)) if value not in (None, "") else default
    except (TypeError, ValueError, OverflowError):
        return default


def _float(value, default: float) -> float:
    try:
        out = float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def _multi(value) -> list:
    if value is None or value == "":
        return []
    return [value] if isinstance(value, (str, bytes)) else list(value)


def _us(ds, keyword: str, default: int) -> int:
    """An unsigned short value (Rows, BitsAllocated, ...); `Skip` naming the tag when it is not one number."""
    value = ds.get(keyword)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Skip("bad_header", f"{keyword} is {_text(value)}, not one number; the header is corrupt") from None


def _series_info(ds, key: str, assumed: list[str]) -> dict:
    number = _int(ds.get("SeriesNumber"), -(2**63))
    number = None if number == -(2**63) else number
    tsyntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    bits = _us(ds, "BitsAllocated", 16)
    return {
        "series_number": number,
        "series_description": str(ds.get("SeriesDescription", "") or ""),
        "modality": str(ds.get("Modality", "") or ""),
        "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
        "sop_class_uid": str(ds.get("SOPClassUID", "") or ""),
        "image_type": tuple(str(t).upper() for t in _multi(ds.get("ImageType"))),
        "transfer_syntax": tsyntax,
        "bits_allocated": bits,
        "bits_stored": _us(ds, "BitsStored", bits),
        "signed": _us(ds, "PixelRepresentation", 0) == 1,
        "samples": _us(ds, "SamplesPerPixel", 1),
        "gantry_tilt": _float(ds.get("GantryDetectorTilt"), 0.0),
        "acquisition": tuple(
            str(ds.get(kw, "") or "") for kw in ("AcquisitionNumber", "TemporalPositionIdentifier", "EchoNumbers")
        ),
        "assumed": tuple(assumed),  # warnings about attributes given a default
    }


def _check_pixel_header(ds, info: dict, rows: int, cols: int, n_frames: int) -> None:
    if rows <= 0 or cols <= 0:
        raise Skip("bad_header", f"Rows={rows}, Columns={cols}: the header declares an image without pixels")
    bits, stored, spp = info["bits_allocated"], info["bits_stored"], info["samples"]
    if bits not in (1, 8, 16, 32, 64):
        raise Skip("bad_header", f"BitsAllocated={bits} is not a valid value (1, 8, 16, 32 or 64)")
    if not 1 <= stored <= bits:
        raise Skip("bad_header", f"BitsStored={stored} does not fit BitsAllocated={bits}")
    if spp not in (1, 3, 4):
        raise Skip("bad_header", f"SamplesPerPixel={spp} is not a valid value (1, 3 or 4)")
    value = ds.get("NumberOfFrames")
    if value not in (None, "") and _int(value, -1) < 1:
        raise Skip("bad_header", f"NumberOfFrames={_text(value)} is not a positive number")


def frames_from_header(ds, key: str) -> list[Frame] | str:
    """The frames of one header, or a bucket name (see `BUCKETS`) for a file that is not a usable image."""
    try:
        return _frames(ds, key)
    except Skip as e:
        return e.bucket


def _frames(ds, key: str) -> list[Frame]:
    from napari_medseg.io.derived import header_kind

    derived = header_kind(ds)  # SEG (incl. label maps) / RTSTRUCT, also when an anonymiser removed the SOP Class
    if derived:
        raise Skip(derived, "a DICOM SEG (segmentation), not an image" if derived == "seg"
                   else "an RTSTRUCT (structure set), not an image")
    kind, note = object_kind(str(ds.get("SOPClassUID", "") or ""), "Rows" in ds and "Columns" in ds)
    if kind != "image":
        raise Skip(kind, note)
    assumed = [note] if note else []
    assumed += pixel_default_warnings(ds)
    series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if not series_uid:
        assumed.append("SeriesInstanceUID is missing or empty (grouped by study, series number and folder)")
        series_uid = "unknown-series:" + ":".join(
            [str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesNumber", "") or ""),
             str(ds.get("Modality", "") or ""), os.path.dirname(key.split(ZIP_SEP)[-1])]
        )  # fmt: skip
    info = _series_info(ds, key, assumed)
    rows, cols = _us(ds, "Rows", 0), _us(ds, "Columns", 0)
    n_frames = max(1, _int(ds.get("NumberOfFrames"), 1))
    _check_pixel_header(ds, info, rows, cols, n_frames)
    if "LOCALIZER" in info["image_type"]:
        raise Skip("localizer")
    common = dict(
        key=key, series_uid=series_uid, rows=rows, columns=cols, n_frames=n_frames,
        instance_number=_int(ds.get("InstanceNumber"), 0), sop_uid=str(ds.get("SOPInstanceUID", "")), info=info,
    )  # fmt: skip
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(getattr(ds, "ds", ds), common, n_frames)
    iop = _geometry_value(ds, "ImageOrientationPatient", 6, key)
    ipp = _geometry_value(ds, "ImagePositionPatient", 3, key)
    ps = _geometry_value(ds, "PixelSpacing", 2, key)
    if iop is None or ipp is None:
        raise Skip("no_geometry", "no ImagePositionPatient/ImageOrientationPatient: the image cannot be placed in 3D")
    _check_plane(iop, ps)
    if ps is None:
        info["assumed"] += ("PixelSpacing is missing or empty (assumed 1 x 1 mm)",)
    if n_frames > 1:
        # A classic multi-frame file without per-frame positions has no 3D geometry beyond frame 0.
        raise Skip("no_geometry", f"a multi-frame image ({n_frames} frames) without per-frame positions")
    slope, inter = _rescale(ds)
    ps = ps if ps is not None else np.array([1.0, 1.0])
    return [
        Frame(frame=None, position=ipp, row=iop[:3], col=iop[3:], pixel_spacing=(ps[0], ps[1]),
              slope=slope, intercept=inter, slice_spacing=_slice_spacing(ds), **common)  # fmt: skip
    ]


def _slice_spacing(item) -> tuple:
    out = []
    for kw in ("SpacingBetweenSlices", "SliceThickness"):
        v = _float(item.get(kw) if item is not None else None, float("nan"))
        out.append(abs(v) if np.isfinite(v) and v != 0 else None)
    return tuple(out)


def _enhanced_frames(ds, common: dict, n_frames: int) -> list[Frame]:
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != n_frames:
        raise Skip(
            "bad_header",
            f"NumberOfFrames={n_frames} but the PerFrameFunctionalGroupsSequence has {len(per_frame)} items",
        )

    def item(fg, name):
        return _first(fg, name) or _first(shared, name)

    frames, missing_spacing = [], False
    for f, fg in enumerate(per_frame):
        pos = item(fg, "PlanePositionSequence")
        ori = item(fg, "PlaneOrientationSequence")
        meas = item(fg, "PixelMeasuresSequence")
        pvt = item(fg, "PixelValueTransformationSequence")
        ipp = _geometry_value(pos, "ImagePositionPatient", 3, common["key"])
        iop = _geometry_value(ori, "ImageOrientationPatient", 6, common["key"])
        ps = _geometry_value(meas, "PixelSpacing", 2, common["key"])
        if ipp is None or iop is None:
            raise Skip("no_geometry", f"frame {f + 1} has no PlanePositionSequence/PlaneOrientationSequence")
        _check_plane(iop, ps)
        slope, inter = _rescale(pvt) if pvt is not None else _rescale(ds)
        missing_spacing |= ps is None
        ps = ps if ps is not None else np.array([1.0, 1.0])
        frames.append(
            Frame(frame=f, position=ipp, row=iop[:3], col=iop[3:], pixel_spacing=(ps[0], ps[1]),
                  slope=slope, intercept=inter, slice_spacing=_slice_spacing(meas), **common)  # fmt: skip
        )
    if missing_spacing:
        common["info"]["assumed"] += ("PixelSpacing is missing or empty (assumed 1 x 1 mm)",)
    return frames
