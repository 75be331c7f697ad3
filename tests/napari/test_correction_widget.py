"""Correction widget in a real viewer: every operation is undone exactly by napari's own undo; tracking;
autosave and restore in a new viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg._napari.correction_widget import OPERATIONS, CorrectionWidget
from napari_medseg._napari.layers import image_layer_data, labels_layer_data
from napari_medseg.errors import InputError
from napari_medseg.session import CORRECTED_KEY, Session

pytestmark = pytest.mark.gui


@pytest.fixture
def small(phantom):
    """A cropped phantom (fast): anisotropic 0.8 x 0.8 x 2.5 mm voxels."""
    image, labels = phantom
    crop = (slice(10, 30), slice(20, 100), slice(10, 110))
    img = image.with_array(np.ascontiguousarray(image.array[crop]))
    lab = labels.with_array(np.ascontiguousarray(labels.array[crop]))
    img.meta["source_path"] = "/virtual/abdomen_ct.nii.gz"
    return img, lab


def open_viewer(make_napari_viewer, img, lab, with_labels=True):
    viewer = make_napari_viewer()
    data, kw, _ = image_layer_data(img, name="ct")
    viewer.add_image(data, **kw)
    layer = None
    if with_labels:
        data, kw, _ = labels_layer_data(lab, "ct seg", classes=lab.meta["classes"], source=img)
        layer = viewer.add_labels(data.copy(), **kw)
    widget = CorrectionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget, layer


def test_each_operation_is_undone_exactly(make_napari_viewer, small):
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    assert widget.labels_layer is layer
    assert widget.set_class("liver") == 1 and layer.selected_label == 1
    layer.selected_label = 9  # napari's own control (e.g. "new label"): the picker follows
    assert widget.class_combo.currentData() == 9 and widget.class_combo.currentText() == "9: label 9"
    widget.set_class("liver")
    widget.jump_to(0, 8)
    assert widget.current_slice() == (0, 8)
    # damage the liver so every operation has something to do
    layer.data[8, 30:34, 30:34] = 0  # a hole
    layer.data[8, 2, 2] = 1  # an island
    layer.data[5:7] = np.where(layer.data[5:7] == 1, 0, layer.data[5:7])  # missing slices (interpolate)
    for k in (4, 7):  # interpolation fills between the slices the user painted
        widget.jump_to(0, k)
        layer.paint((k, 40, 40), 1)
    widget.jump_to(0, 8)
    original = layer.data.copy()
    changed = {}
    for name in OPERATIONS:
        for scope in ("slice", "volume"):
            kwargs = {"scope": scope}
            if name == "relabel":
                kwargs["target"] = 2
            n = widget.run_operation(name, **kwargs)
            changed[(name, scope)] = n
            if n:
                assert not np.array_equal(layer.data, original)
                layer.undo()
            assert np.array_equal(layer.data, original), (name, scope)
    for must_change in ["interpolate", "fill_holes", "remove_islands", "keep_largest", "dilate", "erode", "smooth",
                        "copy_previous", "relabel"]:
        assert changed[(must_change, "slice")] > 0, must_change
    # redo works too, and the operation was one history item
    widget.run_operation("dilate", scope="slice", distance_mm=1.6)
    after = layer.data.copy()
    layer.undo()
    layer.redo()
    assert np.array_equal(layer.data, after)
    layer.undo()
    # the portable path (Labels.data_setitem) gives the same edit and the same undo
    from napari_medseg import editing
    from napari_medseg._napari.tracking import apply_edit

    edit = editing.smooth(layer.data, 1, 2.0, spacing=img.spacing)
    assert apply_edit(layer, edit, fast=False) == edit.n_changed > 0
    assert np.array_equal(layer.data, edit.apply(original.copy()))
    layer.undo()
    assert np.array_equal(layer.data, original)


def test_dilate_is_physical_on_anisotropic_layer(make_napari_viewer, small):
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    layer.data[:] = 0
    layer.data[10, 40, 50] = 1
    widget.set_class(1)
    widget.jump_to(0, 10)
    # 2.4 mm: three voxels in-plane (0.8 mm), none across slices (2.5 mm)
    widget.run_operation("dilate", scope="volume", distance_mm=2.4)
    assert np.array_equal(np.nonzero(layer.data.any(axis=(1, 2)))[0], [10])
    assert layer.data[10, 40, 47:54].all() and layer.data[10, 40, 46] == 0 and layer.data[10, 40, 54] == 0


def test_tracking_records_painted_slices_and_marks(make_napari_viewer, small):
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    widget.set_class("spleen")
    widget.jump_to(0, 12)
    layer.paint((12, 40, 40), 2)  # napari's own brush API
    assert widget.store.record.edited == {(0, 12)}
    widget.jump_to(0, 3)
    layer.fill((3, 40, 40), 4)  # napari's fill tool (contiguous in the slice)
    assert widget.store.record.edited == {(0, 3), (0, 12)}
    assert [e["op"] for e in widget.store.record.log] == ["paint", "paint"]
    assert widget.mark_current_slice() == (0, 3)
    assert layer.metadata[CORRECTED_KEY] == [[0, 3]]
    assert widget.slice_list.count() == 2
    # unchecking in the list unmarks; jump-to moves the slider
    item = [widget.slice_list.item(i) for i in range(2) if "= 3" in widget.slice_list.item(i).text()][0]
    from qtpy.QtCore import Qt

    item.setCheckState(Qt.CheckState.Unchecked)
    assert layer.metadata[CORRECTED_KEY] == []
    widget._on_item_activated([widget.slice_list.item(i) for i in range(2) if "= 12" in widget.slice_list.item(i).text()][0])
    assert widget.current_slice() == (0, 12)


def test_autosave_then_restore_in_new_viewer(make_napari_viewer, small, tmp_path):
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    widget.set_class("liver")
    widget.jump_to(0, 9)
    layer.paint((9, 10, 10), 1)
    widget.run_operation("fill_holes", scope="volume")
    widget.mark_current_slice()
    expected = layer.data.copy()
    assert widget.autosave_now(force=True) == ["ct seg"]
    session = widget.session_for(layer)
    assert str(session.folder).startswith(str(tmp_path)) and "sessions" in session.folder.parts
    viewer.close()
    # a new viewer with the same image: the widget finds the session and restores it
    viewer2, widget2, _ = open_viewer(make_napari_viewer, img, lab, with_labels=False)
    restored = widget2.restore_session()
    assert len(restored) == 1 and restored[0].name == "ct seg"
    np.testing.assert_array_equal(restored[0].data, expected)
    np.testing.assert_allclose(restored[0].scale, viewer2.layers["ct"].scale)
    np.testing.assert_allclose(restored[0].translate, viewer2.layers["ct"].translate)
    assert restored[0].metadata[CORRECTED_KEY] == [[0, 9]]
    assert widget2.store.record.corrected == {(0, 9)}
    # File > Save with our NIfTI writer keeps the exact source geometry
    from napari_medseg._napari.writer import write_labels_nifti
    from napari_medseg.io import read_volume

    data, attributes, _ = restored[0].as_layer_data_tuple()
    out = write_labels_nifti(str(tmp_path / "saved.nii.gz"), data, attributes)
    back = read_volume(out[0])
    assert back.same_grid(img) and np.array_equal(back.array, expected)


def test_bad_input_messages(make_napari_viewer, small):
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    with pytest.raises(InputError, match="not in labels"):
        widget.set_class("pancreas")
    # labels on another grid: clear message and a resample that makes a new layer on the image grid
    other = viewer.add_labels(np.zeros((10, 40, 50), np.uint8), scale=(5.0, 1.6, 1.6), translate=layer.translate, name="coarse")
    widget.set_labels_layer(other)
    assert "not on the grid" in widget.grid_label.text()
    new = widget.resample_to_image()
    assert new.data.shape == layer.data.shape and new.name.startswith("coarse") and other.data.shape == (10, 40, 50)
    flat = viewer.add_labels(np.zeros((20, 20), np.uint8), name="flat")
    widget.set_labels_layer(flat)
    with pytest.raises(InputError, match="3D"):
        widget.run_operation("fill_holes")
    widget.set_labels_layer(layer)
    with pytest.raises(InputError, match="uncertainty"):
        widget.next_slice()


def test_background_operation_is_one_undo_step(make_napari_viewer, qtbot, small):
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    widget.set_class("liver")
    original = layer.data.copy()
    with qtbot.waitSignal(widget._panel().finished, timeout=30_000) as blocker:
        assert widget.run_operation("dilate", background=True, scope="volume", distance_mm=2.0) is None
    assert blocker.args == ["done"]
    assert (layer.data == 1).sum() > (original == 1).sum()
    assert all(b.isEnabled() for b in widget.buttons.values())
    layer.undo()
    np.testing.assert_array_equal(layer.data, original)


def test_next_slice_to_check_and_uncertainty(make_napari_viewer, qtbot, small, tiny_model):
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    unc = np.zeros(layer.data.shape, np.float32)
    unc[7] = 0.9
    unc[13] = 0.5
    viewer.add_image(unc, name="ct uncertainty", scale=layer.scale, translate=layer.translate)
    assert widget.go_to_next_slice() == (0, 7) and widget.current_slice() == (0, 7)
    widget.mark_current_slice()
    assert widget.go_to_next_slice() == (0, 13)
    viewer.layers.remove("ct uncertainty")
    # computed by the model in a worker
    with qtbot.waitSignal(widget._panel().finished, timeout=120_000) as blocker:
        widget.compute_uncertainty(model=str(tiny_model))
    assert blocker.args == ["done"]
    added = widget.uncertainty_layer()
    assert added is not None and added.metadata["medseg_kind"] == "uncertainty"
    # on the model grid (its own exact geometry), resampled onto the labels' grid for "next slice"
    from napari_medseg._napari.layers import volume_from_layer

    unc_vol, placed = volume_from_layer(added)
    assert placed and unc_vol.meta.get("grid", "model") == "model"
    axis, index = widget.go_to_next_slice()
    assert axis == 0 and index != 7


def test_reopening_the_image_offers_restore(make_napari_viewer, small):
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    layer.paint((5, 10, 10), 3)
    widget.autosave_now()
    viewer2 = make_napari_viewer()
    widget2 = CorrectionWidget(viewer2)
    viewer2.window.add_dock_widget(widget2)
    data, kw, _ = image_layer_data(img, name="ct again")
    viewer2.add_image(data, **kw)
    assert "autosaved corrections found (ct seg)" in widget2.status.text()


def test_closing_the_viewer_saves_the_last_edits(make_napari_viewer, small):
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    widget.timer.stop()
    widget.autosave_now(force=True)
    layer.paint((4, 30, 30), 2)  # not saved yet: the timer has not fired
    expected = layer.data.copy()
    session = widget.session_for(layer)
    viewer.close()
    np.testing.assert_array_equal(session.load("ct seg").array, expected)


def test_atom_slices_for_both_history_atom_kinds():
    from types import SimpleNamespace

    from napari_medseg._napari.tracking import atom_slices

    mask = np.zeros((2, 3, 3), bool)
    mask[1, 0, 0] = True
    masked = SimpleNamespace(slice_key=(slice(5, 7), slice(0, 3), slice(0, 3)), mask=mask)
    assert atom_slices(masked, 0) == {6}
    assert atom_slices(SimpleNamespace(slice_key=(slice(5, 7), slice(0, 3), slice(2, 4)), mask=None), 2) == {2, 3}
    assert atom_slices(((np.array([3, 3, 9]), np.array([0, 1, 2]), np.array([1, 1, 1])), None, 1), 0) == {3, 9}


def test_labels_in_another_axis_order_are_reoriented_exactly(make_napari_viewer, small):
    """Issue 9, defect 12: LAS labels over an LPS image are the same voxels; the widget says so and the
    'resample' button reorients them by a flip (no interpolation), so every label value survives."""
    from napari_medseg.volume import Volume

    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    d = img.direction.copy()
    d[:, 1] *= -1  # j axis reversed: the rows stored bottom-up
    flipped = Volume(np.ascontiguousarray(lab.array[:, ::-1, :]), img.spacing,
                     img.index_to_physical((0, img.size_ijk[1] - 1, 0)), d, dict(lab.meta))
    data, kw, _ = labels_layer_data(flipped, "las seg", classes=lab.meta["classes"], source=img)
    other = viewer.add_labels(data.copy(), **kw)
    widget.set_labels_layer(other)
    assert "another axis order" in widget.grid_label.text()
    new = widget.resample_to_image()
    np.testing.assert_array_equal(np.asarray(new.data), lab.array)
