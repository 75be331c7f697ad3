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

import pydicom
from pydicom.errors import InvalidDicomError

from napari_medseg.io.dicom_classify import object_kind
from napari_medseg.io.dicom_frames import Frame, Skip, _frames, _int, frames_from_header  # noqa: F401
from napari_medseg.io.dicom_fastheader import NEED_MORE, FastHeader, HeaderValues, parse_header
from napari_medseg.io.dicom_source import (  # noqa: F401 - re-exported: the scanner's public names
    MAX_ARRAY_BYTES,
    BoundedFile,
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


_DEFLATED = b"1.2.840.10008.1.2.1.99"


class DeflateBomb(UnsafeMember):
    """A deflated dataset that inflates to more than it may."""


def check_deflated(fp) -> None:
    """A Deflated Explicit VR Little Endian file is inflated whole by pydicom: count what it inflates to
    first (streamed, nothing kept) and refuse one that expands beyond the budget (a deflate bomb)."""
    own = not hasattr(fp, "read")
    f = open(fp, "rb") if own else fp
    try:
        start_pos = f.tell()
        if _DEFLATED not in f.read(4096):
            return
        f.seek(start_pos)
        from pydicom.filereader import _read_file_meta_info, read_preamble

        read_preamble(f, force=True)
        _read_file_meta_info(f)
        body = f.tell()
        size = f.seek(0, 2) - body
        f.seek(body)
        limit = min(memory_budget(), max(64 * 1024**2, 200 * size))
        d, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while not d.eof:
            buf = f.read(1 << 20)
            if not buf:
                break
            while buf:
                total += len(d.decompress(buf, 1 << 22))
                buf = d.unconsumed_tail
                if total > limit:
                    raise DeflateBomb(
                        f"{getattr(fp, 'name', fp) if own else 'the file'}: the deflated dataset ({size} bytes) "
                        f"inflates to more than {limit / 1024**2:.0f} MiB (a deflate bomb or a corrupt file); "
                        "refusing to inflate it"
                    )
    except DeflateBomb:
        raise
    except (zlib.error, OSError, ValueError):
        pass  # not inflatable: pydicom reports it
    finally:
        if own:
            f.close()
        else:
            f.seek(start_pos)


def read_header(fp, specific_tags=None, stop_before_pixels=True) -> pydicom.Dataset:
    """``dcmread`` that also accepts preamble-less files; raises InvalidDicomError for anything else.

    A path is read through a `BoundedFile` (corrupt lengths never allocate more than the file holds)."""
    if isinstance(fp, (str, os.PathLike)):
        with BoundedFile(fp) as f:
            return read_header(f, specific_tags, stop_before_pixels)
    check_deflated(fp)
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
        with BoundedFile(path) as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True, specific_tags=tags)
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


BUCKETS = {
    "denied": "file(s) that may not be read (permission denied)",
    "special": "non-regular file(s) (named pipe, socket or device), never opened",
    "broken link": "broken symbolic link(s)",
    "dir link": "symbolic link(s) to folders, not followed (point at the folder itself to read it)",
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
    derived = property(lambda self: self.of("seg") + self.of("rtstruct"))  # both, for the SEG/RTSTRUCT readers

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
    if str(ds.get("PhotometricInterpretation", "") or "").strip().endswith("_422") and spp == 3:
        spp = 2  # YBR_FULL_422 / YBR_PARTIAL_422: chroma subsampled horizontally
    return declared_pixel_bytes(rows, cols, max(1, _int(ds.get("NumberOfFrames"), 1)), spp, bits)


def length_matches(ds, actual: int, declared: int) -> bool:
    """Native pixel data of ``actual`` bytes fits a header declaring ``declared``: equal, or longer by less
    than one frame (padding some writers add; the extra bytes are ignored, as pydicom does). A difference of
    a frame or more is a header that does not describe the data (BitsAllocated 8 on 16-bit data, a wrong
    Rows or NumberOfFrames, ...)."""
    frames = max(1, _int(ds.get("NumberOfFrames"), 1))
    return declared <= actual < declared + max(2, declared // frames)


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
        raise Skip("mismatch", "encapsulated (compressed) pixel data in an uncompressed transfer syntax")
    if not length_matches(ds, length, declared):
        raise Skip("mismatch", mismatch_reason(ds, length))
    if size < offset + declared:
        raise Skip(
            "truncated",
            f"the file ends {offset + declared - size} bytes before the end of its pixel data "
            f"({size} of {offset + declared} bytes; an interrupted copy?) — copy or export it again",
        )


def _why_short(source: Source, key: str, declared: int) -> None:
    """A file smaller than its declared pixel data: header only, truncated, or a header/pixel mismatch."""
    try:
        ds = read_header(source.open(key), stop_before_pixels=False)
    except Exception as e:  # noqa: BLE001
        raise Skip("truncated", f"the file is shorter than its header declares ({_short(e)})") from None
    for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if tag in ds:
            n = len(ds[tag].value or b"")
            if ds[tag].is_undefined_length:
                return
            raise Skip("truncated" if n == 0 else "mismatch", mismatch_reason(ds, n))
    raise Skip("no_pixels", "the file has an image header but no pixel data")


def _short(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) < 200 else text[:197] + "..."


_PREFIX = 16 * 1024


def _fast_header(source: Source, key: str) -> FastHeader | None:
    """The header through the fast parser, or None when pydicom must read it."""
    data = source.read_prefix(key, _PREFIX)
    if data[128:132] != b"DICM" and not _plausible_preambleless(data):
        raise InvalidDicomError("no DICM marker")  # decided from the prefix: never read more of a junk file
    header = parse_header(data, HEADER_TAGS)
    if header == NEED_MORE and len(data) == _PREFIX:
        if source.size(key) > 256 * 1024**2:
            return None  # a header this long is unusual: pydicom reads it from a bounded stream
        header = parse_header(source.read_prefix(key, -1), HEADER_TAGS)
    return header if isinstance(header, FastHeader) else None


def _read_any_header(source: Source, key: str):
    try:
        if source.size(key) == 0:
            raise Skip("unreadable", "the file is empty (0 bytes)")
        ds = _fast_header(source, key)
        if ds is None:
            ds = _Header(read_header(source.open(key, header_only=True), specific_tags=HEADER_TAGS))
        return ds
    except PermissionError:
        raise Skip("denied", "permission denied; make the file readable (chmod +r) and try again") from None
    except UnsafeMember as e:
        raise Skip("too_large", str(e).split(": ", 1)[-1]) from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise Skip("damaged", f"damaged zip member ({_short(e)}); re-create the archive") from None
    except Skip:
        raise
    except InvalidDicomError:
        raise Skip("unreadable", "not a DICOM file (no 'DICM' marker and no DICOM header)") from None
    except (RuntimeError, NotImplementedError) as e:
        if source.is_member(key):  # encrypted member, or a compression method Python cannot read
            raise Skip("damaged", f"cannot extract the zip member ({_short(e)}); re-create the archive") from None
        raise Skip("unreadable", f"cannot parse the DICOM header ({_short(e)}); the file is corrupt") from None
    except OSError as e:
        raise Skip("unreadable", f"cannot read the file ({_short(e)})") from None
    except Exception as e:  # noqa: BLE001 - a header pydicom cannot parse
        raise Skip("unreadable", f"cannot parse the DICOM header ({_short(e)}); the file is corrupt") from None


def _scan_one(source: Source, key: str):
    try:
        ds = _read_any_header(source, key)
        try:
            declared = _declared_bytes(ds)
            if declared > memory_budget():
                raise Skip(
                    "absurd",
                    f"the header declares an image far larger than this machine can hold: "
                    f"{declared / 1024**3:.1f} GiB of pixels (Rows={ds.get('Rows')}, Columns={ds.get('Columns')}, "
                    f"NumberOfFrames={ds.get('NumberOfFrames', 1)}); the header is corrupt — re-export the file",
                )
            tsyntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
            kind, _note = object_kind(str(ds.get("SOPClassUID", "") or ""), "Rows" in ds and "Columns" in ds)
            if kind == "image" and tsyntax in NATIVE_SYNTAXES and declared > 0:
                _check_lengths(source, key, ds, declared)
            return key, _frames(ds, key)
        except Skip:
            raise
        except Exception as e:  # noqa: BLE001 - corrupt values in a header: skip the file, count it
            raise Skip("bad_header", f"unusable header values ({_short(e)})") from None
    except Skip as e:
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
