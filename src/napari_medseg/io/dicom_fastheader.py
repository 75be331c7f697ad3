"""A minimal, fast reader for the few top-level header elements series discovery needs.

``pydicom.dcmread`` costs ~1-2 ms per file even with ``specific_tags``; listing thousands of slices spends
nearly all its time there. This parser walks the top-level elements of a little-endian file (explicit or
implicit VR, after the 'DICM' preamble) up to the pixel data, keeps the raw bytes of the wanted elements and
converts only those. Anything unusual — no preamble, big endian or deflated syntax, a wanted element that is
a sequence (enhanced multi-frame), explicit-VR UN of undefined length, a malformed length — returns ``None``
and the caller falls back to pydicom, so the fast path never decides anything pydicom would decide
differently. `parse_header` returns `NEED_MORE` when the buffer ends before the pixel data.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace

from pydicom.datadict import dictionary_VR, tag_for_keyword

NEED_MORE = "need-more"
_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"OV", b"SV", b"UV", b"UC", b"UR"}
_SEQUENCES = {"SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"}
_BIG_OR_DEFLATED = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
_IMPLICIT = "1.2.840.10008.1.2"


class _Short(Exception):
    """The buffer ends before the element being parsed."""


class _Unsupported(Exception):
    """Something the fast path does not handle: fall back to pydicom."""


def _wanted(keywords) -> dict[int, tuple[str, str]]:
    out = {}
    for kw in list(keywords) + ["SpecificCharacterSet"]:
        tag = tag_for_keyword(kw)
        if tag is not None:
            out[tag] = (kw, dictionary_VR(tag))
    return out


class HeaderValues:
    """Top-level header values by keyword, with the small part of the `pydicom.Dataset` interface the
    scanner uses (``get``, ``in``, attribute access). Plain dict lookups: `Dataset` access is slow per call."""

    _values: dict

    def get(self, keyword, default=None):
        return self._values.get(keyword, default)

    def __contains__(self, keyword) -> bool:
        return keyword in self._values

    def __getattr__(self, keyword):
        try:
            return self.__dict__["_values"][keyword]
        except KeyError:
            raise AttributeError(keyword) from None


class FastHeader(HeaderValues):
    """Wanted top-level values parsed by `parse_header`."""

    def __init__(self, values: dict, transfer_syntax: str, pixel_offset=None, pixel_length=None):
        self._values = values
        self.file_meta = SimpleNamespace(TransferSyntaxUID=transfer_syntax)
        #: where the (7FE0,0010) value starts and the length its element header declares (None: no pixel data
        #: element before the end of the buffer; 0xFFFFFFFF: encapsulated)
        self.pixel_offset = pixel_offset
        self.pixel_length = pixel_length


def _element(data: bytes, pos: int, explicit: bool) -> tuple[int, str, int, int]:
    """(tag, vr, value_start, length) of the element at ``pos``."""
    if pos + 8 > len(data):
        raise _Short
    group, elem = struct.unpack_from("<HH", data, pos)
    tag = (group << 16) | elem
    if group == 0xFFFE:  # item / delimiters: implicit-style 4-byte length
        return tag, "", pos + 8, struct.unpack_from("<I", data, pos + 4)[0]
    if explicit:
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                raise _Short
            return tag, vr.decode("ascii"), pos + 12, struct.unpack_from("<I", data, pos + 8)[0]
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise _Unsupported("not an explicit VR")
        return tag, vr.decode("ascii"), pos + 8, struct.unpack_from("<H", data, pos + 6)[0]
    return tag, "", pos + 8, struct.unpack_from("<I", data, pos + 4)[0]


def _skip_undefined(data: bytes, pos: int, explicit: bool) -> int:
    """Position just after an undefined-length sequence whose items start at ``pos``."""
    while True:
        tag, _vr, start, length = _element(data, pos, explicit)
        if tag == _SEQ_END:
            return start
        if tag != _ITEM:
            raise _Unsupported("unexpected element in a sequence")
        if length != _UNDEFINED:
            pos = start + length
            continue
        pos = start
        while True:  # elements of an undefined-length item, up to the item delimiter
            tag, vr, start, length = _element(data, pos, explicit)
            if tag == _ITEM_END:
                pos = start
                break
            if length == _UNDEFINED:
                if explicit and vr == "UN":
                    raise _Unsupported("UN of undefined length")
                pos = _skip_undefined(data, start, explicit)
            else:
                pos = start + length


def _convert(raw: bytes, vr: str, charset: str):
    if vr in ("US", "SS") and len(raw) < 2:
        return ""
    if vr == "US":
        n = len(raw) // 2
        vals = struct.unpack_from(f"<{n}H", raw)
        return vals[0] if n == 1 else list(vals)
    if vr == "SS":
        n = len(raw) // 2
        vals = struct.unpack_from(f"<{n}h", raw)
        return vals[0] if n == 1 else list(vals)
    text = raw.decode(charset, errors="replace").strip("\x00 ")
    if vr in ("DS", "IS", "CS"):
        parts = [p.strip() for p in text.split("\\")]
        return parts if len(parts) > 1 else parts[0]
    return text


def parse_header(data: bytes, keywords) -> FastHeader | str | None:
    """Parse the wanted top-level elements of ``data`` (the start of a file); see the module docstring."""
    wanted = _wanted_cache.get(tuple(keywords))
    if wanted is None:
        wanted = _wanted_cache.setdefault(tuple(keywords), _wanted(keywords))
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    try:
        pos, tsyntax = 132, None
        while True:  # file meta information: explicit VR little endian, group 0002
            if pos + 8 > len(data):
                raise _Short
            if struct.unpack_from("<H", data, pos)[0] != 0x0002:
                break
            tag, _vr, start, length = _element(data, pos, True)
            if tag == 0x00020010:
                tsyntax = data[start : start + length].decode("ascii", "replace").strip("\x00 ")
            pos = start + length
        if tsyntax is None or tsyntax in _BIG_OR_DEFLATED:
            return None
        explicit = tsyntax != _IMPLICIT
        raw: dict[int, bytes] = {}
        pixel_offset = pixel_length = None
        while pos < len(data):
            tag, vr, start, length = _element(data, pos, explicit)
            if tag >= _PIXEL_DATA:
                if tag == _PIXEL_DATA:
                    pixel_offset, pixel_length = start, length
                break
            if tag in wanted:
                kw, dict_vr = wanted[tag]
                if kw in _SEQUENCES or dict_vr == "SQ":
                    return None  # enhanced multi-frame: pydicom parses the functional groups
                if length == _UNDEFINED or start + length > len(data):
                    if length == _UNDEFINED:
                        return None
                    raise _Short
                raw[tag] = data[start : start + length]
            if length == _UNDEFINED:
                if explicit and vr == "UN":
                    return None
                pos = _skip_undefined(data, start, explicit)
            else:
                pos = start + length
        else:
            raise _Short
    except _Short:
        return NEED_MORE
    except (_Unsupported, struct.error, UnicodeDecodeError):
        return None
    charset = "latin-1"
    cs_tag = tag_for_keyword("SpecificCharacterSet")
    if cs_tag in raw and b"192" in raw[cs_tag]:
        charset = "utf-8"
    values = {}
    for tag, value in raw.items():
        kw, dict_vr = wanted[tag]
        if kw == "SpecificCharacterSet":
            continue
        converted = _convert(value, vr_of(dict_vr), charset)
        if converted != "" and converted != []:
            values[kw] = converted
    return FastHeader(values, tsyntax, pixel_offset, pixel_length)


def vr_of(dict_vr: str) -> str:
    """The VR used to convert a value ('US or SS' style ambiguous VRs are read as US)."""
    return dict_vr.split(" ")[0]


_wanted_cache: dict[tuple, dict[int, tuple[str, str]]] = {}
