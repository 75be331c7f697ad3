"""The Segment widget's controls: image layer, model (installed, recent, browsed, Model Zoo), channels,
device, preset and the uncertainty switch, read as one `InferenceConfig`."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QMenu, QPushButton, QWidget

from napari_medseg._napari.recent_models import load_recent, remember_model
from napari_medseg.errors import InputError
from napari_medseg.inference.config import DEVICES, PRESET_HELP, PRESETS, InferenceConfig


class SegmentSettingsPanel(QWidget):
    """The form of the Segment widget; `config()` is what a run uses, `model()` the model spec."""

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
        self.browse_button = QPushButton("Browse…")
        self.browse_button.setToolTip("Choose a napari-medseg model package or a MONAI bundle folder")
        menu = QMenu(self.browse_button)
        menu.addAction("Model package or MONAI bundle folder…", self._browse_model)
        menu.addAction("Model package or bundle .zip…", self._browse_model_zip)
        menu.addAction("Get from MONAI Model Zoo…", self.open_zoo)
        self.browse_button.setMenu(menu)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setCurrentText("balanced")
        self.preset_combo.setToolTip(PRESET_HELP)
        self.uncertainty_check = QCheckBox("add uncertainty map")
        self.uncertainty_check.setToolTip("1 - max probability, on the model's own voxels, placed exactly over the image")
        for combo in (self.image_combo, self.model_combo):  # long names/paths must not widen the dock
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(16)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.browse_button)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("image", self.image_combo)
        form.addRow("model", model_row)
        from napari_medseg._napari.channel_picker import ChannelPicker

        self.channels = ChannelPicker(viewer)  # one image combo per channel, for multi-channel models
        form.addRow(self.channels)
        self.model_combo.currentIndexChanged.connect(lambda _i: self.channels.set_model(self.model_combo.currentData()))
        form.addRow("device", self.device_combo)
        form.addRow("preset", self.preset_combo)
        form.addRow("", self.uncertainty_check)
        self.fill_models()
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh_images)
        self.refresh_images()
        layers = viewer.layers.events
        layers.inserted.connect(self.channels.refresh)
        layers.removed.connect(self.channels.refresh)
        for ev in (layers.inserted, layers.removed, layers.reordered):
            ev.connect(self.refresh_images)
        from napari_medseg._napari.model_watch import ModelListWatcher

        self.models = ModelListWatcher(self, fill=self.fill_models, current=self.model_combo.currentData,
                                       restore=lambda d: self.model_combo.setCurrentIndex(max(self.model_combo.findData(d), 0)))

    # ------------------------------------------------------------------ reading
    def config(self) -> InferenceConfig:
        """The run's settings: the preset (the same config as the CLI's ``--preset`` and the API's
        ``InferenceConfig.preset``), the device, and the uncertainty map on the model grid when ticked."""
        return InferenceConfig.preset(self.preset_combo.currentText(), device=self.device_combo.currentText(),
                                      uncertainty="model" if self.uncertainty_check.isChecked() else "none")

    def model(self) -> str | None:
        return self.model_combo.currentData()

    def set_busy(self, busy: bool) -> None:
        for w in (self.image_combo, self.model_combo, self.browse_button, self.device_combo, self.preset_combo,
                  self.uncertainty_check):
            w.setEnabled(not busy)

    # ------------------------------------------------------------------ image layers
    def refresh_images(self, event=None):
        from napari.layers import Image

        layer = getattr(event, "value", None)
        if getattr(event, "type", "") == "inserted" and layer is not None:
            layer.events.name.connect(self.refresh_images)  # keep the list right when a layer is renamed
        current = self.image_combo.currentText()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for layer in self.viewer.layers:
            if isinstance(layer, Image) and (layer.metadata or {}).get("medseg_kind") != "uncertainty":
                self.image_combo.addItem(layer.name)
        if current:
            idx = self.image_combo.findText(current)
            if idx >= 0:
                self.image_combo.setCurrentIndex(idx)
        self.image_combo.blockSignals(False)

    def set_image(self, name: str) -> None:
        idx = self.image_combo.findText(name)
        if idx < 0:
            raise InputError(f"no image layer named {name!r}")
        self.image_combo.setCurrentIndex(idx)

    # ------------------------------------------------------------------ models
    def fill_models(self):
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

    def add_model_path(self, path) -> None:
        """Select a model package or bundle on disk (and remember it in the recently used list)."""
        path = str(Path(path).expanduser().resolve())
        remember_model(path)
        self.fill_models()
        self.model_combo.setCurrentIndex(max(self.model_combo.findData(path), 0))

    def _browse_model(self):
        path = QFileDialog.getExistingDirectory(self, "Model package or MONAI bundle folder")
        if path:
            self.add_model_path(path)

    def _browse_model_zip(self):
        path, _ = QFileDialog.getOpenFileName(self, "Model package or MONAI bundle (.zip)", "", "Zip archives (*.zip)")
        if path:
            self.add_model_path(path)

    def open_zoo(self, index_url=None):
        """The "Get from MONAI Model Zoo…" dialog; a downloaded bundle is selected as the model."""
        from napari_medseg._napari.zoo_dialog import ZooDialog

        def pulled(name, version):
            self.fill_models()
            self.model_combo.setCurrentIndex(max(self.model_combo.findData(f"{name}@{version}"), 0))

        self.zoo_dialog = ZooDialog(self, on_pulled=pulled, index_url=index_url)
        self.zoo_dialog.show()
        self.zoo_dialog.refresh()
        return self.zoo_dialog
