"""Issue 18 item 7: the corrected-slice list stays truthful (undo, whole-volume operations, unreviewed
classes on ticked slices, interpolation between the slices the user painted)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.errors import InputError

from test_correction_widget import open_viewer, small  # noqa: F401 - fixture

pytestmark = pytest.mark.gui


def test_undo_removes_the_slice_from_edited(make_napari_viewer, small):  # noqa: F811
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    widget.set_class("spleen")
    widget.jump_to(0, 12)
    layer.paint((12, 40, 40), 2)
    widget.jump_to(0, 3)
    layer.paint((3, 40, 40), 2)
    assert widget.store.record.edited == {(0, 3), (0, 12)}
    layer.undo()  # napari's undo emits no paint event: the widget re-checks the edited slices
    widget.prune_edited()
    assert widget.store.record.edited == {(0, 12)}
    assert widget.slice_list.count() == 1 and "= 12" in widget.slice_list.item(0).text()
    assert layer.metadata["medseg_edited_slices"] == [[0, 12]]
    layer.redo()
    layer.undo()
    layer.undo()
    widget.prune_edited()
    assert widget.store.record.edited == set() and widget.slice_list.count() == 0


def test_whole_volume_operations_are_logged_not_listed(make_napari_viewer, small):  # noqa: F811
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    widget.set_class("liver")
    widget.jump_to(0, 8)
    n = widget.run_operation("dilate", scope="volume", distance_mm=1.6)
    assert n > 0
    assert widget.store.record.edited == set() and widget.slice_list.count() == 0
    entry = widget.store.record.log[-1]
    assert entry["scope"] == "volume" and entry["n_slices_changed"] > 1 and entry["slices"] == []
    assert "not listed as edited" in widget.status.text()
    widget.run_operation("dilate", scope="slice", distance_mm=1.6)  # a slice operation is listed
    assert widget.store.record.edited == {(0, 8)}


def test_marking_a_slice_names_classes_left_as_the_model_had_them(make_napari_viewer, small):  # noqa: F811
    from napari_medseg._napari.finetune_widget import FinetuneWidget

    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    k = int(np.argmax([(layer.data[i] == 1).any() and (layer.data[i] == 2).any() for i in range(layer.data.shape[0])]))
    assert (layer.data[k] == 1).any() and (layer.data[k] == 2).any()
    widget.set_class("liver")
    widget.jump_to(0, k)
    widget.run_operation("erode", scope="slice", distance_mm=1.6)  # the user fixes the liver only
    stray = next(v for v in (3, 4, 5, 6) if not (layer.data[k] == v).any())
    layer.data[k, 0, 0:3] = stray  # and leaves three stray voxels of a class absent from the slice
    widget.mark_current_slice()
    status = widget.status.text()
    assert "spleen" in status and "left as the model had it" in status
    assert "liver on" not in status  # the liver was corrected
    assert "stray" in status and "(3 voxels)" in status
    fine = FinetuneWidget(viewer)
    fine.set_layers(viewer.layers["ct"], layer)
    assert "spleen" in fine.warn_label.text() and "⚠" in fine.warn_label.text()


def test_interpolation_uses_the_painted_slices(make_napari_viewer, small):  # noqa: F811
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    widget.set_class("liver")
    layer.data[:] = 0
    layer.data[2:18, 30:50, 30:50] = 1  # "model output": the class on every slice 2..17
    widget.jump_to(0, 8)
    with pytest.raises(InputError, match="paint class 1 on at least two slices"):
        widget.run_operation("interpolate")
    layer.data[5:11] = 0  # the user removes the class on 5..10, then paints it on 4 and 11
    for k in (4, 11):
        widget.jump_to(0, k)
        layer.paint((k, 40, 60), 1)
    n = widget.run_operation("interpolate")
    assert n > 0 and all((layer.data[k] == 1).any() for k in range(5, 11))
    entry = widget.store.record.log[-1]
    assert entry["key_slices"] == [4, 11] and "between the painted slices [4, 11]" in widget.status.text()
