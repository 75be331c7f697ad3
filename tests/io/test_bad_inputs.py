"""Issue 9, defects 2b, 4b, 11 (NIfTI/NRRD/MHA): the bad-input corpus gives clear errors, never wrong voxels,
never another exception, never a write to the input, never the declared size in memory."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from bad_inputs import CORPUS, gz, mha_bytes, nifti_bytes, nrrd_bytes, voxels, write

from napari_medseg.errors import InputError, MedsegError, ResourceLimitError
from napari_medseg.io import list_series, read_volume
from napari_medseg.volume import Volume


def _tree(d):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def check_message(e: BaseException) -> None:
    """A message a user can act on: one line, plain numbers, no raw library dump."""
    text = str(e)
    assert "\n" not in text, text
    assert "np.float" not in text and "np.int" not in text, text
    assert "Exception thrown in SimpleITK" not in text and ".cxx:" not in text, text


@pytest.mark.timeout(120)  # ITK used to spin forever on one of these headers
@pytest.mark.parametrize("case", sorted(CORPUS))
def test_corpus_case(case, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_MAX_ALLOC", "1G")
    gen, must_fail = CORPUS[case]
    path = gen(tmp_path)
    before = _tree(tmp_path)
    for reader in (read_volume, list_series):
        try:
            out = reader(path)
        except MedsegError as e:
            check_message(e)
            assert str(path.name) in str(e)
            continue
        if reader is read_volume:
            assert not must_fail, f"{case}: accepted {out!r}"
            assert isinstance(out, Volume) and np.all(np.isfinite(out.spacing)) and min(out.spacing) > 0
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("make", [
    lambda d: write(d / "ok.nii.gz", gz(nifti_bytes())),
    lambda d: write(d / "ok.nrrd", nrrd_bytes(encoding="gzip")),
    lambda d: write(d / "ok.nrrd", nrrd_bytes()),
    lambda d: write(d / "ok.mha", mha_bytes(compressed=True)),
    lambda d: write(d / "ok.mha", mha_bytes()),
    # what gzip(1), nibabel and ITK accept must stay readable: several members, bytes after the last member
    lambda d: write(d / "two.nii.gz", gz(nifti_bytes()[:500]) + gz(nifti_bytes()[500:])),
    lambda d: write(d / "trail.nii.gz", gz(nifti_bytes()) + b"trailing bytes"),
    lambda d: write(d / "trail.nrrd", nrrd_bytes(encoding="gzip") + b"\n"),
])
def test_the_undamaged_originals_read_exactly(tmp_path, make):
    vol = read_volume(make(tmp_path))
    np.testing.assert_array_equal(vol.nifti_array(), voxels())


def test_damaged_gzip_nrrd_and_zlib_mha_are_refused_not_decoded(tmp_path):
    """ITK decodes these with wrong voxels and no error (before the fix they were read with exit 0)."""
    import SimpleITK as sitk

    for case in ("mha_zlib_payload", "nrrd_gz_crc", "mha_zlib_adler"):
        path = CORPUS[case][0](tmp_path)
        try:  # what ITK alone does with the file
            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            itk_silent = not np.array_equal(np.asarray(arr).transpose(2, 1, 0), voxels()) or case == "nrrd_gz_crc"
        except RuntimeError:
            itk_silent = False
        with pytest.raises(InputError, match="integrity check|damaged"):
            read_volume(path)
        if case == "mha_zlib_payload":
            assert itk_silent  # the defect this guards against is real


def test_declared_size_beyond_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    """A small .nii.gz of zeros declaring 200 MB (passes the deflate-ratio check) with 64 MB allowed."""
    monkeypatch.setenv("MEDSEG_MAX_ALLOC", "64M")
    arr = np.zeros((400, 500, 500), np.uint8)  # 100 MB of zeros -> ~100 kB of gzip
    path = write(tmp_path / "zeros.nii.gz", gz(nifti_bytes(arr, datatype=2, bitpix=8)))
    with pytest.raises(ResourceLimitError, match="more than the 67.1 MB available"):
        read_volume(path)
    nrrd = write(tmp_path / "zeros.nrrd", nrrd_bytes(gz(arr.tobytes()), encoding="gzip", type="uchar",
                                                     sizes="400 500 500"))
    with pytest.raises(ResourceLimitError):
        read_volume(nrrd)


_RSS_SCRIPT = r"""
import json, resource, sys
from napari_medseg.io import read_volume
from napari_medseg.errors import MedsegError
try:
    read_volume(sys.argv[1])
    result = "read"
except MedsegError as e:
    result = str(e)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
try:  # VmHWM starts afresh at exec (ru_maxrss may carry the forking parent's peak)
    with open("/proc/self/status") as f:
        peak = [int(ln.split()[1]) / 1024 for ln in f if ln.startswith("VmHWM:")][0]
except (OSError, IndexError):
    pass
print(json.dumps({"peak_mb": peak, "result": result}))
"""


def test_truncated_gzip_declaring_1gb_never_holds_1gb(tmp_path):
    """1 MB of real (incompressible) data behind a header declaring 1 GiB: the ratio check cannot tell, so the
    reader must not allocate and touch the declared size before the stream runs out (before: 1 GiB zero-filled)."""
    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, 1_500_000, dtype=np.uint8).tobytes()
    head = nifti_bytes(np.zeros((1, 1, 1), np.uint8), datatype=2, bitpix=8, dim=[3, 1024, 1024, 1024, 1, 1, 1, 1])[:352]
    path = write(tmp_path / "big.nii.gz", gz(head + real))
    env = {"MEDSEG_MAX_ALLOC": "100G", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path)], capture_output=True, text=True, env=env,
                         timeout=120)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert "truncated" in doc["result"]
    assert doc["peak_mb"] < 600, doc  # far below the 1024 MB declared


def test_multi_line_simpleitk_errors_become_one_line(tmp_path):
    path = write(tmp_path / "endian.nrrd", nrrd_bytes(encoding="gzip", endian=None))
    with pytest.raises(InputError) as info:
        read_volume(path)
    check_message(info.value)
    assert "endian" in str(info.value) and info.value.__cause__ is not None  # the raw detail stays chained


def test_plain_number_formatting():
    from napari_medseg._messages import fmt, plain

    assert fmt((np.float64(1.0), np.float32(0.5), np.int64(3))) == "(1, 0.5, 3)"
    assert plain({"a": np.float64(2.5), "b": [np.int16(1)]}) == {"a": 2.5, "b": [1]}
    assert "np." not in str(plain((np.float64(1.0),)))
    with pytest.raises(MedsegError) as info:  # numpy 2 reprs used to leak into messages: [np.float64(nan)]
        Volume(np.zeros((2, 2, 2)), (1.0, float("nan"), 1.0))
    assert str(info.value) == "spacing has non-finite values: [1.0, nan, 1.0]"


def test_header_repairs_by_nibabel_become_warnings(tmp_path, capfd):
    """nibabel silently changes some header values on load (here: negative voxel sizes); say so."""
    path = write(tmp_path / "negpix.nii", nifti_bytes(pixdim=[1, -0.8, 0.9, 2.5, 1, 0, 0, 0], sform_code=0,
                                                      qform_code=0))
    vol = read_volume(path)
    assert any("repaired" in w and "pixdim" in w for w in vol.warnings)
    assert "pixdim" not in capfd.readouterr().err  # reported once, in the warnings, not as stray stderr
