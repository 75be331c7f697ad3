"""The Segment dock widget: image layer + model + device + preset -> a Labels layer with class names.

Thin by design: it reads its controls into a `SegmentSettings`, turns the chosen layer into a `Volume`,
runs `napari_medseg.inference.segment_steps` in a thread worker (`ProgressPanel`) and turns the
`LabelResult` back into layers. Re-running never replaces a layer: results get a new unique name.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_medseg._napari._worker import ProgressPanel, notify_error, warm_up_imports
from napari_medseg._napari.layers import (
    check_volume_layer,
    labels_layer_data,
    unique_layer_name,
    volume_from_layer,
    volume_record,
)
from napari_medseg.errors import InputError, ModelError
from napari_medseg.progress import Progress

#: speed/quality presets: sliding-window overlap and test-time augmentation (flips)
PRESETS: dict[str, tuple[float, bool]] = {"fast": (0.25, False), "balanced": (0.5, False), "best": (0.5, True)}
DEVICES = ("auto", "cpu", "cuda")
RECENT_FILE = "recent_models.json"
MAX_RECENT = 8


@dataclass(frozen=True)
class SegmentSettings:
    model: str | None = None  # None: the default model; else a name, name@version or a path
    device: str = "auto"
    preset: str = "balanced"
    uncertainty: bool = False

    @property
    def overlap(self) -> float:
        return PRESETS[self.preset][0]

    @property
    def tta(self) -> bool:
        return PRESETS[self.preset][1]


# ---------------------------------------------------------------------------- recent models (JSON)
def config_dir() -> Path:
    env = os.environ.get("MEDSEG_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("napari-medseg"))


def load_recent() -> list[str]:
    path = config_dir() / RECENT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [str(p) for p in data.get("recent_models", []) if isinstance(p, str)][:MAX_RECENT]
    except (OSError, ValueError, AttributeError):
        return []


def remember_model(path: str) -> list[str]:
    from napari_medseg._atomic import atomic_path

    recent = [str(path)] + [p for p in load_recent() if p != str(path)]
    recent = recent[:MAX_RECENT]
    target = config_dir() / RECENT_FILE
    try:
        with atomic_path(target, force=True) as tmp:
            tmp.write_text(json.dumps({"recent_models": recent}, indent=1), encoding="utf-8")
    except OSError:
        pass  # a read-only config folder must not break segmentation
    return recent


# ---------------------------------------------------------------------------- the work (worker thread)
def segment_job(volume, settings: SegmentSettings):
    """Step generator run in the worker: load the model, check it fits, segment, tabulate; returns a `SegmentOutcome`."""
    yield Progress(0, 0, "loading model")
    from napari_medseg.models import load_model

    model = load_model(settings.model)
    in_ch = int(getattr(model.card, "in_channels", 1))
    n_ch = volume.array.shape[0] if volume.is_4d else 1
    if in_ch != n_ch:
        raise ModelError(
            f"model {model.card.name!r} ({model.path}) expects {in_ch} input channels but the image has {n_ch}; "
            + ("choose one image layer per channel" if in_ch > 1 else "choose a single-channel (CT/MR) model")
        )
    if not model.card.classes:
        raise ModelError(f"model {model.card.name!r} ({model.path}) declares no classes in its card; it cannot label an image")
    from napari_medseg.inference import segment_steps

    result = yield from segment_steps(
        volume,
        model=model,
        device=settings.device,
        overlap=settings.overlap,
        tta=settings.tta,
        return_uncertainty=settings.uncertainty,
    )
    # the class statistics come with the result (core, the same table and CSV as `medseg predict --stats`);
    # the layer data (colormap, features table) is built here too; the GUI thread only adds the layer
    labels = result.labels
    classes = {int(k): str(v) for k, v in (result.classes or labels.meta.get("classes") or {}).items()}
    stats = result.stats_table()
    t = time.perf_counter()
    colors = result.colors or labels.meta.get("colors")
    layer_data = labels_layer_data(labels, "labels", classes=classes, colors=colors, source=volume_record(volume))
    result.timings["layer_data"] = time.perf_counter() - t
    return SegmentOutcome(result, classes, stats, layer_data)


def stage_profile(timings: dict, wall: float | None = None) -> str:
    """``in 4.2 s (read 0.0 · preprocess 1.5 · inference 1.0 · …)``: where a run's time went, stage by stage."""
    parts = [f"{k} {v:.1f}" for k, v in timings.items() if isinstance(v, (int, float)) and v >= 0.05]
    total = wall if wall is not None else sum(v for v in timings.values() if isinstance(v, (int, float)))
    return f"in {total:.1f} s" + (f" ({' · '.join(parts)} s)" if parts else "")


@dataclass
class SegmentOutcome:
    result: Any
    classes: dict[int, str]
    stats: list[dict]
    layer_data: tuple  # (data, kwargs, "labels"); the name is set when the layer is added




# ---------------------------------------------------------------------------- the widget
class SegmentWidget(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        from napari_medseg._napari.tracking import ensure_correction_stores

        ensure_correction_stores(napari_viewer)  # every labels layer gets its CorrectionStore from now on
        self.result = None
        self.result_layer = None
        self.uncertainty_layer = None
        self.stats_rows: list[dict] = []
        self._source_layer = None

        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
        self.browse_button = QPushButton("Browse…")
        self.browse_button.setToolTip("Choose a napari-medseg model package or a MONAI bundle folder")
        menu = QMenu(self.browse_button)
        menu.addAction("Model package or MONAI bundle folder…", self._browse_model)
        menu.addAction("Model package or bundle .zip…", self._browse_model_zip)
        menu.addAction("Get from MONAI Model Zoo…", self._open_zoo)
        self.browse_button.setMenu(menu)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setCurrentText("balanced")
        self.preset_combo.setToolTip("fast: overlap 0.25 · balanced: overlap 0.5 · best: overlap 0.5 + flip TTA")
        self.uncertainty_check = QCheckBox("add uncertainty map")
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.panel = ProgressPanel()
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["class", "voxels", "volume (mL)", "mean"])
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(230)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self._export_dialog)
        self.info = QLabel("")
        self.info.setWordWrap(True)

        for combo in (self.image_combo, self.model_combo):  # long names/paths must not widen the dock
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(16)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("model", model_row)
        from napari_medseg._napari.channel_picker import ChannelPicker

        self.channels = ChannelPicker(napari_viewer)  # one image combo per channel, for multi-channel models
        form.addRow(self.channels)
        self.model_combo.currentIndexChanged.connect(lambda _i: self.channels.set_model(self.model_combo.currentData()))
        form.addRow("device", self.device_combo)
        form.addRow("preset", self.preset_combo)
        form.addRow("", self.uncertainty_check)
        from napari_medseg._napari.display import scroll_body

        layout = QVBoxLayout(scroll_body(self))  # scrolls when three docks share a 1080-pixel screen
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.panel)
        layout.addWidget(self.info)
        layout.addWidget(self.table)
        layout.addWidget(self.export_button)
        layout.addStretch(1)

        self._fill_models()
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_images)
        self._refresh_images()
        self.viewer.layers.events.inserted.connect(self.channels.refresh)
        self.viewer.layers.events.removed.connect(self.channels.refresh)
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed, self.viewer.layers.events.reordered):
            ev.connect(self._refresh_images)
        self._watch_viewer_close()
        self.warm_up = warm_up_imports()
        from napari_medseg._napari.signals import models_changed

        models_changed().changed.connect(self.refresh_models)  # a fine-tune saved / activated a version

    # ------------------------------------------------------------------ controls
    def _refresh_images(self, event=None):
        from napari.layers import Image

        layer = getattr(event, "value", None)
        if getattr(event, "type", "") == "inserted" and layer is not None:
            layer.events.name.connect(self._refresh_images)  # keep the list right when a layer is renamed

        current = self.image_combo.currentText()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for layer in self.viewer.layers:
            if isinstance(layer, Image):
                self.image_combo.addItem(layer.name)
        if current:
            idx = self.image_combo.findText(current)
            if idx >= 0:
                self.image_combo.setCurrentIndex(idx)
        self.image_combo.blockSignals(False)

    def _fill_models(self):
        self.model_combo.clear()
        self.model_combo.addItem("default", None)
        try:
            from napari_medseg.models import list_models

            for row in list_models():
                if not row.get("builtin"):
                    spec = f"{row['name']}@{row['version']}"
                    self.model_combo.addItem(spec + (" (active)" if row.get("active") else ""), spec)
        except Exception:  # noqa: BLE001 - a broken models home must not break the widget
            pass
        for path in load_recent():
            if Path(path).exists():
                self.model_combo.addItem(Path(path).name, path)
                self.model_combo.setItemData(self.model_combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)

    def refresh_models(self, *_):
        """Re-read the installed models, keeping the current choice (also when the dock is shown again)."""
        try:
            data = self.model_combo.currentData()
            self._fill_models()
        except RuntimeError:  # the widget is being deleted
            return
        self.model_combo.setCurrentIndex(max(self.model_combo.findData(data), 0))

    def showEvent(self, event):  # noqa: N802 - Qt override
        self.refresh_models()
        super().showEvent(event)

    def add_model_path(self, path) -> None:
        """Select a model package or bundle on disk (and remember it in the recently used list)."""
        path = str(Path(path).expanduser().resolve())
        remember_model(path)
        self._fill_models()
        idx = self.model_combo.findData(path)
        self.model_combo.setCurrentIndex(max(idx, 0))

    def _browse_model(self):
        path = QFileDialog.getExistingDirectory(self, "Model package or MONAI bundle folder")
        if path:
            self.add_model_path(path)

    def _browse_model_zip(self):
        path, _ = QFileDialog.getOpenFileName(self, "Model package or MONAI bundle (.zip)", "", "Zip archives (*.zip)")
        if path:
            self.add_model_path(path)

    def _open_zoo(self, index_url=None):
        """The "Get from MONAI Model Zoo…" dialog; a downloaded bundle is selected as the model."""
        from napari_medseg._napari.zoo_dialog import ZooDialog

        def pulled(name, version):
            self._fill_models()
            self.model_combo.setCurrentIndex(max(self.model_combo.findData(f"{name}@{version}"), 0))

        self.zoo_dialog = ZooDialog(self, on_pulled=pulled, index_url=index_url)
        self.zoo_dialog.show()
        self.zoo_dialog.refresh()
        return self.zoo_dialog

    def set_image(self, name: str) -> None:
        idx = self.image_combo.findText(name)
        if idx < 0:
            raise InputError(f"no image layer named {name!r}")
        self.image_combo.setCurrentIndex(idx)

    def settings(self) -> SegmentSettings:
        return SegmentSettings(
            model=self.model_combo.currentData(),
            device=self.device_combo.currentText(),
            preset=self.preset_combo.currentText(),
            uncertainty=self.uncertainty_check.isChecked(),
        )

    # ------------------------------------------------------------------ run
    def run(self):
        """Start segmenting the chosen image layer (the Run button)."""
        if self.panel.running:
            return
        name = self.image_combo.currentText()
        try:
            if not name or name not in self.viewer.layers:
                raise InputError("no image layer chosen: open a volume first (File → Open, or a sample)")
            layer = self.viewer.layers[name]
            if self.channels.active:  # a multi-channel model: the chosen layer per channel, stacked
                volume, has_geometry = self.channels.volume(), True
                layer = self.viewer.layers[self.channels.combos[0].currentText()]
            else:
                check_volume_layer(layer)
                volume, has_geometry = volume_from_layer(layer)
        except Exception as e:  # noqa: BLE001 - shown to the user
            self.info.setText(str(e))
            notify_error(e, "Segment")
            return
        if not has_geometry:
            from napari.utils.notifications import show_warning

            msg = f"'{name}' has no medical geometry (plain array): segmenting in voxel units (1 voxel = 1 mm)"
            show_warning(msg)
            self.info.setText(msg)
        else:
            self.info.setText("")
        self._source_layer = layer
        self._source_volume = volume
        settings = self.settings()
        self._settings = settings
        self._t_run = time.perf_counter()
        self._set_busy(True)
        self.panel.start(
            lambda: segment_job(volume, settings),
            on_done=self._on_done,
            on_error=self._on_error,
            on_cancelled=self._on_cancelled,
        )

    def cancel(self):
        self.panel.cancel()

    def _set_busy(self, busy: bool):
        for w in (self.run_button, self.image_combo, self.model_combo, self.browse_button, self.device_combo,
                  self.preset_combo, self.uncertainty_check):
            w.setEnabled(not busy)

    def _on_cancelled(self):
        self._set_busy(False)
        self.info.setText("cancelled; the viewer was left as it was")

    def _on_error(self, exc):
        self._set_busy(False)
        self.info.setText(str(exc))
        notify_error(exc, "Segment")

    def _on_done(self, result):
        self._set_busy(False)
        try:
            self._show_result(result)
        except Exception as e:  # noqa: BLE001
            self._on_error(e)

    def _show_result(self, outcome: SegmentOutcome):
        source = self._source_layer
        result, classes = outcome.result, outcome.classes
        labels = result.labels
        unknown = [row["value"] for row in outcome.stats if row["value"] not in classes and row["voxels"]]
        if unknown:
            from napari.utils.notifications import show_warning

            show_warning(f"the model produced label values {unknown} that its card does not name")
        if source.name not in self.viewer.layers:  # the image was removed during the run
            raise InputError(f"the image layer '{source.name}' was removed during the run; nothing was added")
        name = unique_layer_name(self.viewer, f"{source.name} labels")
        data, kwargs, _ = outcome.layer_data
        kwargs = {**kwargs, "name": name}
        self.result = result
        t_show = time.perf_counter()
        self.result_layer = self.viewer.add_labels(data, **kwargs)
        result.timings["show"] = time.perf_counter() - t_show
        unc = getattr(result, "uncertainty", None)
        if self._settings.uncertainty and unc is not None:
            # a second layer is a second ~100 ms of napari/vispy set-up on the GUI thread: in its own event
            # loop turn, after the labels have been drawn, so that no single turn blocks for both
            timer = QTimer(self)  # a child: it dies with the widget, never firing into a deleted one
            timer.setSingleShot(True)
            timer.timeout.connect(lambda: self._add_uncertainty(unc, source.name, labels))
            timer.start(0)
        self.stats_rows = outcome.stats
        self._fill_table()
        self.info.setText(f"added '{name}' {stage_profile(result.timings, time.perf_counter() - self._t_run)}")

    def _add_uncertainty(self, unc, source_name: str, labels):
        if source_name not in self.viewer.layers:  # the image (or the whole viewer) went away meanwhile
            return
        try:
            arr = np.asarray(getattr(unc, "array", unc), dtype=np.float32)
            self.uncertainty_layer = self.viewer.add_image(
                arr, name=unique_layer_name(self.viewer, f"{source_name} uncertainty"), colormap="magma", opacity=0.6,
                blending="additive", contrast_limits=(0.0, 1.0), metadata={"medseg_kind": "uncertainty"},
                **labels.napari_kwargs())
        except Exception as e:  # noqa: BLE001 - e.g. the viewer closed in between: say so, never raise in a slot
            notify_error(e, "Segment (uncertainty layer)")

    def _fill_table(self):
        self.table.setRowCount(len(self.stats_rows))
        for r, row in enumerate(self.stats_rows):
            cells = [row["name"], f"{row['voxels']:d}", f"{row['volume_ml']:.2f}", f"{row['mean_intensity']:.1f}"]
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.export_button.setEnabled(bool(self.stats_rows))

    def export_csv(self, path) -> Path:
        if not self.stats_rows:
            raise InputError("nothing to export yet: run a segmentation first")
        return self.result.to_csv(Path(path))

    def _export_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Export class statistics", "stats.csv", "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
            except Exception as e:  # noqa: BLE001
                notify_error(e, "Export CSV")

    # ------------------------------------------------------------------ viewer closing
    def _watch_viewer_close(self):
        from napari_medseg._napari.signals import CloseWatcher  # public Qt API, not napari's Window._qt_window

        self._close_watcher = CloseWatcher(self, self._on_viewer_closing)

    def _on_viewer_closing(self):
        panel = getattr(self, "panel", None)
        if panel is not None and panel.running:
            panel.cancel()
            panel.wait(5000)
