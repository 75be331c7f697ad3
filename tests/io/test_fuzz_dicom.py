"""Property-based fuzzing of the DICOM reader (issue 9): over the header fields (Rows, Columns,
BitsAllocated/Stored, NumberOfFrames, PixelSpacing, ImageOrientationPatient/ImagePositionPatient, rescale)
and the element lengths and bytes of the header, every example gives a `MedsegError` or a valid `Volume` —
never another exception —, stays within a memory bound, and never writes to its input.

Bounded time: ~60 s in CI (``max_examples`` below, ``deadline=None``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import write_enhanced, write_series

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from napari_medseg.errors import MedsegError  # noqa: E402
from napari_medseg.io import list_series, read_volume  # noqa: E402
from napari_medseg.volume import Volume  # noqa: E402

#: Peak Python/numpy allocation allowed for reading a 3 x 16 x 16 series however its header lies.
MEMORY_LIMIT = 256 * 1024**2
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
#: MEDSEG_FUZZ_SCALE=10 runs ten times the examples (a longer local hunt; CI uses 1)
SCALE = max(1, int(os.environ.get("MEDSEG_FUZZ_SCALE", "1") or 1))

_BASE: dict[str, list[bytes]] = {}


def _base(kind: str) -> list[bytes]:
    """The bytes of a small valid series (made once per session, synthetic)."""
    if kind not in _BASE:
        with tempfile.TemporaryDirectory() as d:
            if kind == "enhanced":
                w = write_enhanced(Path(d) / "e.dcm", shape=(3, 16, 16))
            else:
                w = write_series(Path(d) / "s", shape=(3, 16, 16), syntax=kind)
            _BASE[kind] = [f.read_bytes() for f in w.files]
    return _BASE[kind]


def _check(files: list[bytes], target: str = "folder") -> None:
    """Read the files; assert the contract (MedsegError or valid Volume, bounded memory, inputs untouched)."""
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "s"
        folder.mkdir()
        paths = []
        for n, data in enumerate(files):
            paths.append(folder / f"IM{n:03d}.dcm")
            paths[-1].write_bytes(data)
        before = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}
        path = folder if target == "folder" else paths[0]
        tracemalloc.start()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    infos = list_series(path)
                    assert infos and all(np.all(np.isfinite(i.direction)) for i in infos)
                    assert all(np.all(np.isfinite(i.spacing)) and min(i.spacing) > 0 for i in infos)
                    vol = read_volume(path, series=infos[0].uid)
                except MedsegError as e:
                    assert str(e), "an empty error message"
                else:
                    assert isinstance(vol, Volume)
                    assert vol.array.ndim == 3 and vol.array.size > 0
                    assert np.all(np.isfinite(vol.array)) if vol.array.dtype.kind == "f" else True
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"peak allocation {peak / 1024**2:.0f} MiB"
        after = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}
        assert after == before, "an input file was modified"
        assert sorted(folder.iterdir()) == sorted(paths), "a file was written into the input folder"


def _with(data: bytes, **values) -> bytes:
    """``data`` with header attributes replaced (None deletes), written back with pydicom."""
    import io

    ds = pydicom.dcmread(io.BytesIO(data))
    for kw, v in values.items():
        if v is None:
            if kw in ds:
                delattr(ds, kw)
        else:
            try:
                setattr(ds, kw, v)
            except (ValueError, TypeError, OverflowError):  # not a valid value of its VR: store the bytes raw
                from pydicom.datadict import tag_for_keyword

                text = "\\".join(map(str, v)) if isinstance(v, list) else str(v)
                raw = text.encode("latin-1", "replace")
                ds.add(pydicom.DataElement(tag_for_keyword(kw), "OB", raw + b" " * (len(raw) % 2)))
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


_numbers = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "0", "-0", "1e308", "-1", "1", "abc", ""]),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(lambda v: f"{v:.6g}"),
)
_us = st.one_of(st.sampled_from([0, 1, 2, 7, 8, 12, 15, 16, 17, 32, 64, 255, 65535]), st.integers(0, 65535))
_fields = st.fixed_dictionaries(
    {},
    optional={
        "Rows": _us, "Columns": _us, "BitsAllocated": _us, "BitsStored": _us, "HighBit": _us,
        "PixelRepresentation": st.sampled_from([0, 1, 2, 65535]), "SamplesPerPixel": st.sampled_from([0, 1, 2, 3, 4]),
        "NumberOfFrames": st.sampled_from(["0", "1", "2", "3", "-1", "1000000", "1e9", "x", None]),
        "PixelSpacing": st.lists(_numbers, min_size=0, max_size=3),
        "ImageOrientationPatient": st.lists(_numbers, min_size=5, max_size=7),
        "ImagePositionPatient": st.lists(_numbers, min_size=2, max_size=4),
        "RescaleSlope": _numbers, "RescaleIntercept": _numbers,
        "SOPClassUID": st.sampled_from(["", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.3.4", None]),
        "SeriesInstanceUID": st.sampled_from(["", None]),
    },
)  # fmt: skip


@settings(max_examples=120 * SCALE, **SETTINGS)
@given(fields=_fields, which=st.sampled_from(["all", "one"]), syntax=st.sampled_from(["explicit", "implicit"]))
def test_header_fields(fields, which, syntax):
    base = _base(syntax)
    files = [_with(b, **fields) if which == "all" or n == 1 else b for n, b in enumerate(base)]
    _check(files)


@settings(max_examples=25 * SCALE, **SETTINGS)
@given(fields=_fields)
def test_header_fields_compressed(fields):
    fields.pop("Rows", None), fields.pop("Columns", None)  # noqa: B018 - keep the decoders' input plausible
    _check([_with(b, **fields) for b in _base("rle")])


@settings(max_examples=30 * SCALE, **SETTINGS)
@given(fields=_fields, target=st.sampled_from(["folder", "file"]))
def test_enhanced_header_fields(fields, target):
    for kw in ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "RescaleSlope", "RescaleIntercept"):
        fields.pop(kw, None)  # the enhanced file keeps these in its functional groups
    _check([_with(_base("enhanced")[0], **fields)], target)


def _element_offsets(data: bytes) -> list[tuple[int, int]]:
    """(offset of the length field, its size in bytes) of each top-level element (explicit VR LE)."""
    import io

    ds = pydicom.dcmread(io.BytesIO(data), defer_size=None)
    out = []
    for raw in ds._dict.values():
        tell = getattr(raw, "value_tell", None)
        if tell is None:
            continue
        long_vr = raw.VR in ("OB", "OW", "OF", "SQ", "UT", "UN", "OD", "OL", "OV", "UC", "UR")
        out.append((tell - 4, 4) if long_vr else (tell - 2, 2))
    return out


@settings(max_examples=80 * SCALE, **SETTINGS)
@given(data=st.data(), mode=st.sampled_from(["length", "bytes", "truncate"]), which=st.sampled_from(["all", "one"]))
def test_element_lengths_and_bytes(data, mode, which):
    base = _base("explicit")
    offsets = _element_offsets(base[0])
    header_end = base[0].rfind(b"\xe0\x7f\x10\x00") + 12

    def mutate(b: bytes) -> bytes:
        b = bytearray(b)
        if mode == "length":
            pos, size = data.draw(st.sampled_from(offsets))
            value = data.draw(st.sampled_from([0, 1, 3, 0xFF, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, len(b)]))
            b[pos : pos + size] = (value & (0xFFFF if size == 2 else 0xFFFFFFFF)).to_bytes(size, "little")
        elif mode == "bytes":
            for _ in range(data.draw(st.integers(1, 8))):
                pos = data.draw(st.integers(0, header_end))
                b[pos] = data.draw(st.integers(0, 255))
        else:
            b = b[: data.draw(st.integers(0, len(b)))]
        return bytes(b)

    _check([mutate(b) if which == "all" or n == 0 else b for n, b in enumerate(base)])
