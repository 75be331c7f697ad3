"""Property-based fuzzing of the NIfTI, NRRD and MHA readers' header fields (hypothesis).

Every example must give a `MedsegError` with a one-line plain message, or a valid `Volume`; never another
exception, never more memory than the allocation limit allows (``MEDSEG_MAX_ALLOC`` = 256 MB here, RSS
checked), never a write to the input (its bytes are hashed before and after). Derandomised: CI runs the same
examples every time, about 12 s in all on 2 cores.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from bad_inputs import gz, mha_bytes, nifti_bytes, nrrd_bytes, voxels

from napari_medseg.errors import MedsegError
from napari_medseg.io import list_series, read_volume
from napari_medseg.volume import Volume

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

LIMIT = "256M"
#: MEDSEG_FUZZ_EXAMPLES=2000 MEDSEG_FUZZ_RANDOM=1 for a longer, randomised search outside CI
SETTINGS = settings(max_examples=int(os.environ.get("MEDSEG_FUZZ_EXAMPLES", 120)),
                    derandomize=not os.environ.get("MEDSEG_FUZZ_RANDOM"), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

floats = st.one_of(st.sampled_from([0.0, -1.0, 1.0, 0.5, 2.5, 1e-30, 1e30, float("nan"), float("inf"), -float("inf")]),
                   st.floats(-1e6, 1e6, allow_nan=False, width=32))
sizes = st.sampled_from([-5, -1, 0, 1, 2, 6, 7, 8, 300, 32767, 100000, 2**31 - 1])
dims16 = st.sampled_from([-5, -1, 0, 1, 2, 6, 7, 8, 300, 2048, 32767])  # NIfTI-1 dims are int16


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


@pytest.fixture(scope="module", autouse=True)
def _limit():
    old = os.environ.get("MEDSEG_MAX_ALLOC")
    os.environ["MEDSEG_MAX_ALLOC"] = LIMIT
    yield
    if old is None:
        os.environ.pop("MEDSEG_MAX_ALLOC", None)
    else:
        os.environ["MEDSEG_MAX_ALLOC"] = old


def check(name: str, data: bytes, extra: dict[str, bytes] | None = None) -> None:
    """Write ``data`` as ``name`` (plus extra files), read it both ways and assert the contract."""
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        path = folder / name
        path.write_bytes(data)
        for n, b in (extra or {}).items():
            (folder / n).write_bytes(b)
        before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
        if os.environ.get("MEDSEG_FUZZ_TRACE"):  # keep the example on disk: a reader that crashes the process
            Path(os.environ["MEDSEG_FUZZ_TRACE"]).write_bytes(data)
        rss0 = _rss()
        for reader in (list_series, read_volume):
            try:
                out = reader(path)
            except MedsegError as e:
                text = str(e)
                assert "\n" not in text and "np.float" not in text and "np.int" not in text, text
                assert "Exception thrown in SimpleITK" not in text, text
                continue
            if reader is read_volume:
                assert isinstance(out, Volume)
                assert all(n > 0 for n in out.shape)
                assert np.all(np.isfinite(out.spacing)) and min(out.spacing) > 0
                assert np.all(np.isfinite(out.origin))
                if np.issubdtype(out.array.dtype, np.floating):
                    assert np.all(np.isfinite(out.array))
                del out
        assert _rss() - rss0 < 600e6, "memory beyond the allocation limit"
        after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
        assert after == before, "an input was written"


# ---------------------------------------------------------------------------------------------- NIfTI
nifti_fields = st.fixed_dictionaries({}, optional={
    "dim": st.tuples(st.integers(-1, 9), dims16, dims16, dims16, st.sampled_from([-1, 0, 1, 2, 3]),
                     st.sampled_from([0, 1, 2]), st.just(1), st.just(1)),
    "pixdim": st.tuples(st.sampled_from([-1.0, 1.0, 0.0]), floats, floats, floats, floats, floats, floats, floats),
    "datatype": st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 999, -1]),
    "bitpix": st.sampled_from([0, 8, 16, 32, 64, 7, -8]),
    "vox_offset": st.sampled_from([0.0, 348.0, 352.0, 353.0, 1024.0, 1e9, -1.0, float("nan"), float("inf")]),
    "scl_slope": floats, "scl_inter": floats,
    "qform_code": st.sampled_from([-1, 0, 1, 2, 4, 5, 256]),
    "sform_code": st.sampled_from([-1, 0, 1, 2, 4, 5, 256]),
    "quatern": st.tuples(*[floats] * 6),
    "srow": st.tuples(*[floats] * 12),
    "sizeof_hdr": st.sampled_from([348, 540, 0, -1]),
})


@SETTINGS
@given(fields=nifti_fields, compress=st.booleans(), cut=st.sampled_from([0, 0, 1, 100, 400, 700]))
def test_fuzz_nifti_header(fields, compress, cut):
    data = nifti_bytes(**fields)
    if compress:
        data = gz(data)
    if cut:
        data = data[: max(len(data) - cut, 0)]
    check("f.nii.gz" if compress else "f.nii", data)


# ---------------------------------------------------------------------------------------------- NRRD
def _vec(n=3):
    return st.tuples(*[floats] * n).map(lambda v: "(" + ",".join(repr(float(x)) for x in v) + ")")


nrrd_fields = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["short", "uchar", "float", "double", "int", "uint64", "block", "quaternion", "short "]),
    "dimension": st.sampled_from(["0", "1", "2", "3", "4", "17", "-3", "x"]),
    "sizes": st.tuples(sizes, sizes, sizes).map(lambda s: " ".join(map(str, s))) | st.sampled_from(["6 7", "6 7 8 1", ""]),
    "endian": st.sampled_from(["little", "big", None]),
    "space_directions": st.tuples(_vec(), _vec(), _vec()).map(" ".join) | st.sampled_from(["none (1,0,0) (0,1,0)", "(1,0) (0,1)"]),
    "space_origin": _vec() | st.just("(1,2)"),
    "byte_skip": st.sampled_from(["0", "-1", "5", "100000", "-7"]),
    "line_skip": st.sampled_from(["0", "1", "3"]),
    "kinds": st.sampled_from(["domain domain domain", "RGB-color domain domain", "list domain domain"]),
})


@SETTINGS
@given(fields=nrrd_fields, encoding=st.sampled_from(["raw", "gzip", "bzip2", "ascii", "hex", "zstd"]),
       cut=st.sampled_from([0, 0, 1, 50, 300]))
def test_fuzz_nrrd_header(fields, encoding, cut):
    arr = voxels()
    if encoding == "ascii":
        payload = " ".join(map(str, arr.ravel(order="F").tolist())).encode()
    elif encoding == "hex":
        payload = arr.tobytes(order="F").hex().encode()
    elif encoding == "bzip2":
        import bz2

        payload = bz2.compress(arr.tobytes(order="F"))
    elif encoding == "gzip":
        payload = gz(arr.tobytes(order="F"))
    else:
        payload = arr.tobytes(order="F")
    data = nrrd_bytes(payload, encoding=encoding, **fields)
    if cut:
        data = data[: max(len(data) - cut, 0)]
    check("f.nrrd", data)


# ---------------------------------------------------------------------------------------------- MHA
def _nums(n):
    return st.tuples(*[floats] * n).map(lambda v: " ".join(repr(float(x)) for x in v))


mha_fields = st.fixed_dictionaries({}, optional={
    "NDims": st.sampled_from(["0", "1", "2", "3", "4", "9", "-1", "three"]),
    "DimSize": st.tuples(sizes, sizes, sizes).map(lambda s: " ".join(map(str, s))) | st.sampled_from(["6 7", ""]),
    "ElementType": st.sampled_from(["MET_SHORT", "MET_UCHAR", "MET_FLOAT", "MET_DOUBLE", "MET_ULONG_LONG", "MET_NONE", "X"]),
    "ElementSpacing": _nums(3) | st.just("1 1"),
    "Offset": _nums(3),
    "TransformMatrix": _nums(9) | st.just("1 0 0 1"),
    "ElementNumberOfChannels": st.sampled_from(["1", "2", "3", "0", "-1", "100000"]),
    "HeaderSize": st.sampled_from(["0", "-1", "10", "100000"]),
    "BinaryDataByteOrderMSB": st.sampled_from(["True", "False"]),
    "CompressedDataSize": st.sampled_from(["0", "1", "10", "999999999"]),
})


@SETTINGS
@given(fields=mha_fields, compressed=st.booleans(), cut=st.sampled_from([0, 0, 1, 50, 300]),
       detached=st.booleans())
def test_fuzz_mha_header(fields, compressed, cut, detached):
    if detached:
        raw = mha_bytes(compressed=compressed, **fields)
        split = raw.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
        head, body = raw[:split].replace(b"ElementDataFile = LOCAL", b"ElementDataFile = f.raw"), raw[split:]
        if cut:
            body = body[: max(len(body) - cut, 0)]
        check("f.mhd", head, {"f.raw": body})
        return
    data = mha_bytes(compressed=compressed, **fields)
    if cut:
        data = data[: max(len(data) - cut, 0)]
    check("f.mha", data)
