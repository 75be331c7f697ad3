"""Prompt widget in a real viewer: positive and negative clicks, live preview from the worker, Accept as one
undoable edit recorded as edited/reviewed slices, Discard, and the corrected-slice tracking of the
Correction widget seeing the prompt edit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medseg._napari.layers import image_layer_data
from napari_medseg._napari.prompt_widget import BOX_NAME, POINTS_NAME, PREVIEW_NAME, PromptWidget
from napari_medseg.models.package import LoadedModel
from napari_medseg.prompt.model import PromptSettings, prompt_card
from napari_medseg.session import CORRECTED_KEY, EDITED_KEY
from napari_medseg.volume import Volume

pytestmark = pytest.mark.gui


class PositiveBalls(torch.nn.Module):
    """Mask = where the positive click signal exceeds 0.5: a ball around every positive click."""

    def forward(self, x):
        return 10.0 * (x[:, 1:2] - 0.5)


class MinusNegative(torch.nn.Module):
    """Previous mask minus balls around negative clicks (checks that negative clicks reach the model)."""

    def forward(self, x):
        return 10.0 * (torch.maximum(x[:, 1:2], x[:, 3:4]) - x[:, 2:3] * 2 - 0.5)


def fake(net):
    return LoadedModel(network=net, card=prompt_card(settings=PromptSettings(min_side=32)), path=Path("<test>"))


def setup(make_napari_viewer, qtbot, net, with_correction=False):
    viewer = make_napari_viewer()
    img = Volume(np.full((20, 60, 60), 40.0, np.float32), (1.5, 1.5, 3.0))
    data, kw, _ = image_layer_data(img, name="ct")
    viewer.add_image(data, **kw)
    labels = viewer.add_labels(np.zeros((20, 60, 60), np.uint8), name="seg", scale=kw["scale"], translate=kw["translate"])
    labels.selected_label = 3
    if with_correction:
        from napari_medseg._napari.correction_widget import CorrectionWidget

        viewer.window.add_dock_widget(CorrectionWidget(viewer))
    widget = PromptWidget(viewer, model=fake(net))
    viewer.window.add_dock_widget(widget)
    widget.labels_combo.setCurrentText("seg")
    widget.image_combo.setCurrentText("ct")
    viewer.dims.set_current_step(0, 10)
    return viewer, widget, labels


def wait_result(qtbot, widget, n_runs_before):
    qtbot.waitUntil(lambda: widget.runs > n_runs_before and not widget._progress.running and not widget._pending,
                    timeout=60000)


def click(widget, point, negative=False):
    widget.negative.setChecked(negative)
    widget._layers["points"].add(np.asarray(point, float))


def test_click_preview_accept_undo_and_record(make_napari_viewer, qtbot):
    viewer, widget, labels = setup(make_napari_viewer, qtbot, PositiveBalls())
    widget.start()
    pts = viewer.layers[POINTS_NAME]
    assert pts.mode == "add" and viewer.layers.selection.active is pts
    n = widget.runs
    click(widget, (10, 30, 30))
    wait_result(qtbot, widget, n)
    preview = viewer.layers[PREVIEW_NAME]
    assert preview.data[10, 30, 30] == 1 and preview.data.sum() > 10
    assert labels.data.sum() == 0  # nothing written before Accept
    n = widget.runs
    click(widget, (10, 10, 50), negative=True)
    wait_result(qtbot, widget, n)
    assert list(pts.features["kind"]) == ["positive", "negative"]
    assert widget.prompts()["negative"] == [(10.0, 10.0, 50.0)]
    expected = np.asarray(viewer.layers[PREVIEW_NAME].data) > 0
    changed = widget.accept()
    assert changed == int(expected.sum()) and np.array_equal(labels.data == 3, expected)
    assert parked(viewer)
    touched = sorted({int(k) for k in np.nonzero(expected.any(axis=(1, 2)))[0]})
    assert [s for a, s in labels.metadata[EDITED_KEY] if a == 0] == touched
    assert [0, 10] in labels.metadata[CORRECTED_KEY]  # the slice on screen was reviewed
    labels.undo()  # ONE undo step takes the whole result back
    assert labels.data.sum() == 0
    labels.redo()
    assert np.array_equal(labels.data == 3, expected)


def test_negative_click_in_refine_mode_and_tracking_of_the_correction_widget(make_napari_viewer, qtbot):
    viewer, widget, labels = setup(make_napari_viewer, qtbot, MinusNegative(), with_correction=True)
    labels.data[8:13, 20:40, 20:40] = 3
    labels.refresh()
    widget.mode_combo.setCurrentIndex(1)  # refine the selected class
    widget.start()
    n = widget.runs
    click(widget, (10, 22, 22), negative=True)  # remove a corner of the class
    wait_result(qtbot, widget, n)
    preview = np.asarray(viewer.layers[PREVIEW_NAME].data) > 0
    assert not preview[10, 22, 22] and preview[10, 35, 35]
    widget.accept()
    assert labels.data[10, 22, 22] == 0 and labels.data[10, 35, 35] == 3
    from napari_medseg._napari import tracking

    holder = tracking.store_for(labels, create=False)  # the layer's corrected-slice store
    edited, corrected = holder.edited, holder.corrected
    assert (0, 10) in edited  # recorded from napari's paint event of the one data_setitem
    assert (0, 10) in corrected
    labels.undo()
    assert (labels.data[8:13, 20:40, 20:40] == 3).all()


def test_discard_and_bad_start(make_napari_viewer, qtbot):
    viewer, widget, labels = setup(make_napari_viewer, qtbot, PositiveBalls())
    labels.selected_label = 0
    widget.start_button.click()  # background selected: a clear message, no session
    assert "select the class" in widget.status.text() and POINTS_NAME not in viewer.layers
    labels.selected_label = 2
    widget.start()
    n = widget.runs
    click(widget, (10, 30, 30))
    wait_result(qtbot, widget, n)
    widget.discard()
    assert labels.data.sum() == 0 and parked(viewer)


def test_sessions_reuse_their_layers_without_removing_any(make_napari_viewer, qtbot):
    """Removing a layer makes napari run gc.collect() (0.3 s a layer with a CT open): sessions park their layers
    (emptied, hidden) and the next one reuses them; a new image grid gets new ones."""
    viewer, widget, labels = setup(make_napari_viewer, qtbot, PositiveBalls())
    removed = []
    viewer.layers.events.removed.connect(lambda e: removed.append(e.value.name))
    for round_ in range(2):
        widget.start()
        pts = viewer.layers[POINTS_NAME]
        assert pts.visible and pts.mode == "add" and len(pts.data) == 0
        n = widget.runs
        click(widget, (10, 30, 30 - 10 * round_))
        wait_result(qtbot, widget, n)
        preview = viewer.layers[PREVIEW_NAME]
        assert preview.visible and preview.data[10, 30, 30 - 10 * round_] == 1
        assert round_ == 0 or preview.data[10, 30, 30] == 0  # the previous session's preview is gone
        n_runs = widget.runs
        widget.accept() if round_ == 0 else widget.discard()
        assert parked(viewer) and widget.runs == n_runs  # emptying the clicks ran nothing
        assert [layer.name for layer in viewer.layers].count(POINTS_NAME) == 1
    assert removed == [] and (labels.data == 3).sum() > 0
    pts.add(np.asarray((10, 30, 40), float))  # a click on the parked layer is no session: nothing runs
    qtbot.wait(200)
    assert widget.runs == n_runs
    # another image grid: the parked layers cannot be reused and are replaced
    img2 = viewer.add_image(np.zeros((20, 60, 60), np.float32), name="ct2", scale=(2.0, 1.0, 1.0))
    viewer.add_labels(np.zeros((20, 60, 60), np.uint8), name="seg2", scale=img2.scale)
    widget.image_combo.setCurrentText("ct2")
    widget.labels_combo.setCurrentText("seg2")
    viewer.layers["seg2"].selected_label = 1
    widget.start()
    assert POINTS_NAME in removed and np.allclose(viewer.layers[POINTS_NAME].scale, img2.scale)


def parked(viewer) -> bool:
    """The session layers are emptied and hidden (not removed), the clicks layer out of add mode."""
    pts = viewer.layers[POINTS_NAME]
    preview_hidden = PREVIEW_NAME not in viewer.layers or not viewer.layers[PREVIEW_NAME].visible
    return len(pts.data) == 0 and not pts.visible and pts.mode != "add" and preview_hidden


def test_box_prompt_from_the_shapes_layer_and_its_parking(make_napari_viewer, qtbot):
    viewer, widget, labels = setup(make_napari_viewer, qtbot, PositiveBalls())
    widget.draw_box()  # starts a session too
    box = viewer.layers[BOX_NAME]
    assert box.mode == "add_rectangle" and viewer.layers.selection.active is box
    n = widget.runs
    box.add_rectangles(np.array([[10, 20, 20], [10, 20, 40], [10, 40, 40], [10, 40, 20]], float))
    wait_result(qtbot, widget, n)
    assert widget.prompts()["box"] == (10, (20.0, 20.0), (40.0, 40.0))
    preview = np.asarray(viewer.layers[PREVIEW_NAME].data) > 0
    assert preview[10, 30, 30] and not preview[10, :20].any() and not preview[10, 41:].any()  # bounded by the box
    widget.accept()
    assert (labels.data[10] == 3).sum() == preview[10].sum() and len(box.data) == 0 and not box.visible
    widget.draw_box()  # the parked box layer is reused, in a new session
    assert viewer.layers[BOX_NAME] is box and box.visible and viewer.layers[POINTS_NAME].visible
    n = widget.runs
    box.add_rectangles(np.array([[12, 20, 20], [12, 20, 30], [12, 30, 30], [12, 30, 20]], float))
    wait_result(qtbot, widget, n)
    assert (np.asarray(viewer.layers[PREVIEW_NAME].data)[12] > 0).any()


def test_opening_the_widget_warms_up_the_shipped_prompt_model(make_napari_viewer):
    from napari_medseg.prompt import model as prompt_model

    viewer = make_napari_viewer()
    widget = PromptWidget(viewer)  # the shipped model
    widget.warm_up.join(timeout=300)
    assert not widget.warm_up.is_alive()
    cached = [k for k in prompt_model._CACHE if k[0] == str(prompt_model.builtin_prompt_path().resolve())]
    assert cached, "the shipped prompt model was read and cached before any click"


def test_accept_in_the_background_is_one_undo_step_and_keeps_an_edit_made_meanwhile(make_napari_viewer, qtbot):
    viewer, widget, labels = setup(make_napari_viewer, qtbot, PositiveBalls())
    widget.start()
    n = widget.runs
    click(widget, (10, 30, 30))
    wait_result(qtbot, widget, n)
    expected = np.asarray(viewer.layers[PREVIEW_NAME].data) > 0
    labels.data_setitem((np.array([10]), np.array([5]), np.array([5])), 7)  # an edit before Accept
    widget.accept_button.click()  # what Enter does too
    assert widget.accepting
    widget.discard()  # Escape after Enter: the accept goes on
    labels.data_setitem((np.array([12]), np.array([55]), np.array([55])), 9)  # an edit while the worker runs
    qtbot.waitUntil(lambda: widget.accepted == 1 and not widget.accepting, timeout=60000)
    assert np.array_equal(labels.data == 3, expected) and labels.data[10, 5, 5] == 7 and labels.data[12, 55, 55] == 9
    assert parked(viewer) and "accepted" in widget.status.text()
    labels.undo()  # one step takes the prompt result back, the edits stay
    assert not (labels.data == 3).any() and labels.data[12, 55, 55] == 9
