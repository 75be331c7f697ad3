"""Compare widget: two labels layers on the same grid -> per-class Dice table and a difference layer.

The Dice is the package's one `dice_per_class` (via :mod:`napari_medseg.editing.compare`); the difference
layer is a new labels layer "A vs B" with three classes: only in A (orange), only in B (blue), labelled in
both with different classes (magenta). The compared layers are never changed.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_medseg._napari.layer_info import class_table, layers_of
from napari_medseg._napari.layers import label_colormap, unique_layer_name, volume_from_layer
from napari_medseg._napari.tracking import ensure_correction_stores
from napari_medseg.editing.compare import DIFF_COLORS, compare_labels, difference_names
from napari_medseg.errors import GeometryError, InputError, MedsegError

COLUMNS = ("class", "voxels A", "voxels B", "Dice")


class CompareWidget(QWidget):
    """Dock widget "Compare labels" (see the module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        ensure_correction_stores(napari_viewer)
        self.comparison = None
        self.diff_layer = None
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.a_combo, self.b_combo = QComboBox(), QComboBox()
        form.addRow("A", self.a_combo)
        form.addRow("B", self.b_combo)
        layout.addLayout(form)
        self.compare_button = QPushButton("Compare (Dice + difference layer)")
        self.compare_button.clicked.connect(lambda: self._guard(self.compare))
        layout.addWidget(self.compare_button)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(120)
        layout.addWidget(self.table)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)
        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    def _guard(self, fn):
        try:
            return fn()
        except MedsegError as e:
            from napari_medseg._napari._worker import notify_error

            self.status.setText(f"compare failed: {e}")
            notify_error(e, "Compare labels")
        return None

    def _candidates(self):
        return [l for l in layers_of(self.viewer, "Labels") if not (l.metadata or {}).get("medseg_kind") == "difference"]

    def _refresh_layers(self, *_):
        names = [l.name for l in self._candidates()]
        for i, combo in enumerate((self.a_combo, self.b_combo)):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            elif len(names) > i:
                combo.setCurrentIndex(i)
            combo.blockSignals(False)

    def set_layers(self, a, b) -> None:
        self.a_combo.setCurrentText(a.name)
        self.b_combo.setCurrentText(b.name)

    def _pair(self):
        a_name, b_name = self.a_combo.currentText(), self.b_combo.currentText()
        if not a_name or not b_name or a_name not in self.viewer.layers or b_name not in self.viewer.layers:
            raise InputError("choose two labels layers to compare")
        if a_name == b_name:
            raise InputError(f"'{a_name}' is chosen twice: choose two different labels layers")
        a, b = self.viewer.layers[a_name], self.viewer.layers[b_name]
        va, _ = volume_from_layer(a)
        vb, _ = volume_from_layer(b)
        if va.array.shape != vb.array.shape or not va.same_grid(vb, tol=1e-3):
            from napari_medseg.volume import grid_difference

            raise GeometryError(f"'{a.name}' and '{b.name}' are not on the same grid ({grid_difference(va, vb)}); "
                                "resample one onto the other first (Correct labels → Resample)")
        return a, b, va

    def compare(self):
        """Per-class Dice of A against B in the table, and a new difference labels layer; returns the comparison."""
        a, b, va = self._pair()
        classes = {**class_table(b), **class_table(a)}
        classes.pop(0, None)
        cmp = compare_labels(np.asarray(a.data), np.asarray(b.data), classes)
        self.comparison = cmp
        rows = cmp.table()
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            dice = "—" if np.isnan(row["dice"]) else f"{row['dice']:.3f}"
            for c, text in enumerate((row["name"], f"{row['voxels_a']:d}", f"{row['voxels_b']:d}", dice)):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.diff_layer = self._show_difference(a, b, va, cmp.diff)
        self.status.setText(f"A = '{a.name}', B = '{b.name}': {cmp.only_a} voxels only in A, {cmp.only_b} only in B, "
                            f"{cmp.different} with different classes; difference layer '{self.diff_layer.name}'")
        return cmp

    def _show_difference(self, a, b, va, diff):
        names = difference_names(a.name, b.name)
        name = f"{a.name} vs {b.name}"
        old = self.diff_layer
        if old is not None and old in self.viewer.layers and old.name == name:
            old.data = diff
            return old
        from napari_medseg._napari.layers import class_features

        kwargs = dict(va.napari_kwargs())
        kwargs.update(name=unique_layer_name(self.viewer, name), opacity=0.7,
                      metadata={"medseg_kind": "difference", "classes": names},
                      features=class_features(names, 3), colormap=label_colormap(DIFF_COLORS, 3))
        return self.viewer.add_labels(diff, **kwargs)
