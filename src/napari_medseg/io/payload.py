"""Verify the voxel payload of NRRD/NHDR/MHA/MHD files before SimpleITK reads it.

ITK's readers check no CRC: a gzip NRRD or zlib MHA whose compressed block was damaged in transit decodes into
wrong voxels without an error, and a short raw payload can be padded silently. This module finds the payload
(attached after the header, or the detached data file), then

* **raw**: checks the file holds at least the bytes the header declares;
* **gzip / bzip2** (NRRD): decompresses it once with Python's ``gzip``/``bz2`` in 1 MiB chunks (bounded memory),
  which verifies the CRC-32 and length in the stream's trailer;
* **zlib** (MHA/MHD ``CompressedData = True``): decompresses with ``zlib`` (the Adler-32 check at the end of
  the stream), and requires the stream to be complete;

and compares the decompressed length with what the header declares. Anything wrong is an `InputError` naming
the file. Payloads it cannot locate (``LIST`` data files, printf-style file lists) are left to ITK.
"""

from __future__ import annotations

import bz2
import re
import zlib
from pathlib import Path

from napari_medseg.errors import InputError
from napari_medseg.io.suffixes import is_nrrd

CHUNK = 1 << 20
_HEADER_LIMIT = 1 << 20  # a header longer than 1 MiB is not a header


def _corrupt(path: Path, what: str) -> InputError:
    return InputError(f"{path}: {what}; the file is damaged (truncated or changed in transit). Re-export or re-download it")


def _nrrd_header(path: Path) -> tuple[dict[str, str], int]:
    with open(path, "rb") as f:
        head = f.read(_HEADER_LIMIT)
    m = re.search(rb"\r?\n\r?\n", head)
    if m is None:  # a detached header may end at EOF without a blank line
        if path.suffix.lower() == ".nhdr" or len(head) < _HEADER_LIMIT:
            end = len(head)
        else:
            raise InputError(f"{path}: NRRD header has no end (no blank line in the first MiB)")
    else:
        end = m.end()
    fields = {}
    for line in head[: m.start() if m else end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    return fields, end


def _mha_header(path: Path) -> tuple[dict[str, str], int]:
    with open(path, "rb") as f:
        head = f.read(_HEADER_LIMIT)
    fields, pos = {}, 0
    for raw in head.splitlines(keepends=True):
        pos += len(raw)
        line = raw.decode("latin-1").strip()
        if "=" in line:
            key, _, value = line.partition("=")
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":
                return fields, pos
    return fields, pos


def _locate(path: Path) -> tuple[str, Path, int, int] | None:
    """(encoding, data file, offset, byte skip) of the payload, or None when it cannot be located."""
    if is_nrrd(path):
        fields, end = _nrrd_header(path)
        enc = fields.get("encoding", "raw").lower()
        enc = {"gz": "gzip", "bz2": "bzip2", "txt": "text", "ascii": "text"}.get(enc, enc)
        ref = fields.get("data file") or fields.get("datafile")
        try:
            line_skip = int(fields.get("line skip", fields.get("lineskip", "0")))
            byte_skip = int(fields.get("byte skip", fields.get("byteskip", "0")))
        except ValueError:
            return None
        if line_skip != 0:
            return None
        if ref:
            if ref.upper().startswith("LIST") or " " in ref.strip() or "%" in ref:
                return None
            data = (path.parent / ref).resolve()
            return enc, data, 0, byte_skip
        return enc, path, end, byte_skip
    fields, end = _mha_header(path)
    ref = fields.get("elementdatafile", "LOCAL")
    try:
        header_size = int(fields.get("headersize", "0"))
    except ValueError:
        return None
    compressed = fields.get("compresseddata", "false").lower() == "true"
    enc = "zlib" if compressed else "raw"
    if ref.upper() == "LOCAL":
        return enc, path, end, 0
    if ref.upper().startswith("LIST") or "%" in ref or " " in ref.strip():
        return None
    return enc, (path.parent / ref).resolve(), 0, max(header_size, 0)


def iter_gzip(f, chunk: int = CHUNK):
    """Decompressed chunks (at most ``chunk`` bytes each) of the gzip stream read from ``f``, all members.

    zlib checks each member's CRC-32 and length (``zlib.error`` when they do not match); a stream that ends
    early raises ``EOFError``. Bytes after the last complete member that do not start another member are
    ignored, as gzip(1), nibabel and ITK ignore them.
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = b""
    while True:
        if not pending:
            pending = f.read(chunk)
            if not pending:
                if not d.eof:
                    raise EOFError("the gzip stream ends before its end-of-stream marker")
                return
        if d.eof:  # a member ended: another member, or trailing bytes
            if not pending.startswith(b"\x1f\x8b"):
                return
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(pending, chunk)
        if out:
            yield out
        pending = d.unused_data if d.eof else d.unconsumed_tail


def _stream_length(path: Path, data: Path, offset: int, enc: str, limit: int) -> int:
    """Decompressed length of the payload (stops past ``limit``), verifying its checksum; `InputError` if damaged."""
    total = 0
    try:
        with open(data, "rb") as f:
            f.seek(offset)
            if enc == "gzip":
                for chunk in iter_gzip(f):
                    total += len(chunk)
                    if total > limit:
                        break
                return total
            if enc == "bzip2":
                with bz2.BZ2File(f, mode="rb") as g:
                    while total <= limit and (chunk := g.read(CHUNK)):
                        total += len(chunk)
                return total
            d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header, checksum verified at the end
            while total <= limit and not d.eof and (buf := f.read(CHUNK)):
                while buf and total <= limit and not d.eof:
                    total += len(d.decompress(buf, CHUNK))
                    buf = d.unconsumed_tail
            if total <= limit and not d.eof:
                raise _corrupt(path, f"the {enc}-compressed voxel data ends early (the stream is incomplete)")
            return total
    except InputError:
        raise
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise _corrupt(path, f"the {enc}-compressed voxel data fails its integrity check ({type(e).__name__}: {e})") from e


_MHA_COUNTS = {"dimsize": 1, "elementspacing": 1, "elementsize": 1, "offset": 1, "origin": 1, "position": 1,
               "transformmatrix": 2, "rotation": 2, "orientation": 2, "centerofrotation": 1}


def _numbers(text: str) -> list[float] | None:
    try:
        return [float(v) for v in text.split()]
    except ValueError:
        return None


def check_itk_header(path) -> None:
    """Refuse MetaImage/NRRD headers that crash or hang ITK's parsers, before ITK sees them.

    ITK's MetaIO loops forever on ``NDims = -1`` and crashes the process on some inconsistent headers, so the
    counts are checked here: NDims 1..4, DimSize (NRRD ``sizes``) with that many positive whole numbers, and
    spacing/offset/matrix fields with the right number of values.
    """
    path = Path(path)
    if is_nrrd(path):
        with open(path, "rb") as f:
            if not f.read(4) == b"NRRD":
                raise InputError(f"{path}: not a NRRD file (it does not start with 'NRRD'); the file is damaged or misnamed")
        fields, _ = _nrrd_header(path)
        try:
            dim = int(fields.get("dimension", ""))
            sizes = [int(v) for v in fields.get("sizes", "").split()]
        except ValueError:
            raise InputError(f"{path}: the NRRD header's dimension/sizes are not whole numbers; the file is corrupt") from None
        if not 1 <= dim <= 5 or len(sizes) != dim or any(s < 1 for s in sizes):
            raise InputError(f"{path}: the NRRD header declares dimension {dim} with sizes {sizes}; the file is corrupt")
        return
    fields, _ = _mha_header(path)
    if "ndims" not in fields:
        raise InputError(f"{path}: not a MetaImage header (no NDims); the file is damaged or misnamed")
    try:
        ndims = int(fields["ndims"])
    except ValueError:
        raise InputError(f"{path}: NDims = {fields['ndims']!r} is not a whole number; the header is corrupt") from None
    if not 1 <= ndims <= 4:
        raise InputError(f"{path}: NDims = {ndims}; napari-medseg reads 2D, 3D and 4D MetaImages (the header is corrupt?)")
    for key, power in _MHA_COUNTS.items():
        if key not in fields:
            continue
        values = _numbers(fields[key])
        if values is None or len(values) != ndims**power:
            raise InputError(f"{path}: {key} needs {ndims**power} numbers for NDims = {ndims}, got {fields[key]!r}; "
                             "the header is corrupt")
    dims = _numbers(fields.get("dimsize", ""))
    if not dims or any(v < 1 or v != int(v) for v in dims):
        raise InputError(f"{path}: DimSize = {fields.get('dimsize', '')!r} is not {ndims} positive whole numbers; "
                         "the header is corrupt")
    try:
        channels = int(fields.get("elementnumberofchannels", "1"))
    except ValueError:
        channels = 0
    if not 1 <= channels <= 1024:
        raise InputError(f"{path}: ElementNumberOfChannels = {fields.get('elementnumberofchannels')!r} is not a whole "
                         "number between 1 and 1024; the header is corrupt")


def verify_itk_payload(path, needed: int) -> None:
    """Raise `InputError` when the payload of ``path`` is truncated, damaged or not the declared size."""
    path = Path(path)
    loc = _locate(path)
    if loc is None:
        return
    enc, data, offset, byte_skip = loc
    if not data.is_file():
        raise InputError(f"{path}: its data file {data.name!r} does not exist next to it; copy both files together")
    size = data.stat().st_size
    if enc in ("raw",):
        if byte_skip == -1:  # data at the end of the file
            have = size - offset
        else:
            have = size - offset - max(byte_skip, 0)
        if have < needed:
            raise _corrupt(path, f"truncated: the header declares {needed} bytes of voxel data but the file holds {max(have, 0)}")
        return
    if enc not in ("gzip", "bzip2", "zlib"):
        return  # text/hex: ITK parses and checks the count itself
    skip = max(byte_skip, 0)
    got = _stream_length(path, data, offset, enc, limit=2 * (needed + skip) + CHUNK)
    if got < needed + skip:
        raise _corrupt(path, f"truncated: the header declares {needed} bytes of voxel data but the {enc} stream holds {max(got - skip, 0)}")
    if got > 2 * (needed + skip) + CHUNK:
        raise _corrupt(path, f"the {enc} stream holds far more data than the {needed} bytes the header declares")
