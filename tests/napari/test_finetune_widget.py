"""Fine-tune widget end to end on the sample phantom: paint -> mark corrected -> fine-tune -> re-segment."""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_medseg._napari.correction_widget import CorrectionWidget
from napari_medseg._napari.finetune_widget import FinetuneWidget, describe_slices
from napari_medseg._napari.layers import image_layer_data, labels_layer_data
from napari_medseg._napari.tracking import store_for
from napari_medseg.errors import InputError

pytestmark = pytest.mark.gui


def open_sample(make_napari_viewer, phantom):
    image, labels = phantom
    viewer = make_napari_viewer()
    data, kw, _ = image_layer_data(image, name="abdomen")
    viewer.add_image(data, **kw)
    data, kw, _ = labels_layer_data(labels, "abdomen labels", classes=labels.meta["classes"], source=image)
    layer = viewer.add_labels(data.copy(), **kw)
    return viewer, layer


def test_finetune_widget_end_to_end(make_napari_viewer, qtbot, phantom, tiny_model):
    from napari_medseg._napari.segment_widget import SegmentWidget

    viewer, layer = open_sample(make_napari_viewer, phantom)
    correction = CorrectionWidget(viewer)
    finetune = FinetuneWidget(viewer)
    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(correction)
    viewer.window.add_dock_widget(finetune)
    viewer.window.add_dock_widget(segment)
    seg_specs = lambda: [segment.model_combo.itemData(i) for i in range(segment.model_combo.count())]  # noqa: E731
    assert "liver-tuned@v1" not in seg_specs() and "liver-tuned@v1" not in finetune.model_specs()
    # paint a correction on two slices with napari's brush and mark them corrected
    correction.set_class("liver")
    for k in (20, 30):
        correction.jump_to(0, k)
        layer.paint((k, 60, 40), 1)
        correction.mark_current_slice()
    assert layer.metadata["medseg_corrected_slices"] == [[0, 20], [0, 30]]
    edited = layer.data.copy()
    finetune._refresh_layers()
    finetune.set_layers(viewer.layers["abdomen"], layer)
    assert finetune.corrected_slices() == [(0, 20), (0, 30)]
    assert "2 corrected slice(s)" in finetune.slices_label.text()
    assert "a trial run holds one corrected slice out" in finetune.slices_label.text()  # what the check can do
    finetune.scratch.setChecked(True)
    assert "none is held out" in finetune.slices_label.text()
    finetune.scratch.setChecked(False)
    finetune.set_model(str(tiny_model))
    finetune.name_edit.setText("liver-tuned")
    finetune.steps.setValue(4)
    finetune.budget.setValue(60)
    n_layers = len(viewer.layers)
    with qtbot.waitSignal(finetune.panel.finished, timeout=240_000) as blocker:
        finetune.start_button.click()
    assert blocker.args == ["done"], finetune.result_label.text()
    result = finetune.result
    assert result is not None and result.name == "liver-tuned" and result.version == "v1" and result.model_path.is_dir()
    assert len(finetune.plot.losses) >= 1
    # re-segmented into a NEW layer on the exact image grid; the edited layer is untouched
    assert len(viewer.layers) == n_layers + 1
    after = finetune.after_layer
    assert after is viewer.layers[-1] and after.data.shape == layer.data.shape
    np.testing.assert_allclose(after.scale, layer.scale)
    np.testing.assert_allclose(after.translate, layer.translate)
    np.testing.assert_array_equal(layer.data, edited)
    # the result in plain words: decision and why, which slice was held out, per-class Dice and volumes
    text = finetune.result_label.text()
    assert ("ACTIVATED" in text or "NOT activated" in text) and "Why:" in text
    assert re.search(r"[Hh]eld out[^\n]*z (20|30)", text), text
    assert "Predicted volume on the whole image" in text and "liver:" in text and " mL" in text
    assert set(result.class_changes) >= {"liver", "spleen"}
    # the budget bounds the whole job (training, checks, re-segmentation, saving): its parts are reported
    t = result.timing
    assert t["budget_s"] == 60 and t["job_s"] >= t["train_s"] and t["segment_s"] > 0
    assert "of a 60 s budget" in text
    # the re-segmentation is the class check's whole-image prediction of the new model (not a second run)
    assert finetune.segmentation is result.segmentation
    # both widgets list the new version at once
    assert "liver-tuned@v1" in seg_specs() and "liver-tuned@v1" in finetune.model_specs()
    # activate / roll back buttons follow the decision
    if result.activated:
        assert finetune.rollback_button.isEnabled()
    else:
        assert finetune.activate_button.isEnabled()
        assert finetune.activate_new() == "v1"
    from napari_medseg.training import active_version

    assert active_version(result.name) == "v1"


def test_finetune_widget_bad_input(make_napari_viewer, phantom, tiny_model):
    viewer, layer = open_sample(make_napari_viewer, phantom)
    widget = FinetuneWidget(viewer)
    widget.set_layers(viewer.layers["abdomen"], layer)
    widget.set_model(str(tiny_model))
    with pytest.raises(InputError, match="no corrected slices"):
        widget.start()
    assert "no corrected slices" in describe_slices([])
    # a class the model does not know
    layer.data[10, 5:9, 5:9] = 9
    store_for(layer).mark(0, 10)
    with pytest.raises(InputError, match="does not know"):
        widget.start()
    # labels on another grid
    other = viewer.add_labels(np.zeros((10, 20, 20), np.uint8), name="other")
    store_for(other).mark(0, 1)
    widget.set_layers(viewer.layers["abdomen"], other)
    with pytest.raises(InputError, match="not on the grid"):
        widget.start()
    assert not widget.panel.running


def _mark(layer, slices):
    for k in slices:
        store_for(layer).mark(0, k)


def test_stop_and_close_during_a_run(make_napari_viewer, qtbot, phantom, tiny_model):
    from napari_medseg.models.registry import models_dir

    viewer, layer = open_sample(make_napari_viewer, phantom)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)  # closing the viewer is seen through the docked widget's window
    _mark(layer, [20, 30])
    widget.set_layers(viewer.layers["abdomen"], layer)
    widget.set_model(str(tiny_model))
    widget.steps.setValue(100000)
    widget.budget.setValue(600)
    # Stop: ends within a step, saves nothing, adds no layer
    n_layers = len(viewer.layers)
    widget.start()
    qtbot.waitUntil(lambda: widget.panel.last_progress is not None, timeout=60_000)
    with qtbot.waitSignal(widget.panel.finished, timeout=60_000) as blocker:
        widget.panel.cancel_button.click()
    assert blocker.args == ["cancelled"] and "nothing was saved" in widget.result_label.text()
    assert len(viewer.layers) == n_layers and not (models_dir() / "tiny-test").exists()
    # closing the viewer mid-run stops the worker cleanly
    widget.start()
    qtbot.waitUntil(lambda: widget.panel.last_progress is not None, timeout=60_000)
    viewer.close()
    assert not widget.panel.running


def test_other_open_images_are_class_checks_and_stop_reaches_the_job(make_napari_viewer, phantom):
    viewer, layer = open_sample(make_napari_viewer, phantom)
    finetune = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(finetune)
    image, _ = phantom
    data, kw, _ = image_layer_data(image, name="second scan")
    viewer.add_image(data[::-1].copy(), **kw)
    viewer.add_image(np.zeros((4, 4), np.float32), name="a 2D picture")
    unc = viewer.add_image(np.zeros_like(data, dtype=np.float32), name="abdomen uncertainty")
    unc.metadata["medseg_kind"] = "uncertainty"
    others = finetune.check_images(viewer.layers["abdomen"])
    assert [name for name, _ in others] == ["second scan"]
    assert others[0][1].spatial_shape == image.spatial_shape
    # the Stop flag the job checks right before saving: bound to its own run, true once cancelled or replaced
    panel = finetune.panel
    check = panel.cancel_check()
    assert check() is False
    panel._run_id += 1  # a later run started: the earlier job must not save either
    assert check() is True
