import json

import numpy as np
import pytest

from napari_medseg.errors import GeometryError, InputError
from napari_medseg.session import CORRECTED_KEY, CorrectionRecord, Session, data_dir, session_key, sessions_root
from napari_medseg.volume import Volume


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def image(src="/data/ct/scan.nii.gz", origin=(0.0, 0.0, 0.0)):
    return Volume(np.zeros((4, 5, 6), np.int16), (0.8, 0.8, 3.0), origin, meta={"source_path": src})


def test_record_roundtrip_through_metadata():
    rec = CorrectionRecord()
    rec.note_edit("fill_holes", [(0, 3), (0, 1)], label=np.int64(2))
    rec.mark(0, 3)
    rec.mark(0, 7)
    rec.mark(0, 7, corrected=False)
    md = rec.to_metadata({})
    assert md[CORRECTED_KEY] == [[0, 3]] and md["medseg_edited_slices"] == [[0, 1], [0, 3]]
    json.dumps(md)  # plain JSON types only
    back = CorrectionRecord.from_metadata(md)
    assert back.edited == {(0, 1), (0, 3)} and back.corrected == {(0, 3)}
    assert [e["op"] for e in back.log] == ["fill_holes", "mark", "mark", "unmark"] and back.log[0]["label"] == 2
    assert back.slices() == [(0, 1), (0, 3)]
    with pytest.raises(InputError, match="malformed"):
        CorrectionRecord.from_metadata({CORRECTED_KEY: [[0]]})


def test_session_key_depends_on_source_and_geometry(home):
    assert session_key(image()) == session_key(image())
    assert session_key(image()) != session_key(image(src="/data/ct/other.nii.gz"))
    assert session_key(image()) != session_key(image(origin=(0.0, 0.0, 1.5)))
    assert session_key(image()).startswith("scan-nii-gz-")
    assert sessions_root() == home / "sessions" and data_dir() == home


def test_save_and_restore_in_user_dir_not_beside_source(home, tmp_path):
    src = tmp_path / "src" / "scan.nii.gz"
    src.parent.mkdir()
    src.write_bytes(b"not touched")
    img = image(str(src))
    labels = np.zeros(img.shape, np.uint8)
    labels[1, 2:4, 2:4] = 2
    rec = CorrectionRecord()
    rec.mark(0, 1)
    s = Session.for_image(img)
    s.save("scan seg", labels, rec, classes={2: "spleen"})
    labels[2, 0, 0] = 1
    s.save("scan seg", labels, rec, classes={2: "spleen"})  # second save replaces the first
    assert s.folder.parent == home / "sessions"
    assert sorted(p.name for p in src.parent.iterdir()) == ["scan.nii.gz"]
    assert len(list(s.folder.glob("*.npy"))) == 1
    # a fresh Session object for the same image (e.g. after restarting napari) finds it
    again = Session.for_image(image(str(src)))
    assert again.saved_names() == ["scan seg"]
    saved = again.load("scan seg")
    assert np.array_equal(saved.array, labels) and saved.array.dtype == np.uint8
    assert saved.record.corrected == {(0, 1)} and saved.classes == {2: "spleen"}
    assert not Session.for_image(image(str(src), origin=(1.0, 0, 0))).has_saved()
    again.discard()
    assert not again.has_saved() and not again.folder.exists()


def test_save_rejects_labels_off_grid_and_load_damaged(home):
    s = Session.for_image(image())
    with pytest.raises(GeometryError, match="resample"):
        s.save("x", np.zeros((4, 5, 7), np.uint8))
    s.save("x", np.zeros((4, 5, 6), np.uint8))
    next(s.folder.glob("*.npy")).write_bytes(b"garbage")
    with pytest.raises(InputError, match="damaged"):
        s.load("x")
    with pytest.raises(InputError, match="no autosaved"):
        s.load("y")


def test_core_modules_import_no_qt_or_napari():
    import subprocess
    import sys

    code = (
        "import sys, napari_medseg.editing, napari_medseg.session; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt6', 'PyQt5', 'magicgui')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_outputs_get_ordinary_permissions(tmp_path):
    """Atomic writes go through tempfile (private 0600/0700); outputs end up as open()/mkdir() would make them."""
    import os
    import stat

    from napari_medseg._atomic import atomic_path, public_mode, temp_dir_beside

    target = tmp_path / "labels.nii.gz"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
    assert stat.S_IMODE(os.stat(target).st_mode) == public_mode()
    folder = temp_dir_beside(tmp_path / "series", ".series.")
    assert stat.S_IMODE(os.stat(folder).st_mode) == public_mode(directory=True)
    old = os.umask(0o027)
    try:
        assert public_mode() == 0o640 and public_mode(directory=True) == 0o750
    finally:
        os.umask(old)
    assert public_mode() == 0o666 & ~old


def test_a_filesystem_that_refuses_chmod_still_gets_the_output(tmp_path, monkeypatch):
    """vfat/exFAT sticks refuse chmod (EPERM): the permissions are best effort, the write itself must not fail."""
    import os

    from napari_medseg._atomic import atomic_path, temp_dir_beside

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    target = tmp_path / "labels.nii.gz"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"
    assert temp_dir_beside(tmp_path / "series", ".series.").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".series.")) == ["labels.nii.gz"]
