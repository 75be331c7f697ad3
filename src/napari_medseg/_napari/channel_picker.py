"""One image-layer combo per input channel, for models that take several images (e.g. T1c, T1, T2, FLAIR).

`ChannelPicker` stays hidden for single-channel models. `set_model(spec)` reads the model's card (without its
weights) and shows one combo per channel, labelled with the card's channel names (from the bundle metadata);
`volume()` returns the chosen layers stacked in that order onto the first one's grid
(`napari_medseg.inference.channels.stack_channels`).
"""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QWidget

from napari_medseg.errors import InputError


def model_channels(spec) -> list[str]:
    """Channel names of the model ``spec`` names ([] for single-channel models or when it cannot be read)."""
    try:
        from napari_medseg.models import is_bundle, resolve_model
        from napari_medseg.models.package import read_card

        path = resolve_model(spec)
        if is_bundle(path):
            from napari_medseg.models.bundle import bundle_card

            card = bundle_card(path)[0]
        else:
            card = read_card(path)
    except Exception:  # noqa: BLE001 - the run reports a broken model; the picker just stays hidden
        return []
    if card.in_channels < 2:
        return []
    return list(card.channel_names) or [f"channel {c}" for c in range(card.in_channels)]


class ChannelPicker(QWidget):
    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.names: list[str] = []
        self.combos: list[QComboBox] = []
        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.setVisible(False)

    @property
    def active(self) -> bool:
        return len(self.combos) > 1

    def set_model(self, spec) -> None:
        self.set_channels(model_channels(spec))

    def set_channels(self, names: list[str]) -> None:
        while self.form.rowCount():
            self.form.removeRow(0)
        self.names, self.combos = list(names), []
        if len(self.names) > 1:
            self.form.addRow(QLabel("channels, in the model's order:"))
            for name in self.names:
                combo = QComboBox()
                combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
                combo.setMinimumContentsLength(16)
                self.form.addRow(name, combo)
                self.combos.append(combo)
            self.refresh()
        self.setVisible(self.active)

    def refresh(self, event=None) -> None:
        from napari.layers import Image

        layers = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        for i, combo in enumerate(self.combos):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(layers)
            idx = combo.findText(current)
            if idx < 0:  # a layer whose name mentions the channel (t1c, flair...), else the i-th image
                key = self.names[i].lower().replace(" ", "")
                idx = next((n for n, name in enumerate(layers) if name.lower().replace(" ", "") == key), -1)
                idx = idx if idx >= 0 else min(i, len(layers) - 1)
            combo.setCurrentIndex(idx)
            combo.blockSignals(False)

    def choose(self, layer_names: list[str]) -> None:
        for combo, name in zip(self.combos, layer_names):
            idx = combo.findText(name)
            if idx < 0:
                raise InputError(f"no image layer named {name!r}")
            combo.setCurrentIndex(idx)

    def volume(self):
        """The chosen layers as one multi-channel `Volume` on the first layer's grid."""
        from napari_medseg._napari.layers import check_volume_layer, volume_from_layer
        from napari_medseg.inference.channels import stack_channels

        chosen = [combo.currentText() for combo in self.combos]
        for i, layer_name in enumerate(chosen):
            if layer_name and layer_name in chosen[:i]:
                j = chosen.index(layer_name)
                raise InputError(
                    f"the model takes {len(self.names)} input channels ({', '.join(self.names)}) but the image layer "
                    f"{layer_name!r} is chosen for both {self.names[j]} and {self.names[i]}: open one image per channel"
                )
        vols = []
        for name, combo in zip(self.names, self.combos):
            layer_name = combo.currentText()
            if not layer_name or layer_name not in self.viewer.layers:
                raise InputError(f"no image layer chosen for channel {name!r}: open one image per channel")
            layer = self.viewer.layers[layer_name]
            check_volume_layer(layer)
            vols.append(volume_from_layer(layer)[0])
        return stack_channels(vols, names=self.names)
