"""The Segment widget driven as a user would, in a real viewer under Xvfb, with a tiny CPU U-Net package."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_medseg._napari.layers import META_KEY, SOURCE_KEY, image_layer_data
from napari_medseg._napari.segment_widget import SegmentWidget, config_dir
from napari_medseg.inference.result import STAT_COLUMNS

pytestmark = pytest.mark.gui
RUN_TIMEOUT_MS = 120_000


def _add_phantom(viewer, phantom, name="abdomen"):
    data, kwargs, _ = image_layer_data(phantom[0], name=name)
    return viewer.add_image(data, **kwargs)


def _widget(make_napari_viewer, qtbot, model_path, preset="fast"):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    widget.add_model_path(model_path)
    widget.device_combo.setCurrentText("cpu")
    widget.preset_combo.setCurrentText(preset)
    return viewer, widget


def _run(qtbot, widget):
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.panel.running, timeout=RUN_TIMEOUT_MS)


def test_segment_adds_labels_in_source_geometry(make_napari_viewer, qtbot, phantom, tiny_model, tmp_path):
    viewer, widget = _widget(make_napari_viewer, qtbot, tiny_model)
    image = _add_phantom(viewer, phantom, name="phantom")
    viewer.add_image(np.zeros((4, 8, 8)), name="other")
    image.name = "abdomen"  # renaming a layer updates the widget's list
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["abdomen", "other"]
    widget.set_image("abdomen")
    _run(qtbot, widget)
    assert widget.panel.status.text() == "done", widget.info.text()
    labels = viewer.layers["abdomen labels"]
    assert labels._type_string == "labels"
    assert labels.data.shape == image.data.shape
    assert np.issubdtype(labels.data.dtype, np.integer)
    assert set(np.unique(labels.data)) <= set(range(7))
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    np.testing.assert_allclose(labels.extent.world, image.extent.world)
    assert list(labels.features["class"][:7]) == ["background", "liver", "spleen", "kidney_right", "kidney_left",
                                                  "liver_tumour", "spine"]
    # colours from the model card, class name on hover (napari's status uses the features table)
    np.testing.assert_allclose(labels.colormap.map(1)[:3], (0.86, 0.47, 0.35), atol=1e-3)
    assert labels.metadata[SOURCE_KEY]["spacing"] == pytest.approx(list(phantom[0].spacing))
    # class table: the widget's rows equal counts computed here, volumes in mL from the spacing
    rows = {r["name"]: r for r in widget.stats_rows}
    vox_ml = np.prod(phantom[0].spacing) / 1000
    for value, name in [(1, "liver"), (6, "spine")]:
        n = int((np.asarray(labels.data) == value).sum())
        assert rows[name]["voxels"] == n
        assert rows[name]["volume_ml"] == pytest.approx(n * vox_ml)
    assert widget.table.rowCount() == len(widget.stats_rows) == 6
    out = widget.export_csv(tmp_path / "stats.csv")
    with open(out, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["name"] for r in table] == [r["name"] for r in widget.stats_rows]
    # the widget's CSV is the core table, the same as `medseg predict --stats` writes (less the case column)
    assert out.read_text(encoding="utf-8") == widget.result.stats_csv()
    assert list(table[0]) == list(STAT_COLUMNS)
    assert widget.info.text().startswith("added 'abdomen labels' in ") and "inference" in widget.info.text()
    # the chosen model is remembered
    recent = json.loads((config_dir() / "recent_models.json").read_text())["recent_models"]
    assert recent[0] == str(tiny_model.resolve())
    # running again never replaces the (possibly edited) labels
    labels.data[0, 0, 0] = 5
    _run(qtbot, widget)
    assert "abdomen labels (2)" in viewer.layers
    assert viewer.layers["abdomen labels"].data[0, 0, 0] == 5


def test_cancel_mid_run_leaves_viewer_unchanged(make_napari_viewer, qtbot, phantom, tiny_model_factory):
    slow_model = tiny_model_factory("slow", roi=(16, 16, 8), spacing=(0.8, 0.8, 2.5))
    viewer, widget = _widget(make_napari_viewer, qtbot, slow_model, preset="best")
    _add_phantom(viewer, phantom)
    before = [layer.name for layer in viewer.layers]
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.panel.last_progress is not None and widget.panel.last_progress.done >= 1,
                    timeout=RUN_TIMEOUT_MS)
    assert widget.panel.last_progress.total > widget.panel.last_progress.done
    assert "/" in widget.panel.status.text()
    qtbot.mouseClick(widget.panel.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.panel.running, timeout=5_000)
    assert [layer.name for layer in viewer.layers] == before
    assert "cancel" in widget.panel.status.text()
    assert widget.run_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.panel.draining, timeout=30_000)  # the thread itself ends too
    assert [layer.name for layer in viewer.layers] == before


def test_plain_array_runs_in_voxel_units(make_napari_viewer, qtbot, phantom, tiny_model, monkeypatch):
    from napari_medseg._napari._worker import run_synchronously

    warnings = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", lambda msg: warnings.append(msg))
    monkeypatch.setenv("MEDSEG_SYNC", "1")  # the debugging switch: same work, on the GUI thread
    viewer, widget = _widget(make_napari_viewer, qtbot, tiny_model)
    viewer.add_image(np.asarray(phantom[0].array[:, ::2, ::2]), name="plain")
    widget.set_image("plain")
    widget.uncertainty_check.setChecked(True)
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    assert not widget.panel.running  # synchronous
    labels = viewer.layers["plain labels"]
    np.testing.assert_allclose(labels.scale, 1.0)
    np.testing.assert_allclose(labels.translate, 0.0)
    assert labels.data.shape == (48, 64, 64)
    qtbot.waitUntil(lambda: "plain uncertainty" in viewer.layers, timeout=5_000)  # added in the next loop turn
    unc = viewer.layers["plain uncertainty"]
    # on the model grid (1.6 x 1.6 x 2.5 mm voxels of the 1 mm image, reoriented to RAS: the grid starts at the
    # image's last i and j voxel, as MONAI's Orientationd + Spacingd), placed over it with positive steps
    assert unc.data.shape == widget.result.uncertainty.shape == (20, 40, 40)
    assert 0.0 <= float(np.min(unc.data)) <= float(np.max(unc.data)) <= 1.0
    np.testing.assert_allclose(unc.data_to_world((0, 39, 39)), labels.data_to_world((0, 63, 63)), atol=1e-6)
    np.testing.assert_allclose(np.subtract(unc.data_to_world((1, 1, 1)), unc.data_to_world((0, 0, 0))), (2.5, 1.6, 1.6),
                               atol=1e-6)
    assert unc.metadata["medseg_kind"] == "uncertainty"
    assert any("voxel units" in w for w in warnings)
    assert run_synchronously()


@pytest.mark.parametrize("kind", ["2d", "rgb", "4d"])
def test_unsuitable_layers_give_a_clear_error(make_napari_viewer, qtbot, tiny_model, monkeypatch, kind):
    errors = []
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda msg: errors.append(msg))
    viewer, widget = _widget(make_napari_viewer, qtbot, tiny_model)
    data = {"2d": np.zeros((32, 32)), "rgb": np.zeros((8, 32, 32, 3), np.uint8), "4d": np.zeros((2, 8, 32, 32))}[kind]
    viewer.add_image(data, name="bad", rgb=kind == "rgb")
    widget.set_image("bad")
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    assert not widget.panel.running
    assert len(viewer.layers) == 1
    expected = {"2d": "2D", "rgb": "RGB", "4d": "4 dimensions"}[kind]
    assert len(errors) == 1 and expected in errors[0]


def test_model_that_does_not_fit_is_reported(make_napari_viewer, qtbot, phantom, tmp_path, monkeypatch):
    import torch

    from napari_medseg.models import ClassInfo, ModelCard, build_network, save_model_package

    card = ModelCard(name="two-channel", arch_args={"spatial_dims": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0},
                     in_channels=2, classes=[ClassInfo(1, "liver")], roi_size=(16, 16, 16))
    torch.manual_seed(0)
    path = save_model_package(build_network(card), card, tmp_path / "two_channel")
    errors = []
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda msg: errors.append(msg))
    viewer, widget = _widget(make_napari_viewer, qtbot, path)
    _add_phantom(viewer, phantom)
    _run(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["abdomen"]
    assert len(errors) == 1 and "2 input channels" in errors[0]


def test_closing_the_viewer_stops_the_worker(make_napari_viewer, qtbot, phantom, tiny_model_factory):
    slow_model = tiny_model_factory("slow", roi=(16, 16, 8), spacing=(0.8, 0.8, 2.5))
    viewer, widget = _widget(make_napari_viewer, qtbot, slow_model, preset="best")
    _add_phantom(viewer, phantom)
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.panel.last_progress is not None and widget.panel.last_progress.done >= 1,
                    timeout=RUN_TIMEOUT_MS)
    worker = widget.panel.worker
    viewer.close()
    qtbot.waitUntil(lambda: widget.panel.worker is None and not widget.panel.draining, timeout=10_000)
    assert worker.abort_requested


def test_time_left_estimate_and_status_text():
    from napari_medseg._napari._worker import Eta, describe, format_seconds
    from napari_medseg.progress import Progress

    now = [100.0]
    eta = Eta(clock=lambda: now[0])
    assert eta.update(Progress(0, 10, "inference")) is None  # a new stage starts the clock
    now[0] += 4.0
    left = eta.update(Progress(2, 10, "inference"))
    assert left == pytest.approx(16.0)  # 2 windows in 4 s -> 8 more take 16 s
    assert describe(Progress(2, 10, "inference"), left) == "inference · 2/10 · about 16 s left"
    assert format_seconds(75) == "1 min 15 s" and format_seconds(3700) == "1 h 01 min"
    now[0] += 1.0
    assert eta.update(Progress(1, 3, "invert")) is None  # stage change restarts the estimate


def test_labels_from_a_dicom_image_save_as_dicom_seg(make_napari_viewer, qtbot, tiny_model, tmp_path, monkeypatch):
    import pydicom

    monkeypatch.setenv("MEDSEG_SYNC", "1")
    viewer, widget = _widget(make_napari_viewer, qtbot, tiny_model)
    viewer.open_sample("napari-medseg", "abdomen_phantom_dicom")
    image = viewer.layers[0]
    widget.set_image(image.name)
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    labels = viewer.layers[f"{image.name} labels"]
    viewer.layers.selection = {labels}
    out = tmp_path / "result_seg.dcm"
    written = viewer.layers.save(str(out), selected=True, plugin="napari-medseg")
    assert [str(p) for p in written] == [str(out)]
    seg = pydicom.dcmread(str(out))
    assert seg.Modality == "SEG"
    source_uid = image.metadata[META_KEY]["meta"]["series_uid"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source_uid
    present = {int(v) for v in np.unique(labels.data)} - {0}
    names = dict(zip(labels.features["index"], labels.features["class"]))
    assert present and {names[v] for v in present} <= {str(s.SegmentLabel) for s in seg.SegmentSequence}
