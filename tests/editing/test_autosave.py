"""The Qt-free autosaver: dirty stores are saved to the image's session, errors reported, offers made once."""

from __future__ import annotations

import numpy as np

from napari_medseg.editing.autosave import AutosaveItem, Autosaver
from napari_medseg.editing.store import CorrectionStore


def test_autosaver_saves_dirty_items_and_offers_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    rec = {"shape": [4, 6, 7], "spacing": [1.0, 1.0, 2.0], "origin": [0.0, 0.0, 0.0],
           "direction": np.eye(3).tolist(), "meta": {"source_path": "/virtual/ct.nii.gz"}}
    arr = np.zeros((4, 6, 7), np.uint8)
    store = CorrectionStore(lambda: arr)
    errors = []
    saver = Autosaver(on_error=lambda name, e: errors.append((name, str(e))))
    item = AutosaveItem("seg", arr, store, {1: "liver"}, rec)
    assert saver.save_all([item]) == []  # nothing changed yet
    arr[2, 0, 0] = 1
    store.note_paint("paint", 0, [2])
    store.mark(0, 2)
    assert saver.save_all([item]) == ["seg"]
    saved = saver.session_for(rec).load("seg")
    np.testing.assert_array_equal(saved.array, arr)
    assert saved.record.corrected == {(0, 2)} and saved.classes == {1: "liver"}
    assert saver.to_offer(rec) is None  # written here: nothing to offer in this viewer
    other = Autosaver()
    assert other.to_offer(rec) is not None and other.to_offer(rec) is None  # offered once
    bad = AutosaveItem("bad", np.zeros((2, 2, 2), np.uint8), store, {}, rec)
    assert saver.save_all([bad], force=True) == [] and errors and "shape" in errors[0][1]
