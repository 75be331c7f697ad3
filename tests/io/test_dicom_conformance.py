"""Conformance matrix (issue 10): every file among pydicom's bundled test data (many transfer syntaxes, byte
orders, bit depths and quirks) either reads with exactly pydicom's pixel values (rescaled), or gets a
`MedsegError` that names the file and says why — never another exception, never different values."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.pixels import apply_rescale

from napari_medseg.errors import MedsegError
from napari_medseg.io import read_volume

FILES = sorted(f for f in get_testdata_files() if Path(f).is_file())  # local files only: nothing is downloaded
#: phrases one of which every refusal must contain (a reason, not a generic failure)
REASONS = (
    "cannot be placed in 3D", "not an image", "without an image", "colour images", "localizer",
    "not a format napari-medseg reads", "ends", "header does not describe", "truncated", "without pixels",
    "cannot decode", "no pixel data", "not a DICOM file", "cannot parse", "lie at one slice position",
    "invalid", "is not", "NaN", "without Rows/Columns", "not a readable DICOM SEG", "not a readable RTSTRUCT",
)  # fmt: skip


def _reference(path: str):
    """pydicom's rescaled frames (frames, rows, cols), or None when pydicom cannot decode the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
            arr = ds.pixel_array
    except Exception:  # noqa: BLE001 - pydicom itself cannot decode it: we must refuse it too
        return None
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return "colour"
    arr = np.asarray(arr)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    arr = arr.reshape((n,) + arr.shape[-2:])
    if "PerFrameFunctionalGroupsSequence" not in ds:
        arr = apply_rescale(arr, ds)
    return arr


def test_matrix_covers_many_files():
    assert len(FILES) > 100, "pydicom's bundled test files are missing"


@pytest.mark.parametrize("path", FILES, ids=[Path(f).name for f in FILES])
def test_reads_like_pydicom_or_refuses_clearly(path):
    ref = _reference(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            vol = read_volume(path)
        except MedsegError as e:
            msg = str(e)
            assert Path(path).name in msg, msg
            assert any(r in msg for r in REASONS), msg
            return
    from napari_medseg.io.derived import derived_kind

    if derived_kind(path):  # a SEG/RTSTRUCT reads as labels (io/derived.py), not as an image
        assert np.issubdtype(vol.array.dtype, np.integer) and vol.meta.get("classes"), vol.meta
        return
    assert ref is not None and not isinstance(ref, str), f"read a file pydicom cannot decode ({ref})"
    frames = vol.meta["dicom_reference"]["frame_numbers"]
    for k, frame in enumerate(frames):
        expected = ref[(frame or 1) - 1]
        if "PerFrameFunctionalGroupsSequence" in pydicom.dcmread(path, stop_before_pixels=True):
            slope, inter = vol.meta["rescale"] or vol.meta["rescale_per_slice"][k]
            expected = expected * slope + inter
        np.testing.assert_allclose(vol.array[k], expected, rtol=0, atol=1e-3 * max(1.0, np.abs(expected).max()))
