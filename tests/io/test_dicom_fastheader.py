"""The fast header parser used for series discovery agrees with pydicom, or hands the file to pydicom."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_factory import SYNTAXES, rotation, write_enhanced, write_series
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from napari_medseg.io.dicom_fastheader import NEED_MORE, FastHeader, parse_header
from napari_medseg.io.dicom_scan import HEADER_TAGS, _Header, frames_from_header


def _frames_both(path):
    data = path.read_bytes()
    fast = parse_header(data, HEADER_TAGS)
    ref = _Header(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS))
    return fast, frames_from_header(fast, str(path)) if isinstance(fast, FastHeader) else None, frames_from_header(
        ref, str(path)
    )


def _assert_same(a, b):
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        for name in ("position", "row", "col", "pixel_spacing", "slope", "intercept"):
            np.testing.assert_allclose(getattr(fa, name), getattr(fb, name), err_msg=name)
        assert (fa.rows, fa.columns, fa.instance_number, fa.sop_uid, fa.series_uid) == (
            fb.rows, fb.columns, fb.instance_number, fb.sop_uid, fb.series_uid,
        )  # fmt: skip
        assert fa.info == fb.info


@pytest.mark.parametrize("syntax", list(SYNTAXES))
def test_fast_parser_matches_pydicom(tmp_path, syntax):
    w = write_series(tmp_path / "s", shape=(2, 40, 36), syntax=syntax, direction=rotation("x", 30), tilt_degrees=3)
    for f in w.files:
        fast, got, ref = _frames_both(f)
        assert isinstance(fast, FastHeader)
        _assert_same(got, ref)


@pytest.mark.parametrize("syntax", ["explicit", "implicit"])
def test_sequences_private_tags_and_utf8_are_skipped_or_decoded(tmp_path, syntax):
    w = write_series(tmp_path / "s", shape=(2, 40, 36), syntax=syntax)
    ds = pydicom.dcmread(w.files[0])
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator = "113691", "DCM"
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
    item.PurposeOfReferenceCodeSequence = Sequence([inner])  # nested sequence inside an item
    ds.ReferencedImageSequence = Sequence([item, item])  # (0008,1140), before the geometry tags
    ds["ReferencedImageSequence"].is_undefined_length = True  # as many scanners write them
    item["PurposeOfReferenceCodeSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    ds.add_new(0x00191010, "LO", "private value")
    ds.add_new(0x00191011, "UN", b"\x01\x02\x03\x04")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SeriesDescription = "Thorax \u00e9t\u00e9 \u4e2d"
    ds.save_as(w.files[0])
    raw = w.files[0].read_bytes()
    seq_header = b"\x08\x00\x40\x11" + (b"SQ\x00\x00" if syntax == "explicit" else b"") + b"\xff\xff\xff\xff"
    assert seq_header in raw and b"\xfe\xff\x0d\xe0" in raw  # undefined-length sequence and items
    fast, got, ref = _frames_both(w.files[0])
    assert isinstance(fast, FastHeader)
    _assert_same(got, ref)
    assert got[0].info["series_description"] == "Thorax \u00e9t\u00e9 \u4e2d"


def test_enhanced_files_and_odd_inputs_fall_back(tmp_path):
    w = write_enhanced(tmp_path / "e.dcm")
    assert parse_header(w.files[0].read_bytes(), HEADER_TAGS) is None  # functional groups: pydicom reads them
    assert parse_header(b"not dicom at all" * 20, HEADER_TAGS) is None
    s = write_series(tmp_path / "s", shape=(2, 40, 36))
    data = s.files[0].read_bytes()
    assert parse_header(data[:200], HEADER_TAGS) == NEED_MORE
    assert parse_header(data[132:], HEADER_TAGS) is None  # no preamble


def test_chest_ct_headers(shared_data):
    files = sorted((shared_data / "ct_chest_dicom").glob("*.dcm"))[:10]
    for f in files:
        fast, got, ref = _frames_both(f)
        assert isinstance(fast, FastHeader)
        _assert_same(got, ref)
