"""Broken and hostile DICOM input (issue 9): every case is a specific `InputError` naming the file and what is
wrong, or a read with a warning that counts what was skipped — never garbage, a hang or unbounded memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import truncate, write_enhanced, write_series, zip_folder

from napari_medseg.errors import GeometryError, InputError
from napari_medseg.io import detect_format, list_series, read_all, read_volume
from napari_medseg.io.dicom import list_dicom_series, read_dicom

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _edit(path, **values):
    ds = pydicom.dcmread(path)
    for kw, v in values.items():
        if v is None:
            delattr(ds, kw)
        else:
            setattr(ds, kw, v)
    ds.save_as(path)


def _in_thread(fn, timeout=60):
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) if it blocks."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked (hang)"
    if "error" in out:
        raise out["error"]
    return out["value"]


# ---------------------------------------------------------------------------------------------- 2: silent garbage
@pytest.mark.parametrize(
    "values, tag",
    [
        ({"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7}, "BitsAllocated"),
        ({"Rows": 20}, "Rows"),
        ({"Columns": 72}, "Columns"),
        ({"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 0}, "SamplesPerPixel"),
    ],
)
def test_header_disagreeing_with_pixel_length_is_an_error_naming_file_and_tags(tmp_path, values, tag):
    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    for f in w.files:
        _edit(f, **values)
    with pytest.raises(InputError, match=rf"{tag}.*bytes; the header does not describe the pixel data") as err:
        read_volume(tmp_path / "s")
    assert str(w.files[0]) in str(err.value) or "other file(s)" in str(err.value)
    with pytest.raises(InputError, match="Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated"):
        read_volume(w.files[0])


def test_number_of_frames_disagreeing_with_pixel_length(tmp_path):
    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    _edit(w.files[1], NumberOfFrames=4)
    info = list_dicom_series(tmp_path / "s")[0]
    assert info.shape == (2, 40, 36)
    assert any("NumberOfFrames" in m and str(w.files[1]) in m for m in info.warnings), info.warnings


def test_one_mismatched_file_among_good_ones_is_skipped_with_a_warning(tmp_path):
    w = write_series(tmp_path / "s", shape=(5, 40, 36))
    _edit(w.files[4], BitsAllocated=8, BitsStored=8, HighBit=7)
    vol = read_volume(tmp_path / "s")
    assert vol.spatial_shape == (4, 40, 36)
    np.testing.assert_array_equal(vol.array, w.expected[:4])
    assert any("disagrees with the length of their pixel data" in m for m in vol.warnings)


def test_zip_members_with_dotdot_or_absolute_names_are_counted_in_a_warning(tmp_path):
    w = write_series(tmp_path / "s", shape=(6, 40, 36))
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for n, f in enumerate(w.files):
            name = f"export/{f.name}" if n % 2 == 0 else (f"../../{f.name}" if n % 4 == 1 else f"/abs/{f.name}")
            zf.writestr(zipfile.ZipInfo(name), f.read_bytes())
    info = list_dicom_series(archive)[0]
    assert info.shape[0] == 3
    assert any("skipped 3 zip member(s) with an unsafe name" in m for m in info.warnings), info.warnings
    with pytest.raises(InputError, match="unsafe name"):
        with zipfile.ZipFile(tmp_path / "only_evil.zip", "w") as zf:
            zf.writestr(zipfile.ZipInfo("../x.dcm"), w.files[0].read_bytes())
        read_volume(tmp_path / "only_evil.zip")


def test_enhanced_frames_all_at_one_position_is_an_error(tmp_path):
    w = write_enhanced(tmp_path / "e.dcm")
    ds = pydicom.dcmread(w.files[0])
    for fg in ds.PerFrameFunctionalGroupsSequence:
        fg.PlanePositionSequence[0].ImagePositionPatient = ["-50", "20", "-10"]
    ds.save_as(w.files[0])
    with pytest.raises(GeometryError, match=r"e\.dcm: all 5 frames of this file lie at one slice position") as err:
        read_volume(w.files[0])
    assert str(w.files[0]) in str(err.value)


def test_single_frame_images_all_at_one_position_is_an_error(tmp_path):
    w = write_series(tmp_path / "s", shape=(4, 40, 36))
    for f in w.files:
        _edit(f, ImagePositionPatient=["-120", "-80", "30"])
    with pytest.raises(GeometryError, match="all 4 images of series .* lie at one slice position"):
        read_volume(tmp_path / "s")


def _seg_file(tmp_path) -> tuple[Path, object]:
    hd = pytest.importorskip("highdicom")
    w = write_series(tmp_path / "ct", shape=(4, 40, 36))
    sources = [pydicom.dcmread(f) for f in w.files]
    mask = np.zeros((4, 40, 36), np.uint8)
    mask[1:3, 10:20, 10:20] = 1
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="liver",
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("10200004", "SCT", "Liver"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )  # fmt: skip
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc], series_instance_uid=hd.UID(), series_number=99, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="test", manufacturer_model_name="test", software_versions="0",
        device_serial_number="0",
    )  # fmt: skip
    path = tmp_path / "ct" / "seg.dcm"
    seg.save_as(path)
    return path, w


def test_a_dicom_seg_is_never_read_as_an_image(tmp_path):
    path, w = _seg_file(tmp_path)
    vol = read_volume(tmp_path / "ct")  # the SEG beside the CT: the CT only, and a note
    assert vol.meta["series_uid"] == w.series_uid
    assert str(path) not in vol.meta["dicom_files"]
    assert any("not read as images: 1 DICOM SEG" in m for m in vol.warnings), vol.warnings
    from napari_medseg.io.dicom_scan import scan

    assert scan(tmp_path / "ct").segmentations == [str(path)]
    alone = tmp_path / "alone"
    alone.mkdir()
    os.replace(path, alone / "seg.dcm")
    with pytest.raises(InputError, match="a DICOM SEG \\(segmentation\\), not an image"):
        read_dicom(alone / "seg.dcm")


@pytest.mark.parametrize(
    "sop_class, what",
    [("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT"), ("1.2.840.10008.5.1.4.1.1.88.22", "Enhanced SR")],
)
def test_non_image_sop_classes_with_pixel_data_are_not_images(tmp_path, sop_class, what):
    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    for f in w.files:
        _edit(f, SOPClassUID=sop_class)
    with pytest.raises(InputError, match=what):
        read_volume(tmp_path / "s")


# ---------------------------------------------------------------------------------------------- 3: hangs
def test_named_pipe_socket_and_broken_link_in_a_folder_are_skipped_never_opened(tmp_path):
    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    os.mkfifo(tmp_path / "s" / "pipe.dcm")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "s" / "sock.dcm"))
    os.symlink(tmp_path / "nowhere.dcm", tmp_path / "s" / "dangling.dcm")
    try:
        assert _in_thread(lambda: detect_format(tmp_path / "s")) == "dicom"
        (info,) = _in_thread(lambda: list_series(tmp_path / "s"))
        assert info.shape == (3, 40, 36)
        text = " ".join(info.warnings)
        assert "skipped 2 non-regular file(s) (named pipe, socket or device)" in text, text
        assert "skipped 1 broken symbolic link(s)" in text, text
        (vol,) = _in_thread(lambda: read_all(tmp_path / "s"))
        np.testing.assert_array_equal(vol.array, w.expected)
        from napari_medseg._napari.reader import get_reader

        reader = _in_thread(lambda: get_reader(str(tmp_path / "s")))
        assert len(_in_thread(lambda: reader(str(tmp_path / "s")))) == 1
        with pytest.raises(InputError, match="not a regular file"):
            _in_thread(lambda: read_volume(tmp_path / "s" / "pipe.dcm"))
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------- 4: memory
def test_zip_bomb_member_is_never_decompressed_whole(tmp_path):
    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    archive = zip_folder(tmp_path / "s", tmp_path / "bomb.zip")
    zeros = bytes(1 << 24)
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("export/huge.dcm", "w", force_zip64=True) as fp:
            for _ in range(48):  # 768 MiB of zeros, ~0.75 MB compressed
                fp.write(zeros)
    assert archive.stat().st_size < 5 * 1024**2
    code = (  # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, kept across exec)
        "import re, sys; sys.path.insert(0, %r)\n"
        "from napari_medseg.io import read_volume\n"
        "v = read_volume(%r)\n"
        "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        "print(v.spatial_shape, hwm // 1024)\n"
        "print(' | '.join(v.warnings))\n"
    ) % (SRC, str(archive))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    shape, rss = out.stdout.splitlines()[0].rsplit(" ", 1)
    assert shape == str(w.expected.shape)
    assert int(rss) < 400, f"peak RSS {rss} MiB for a zip with a 768 MiB member"  # the member alone is 768
    assert "huge.dcm" in out.stdout


def test_zip_member_declaring_more_than_the_budget_is_refused(tmp_path, monkeypatch):
    import napari_medseg.io.dicom_source as source

    w = write_enhanced(tmp_path / "e" / "big.dcm", shape=(5, 64, 64))
    archive = zip_folder(tmp_path / "e", tmp_path / "e.zip")
    monkeypatch.setattr(source, "memory_budget", lambda: w.files[0].stat().st_size // 2)
    monkeypatch.setattr(source, "HEADER_LIMIT", 16384)  # the header, not the pixels
    with pytest.raises(InputError, match="declares .* uncompressed, more than the .* zip bomb"):
        read_volume(archive)


def test_zip_member_longer_than_declared_is_an_error(tmp_path):
    w = write_series(tmp_path / "s", shape=(2, 40, 36))
    archive = tmp_path / "lie.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for f in w.files:
            zf.writestr(f.name, f.read_bytes())
    data = bytearray(archive.read_bytes())
    real = w.files[0].stat().st_size
    lie = (real - 100).to_bytes(4, "little")
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size in local and central headers
        pos = data.find(sig)
        data[pos + off : pos + off + 4] = lie
    archive.write_bytes(bytes(data))
    (info,) = list_dicom_series(archive)
    assert info.shape[0] == 1
    assert any("damaged" in m or "disagrees" in m or "truncated" in m for m in info.warnings), info.warnings


# ---------------------------------------------------------------------------------------------- 5, 7: values
def test_rows_columns_zero_is_a_clear_error(tmp_path):
    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    for f in w.files:
        _edit(f, Rows=0, Columns=0)
    with pytest.raises(InputError, match="Rows=0, Columns=0: the header declares an image without pixels"):
        read_volume(tmp_path / "s")


@pytest.mark.parametrize("tag, value", [
    ("ImageOrientationPatient", ["nan", "0", "0", "0", "1", "0"]),
    ("ImageOrientationPatient", ["1", "0", "0", "0", "inf", "0"]),
    ("ImagePositionPatient", ["0", "nan", "0"]),
    ("PixelSpacing", ["nan", "0.7"]),
    ("PixelSpacing", ["0", "0.7"]),
])  # fmt: skip
def test_nan_inf_or_zero_geometry_names_the_tag_and_the_file(tmp_path, tag, value):
    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    for f in w.files:
        _edit(f, **{tag: value})
    with pytest.raises(InputError, match=tag) as err:
        list_series(tmp_path / "s")
    assert str(w.files[0]) in str(err.value)
    cli = [sys.executable, "-m", "napari_medseg.cli", "info", str(tmp_path / "s")]
    out = subprocess.run(cli, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert out.returncode != 0
    assert "nan" not in out.stdout.lower() and tag in out.stderr


def test_nan_position_in_one_file_skips_that_file_with_its_tag(tmp_path):
    w = write_series(tmp_path / "s", shape=(5, 40, 36))
    _edit(w.files[4], ImagePositionPatient=["0", "nan", "0"])
    (info,) = list_series(tmp_path / "s")
    assert info.shape == (4, 40, 36) and np.all(np.isfinite(info.direction))
    assert any("ImagePositionPatient" in m and str(w.files[4]) in m for m in info.warnings)


# ---------------------------------------------------------------------------------------------- 8: messages
def test_truncated_file_says_truncated(tmp_path):
    w = write_series(tmp_path / "s", shape=(2, 40, 36))
    truncate(w.files[0], 0.6)
    with pytest.raises(InputError, match="the file ends .* bytes before the end of its pixel data"):
        read_volume(w.files[0])
    truncate(w.files[1], 0.1)  # cut inside the header
    with pytest.raises(InputError, match="(?i)truncat|ends inside|shorter") as err:
        read_volume(w.files[1])
    assert "non-DICOM" not in str(err.value)


def test_permission_denied_says_permission_denied(tmp_path, monkeypatch):
    # tests may run as root, where chmod cannot deny reading: deny through os.access and open, as the OS would
    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    denied = str(w.files[1])
    real_access, real_open = os.access, open

    def access(path, mode, *a, **k):
        return False if str(path) == denied else real_access(path, mode, *a, **k)

    def fake_open(path, *a, **k):
        if str(path) == denied:
            raise PermissionError(13, "Permission denied", denied)
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(InputError, match="permission denied"):
        read_volume(denied)
    (info,) = list_series(tmp_path / "s")
    assert any("permission denied" in m and denied in m for m in info.warnings), info.warnings


def test_damaged_zip_says_damaged_zip(tmp_path):
    write_series(tmp_path / "s", shape=(3, 40, 36))
    archive = zip_folder(tmp_path / "s", tmp_path / "a.zip")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(InputError, match="damaged zip archive"):
        read_volume(cut)
    flipped = bytearray(archive.read_bytes())
    flipped[200:260] = bytes(60)  # inside the first member's compressed data
    bad = tmp_path / "crc.zip"
    bad.write_bytes(bytes(flipped))
    (info,) = list_series(bad)
    assert any("damaged zip member" in m for m in info.warnings), info.warnings


def test_deflate_bomb_is_refused_before_inflating(tmp_path):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    ds = pydicom.dcmread(w.files[0])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.ImagePositionPatient = ["-120", "-80", "40"]
    ds.add_new((0x7FE1, 0x0010), "OB", bytes(80 * 1024**2))  # 80 MiB of zeros: ~80 KB deflated
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bomb = tmp_path / "s" / "bomb.dcm"
    ds.save_as(bomb)
    assert bomb.stat().st_size < 1024**2
    (info,) = list_series(tmp_path / "s")
    assert info.shape[0] == 3
    assert any("deflate bomb" in m and "bomb.dcm" in m for m in info.warnings), info.warnings
    with pytest.raises(InputError, match="inflates to more than 64 MiB"):
        read_volume(bomb)


def test_deflated_file_still_reads(tmp_path):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    w = write_series(tmp_path / "s", shape=(3, 40, 36))
    for f in w.files:
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(f)
    np.testing.assert_array_equal(read_volume(tmp_path / "s").array, w.expected)


def test_symlinked_folder_is_reported_not_silently_ignored(tmp_path):
    write_series(tmp_path / "real", shape=(3, 40, 36))
    write_series(tmp_path / "top" / "a", shape=(3, 40, 36))
    os.symlink(tmp_path / "real", tmp_path / "top" / "linked")
    (info,) = list_series(tmp_path / "top")
    assert any("1 symbolic link(s) to folders, not followed" in m for m in info.warnings), info.warnings


def test_short_or_markerless_dcm_file_says_what_is_wrong(tmp_path):
    w = write_series(tmp_path / "s", shape=(2, 40, 36))
    truncate(w.files[0], 0.01)  # 100 bytes or so: not even the preamble
    with pytest.raises(InputError, match="too short for a DICOM file"):
        read_volume(w.files[0])
    data = bytearray(w.files[1].read_bytes())
    data[128:132] = b"XXXX"
    w.files[1].write_bytes(bytes(data))
    with pytest.raises(InputError, match="not a DICOM file \\(no 'DICM' marker"):
        read_volume(w.files[1])
