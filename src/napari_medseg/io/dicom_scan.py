"""Finding DICOM files and reading their headers (no pixel data) for series discovery.

A *source* is a file, a folder (searched recursively) or a ``.zip``. Every DICOM image frame found becomes a
`Frame` record (one per single-frame file, one per frame of an enhanced multi-frame file) carrying what the
geometry and the pixel reader need. Files are addressed by a *key*: the path as ``str``, or
``"archive.zip::member/name"`` for zip members.

Headers are read once per file, in a thread pool, by the fast top-level parser of
:mod:`napari_medseg.io.dicom_fastheader` (the first 16 KiB of the file), falling back to
``dcmread(stop_before_pixels=True, specific_tags=...)`` for anything it does not handle (enhanced multi-frame,
no preamble, big endian, ...). The cost is linear in the number of files.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from napari_medseg.io.dicom_classify import object_kind, pixel_default_warnings
from napari_medseg.io.dicom_fastheader import NEED_MORE, FastHeader, HeaderValues, parse_header
from napari_medseg.io.dicom_source import (  # noqa: F401 - re-exported: the scanner's public names
    MAX_ARRAY_BYTES,
    ZIP_SEP,
    Source,
    UnsafeMember,
    memory_budget,
    open_key,
    regular_file_problem,
)

NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_UNDEFINED = 0xFFFFFFFF

HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber",
    "SeriesDescription", "Modality", "ImageType", "InstanceNumber", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel",
    "BitsAllocated", "BitsStored", "PixelRepresentation", "PhotometricInterpretation", "RescaleSlope",
    "RescaleIntercept", "GantryDetectorTilt", "AcquisitionNumber", "TemporalPositionIdentifier", "EchoNumbers",
    "SliceThickness", "SpacingBetweenSlices",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
]  # fmt: skip
#: Header parsing is mostly Python (GIL-bound): a few threads help on cold/network storage, more only contend.
_WORKERS = min(4, os.cpu_count() or 2)


# ---------------------------------------------------------------------------------------------- detection
def _plausible_preambleless(head: bytes) -> bool:
    """A DICOM file without preamble starts with an element of group 0x0002 or 0x0008 (little endian)."""
    if len(head) < 8:
        return False
    group = int.from_bytes(head[:2], "little")
    return group in (0x0002, 0x0008)


def read_header(fp, specific_tags=None, stop_before_pixels=True) -> pydicom.Dataset:
    """``dcmread`` that also accepts preamble-less files; raises InvalidDicomError for anything else."""
    try:
        return pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, specific_tags=specific_tags)
    except InvalidDicomError:
        if hasattr(fp, "seek"):
            fp.seek(0)
            head = fp.read(8)
            fp.seek(0)
        else:
            with open(fp, "rb") as f:
                head = f.read(8)
        if not _plausible_preambleless(head):
            raise
        return pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, specific_tags=specific_tags, force=True)


def is_dicom_file(path) -> bool:
    """True for a DICOM file ('DICM' at byte 128, or a parseable preamble-less header). Never raises, and
    never opens a non-regular file (a named pipe would block)."""
    try:
        if regular_file_problem(str(path)) is not None:
            return False
        with open(path, "rb") as f:
            head = f.read(132)
        if len(head) == 132 and head[128:132] == b"DICM":
            return True
        if not _plausible_preambleless(head):
            return False
        tags = ["SOPClassUID", "Modality", "Rows", "Columns", "SeriesInstanceUID", "StudyInstanceUID"]
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=tags)
        return any(t in ds for t in tags)
    except Exception:  # noqa: BLE001 - detection never raises
        return False


def folder_has_dicom(path) -> bool:
    """True as soon as one DICOM file is found under ``path`` (recursive). Never raises."""
    try:
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if not f.startswith(".") and is_dicom_file(os.path.join(root, f)):
                    return True
        return False
    except Exception:  # noqa: BLE001
        return False


# ---------------------------------------------------------------------------------------------- frames
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
BUCKETS = {
    "denied": "file(s) that may not be read (permission denied)",
    "special": "non-regular file(s) (named pipe, socket or device), never opened",
    "broken link": "broken symbolic link(s)",
    "missing": "file(s) that disappeared during the scan",
    "unsafe name": "zip member(s) with an unsafe name (absolute path or a '..' component), not read",
    "damaged": "damaged zip member(s)",
    "too_large": "zip member(s) too large to read safely",
    "truncated": "truncated file(s)",
    "mismatch": "file(s) whose header disagrees with the length of their pixel data",
    "bad_header": "file(s) with invalid header values",
    "absurd": "file(s) whose header declares an absurd image size",
    "no_pixels": "image file(s) without pixel data",
    "unreadable": "unreadable or non-DICOM file(s)",
    "no_geometry": "image(s) without ImagePositionPatient/ImageOrientationPatient",
    "localizer": "localizer/scout image(s) (ImageType LOCALIZER)",
    "seg": "DICOM SEG object(s) (segmentations, not images)",
    "rtstruct": "RTSTRUCT object(s) (structure sets, not images)",
    "non_image": "DICOM object(s) without an image",
}


@dataclass
class ScanResult:
    frames: list[Frame]
    n_files: int = 0
    #: bucket (see `BUCKETS`) -> keys skipped for that reason; ``reasons`` says why for each key
    skipped: dict[str, list[str]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def of(self, bucket: str) -> list[str]:
        return self.skipped.get(bucket, [])

    # the buckets by their historical names
    unreadable = property(lambda self: self.of("unreadable"))
    non_image = property(lambda self: self.of("non_image"))
    no_geometry = property(lambda self: self.of("no_geometry"))
    localizers = property(lambda self: self.of("localizer"))
    absurd = property(lambda self: self.of("absurd"))
    no_pixels = property(lambda self: self.of("no_pixels"))
    #: DICOM SEG / RTSTRUCT files found beside the images (for the SEG/RTSTRUCT readers)
    segmentations = property(lambda self: self.of("seg"))
    structure_sets = property(lambda self: self.of("rtstruct"))

    def add(self, bucket: str, key: str, reason: str = "") -> None:
        self.skipped.setdefault(bucket, []).append(key)
        if reason:
            self.reasons[key] = reason

    def example(self, bucket: str) -> str:
        """'KEY: reason' for the first file of a bucket."""
        key = self.of(bucket)[0]
        reason = self.reasons.get(key)
        return f"{key}: {reason}" if reason else key

    def summary(self, exclude=()) -> list[str]:
        """One 'N what (e.g. KEY: reason)' line per non-empty bucket."""
        return [
            f"{len(self.of(b))} {what} (e.g. {self.example(b)})"
            for b, what in BUCKETS.items()
            if self.of(b) and b not in exclude
        ]


class _Skip(Exception):
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
    absent; `_Skip` ('bad_header') naming the tag when present but malformed, NaN or infinite."""
    value = item.get(keyword) if item is not None else None
    if value in (None, "") or (not isinstance(value, str) and hasattr(value, "__len__") and len(value) == 0):
        return None
    arr = _floats(value if not isinstance(value, (str, bytes)) else [value], n)
    if arr is None:
        raise _Skip("bad_header", f"{keyword} is {_text(value)}, not {n} numbers; the header is corrupt")
    if not np.all(np.isfinite(arr)):
        raise _Skip("bad_header", f"{keyword} is {_text(value)} (NaN or infinite); the header is corrupt")
    return arr


def _text(value) -> str:
    try:
        items = [value] if isinstance(value, (str, bytes)) else list(value)
    except TypeError:
        items = [value]
    text = "\\".join(str(v) for v in items)
    return repr(text if len(text) < 80 else text[:77] + "...")


def _check_plane(iop: np.ndarray, ps: np.ndarray | None) -> None:
    row, col = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6 or abs(float(row @ col)) / (nr * nc) > 1e-3 or abs(nr - 1) > 0.01 or abs(nc - 1) > 0.01:
        raise _Skip(
            "bad_header",
            f"ImageOrientationPatient {[round(float(v), 6) for v in iop]} is not two orthogonal unit vectors; "
            "the header is corrupt",
        )
    if ps is not None and not np.all(ps > 0):
        raise _Skip("bad_header", f"PixelSpacing {[float(v) for v in ps]} is not positive; the header is corrupt")


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
    """An unsigned short value (Rows, BitsAllocated, ...); `_Skip` naming the tag when it is not one number."""
    value = ds.get(keyword)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _Skip("bad_header", f"{keyword} is {_text(value)}, not one number; the header is corrupt") from None


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
        raise _Skip("bad_header", f"Rows={rows}, Columns={cols}: the header declares an image without pixels")
    bits, stored, spp = info["bits_allocated"], info["bits_stored"], info["samples"]
    if bits not in (1, 8, 16, 32, 64):
        raise _Skip("bad_header", f"BitsAllocated={bits} is not a valid value (1, 8, 16, 32 or 64)")
    if not 1 <= stored <= bits:
        raise _Skip("bad_header", f"BitsStored={stored} does not fit BitsAllocated={bits}")
    if spp not in (1, 3, 4):
        raise _Skip("bad_header", f"SamplesPerPixel={spp} is not a valid value (1, 3 or 4)")
    value = ds.get("NumberOfFrames")
    if value not in (None, "") and _int(value, -1) < 1:
        raise _Skip("bad_header", f"NumberOfFrames={_text(value)} is not a positive number")


def frames_from_header(ds, key: str) -> list[Frame] | str:
    """The frames of one header, or a bucket name (see `BUCKETS`) for a file that is not a usable image."""
    try:
        return _frames(ds, key)
    except _Skip as e:
        return e.bucket


def _frames(ds, key: str) -> list[Frame]:
    kind, note = object_kind(str(ds.get("SOPClassUID", "") or ""), "Rows" in ds and "Columns" in ds)
    if kind != "image":
        raise _Skip(kind, note)
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
        raise _Skip("localizer")
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
        raise _Skip("no_geometry", "no ImagePositionPatient/ImageOrientationPatient: the image cannot be placed in 3D")
    _check_plane(iop, ps)
    if ps is None:
        info["assumed"] += ("PixelSpacing is missing or empty (assumed 1 x 1 mm)",)
    if n_frames > 1:
        # A classic multi-frame file without per-frame positions has no 3D geometry beyond frame 0.
        raise _Skip("no_geometry", f"a multi-frame image ({n_frames} frames) without per-frame positions")
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
        raise _Skip(
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
            raise _Skip("no_geometry", f"frame {f + 1} has no PlanePositionSequence/PlaneOrientationSequence")
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


class _Header(HeaderValues):
    """The top-level elements of a header as a plain dict, converted once (Dataset access is slow per call)."""

    def __init__(self, ds: pydicom.Dataset):
        self.ds = ds
        self.file_meta = getattr(ds, "file_meta", None)
        self.pixel_offset = self.pixel_length = None
        self._values = {}
        for elem in ds:
            if elem.keyword:
                self._values[elem.keyword] = elem.value


def declared_pixel_bytes(rows: int, cols: int, frames: int, samples: int, bits: int) -> int:
    """Bytes of native pixel data the header declares (bit-packed for BitsAllocated 1)."""
    return (rows * cols * frames * samples * bits + 7) // 8


def _declared_bytes(ds) -> int:
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        bits = int(ds.get("BitsAllocated", 16) or 16)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        return 0
    return declared_pixel_bytes(rows, cols, max(1, _int(ds.get("NumberOfFrames"), 1)), spp, bits)


def mismatch_reason(ds, actual: int) -> str:
    """The message for native pixel data whose length disagrees with the header, naming the tags."""
    rows, cols = ds.get("Rows", 0), ds.get("Columns", 0)
    frames, spp, bits = ds.get("NumberOfFrames", 1) or 1, ds.get("SamplesPerPixel", 1) or 1, ds.get("BitsAllocated")
    expected = _declared_bytes(ds)
    return (
        f"the pixel data holds {actual} bytes but Rows x Columns x NumberOfFrames x SamplesPerPixel x "
        f"BitsAllocated/8 = {rows} x {cols} x {frames} x {spp} x {bits}/8 = {expected} bytes; the header does "
        "not describe the pixel data (a corrupt or hand-edited header), so the values would be garbage — "
        "re-export the series"
    )


def _check_lengths(source: Source, key: str, ds, declared: int) -> None:
    """Native pixel data: its length must match the header, and the file must hold all of it."""
    length, offset, size = ds.pixel_length, ds.pixel_offset, source.size(key)
    if length is None:  # pydicom-parsed header, or no pixel data before the end of the prefix
        if size < declared:
            _why_short(source, key, declared)
        return
    if length == _UNDEFINED:
        raise _Skip("mismatch", "encapsulated (compressed) pixel data in an uncompressed transfer syntax")
    if length not in (declared, declared + 1):
        raise _Skip("mismatch", mismatch_reason(ds, length))
    if size < offset + declared:
        raise _Skip(
            "truncated",
            f"the file ends {offset + declared - size} bytes before the end of its pixel data "
            f"({size} of {offset + declared} bytes; an interrupted copy?) — copy or export it again",
        )


def _why_short(source: Source, key: str, declared: int) -> None:
    """A file smaller than its declared pixel data: header only, truncated, or a header/pixel mismatch."""
    try:
        ds = read_header(source.open(key), stop_before_pixels=False)
    except Exception as e:  # noqa: BLE001
        raise _Skip("truncated", f"the file is shorter than its header declares ({_short(e)})") from None
    for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if tag in ds:
            n = len(ds[tag].value or b"")
            if ds[tag].is_undefined_length:
                return
            raise _Skip("truncated" if n == 0 else "mismatch", mismatch_reason(ds, n))
    raise _Skip("no_pixels", "the file has an image header but no pixel data")


def _short(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) < 200 else text[:197] + "..."


_PREFIX = 16 * 1024


def _fast_header(source: Source, key: str) -> FastHeader | None:
    """The header through the fast parser, or None when pydicom must read it."""
    data = source.read_prefix(key, _PREFIX)
    header = parse_header(data, HEADER_TAGS)
    if header == NEED_MORE and len(data) == _PREFIX:
        if source.size(key) > 256 * 1024**2:
            return None  # a header this long is unusual: pydicom reads it from a bounded stream
        header = parse_header(source.read_prefix(key, -1), HEADER_TAGS)
    return header if isinstance(header, FastHeader) else None


def _read_any_header(source: Source, key: str):
    try:
        ds = _fast_header(source, key)
        if ds is None:
            ds = _Header(read_header(source.open(key, header_only=True), specific_tags=HEADER_TAGS))
        return ds
    except PermissionError:
        raise _Skip("denied", "permission denied; make the file readable (chmod +r) and try again") from None
    except UnsafeMember as e:
        raise _Skip("too_large", str(e).split(": ", 1)[-1]) from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise _Skip("damaged", f"damaged zip member ({_short(e)}); re-create the archive") from None
    except InvalidDicomError:
        raise _Skip("unreadable", "not a DICOM file (no 'DICM' marker and no DICOM header)") from None
    except OSError as e:
        raise _Skip("unreadable", f"cannot read the file ({_short(e)})") from None
    except Exception as e:  # noqa: BLE001 - a header pydicom cannot parse
        raise _Skip("unreadable", f"cannot parse the DICOM header ({_short(e)}); the file is corrupt") from None


def _scan_one(source: Source, key: str):
    try:
        ds = _read_any_header(source, key)
        try:
            declared = _declared_bytes(ds)
            if declared > memory_budget():
                raise _Skip(
                    "absurd",
                    f"the header declares an image far larger than this machine can hold: "
                    f"{declared / 1024**3:.1f} GiB of pixels (Rows={ds.get('Rows')}, Columns={ds.get('Columns')}, "
                    f"NumberOfFrames={ds.get('NumberOfFrames', 1)}); the header is corrupt — re-export the file",
                )
            frames = _frames(ds, key)
            tsyntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
            if tsyntax in NATIVE_SYNTAXES:
                _check_lengths(source, key, ds, declared)
            return key, frames
        except _Skip:
            raise
        except Exception as e:  # noqa: BLE001 - corrupt values in a header: skip the file, count it
            raise _Skip("bad_header", f"unusable header values ({_short(e)})") from None
    except _Skip as e:
        return key, (e.bucket, e.reason)


def scan(path) -> ScanResult:
    """Read the headers of every file under ``path`` (file, folder or zip) and return their frames."""
    with Source(path) as source:
        keys = source.keys()
        result = ScanResult(frames=[], n_files=len(keys))
        if len(keys) <= 64 or _WORKERS == 1:
            outcomes = [_scan_one(source, k) for k in keys]
        else:
            with ThreadPoolExecutor(_WORKERS) as pool:
                outcomes = list(pool.map(lambda k: _scan_one(source, k), keys))
        for reason, skipped in source.skipped.items():
            for key in skipped:
                result.add(reason, key)
                result.n_files += 1
    for key, outcome in outcomes:
        if isinstance(outcome, tuple):
            result.add(outcome[0], key, outcome[1])
        else:
            result.frames.extend(outcome)
    return result
