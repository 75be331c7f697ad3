"""Correction widget: class picker, mask operations in mm, corrected-slice list, review aids, autosave.

napari's own brush / eraser / fill remain the painting tools: this widget sets ``layer.selected_label`` to
the class chosen by name and adds the operations registered in :mod:`napari_medseg.editing.operations`,
each applied as one step of the Labels layer's undo history (Ctrl+Z / ``layer.undo()``). Edited and
corrected slices live in each layer's `CorrectionStore` (attached to every labels layer as soon as any
napari-medseg widget is open, see :mod:`napari_medseg._napari.tracking`). The widget is a thin host for
three panels: `OperationsPanel`, `ReviewPanel` and `SessionPanel` (autosave to the per-image session folder
on a timer and after each operation, restore when the same image is reopened).
"""

from __future__ import annotations

import weakref

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QVBoxLayout, QWidget

from napari_medseg._napari.correction_grid import GridCheck
from napari_medseg._napari.correction_ops import BACKGROUND_VOXELS, OperationsPanel  # noqa: F401 - re-exported
from napari_medseg._napari.correction_review import ReviewPanel
from napari_medseg._napari.correction_session import AUTOSAVE_ENV, SessionPanel  # noqa: F401 - re-exported
from napari_medseg._napari.layer_info import class_table, image_layer_for, image_record_for, layers_of  # noqa: F401
from napari_medseg._napari.tracking import ensure_correction_stores, slice_axis, store_for
from napari_medseg.editing.operations import AXIS_NAMES, OPERATIONS  # noqa: F401 - re-exported
from napari_medseg.errors import InputError, MedsegError


def _notify(exc: BaseException, what: str) -> None:
    from napari.utils.notifications import show_error

    show_error(f"{what}: {exc}")


class CorrectionWidget(QWidget):
    """Dock widget "Correct labels" (see the module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        ensure_correction_stores(napari_viewer)
        self._progress = None
        self._build_ui()
        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self.timer = self.session.timer
        from napari_medseg._napari.signals import CloseWatcher  # public Qt API, not napari's Window._qt_window

        self._close_watcher = CloseWatcher(self, self._on_viewer_closing)
        from napari_medseg._napari.display import head_up

        vref = weakref.ref(napari_viewer)

        def _head_up(*_):  # coronal/sagittal: head at the top (display only); no reference to the widget
            v = vref()
            if v is not None:
                head_up(v)

        for ev in (napari_viewer.dims.events.order, napari_viewer.dims.events.ndisplay):
            ev.connect(_head_up)
        head_up(napari_viewer)

    # ============================================================== UI
    def _build_ui(self):
        from napari_medseg._napari.display import WINDOW_PRESETS, scroll_body

        layout = self._body_layout = QVBoxLayout(scroll_body(self))  # scrolls when the docks share a small screen
        form = QFormLayout()
        self.layer_combo = QComboBox()
        self.layer_combo.currentIndexChanged.connect(self._on_layer_selected)
        self.class_combo = QComboBox()
        self.class_combo.currentIndexChanged.connect(self._on_class_selected)
        self.scope_combo = QComboBox()
        self.scope_combo.addItems(["current slice", "whole volume"])
        form.addRow("Labels", self.layer_combo)
        form.addRow("Class", self.class_combo)
        form.addRow("Apply to", self.scope_combo)
        self.window_combo = QComboBox()
        self.window_combo.addItems(["(keep)", *WINDOW_PRESETS])
        self.window_combo.setToolTip("CT window/level of the image layer: " + "; ".join(
            f"{n} L {lv:.0f} / W {w:.0f} HU" for n, (lv, w) in WINDOW_PRESETS.items()))
        self.window_combo.currentTextChanged.connect(lambda t: self.guard(lambda: self.set_window(t), "window"))
        form.addRow("CT window", self.window_combo)
        layout.addLayout(form)
        self.grid = GridCheck(self)
        self.grid_label, self.resample_button = self.grid.grid_label, self.grid.resample_button
        layout.addWidget(self.grid)
        self.ops = OperationsPanel(self)
        self.buttons = self.ops.buttons
        self.review = ReviewPanel(self)
        self.slice_list = self.review.slice_list
        self.session = SessionPanel(self)
        for panel in (self.ops, self.review, self.session):
            layout.addWidget(panel)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)

    # ============================================================== services for the panels
    def guard(self, fn, what):
        try:
            return fn()
        except MedsegError as e:
            self.fail(what, e)
        return None

    _guard = guard

    def fail(self, what: str, exc: BaseException) -> None:
        self.status.setText(f"{what} failed: {exc}")
        _notify(exc, what)

    def set_status(self, text: str) -> None:
        self.status.setText(text)

    def scope(self) -> str:
        return "slice" if self.scope_combo.currentIndex() == 0 else "volume"

    def after_change(self) -> None:
        self.session.autosave_now()

    def panel(self):
        """The progress panel (created on first use, above the status line)."""
        from napari_medseg._napari._worker import ProgressPanel

        if self._progress is None:
            self._progress = ProgressPanel(self)
            self._body_layout.insertWidget(self._body_layout.count() - 2, self._progress)
        return self._progress

    _panel = panel

    def set_window(self, preset: str):
        """Apply a CT window preset (see `display.WINDOW_PRESETS`) to the image layer of the current labels."""
        from napari_medseg._napari.display import WINDOW_PRESETS, apply_window

        if preset not in WINDOW_PRESETS:
            return None
        image = image_layer_for(self.viewer, self.labels_layer)
        if image is None:
            images = layers_of(self.viewer, "Image")
            image = images[0] if images else None
        if image is None:
            raise InputError("no image layer to set the window of")
        low, high = apply_window(image, preset)
        self.status.setText(f"'{image.name}': {preset} window {low:.0f} to {high:.0f} HU")
        return low, high

    # ============================================================== layers and classes
    def _refresh_layers(self, *_):
        current = self.labels_layer
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        layers = layers_of(self.viewer, "Labels")
        for l in layers:
            self.layer_combo.addItem(l.name)
        if current in layers:
            self.layer_combo.setCurrentIndex(layers.index(current))
        self.layer_combo.blockSignals(False)
        self._on_layer_selected()

    @property
    def labels_layer(self):
        name = self.layer_combo.currentText() if hasattr(self, "layer_combo") else ""
        for l in layers_of(self.viewer, "Labels"):
            if l.name == name:
                return l
        return None

    def set_labels_layer(self, layer) -> None:
        self.layer_combo.setCurrentText(layer.name)
        self._on_layer_selected()

    @property
    def store(self):
        """The `CorrectionStore` of the current labels layer (None without one)."""
        layer = self.labels_layer
        return None if layer is None else store_for(layer)

    def _on_layer_selected(self, *_):
        layer = self.labels_layer
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        table = class_table(layer) if layer is not None else {}
        for value, name in sorted(table.items()):
            self.class_combo.addItem(f"{value}: {name}", value)
        self.ops.set_classes(table)
        self.class_combo.blockSignals(False)
        self._watch_selected_label(layer)
        self._sync_class()
        self._check_grid()
        self.review.follow(layer)

    def _watch_selected_label(self, layer):
        """Follow napari's own label control (e.g. its "new" button) in the class picker."""
        old = getattr(self, "_watched", None)
        if old is layer:
            return
        if old is not None:
            try:
                old.events.selected_label.disconnect(self._sync_class)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._watched = layer
        if layer is not None:
            layer.events.selected_label.connect(self._sync_class)

    def _sync_class(self, *_):
        layer = self.labels_layer
        if layer is None:
            return
        value = int(layer.selected_label)
        idx = self.class_combo.findData(value)
        self.class_combo.blockSignals(True)
        if idx < 0:  # a value without a name yet (a new class being painted)
            self.class_combo.addItem(f"{value}: label {value}", value)
            self.ops.add_class(value, f"label {value}")
            idx = self.class_combo.count() - 1
        self.class_combo.setCurrentIndex(idx)
        self.class_combo.blockSignals(False)

    def _on_class_selected(self, *_):
        layer, value = self.labels_layer, self.class_combo.currentData()
        if layer is not None and value is not None:
            layer.selected_label = int(value)

    def set_class(self, value_or_name) -> int:
        """Select the class to paint by value or name (sets ``layer.selected_label``)."""
        layer = self.require_layer()
        table = class_table(layer)
        if isinstance(value_or_name, str):
            matches = [v for v, n in table.items() if n.lower() == value_or_name.lower()]
            if not matches:
                raise InputError(f"class '{value_or_name}' is not in labels '{layer.name}' ({', '.join(table.values())})")
            value = matches[0]
        else:
            value = int(value_or_name)
        idx = self.class_combo.findData(value)
        if idx >= 0:
            self.class_combo.setCurrentIndex(idx)
        layer.selected_label = value
        return value

    def require_layer(self):
        layer = self.labels_layer
        if layer is None:
            raise InputError("no labels layer: segment the image or add a labels layer first")
        if np.ndim(layer.data) != 3:
            raise InputError(f"'{layer.name}' is not a 3D labels layer (shape {np.shape(layer.data)}); corrections need a 3D volume")
        return layer

    def _check_grid(self) -> str | None:
        return self.grid.check(self.labels_layer)

    def resample_to_image(self):
        """Add a copy of the labels resampled onto the image grid (see `GridCheck`); returns the layer."""
        return self.grid.resample_to_image()

    # ============================================================== slices
    def slice_axis(self) -> int:
        """Layer axis of the slices shown (the last non-displayed axis in 2D view; 0 in 3D view)."""
        return slice_axis(self.viewer, self.labels_layer)

    def current_slice(self) -> tuple[int, int]:
        layer = self.require_layer()
        axis = self.slice_axis()
        point = np.asarray(self.viewer.dims.point, dtype=float)[-layer.ndim:]
        data = np.asarray(layer.world_to_data(point), dtype=float)
        index = int(np.clip(np.round(data[axis]), 0, layer.data.shape[axis] - 1))
        return axis, index

    def jump_to(self, axis: int, index: int) -> None:
        """Show slice ``index`` along layer ``axis`` (moves the viewer's dims slider)."""
        layer = self.require_layer()
        point = np.asarray(self.viewer.dims.point, dtype=float)[-layer.ndim:]
        data = np.asarray(layer.world_to_data(point), dtype=float)
        data[axis] = index
        world = np.asarray(layer.data_to_world(data), dtype=float)
        offset = self.viewer.dims.ndim - layer.ndim
        self.viewer.dims.set_point(axis + offset, float(world[axis]))

    # ============================================================== the panels' actions (scripting API)
    def run_operation(self, name: str, background: bool | None = None, **overrides) -> int | None:
        """See `OperationsPanel.run_operation`."""
        return self.ops.run_operation(name, background, **overrides)

    def mark_current_slice(self, corrected: bool = True) -> tuple[int, int]:
        return self.review.mark_current_slice(corrected)

    def prune_edited(self) -> None:
        """Forget "edited" slices that an undo restored (the store also does it when the data changes)."""
        if self.store is not None:
            self.store.prune()

    def _on_item_activated(self, item):
        self.review.on_item_activated(item)

    def next_slice(self):
        return self.review.next_slice()

    def go_to_next_slice(self):
        return self.review.go_to_next_slice()

    def compute_uncertainty(self, model=None):
        return self.review.compute_uncertainty(model)

    def uncertainty_layer(self):
        from napari_medseg._napari.layer_info import uncertainty_layer

        return uncertainty_layer(self.viewer)

    def session_for(self, layer):
        return self.session.session_for(layer)

    def autosave_now(self, force: bool = False) -> list[str]:
        return self.session.autosave_now(force)

    def restore_session(self, layer=None) -> list:
        return self.session.restore_session(layer)

    # ============================================================== viewer closing
    def _on_viewer_closing(self):
        """On closing the viewer: stop a running operation cleanly, then save the latest edits."""
        self.session.timer.stop()
        if self._progress is not None and self._progress.running:
            self._progress.cancel()
            self._progress.wait(10000)
        self.session.on_viewer_closing()
