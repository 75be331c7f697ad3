"""CorrectionStore (core, no napari): edits, marks, undo awareness, events, saved form, review warnings."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.editing import dilate
from napari_medseg.editing.store import CorrectionStore
from napari_medseg.session import CORRECTED_KEY, EDITED_KEY, CorrectionRecord


@pytest.fixture
def labels():
    arr = np.zeros((10, 30, 30), np.uint8)
    arr[2:8, 5:15, 5:15] = 1  # "model output"
    arr[2:8, 20:25, 20:25] = 2
    return arr


def _paint(store, arr, k, value=1):
    """What the napari adapter does for one brush stroke: capture the baseline (before), change, record."""
    before = arr[k, 0:3, 0:3].copy()
    arr[k, 0:3, 0:3] = value

    def revert(base):
        base[k, 0:3, 0:3] = before

    store.capture_baseline(revert)
    store.note_paint("paint", 0, [k])


def test_edits_marks_and_events(labels):
    store = CorrectionStore(lambda: labels)
    seen = {"changed": 0, "edited": [], "marked": [], "pruned": []}
    store.events.changed.connect(lambda: seen.__setitem__("changed", seen["changed"] + 1))
    store.events.edited.connect(lambda axis, ids: seen["edited"].append((axis, ids)))
    store.events.marked.connect(lambda axis, index, corrected: seen["marked"].append((axis, index, corrected)))
    store.events.pruned.connect(lambda gone: seen["pruned"].append(gone))
    _paint(store, labels, 3)
    _paint(store, labels, 6, value=2)
    assert store.edited == {(0, 3), (0, 6)} and store.painted_slices(0) == [3, 6]
    assert seen["edited"] == [(0, [3]), (0, [6])]
    store.mark(0, 3)
    assert store.corrected_slices() == [(0, 3)] and store.edited_unmarked() == [(0, 6)]
    assert seen["marked"] == [(0, 3, True)] and store.dirty
    # "undo" of the stroke on slice 6: the slice equals the labels as first seen again -> off the edited list
    labels[6] = store.baseline[6]
    assert store.prune() == [(0, 6)] and store.edited == {(0, 3)} and seen["pruned"] == [[(0, 6)]]
    assert store.painted_slices(0) == [3]
    assert seen["changed"] == 4
    md = store.to_metadata({})
    assert md[CORRECTED_KEY] == [[0, 3]] and md[EDITED_KEY] == [[0, 3]]
    back = CorrectionStore.from_metadata(lambda: labels, md)
    assert back.corrected == {(0, 3)} and back.edited == {(0, 3)}
    # restored edits have no known original: never pruned
    labels[3] = 0
    back.capture_baseline()
    assert back.prune() == [] and back.edited == {(0, 3)}


def test_suspend_and_whole_volume_edits(labels):
    store = CorrectionStore(lambda: labels)
    with store.suspend():
        store.note_paint("paint", 0, [4])  # our own operation applying itself: not a user stroke
    assert store.edited == frozenset()
    edit = dilate(labels, 1, 1.0, spacing=(1.0, 1.0, 1.0))
    edit.apply(labels)
    store.capture_baseline(edit.revert)
    store.note_edit("dilate", 0, edit.slices(0), edit.params, whole_volume=True)
    assert store.edited == frozenset() and store.record.log[-1]["n_slices_changed"] == len(edit.slices(0)) > 1
    assert not np.array_equal(store.baseline, labels) and np.array_equal(edit.revert(labels.copy()), store.baseline)
    store.note_edit("dilate", 0, [4], edit.params)
    assert store.edited == {(0, 4)}


def test_review_warnings_name_class_and_slice(labels):
    store = CorrectionStore(lambda: labels)
    # nothing edited yet: a ticked slice holds the model output as is
    warn = store.review_warnings([(0, 4)], {1: "liver", 2: "spleen"})
    assert len(warn) == 1 and "liver on z 4" in warn[0] and "spleen on z 4" in warn[0]
    # the user fixes the liver on slice 4 and leaves a 3-voxel stray of class 5
    before = labels[4].copy()
    labels[4, 5:15, 5:8] = 0
    labels[4, 0, 0:3] = 5
    store.capture_baseline(lambda base: base.__setitem__(4, before))
    store.note_paint("erase", 0, [4])
    warn = " ".join(store.review_warnings([(0, 4)], {1: "liver", 2: "spleen"}))
    assert "spleen on z 4" in warn and "liver on" not in warn
    assert "possible stray labels" in warn and "label 5 (3 voxels) on z 4" in warn
    store.reload(CorrectionRecord(edited={(0, 4)}))
    assert store.review_warnings([(0, 4)]) == ["possible stray labels on ticked slices: label 5 (3 voxels) on z 4"]
