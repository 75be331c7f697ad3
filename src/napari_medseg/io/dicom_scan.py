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

import io
import os
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from napari_medseg.errors import InputError
from napari_medseg.io.derived import header_kind
from napari_medseg.io.dicom_fastheader import NEED_MORE, FastHeader, HeaderValues, parse_header

ZIP_SEP = "::"
NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 64 * 1024**3


#: Largest voxel array we agree to allocate for one series (bytes): a header declaring more (corrupt, or
#: beyond this machine) fails fast, before any allocation.
MAX_ARRAY_BYTES = min(64 * 1024**3, _physical_memory() // 2)

HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber",
    "SeriesDescription", "Modality", "ImageType", "InstanceNumber", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel",
    "BitsAllocated", "BitsStored", "PixelRepresentation", "PhotometricInterpretation", "RescaleSlope",
    "RescaleIntercept", "GantryDetectorTilt", "AcquisitionNumber", "TemporalPositionIdentifier", "EchoNumbers",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
]  # fmt: skip
#: Header parsing is mostly Python (GIL-bound): a few threads help on cold/network storage, more only contend.
_WORKERS = min(4, os.cpu_count() or 2)


# ---------------------------------------------------------------------------------------------- sources
class Source:
    """The files at a path (file, folder or zip), readable by key from several threads."""

    def __init__(self, path):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._lock = threading.Lock()
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file or folder")
        if self.path.is_file() and self.path.suffix.lower() == ".zip":
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as e:
                raise InputError(f"{self.path}: not a readable zip archive ({e}); re-create the archive") from e

    def keys(self) -> list[str]:
        if self._zip is not None:
            return [
                f"{self.path}{ZIP_SEP}{info.filename}"
                for info in self._zip.infolist()
                if not info.is_dir() and not _hidden(info.filename)
            ]
        if self.path.is_file():
            return [str(self.path)]
        out = []
        for root, dirs, files in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            out.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith("."))
        return out

    def size(self, key: str) -> int:
        if ZIP_SEP in key and self._zip is not None:
            return self._zip.getinfo(key.split(ZIP_SEP, 1)[1]).file_size
        return os.path.getsize(key)

    def read_prefix(self, key: str, size: int) -> bytes:
        """The first ``size`` bytes of a file (the whole member for a zip); ``size < 0`` reads everything."""
        if ZIP_SEP in key and self._zip is not None:
            with self._lock:
                return self._zip.read(key.split(ZIP_SEP, 1)[1])
        with open(key, "rb") as f:
            return f.read(size)

    def open(self, key: str):
        """A path or a file object that ``pydicom.dcmread`` accepts."""
        if ZIP_SEP in key and self._zip is not None:
            with self._lock:
                return io.BytesIO(self._zip.read(key.split(ZIP_SEP, 1)[1]))
        return key

    def close(self):
        if self._zip is not None:
            self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _hidden(member: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in member.split("/"))


def open_key(key: str):
    """Open a file key outside a `Source` (used by `source_datasets`)."""
    if ZIP_SEP in key:
        archive, member = key.split(ZIP_SEP, 1)
        with zipfile.ZipFile(archive) as zf:
            return io.BytesIO(zf.read(member))
    return key


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
    """True for a DICOM file ('DICM' at byte 128, or a parseable preamble-less header). Never raises."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        if len(head) == 132 and head[128:132] == b"DICM":
            return True
        if not _plausible_preambleless(head):
            return False
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=["SOPClassUID", "Modality"])
        return "SOPClassUID" in ds or "Modality" in ds
    except Exception:  # noqa: BLE001 - detection never raises
        return False


def folder_has_dicom(path) -> bool:
    """True as soon as one DICOM file (or a zip) is found under ``path`` (recursive). Never raises."""
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


@dataclass
class ScanResult:
    frames: list[Frame]
    n_files: int = 0
    unreadable: list[str] = field(default_factory=list)  # not DICOM, truncated or corrupt
    non_image: list[str] = field(default_factory=list)  # DICOM objects without an image (SR, DICOMDIR, ...)
    no_geometry: list[str] = field(default_factory=list)  # images without position/orientation
    localizers: list[str] = field(default_factory=list)  # ImageType LOCALIZER
    absurd: list[str] = field(default_factory=list)  # headers declaring an impossible image size
    no_pixels: list[str] = field(default_factory=list)  # image headers without pixel data
    derived: list[str] = field(default_factory=list)  # DICOM SEG / RTSTRUCT objects (see io.derived)


def _floats(value, n) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) else None


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
    except (TypeError, ValueError):
        return default


def _float(value, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _multi(value) -> list:
    if value is None or value == "":
        return []
    return [value] if isinstance(value, (str, bytes)) else list(value)


def _series_info(ds, key: str) -> dict:
    number = _int(ds.get("SeriesNumber"), -(2**63))
    number = None if number == -(2**63) else number
    tsyntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    return {
        "series_number": number,
        "series_description": str(ds.get("SeriesDescription", "") or ""),
        "modality": str(ds.get("Modality", "") or ""),
        "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
        "sop_class_uid": str(ds.get("SOPClassUID", "") or ""),
        "image_type": tuple(str(t).upper() for t in _multi(ds.get("ImageType"))),
        "transfer_syntax": tsyntax,
        "bits_allocated": int(ds.get("BitsAllocated", 16) or 16),
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "signed": int(ds.get("PixelRepresentation", 0) or 0) == 1,
        "samples": int(ds.get("SamplesPerPixel", 1) or 1),
        "gantry_tilt": _float(ds.get("GantryDetectorTilt"), 0.0),
        "acquisition": tuple(
            str(ds.get(kw, "") or "") for kw in ("AcquisitionNumber", "TemporalPositionIdentifier", "EchoNumbers")
        ),
    }


def frames_from_header(ds, key: str) -> list[Frame] | str:
    """The frames of one header, or a reason string ('non_image', 'no_geometry', 'localizer', 'derived')."""
    if header_kind(ds):  # DICOM SEG / RTSTRUCT: labels, not images
        return "derived"
    if "Rows" not in ds or "Columns" not in ds or "SeriesInstanceUID" not in ds:
        return "non_image"
    info = _series_info(ds, key)
    if "LOCALIZER" in info["image_type"]:
        return "localizer"
    rows, cols = int(ds.Rows), int(ds.Columns)
    n_frames = max(1, _int(ds.get("NumberOfFrames"), 1))
    common = dict(
        key=key, series_uid=str(ds.SeriesInstanceUID), rows=rows, columns=cols, n_frames=n_frames,
        instance_number=_int(ds.get("InstanceNumber"), 0), sop_uid=str(ds.get("SOPInstanceUID", "")), info=info,
    )  # fmt: skip
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(getattr(ds, "ds", ds), common, n_frames)
    iop = _floats(ds.get("ImageOrientationPatient") or [], 6)
    ipp = _floats(ds.get("ImagePositionPatient") or [], 3)
    ps = _floats(ds.get("PixelSpacing") or [], 2)
    if iop is None or ipp is None:
        return "no_geometry"
    slope, inter = _rescale(ds)
    ps = ps if ps is not None else np.array([1.0, 1.0])
    frames = []
    for f in range(n_frames) if n_frames > 1 else [None]:
        # A classic multi-frame file without per-frame positions has no 3D geometry beyond frame 0.
        frames.append(
            Frame(frame=f, position=ipp, row=iop[:3], col=iop[3:], pixel_spacing=(ps[0], ps[1]),
                  slope=slope, intercept=inter, **common)  # fmt: skip
        )
    return frames if n_frames == 1 else "no_geometry"


def _enhanced_frames(ds, common: dict, n_frames: int) -> list[Frame] | str:
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != n_frames:
        return "no_geometry"

    def item(fg, name):
        return _first(fg, name) or _first(shared, name)

    frames = []
    for f, fg in enumerate(per_frame):
        pos = item(fg, "PlanePositionSequence")
        ori = item(fg, "PlaneOrientationSequence")
        meas = item(fg, "PixelMeasuresSequence")
        pvt = item(fg, "PixelValueTransformationSequence")
        ipp = _floats(pos.get("ImagePositionPatient") or [], 3) if pos is not None else None
        iop = _floats(ori.get("ImageOrientationPatient") or [], 6) if ori is not None else None
        ps = _floats(meas.get("PixelSpacing") or [], 2) if meas is not None else None
        if ipp is None or iop is None:
            return "no_geometry"
        slope, inter = _rescale(pvt) if pvt is not None else _rescale(ds)
        ps = ps if ps is not None else np.array([1.0, 1.0])
        frames.append(
            Frame(frame=f, position=ipp, row=iop[:3], col=iop[3:], pixel_spacing=(ps[0], ps[1]),
                  slope=slope, intercept=inter, **common)  # fmt: skip
        )
    return frames


class _Header(HeaderValues):
    """The top-level elements of a header as a plain dict, converted once (Dataset access is slow per call)."""

    def __init__(self, ds: pydicom.Dataset):
        self.ds = ds
        self.file_meta = getattr(ds, "file_meta", None)
        self._values = {}
        for elem in ds:
            if elem.keyword:
                self._values[elem.keyword] = elem.value


def _declared_bytes(ds) -> int:
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = max(1, _int(ds.get("NumberOfFrames"), 1))
    bits = int(ds.get("BitsAllocated", 16) or 16)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    return rows * cols * frames * spp * bits // 8


def _why_short(source: Source, key: str) -> str:
    """A file smaller than its declared pixel data: 'no_pixels' (header only) or 'unreadable' (truncated)."""
    try:
        ds = read_header(source.open(key), stop_before_pixels=False)
        has = any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
        return "unreadable" if has else "no_pixels"
    except Exception:  # noqa: BLE001
        return "unreadable"


_PREFIX = 16 * 1024


def _fast_header(source: Source, key: str) -> FastHeader | None:
    """The header through the fast parser, or None when pydicom must read it."""
    data = source.read_prefix(key, _PREFIX)
    header = parse_header(data, HEADER_TAGS)
    if header == NEED_MORE and len(data) == _PREFIX:
        header = parse_header(source.read_prefix(key, -1), HEADER_TAGS)
    return header if isinstance(header, FastHeader) else None


def _scan_one(source: Source, key: str):
    try:
        ds = _fast_header(source, key)
        if ds is None:
            ds = _Header(read_header(source.open(key), specific_tags=HEADER_TAGS))
    except Exception:  # noqa: BLE001 - any unreadable file is counted and skipped
        return key, "unreadable"
    try:
        declared = _declared_bytes(ds)
        if declared > MAX_ARRAY_BYTES:
            return key, "absurd"
        tsyntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
        if "Rows" in ds and tsyntax in NATIVE_SYNTAXES and source.size(key) < declared:
            return key, _why_short(source, key)
        return key, frames_from_header(ds, key)
    except Exception:  # noqa: BLE001 - corrupt values in a header: skip the file, count it
        return key, "unreadable"


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
    buckets = {
        "unreadable": result.unreadable, "non_image": result.non_image, "no_geometry": result.no_geometry,
        "localizer": result.localizers, "absurd": result.absurd,
        "no_pixels": result.no_pixels, "derived": result.derived,
    }  # fmt: skip
    for key, outcome in outcomes:
        if isinstance(outcome, str):
            buckets[outcome].append(key)
        else:
            result.frames.extend(outcome)
    return result
