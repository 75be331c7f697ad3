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
    # the rest of napari's set-up came turn by turn: in the end as napari's own add leaves it
    qtbot.waitUntil(lambda: not widget.showing, timeout=5_000)
    controls = viewer.window._qt_viewer.controls
    assert viewer.layers.selection.active is labels  # the layer to correct next stays the active one
    assert type(controls.widgets[labels]).__name__ == "QtLabelsControls" and unc not in dict.keys(controls.widgets)
    viewer.layers.selection.active = unc  # the map's controls are built when the user selects it
    assert type(controls.widgets[unc]).__name__ == "QtImageControls" and controls.currentWidget() is controls.widgets[unc]
    assert labels._overlays["polygon"].visible and labels._overlays["brush_stroke"].visible
    assert len(viewer.window._qt_viewer.canvas._layer_overlay_to_visual[labels]) == 2
    assert widget.info.text().startswith("added 'plain labels' in ")
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


def test_widget_config_equals_the_cli_and_api_config(make_napari_viewer, qtbot, tiny_model):
    from napari_medseg.cli import build_parser
    from napari_medseg.inference.config import PRESETS, InferenceConfig, from_arguments

    viewer, widget = _widget(make_napari_viewer, qtbot, tiny_model)
    for preset in PRESETS:
        widget.preset_combo.setCurrentText(preset)
        args = build_parser().parse_args(["predict", "x.nii.gz", "-o", "out", "--preset", preset, "--device", "cpu"])
        assert widget.config() == from_arguments(args) == InferenceConfig.preset(preset, device="cpu")
    widget.uncertainty_check.setChecked(True)
    assert widget.config() == InferenceConfig.preset("best", device="cpu", uncertainty="model")


def test_widget_csv_equals_the_cli_csv(make_napari_viewer, qtbot, phantom, tiny_model, tmp_path, monkeypatch):
    from napari_medseg._napari.reader import read_layers
    from napari_medseg.cli import main
    from napari_medseg.io import write_volume

    monkeypatch.setenv("MEDSEG_SYNC", "1")
    path = write_volume(phantom[0], tmp_path / "case.nii.gz")
    viewer, widget = _widget(make_napari_viewer, qtbot, tiny_model, preset="fast")
    data, kwargs, _ = read_layers(str(path))[0]
    image = viewer.add_image(data, **kwargs)
    widget.set_image(image.name)
    _run(qtbot, widget)
    gui = widget.export_csv(tmp_path / "gui.csv").read_text(encoding="utf-8").splitlines()
    assert main(["predict", str(path), "-o", str(tmp_path / "out"), "--model", str(tiny_model), "--preset", "fast",
                 "--device", "cpu", "--stats", str(tmp_path / "cli.csv"), "--quiet"]) == 0
    with open(tmp_path / "cli.csv", newline="") as fh:
        cli = list(csv.reader(fh))
    assert cli[0][0] == "case" and all(row[0] == "case" for row in cli[1:])
    assert [",".join(row[1:]) for row in cli] == gui  # the same table, less the case column


def test_class_table_follows_corrections_resegmented_layers_and_removal(make_napari_viewer, qtbot, phantom,
                                                                          tiny_model, monkeypatch):
    from napari_medseg._napari.layers import labels_layer_data, volume_from_layer, volume_record

    viewer, widget = _widget(make_napari_viewer, qtbot, tiny_model)
    image = _add_phantom(viewer, phantom)
    _run(qtbot, widget)
    table = widget.class_table
    labels = viewer.layers["abdomen labels"]
    assert table.labels_layer is labels and table.computations == 0  # the run's own statistics

    def voxels(name):
        return {r["name"]: r["voxels"] for r in widget.stats_rows}[name]

    before = voxels("spleen")
    labels.selected_label = 2
    labels.brush_size = 5
    labels.paint((10, 30, 30), 2)  # a brush stroke (napari's paint event)
    labels.paint((11, 30, 30), 2)
    qtbot.waitUntil(lambda: table.computations >= 1 and not table.busy, timeout=10_000)
    n = int((np.asarray(labels.data) == 2).sum())
    assert voxels("spleen") == n > before
    assert table.computations == 1  # debounced: two strokes, one recomputation
    assert widget.table.item(1, 1).text() == str(n)
    labels.undo()
    labels.undo()
    qtbot.waitUntil(lambda: table.computations >= 2 and not table.busy, timeout=10_000)
    assert voxels("spleen") == before
    # a re-segmented / fine-tuned result added later: its statistics are computed and shown
    vol, _ = volume_from_layer(labels)
    changed = np.asarray(labels.data).copy()
    changed[changed == 1] = 0
    data, kwargs, _ = labels_layer_data(vol.with_array(changed), "abdomen labels (tuned@v1)",
                                        classes=labels.metadata["classes"], source=volume_record(phantom[0]))
    tuned = viewer.add_labels(data, **kwargs)
    qtbot.waitUntil(lambda: table.labels_layer is tuned and table.computations >= 3 and not table.busy, timeout=10_000)
    assert table.image_layer is image
    assert voxels("liver") == 0 and voxels("spleen") == before
    rows = {r["name"]: r for r in widget.stats_rows}
    mask = changed == 2
    assert rows["spleen"]["mean_intensity"] == pytest.approx(float(np.asarray(image.data)[mask].mean()), rel=1e-6)
    # removing the image clears the table (no stale results)
    viewer.layers.remove(image)
    assert widget.stats_rows == [] and widget.table.rowCount() == 0 and not widget.export_button.isEnabled()


@pytest.mark.parametrize("direction", ["flipped", "permuted"])
def test_uncertainty_layer_overlays_an_oblique_source_exactly(make_napari_viewer, qtbot, tiny_model, monkeypatch, direction):
    """The model-grid uncertainty layer sits over the image in napari's world: each of its voxels is drawn at the
    physical position the core gives it, for a source whose direction is a flip / an axis permutation."""
    from napari_medseg.volume import Volume

    monkeypatch.setenv("MEDSEG_SYNC", "1")
    mat = {"flipped": np.diag([-1.0, 1.0, -1.0]), "permuted": np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])}
    rng = np.random.default_rng(0)
    src = Volume(rng.normal(0, 100, (24, 40, 36)).astype(np.float32), (1.0, 0.9, 2.0), (5.0, -7.0, 12.0), mat[direction])
    viewer, widget = _widget(make_napari_viewer, qtbot, tiny_model)
    if direction == "permuted":  # napari's 2D slicing cannot draw an axis-permuting affine (singular): a 3D view
        viewer.dims.ndisplay = 3
    data, kwargs, _ = image_layer_data(src, name="oblique")
    image = viewer.add_image(data, **kwargs)
    widget.set_image("oblique")
    widget.uncertainty_check.setChecked(True)
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "oblique uncertainty" in viewer.layers, timeout=10_000)
    layer, unc = viewer.layers["oblique uncertainty"], widget.result.uncertainty
    assert layer.data.shape == unc.shape and unc.array.size < src.array.size
    np.testing.assert_allclose(unc.direction, src.direction, atol=1e-12)  # drawn with the image's rotation
    for kji in [(0, 0, 0), tuple(n - 1 for n in unc.shape), (3, 5, 7)]:
        phys = unc.index_to_physical(kji[::-1])  # LPS of that model voxel (core geometry)
        world = np.asarray(layer.data_to_world(kji))  # where napari draws it (world axes are LPS z, y, x)
        np.testing.assert_allclose(world, phys[::-1], atol=1e-6)
        # and the image layer maps that world point to the same continuous source index as the core does
        np.testing.assert_allclose(image.world_to_data(world), src.physical_to_index(phys)[::-1], atol=1e-6)
