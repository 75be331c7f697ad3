"""Issue 13 item 4 in a real viewer: every labels layer has a CorrectionStore from the moment it exists, whichever
napari-medseg widget is open; brush strokes and ``data_setitem`` writes are edits; undo takes them off; the
widgets follow the store's events (no polling); issue 18 item 7: ticked slices with unreviewed classes warn."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_medseg._napari.finetune_widget import FinetuneWidget
from napari_medseg._napari.layers import image_layer_data, labels_layer_data
from napari_medseg._napari.tracking import store_for
from napari_medseg.progress import Progress
from napari_medseg.session import EDITED_KEY

from test_correction_widget import small  # noqa: F401 - fixture

pytestmark = pytest.mark.gui


def _viewer_with_finetune_only(make_napari_viewer, img, lab, meta=None):
    viewer = make_napari_viewer()
    data, kw, _ = image_layer_data(img, name="ct")
    viewer.add_image(data, **kw)
    fine = FinetuneWidget(viewer)  # the ONLY napari-medseg widget
    viewer.window.add_dock_widget(fine)
    if meta:
        lab = lab.with_array(lab.array, **meta)
    data, kw, _ = labels_layer_data(lab, "ct seg", classes=lab.meta["classes"], source=img)
    layer = viewer.add_labels(data.copy(), **kw)  # added after the widget: attached on insertion
    fine.set_layers(viewer.layers["ct"], layer)
    return viewer, fine, layer


def _show_slice(viewer, layer, k):
    world = layer.data_to_world([k, 0, 0])
    viewer.dims.set_point(0, float(world[0]))


def _brush_stroke(layer, MouseEvent, k, points):
    """A press-drag-release of napari's brush (its own mouse callbacks), in data coordinates of slice k."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

    world = [tuple(float(v) for v in layer.data_to_world([k, *p])) for p in points]
    kinds = [("mouse_press", False, mouse_press_callbacks)]
    kinds += [("mouse_move", True, mouse_move_callbacks)] * (len(world) - 2)
    kinds += [("mouse_release", False, mouse_release_callbacks)]
    for pos, (kind, dragging, send) in zip(world, kinds):
        event = MouseEvent(type=kind, is_dragging=dragging, position=pos, dims_displayed=(1, 2),
                           dims_point=list(world[0]), view_direction=None, button=1)
        send(layer, ReadOnlyWrapper(event))


def test_brush_is_recorded_with_only_the_finetune_widget(make_napari_viewer, MouseEvent, small):  # noqa: F811
    img, lab = small
    viewer, fine, layer = _viewer_with_finetune_only(make_napari_viewer, img, lab)
    store = store_for(layer, create=False)
    assert store is not None  # attached when the layer was inserted, not on demand
    _show_slice(viewer, layer, 12)
    layer.mode = "paint"
    layer.brush_size = 4
    layer.selected_label = 2
    before = layer.data.copy()
    _brush_stroke(layer, MouseEvent, 12, [(40, 40), (40, 48), (40, 56)])
    assert (layer.data != before).any() and not (layer.data[np.arange(20) != 12] != before[np.arange(20) != 12]).any()
    assert store.edited == {(0, 12)} and store.record.log[-1]["op"] == "paint"
    assert layer.metadata[EDITED_KEY] == [[0, 12]]  # the saved form
    text = fine.slices_label.text()  # the widget followed the store's event (it has no timer)
    assert "1 edited slice(s) not marked corrected" in text and "z 12" in text
    assert not hasattr(fine, "_slice_timer")
    store.mark(0, 12)
    assert fine.corrected_slices() == [(0, 12)] and "1 corrected slice(s) — z: 12" in fine.slices_label.text()
    # undo (no paint event) takes the slice off the edited list; it stays marked
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)
    assert store.edited == frozenset() and store.corrected == {(0, 12)}
    # the Correction widget opened later shows what was recorded before it existed
    from napari_medseg._napari.correction_widget import CorrectionWidget

    layer.redo()
    store.prune()
    corr = CorrectionWidget(viewer)
    viewer.window.add_dock_widget(corr)
    assert corr.store is store and corr.slice_list.count() == 1
    assert "= 12" in corr.slice_list.item(0).text() and "edited" in corr.slice_list.item(0).text()


def test_data_setitem_writes_are_edits(make_napari_viewer, small):  # noqa: F811
    """Another tool (e.g. the click-prompt tool) writing accepted results with ``layer.data_setitem``."""
    img, lab = small
    viewer, fine, layer = _viewer_with_finetune_only(make_napari_viewer, img, lab)
    store = store_for(layer)
    _show_slice(viewer, layer, 7)
    jj, ii = np.nonzero(layer.data[7] == 0)
    layer.data_setitem((np.full(jj.size, 7), jj, ii), 5)
    assert store.edited == {(0, 7)}
    with layer.block_history():  # one undo step over two slices: recorded when the group ends
        for k in (8, 9):
            jj, ii = np.nonzero(layer.data[k] == 0)
            layer.data_setitem((np.full(jj.size, k), jj, ii), 5)
    assert store.edited == {(0, 7), (0, 8), (0, 9)}
    assert "3 edited slice(s)" in fine.slices_label.text()
    layer.undo()
    assert store.edited == {(0, 7)}
    assert store.review_warnings([(0, 8)], {1: "liver"})[0].startswith("left as the model had it")


def test_ticked_slice_with_unreviewed_classes_warns_at_start(make_napari_viewer, qtbot, small, tiny_model,
                                                             monkeypatch):  # noqa: F811
    """Issue 18 item 7: a ticked slice still holding the model's output of a class, or a stray class, does not go
    into training unwarned (and this works with only the Fine-tune widget open)."""
    import napari.utils.notifications as notes

    shown = []
    monkeypatch.setattr(notes, "show_warning", lambda msg: shown.append(msg))
    img, lab = small
    viewer, fine, layer = _viewer_with_finetune_only(make_napari_viewer, img, lab)
    k = int(np.argmax([(layer.data[i] == 1).any() and (layer.data[i] == 2).any() for i in range(layer.data.shape[0])]))
    _show_slice(viewer, layer, k)
    jj, ii = np.nonzero(layer.data[k] == 1)
    layer.data_setitem((np.full(jj.size, k), jj, ii), 0)  # the user erases the liver false positive on slice k
    stray = next(v for v in range(3, 14) if not (layer.data[k] == v).any())
    layer.data_setitem((np.full(3, k), np.zeros(3, int), np.arange(3)), stray)  # and leaves a 3-voxel stray
    store_for(layer).mark(0, k)  # but ticks the slice with the spleen still as the model had it
    assert "spleen" in fine.warn_label.text() and fine.warn_label.isVisibleTo(fine)
    fine.set_model(str(tiny_model))
    fine.steps.setValue(100000)
    fine.start()
    try:
        text = fine.result_label.text()
        assert f"spleen on z {k}" in text and "left as the model had it" in text and "⚠" in text
        assert f"(3 voxels) on z {k}" in text and "liver on" not in text
        assert len(shown) == 1 and f"spleen on z {k}" in shown[0] and f"(3 voxels) on z {k}" in shown[0]
    finally:
        with qtbot.waitSignal(fine.panel.finished, timeout=120_000):
            fine.stop()


def test_progress_line_shows_the_message_as_given(make_napari_viewer, qtbot, small, tiny_model,
                                                  monkeypatch):  # noqa: F811
    """The fine-tune job's Progress messages (e.g. steps/min) reach the widget's progress line unchanged."""
    import napari_medseg._napari.finetune_widget as fw

    img, lab = small
    viewer, fine, layer = _viewer_with_finetune_only(make_napari_viewer, img, lab)
    release = threading.Event()
    message = "step 10 of 60 · 42.5 steps/min"

    def job(*args, **kwargs):
        yield Progress(10, 60, "fine-tune", message)
        release.wait(30)
        raise fw.InputError("stopped by the test")

    monkeypatch.setattr(fw, "finetune_job", job)
    store_for(layer).mark(0, 10)
    fine.set_model(str(tiny_model))
    fine.start()
    try:
        qtbot.waitUntil(lambda: message in fine.panel.status.text(), timeout=30_000)
        assert fine.panel.status.text().startswith("fine-tune · 10/60 · " + message)
    finally:
        release.set()
        qtbot.waitUntil(lambda: not fine.panel.running, timeout=30_000)


def test_uncertainty_uses_the_model_that_made_the_labels(make_napari_viewer, qtbot, small, tiny_model):  # noqa: F811
    from napari_medseg._napari.correction_widget import CorrectionWidget
    from napari_medseg._napari.layer_info import producing_model

    img, lab = small
    info = {"name": "tiny-test", "version": "1", "path": str(tiny_model)}
    viewer, fine, layer = _viewer_with_finetune_only(make_napari_viewer, img, lab, meta={"model": info})
    assert producing_model(layer) == str(tiny_model)
    corr = CorrectionWidget(viewer)
    viewer.window.add_dock_widget(corr)
    corr.set_labels_layer(layer)
    with qtbot.waitSignal(corr.panel().finished, timeout=120_000) as blocker:
        corr.compute_uncertainty()  # no model given: not the default model, the one recorded in the metadata
    assert blocker.args == ["done"] and corr.review.uncertainty_model == str(tiny_model)
    assert corr.uncertainty_layer() is not None and str(tiny_model) in corr.status.text()
    # a model whose folder is gone: its name (the active version of that name); unknown: the default model
    layer.metadata["medseg_volume"]["meta"]["model"] = {"name": "liver-tuned", "path": "/gone/model"}
    assert producing_model(layer) == "liver-tuned"
    layer.metadata["medseg_volume"]["meta"].pop("model")
    assert producing_model(layer) is None


def test_segment_widget_installs_the_stores(make_napari_viewer, small):  # noqa: F811
    from napari_medseg._napari.segment_widget import SegmentWidget

    img, lab = small
    viewer = make_napari_viewer()
    data, kw, _ = labels_layer_data(lab, "before", classes=lab.meta["classes"], source=img)
    before = viewer.add_labels(data.copy(), **kw)
    viewer.window.add_dock_widget(SegmentWidget(viewer))
    data, kw, _ = labels_layer_data(lab, "after", classes=lab.meta["classes"], source=img)
    after = viewer.add_labels(data.copy(), **kw)
    assert store_for(before, create=False) is not None and store_for(after, create=False) is not None
    before.paint((3, 10, 10), 2)
    assert store_for(before).edited == {(0, 3)}
