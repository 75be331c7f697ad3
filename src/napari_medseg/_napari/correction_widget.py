"""Correction widget: class picker, mask operations in mm, corrected-slice list, review aids, autosave.

napari's own brush / eraser / fill remain the painting tools: this widget sets ``layer.selected_label`` to
the class chosen by name and adds operations from :mod:`napari_medseg.editing`, each applied as one step of
the Labels layer's undo history (Ctrl+Z / ``layer.undo()``). Edited slices are tracked per layer
(`SliceTracker`), labels and the correction log are autosaved to the per-image session folder
(:mod:`napari_medseg.session`) on a timer and after each operation, and reopening the same image offers
to restore the session.
"""

from __future__ import annotations

import os
import weakref

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_medseg import editing
from napari_medseg._napari.layers import META_KEY, SOURCE_KEY, volume_from_layer, volume_record
from napari_medseg._napari.tracking import SliceTracker, apply_edit
from napari_medseg.errors import InputError, MedsegError
from napari_medseg.progress import Progress
from napari_medseg.session import Session

AXIS_NAMES = {0: "z", 1: "y", 2: "x"}
AUTOSAVE_ENV = "MEDSEG_AUTOSAVE_S"
#: whole-volume operations on more voxels than this run in a worker thread
BACKGROUND_VOXELS = 4_000_000
#: operation name -> (button text, parameter attribute or None)
OPERATIONS = {
    "interpolate": "Interpolate between painted slices",
    "fill_holes": "Fill holes",
    "remove_islands": "Remove islands <",
    "keep_largest": "Keep largest component",
    "dilate": "Dilate",
    "erode": "Erode",
    "smooth": "Smooth",
    "copy_previous": "Copy previous slice",
    "relabel": "Relabel class as",
}


def _notify(exc: BaseException, what: str) -> None:
    from napari.utils.notifications import show_error

    show_error(f"{what}: {exc}")


def _restore_action(widget, layer):
    """A notification button callback holding only weak references (napari keeps notifications)."""
    wref, lref = weakref.ref(widget), weakref.ref(layer)

    def restore(*_):
        w, l = wref(), lref()
        if w is not None and l is not None:
            w._guard(lambda: w.restore_session(l), "restore")

    return restore


def class_table(layer) -> dict[int, str]:
    """``{value: name}`` of a labels layer: metadata["classes"], else its features, else values present."""
    classes = (layer.metadata or {}).get("classes")
    if classes:
        return {int(k): str(v) for k, v in classes.items()}
    feats = getattr(layer, "features", None)
    if feats is not None and "class" in getattr(feats, "columns", ()) and "index" in feats.columns:
        return {int(i): str(c) for i, c in zip(feats["index"], feats["class"])}
    top = int(np.max(layer.data)) if np.size(layer.data) else 0
    return {0: "background", **{v: f"label {v}" for v in range(1, max(top, 1) + 1)}}


def image_record_for(layer, viewer=None) -> dict:
    """The geometry record of the image a labels layer belongs to (the session key is derived from it)."""
    md = layer.metadata or {}
    if md.get(SOURCE_KEY):
        return md[SOURCE_KEY]
    if viewer is not None:
        for other in viewer.layers:
            rec = (other.metadata or {}).get(META_KEY)
            if other.__class__.__name__ == "Image" and rec and list(rec["shape"])[-3:] == list(np.shape(layer.data))[-3:]:
                return rec
    if md.get(META_KEY):
        return md[META_KEY]
    vol, _ = volume_from_layer(layer)
    return volume_record(vol)


class CorrectionWidget(QWidget):
    """Dock widget "Correct labels" (see the module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.trackers: dict[int, SliceTracker] = {}
        self._offered: set[str] = set()
        self._build_ui()
        napari_viewer.layers.events.inserted.connect(self._on_layer_inserted)
        napari_viewer.layers.events.removed.connect(self._on_layers_changed)
        for layer in list(napari_viewer.layers):
            self._adopt(layer)
        self._refresh_layers()
        self.timer = QTimer(self)
        self.timer.setInterval(int(float(os.environ.get(AUTOSAVE_ENV, "60")) * 1000))
        self.timer.timeout.connect(self.autosave_now)
        self.timer.start()
        self._prune_timer = QTimer(self)  # undo/redo emit no paint event: re-check the edited slices
        self._prune_timer.setInterval(1000)
        self._prune_timer.timeout.connect(self.prune_edited)
        self._prune_timer.start()
        self.destroyed.connect(self.timer.stop)
        self._watch_viewer_close()
        self._bind_keys()
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
        self.window_combo.currentTextChanged.connect(lambda t: self._guard(lambda: self.set_window(t), "window"))
        form.addRow("CT window", self.window_combo)
        layout.addLayout(form)
        self.grid_label = QLabel("")
        self.grid_label.setWordWrap(True)
        self.resample_button = QPushButton("Resample labels onto the image grid")
        self.resample_button.clicked.connect(lambda: self._guard(self.resample_to_image, "resample"))
        self.resample_button.hide()
        layout.addWidget(self.grid_label)
        layout.addWidget(self.resample_button)

        ops = QGroupBox("Operations (undo with Ctrl+Z)")
        g = QGridLayout(ops)
        self.buttons: dict[str, QPushButton] = {}
        for name, text in OPERATIONS.items():
            b = QPushButton(text)
            b.clicked.connect(lambda _=False, n=name: self._guard(lambda: self.run_operation(n), OPERATIONS[n]))
            self.buttons[name] = b
        self.fill_3d = QCheckBox("3D")
        self.island_mm3 = self._spin(100.0, 0.0, 1e7, " mm³", 0)
        self.distance_mm = self._spin(2.0, 0.0, 100.0, " mm", 1)
        self.target_combo = QComboBox()
        rows = [
            (self.buttons["interpolate"], None),
            (self.buttons["fill_holes"], self.fill_3d),
            (self.buttons["remove_islands"], self.island_mm3),
            (self.buttons["keep_largest"], None),
            (self.buttons["dilate"], self.distance_mm),
            (self.buttons["erode"], QLabel("(same distance)")),
            (self.buttons["smooth"], QLabel("(same distance)")),
            (self.buttons["copy_previous"], None),
            (self.buttons["relabel"], self.target_combo),
        ]
        for r, (button, extra) in enumerate(rows):
            g.addWidget(button, r, 0)
            if extra is not None:
                g.addWidget(extra, r, 1)
        layout.addWidget(ops)

        sl = QGroupBox("Corrected slices (checked = reviewed/corrected, used for fine-tuning)")
        v = QVBoxLayout(sl)
        self.slice_list = QListWidget()
        self.slice_list.setMinimumHeight(110)
        self.slice_list.itemChanged.connect(self._on_item_changed)
        self.slice_list.itemDoubleClicked.connect(self._on_item_activated)
        v.addWidget(self.slice_list)
        row = QHBoxLayout()
        self.mark_button = QPushButton("Mark corrected (Shift+M)")
        self.mark_button.setToolTip("Mark the slice shown as reviewed/corrected: it will be used for fine-tuning")
        self.mark_button.clicked.connect(lambda: self._guard(lambda: self.mark_current_slice(True), "mark"))
        self.unmark_button = QPushButton("Unmark")
        self.unmark_button.clicked.connect(lambda: self._guard(lambda: self.mark_current_slice(False), "unmark"))
        self.goto_button = QPushButton("Go to")
        self.goto_button.clicked.connect(lambda: self._on_item_activated(self.slice_list.currentItem()))
        for b in (self.mark_button, self.unmark_button, self.goto_button):
            row.addWidget(b)
        v.addLayout(row)
        layout.addWidget(sl)

        rv = QGroupBox("Review")
        h = QHBoxLayout(rv)
        self.uncertainty_button = QPushButton("Compute uncertainty")
        self.uncertainty_button.clicked.connect(lambda: self._guard(self.compute_uncertainty, "uncertainty"))
        self.next_button = QPushButton("Next slice to check (Shift+N)")
        self.next_button.clicked.connect(lambda: self._guard(self.go_to_next_slice, "next slice"))
        h.addWidget(self.uncertainty_button)
        h.addWidget(self.next_button)
        layout.addWidget(rv)
        self._progress = None

        ss = QGroupBox("Session (autosaved to your user data folder)")
        h2 = QHBoxLayout(ss)
        self.save_button = QPushButton("Save session now")
        self.save_button.clicked.connect(lambda: self._guard(lambda: self.autosave_now(force=True), "autosave"))
        self.restore_button = QPushButton("Restore session")
        self.restore_button.clicked.connect(lambda: self._guard(self.restore_session, "restore"))
        h2.addWidget(self.save_button)
        h2.addWidget(self.restore_button)
        layout.addWidget(ss)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _bind_keys(self):
        """Shift+M: mark the slice shown as corrected; Shift+N: go to the next slice to check (keys napari leaves free)."""
        wref = weakref.ref(self)

        def mark(_viewer=None):
            w = wref()
            if w is not None:
                w._guard(lambda: w.mark_current_slice(True), "mark")

        def next_slice(_viewer=None):
            w = wref()
            if w is not None:
                w._guard(w.go_to_next_slice, "next slice")

        for key, fn in (("Shift-M", mark), ("Shift-N", next_slice)):
            self.viewer.bind_key(key, fn, overwrite=True)
        self._key_actions = {"Shift-M": mark, "Shift-N": next_slice}

    def set_window(self, preset: str):
        """Apply a CT window preset (see `display.WINDOW_PRESETS`) to the image layer of the current labels."""
        from napari_medseg._napari.display import WINDOW_PRESETS, apply_window

        if preset not in WINDOW_PRESETS:
            return None
        layer = self.labels_layer
        image = self._image_layer_for(layer) if layer is not None else None
        if image is None:
            images = [l for l in self.viewer.layers if l.__class__.__name__ == "Image"]
            image = images[0] if images else None
        if image is None:
            raise InputError("no image layer to set the window of")
        low, high = apply_window(image, preset)
        self.status.setText(f"'{image.name}': {preset} window {low:.0f} to {high:.0f} HU")
        return low, high

    @staticmethod
    def _spin(value, lo, hi, suffix, decimals):
        s = QDoubleSpinBox()
        s.setRange(lo, hi)
        s.setDecimals(decimals)
        s.setValue(value)
        s.setSuffix(suffix)
        return s

    def _guard(self, fn, what):
        try:
            return fn()
        except MedsegError as e:
            self.status.setText(f"{what} failed: {e}")
            _notify(e, what)
        return None

    # ============================================================== layers and classes
    def _labels_layers(self):
        return [l for l in self.viewer.layers if l.__class__.__name__ == "Labels"]

    def _adopt(self, layer):
        if layer.__class__.__name__ == "Labels" and id(layer) not in self.trackers:
            tracker = SliceTracker(layer, self.slice_axis)
            tracker.listeners.append(self._refresh_slices)
            self.trackers[id(layer)] = tracker

    def _on_layer_inserted(self, event):
        layer = event.value
        self._adopt(layer)
        self._refresh_layers()
        self._offer_restore(layer)

    def _on_layers_changed(self, event=None):
        alive = {id(l) for l in self.viewer.layers}
        for key in [k for k in self.trackers if k not in alive]:
            tracker = self.trackers.pop(key)
            tracker.disconnect()
            if tracker.dirty:  # removed (or the viewer is closing: it removes every layer first): save it
                self._save_layer(tracker.layer, tracker)
        self._refresh_layers()

    def _refresh_layers(self):
        current = self.labels_layer
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        layers = self._labels_layers()
        for l in layers:
            self.layer_combo.addItem(l.name)
        if current in layers:
            self.layer_combo.setCurrentIndex(layers.index(current))
        self.layer_combo.blockSignals(False)
        self._on_layer_selected()

    @property
    def labels_layer(self):
        name = self.layer_combo.currentText() if hasattr(self, "layer_combo") else ""
        for l in self._labels_layers():
            if l.name == name:
                return l
        return None

    def set_labels_layer(self, layer) -> None:
        self.layer_combo.setCurrentText(layer.name)
        self._on_layer_selected()

    @property
    def tracker(self) -> SliceTracker | None:
        layer = self.labels_layer
        return None if layer is None else self.trackers.get(id(layer))

    def _on_layer_selected(self, *_):
        layer = self.labels_layer
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.target_combo.clear()
        if layer is not None:
            for value, name in sorted(class_table(layer).items()):
                self.class_combo.addItem(f"{value}: {name}", value)
                self.target_combo.addItem(f"{value}: {name}", value)
        self.class_combo.blockSignals(False)
        self._watch_selected_label(layer)
        self._sync_class()
        self._check_grid()
        self._refresh_slices()

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
            self.target_combo.addItem(f"{value}: label {value}", value)
            idx = self.class_combo.count() - 1
        self.class_combo.setCurrentIndex(idx)
        self.class_combo.blockSignals(False)

    def _on_class_selected(self, *_):
        layer, value = self.labels_layer, self.class_combo.currentData()
        if layer is not None and value is not None:
            layer.selected_label = int(value)

    def set_class(self, value_or_name) -> int:
        """Select the class to paint by value or name (sets ``layer.selected_label``)."""
        layer = self._require_layer()
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

    def _require_layer(self):
        layer = self.labels_layer
        if layer is None:
            raise InputError("no labels layer: segment the image or add a labels layer first")
        if np.ndim(layer.data) != 3:
            raise InputError(f"'{layer.name}' is not a 3D labels layer (shape {np.shape(layer.data)}); corrections need a 3D volume")
        return layer

    # ============================================================== grid check / resample
    def _image_layer_for(self, layer):
        images = [l for l in self.viewer.layers if l.__class__.__name__ == "Image" and not getattr(l, "rgb", False) and np.ndim(l.data) == 3]
        src = (layer.metadata or {}).get(SOURCE_KEY)
        if src:
            for im in images:
                rec = (im.metadata or {}).get(META_KEY)
                if rec and rec.get("meta", {}).get("source_path") == src.get("meta", {}).get("source_path"):
                    return im
        return images[0] if images else None

    def _check_grid(self) -> str | None:
        layer = self.labels_layer
        msg = None
        if layer is not None:
            image = self._image_layer_for(layer)
            if np.ndim(layer.data) != 3:
                msg = f"'{layer.name}' is {np.ndim(layer.data)}D; corrections need 3D labels."
            elif image is not None:
                try:
                    ivol, _ = volume_from_layer(image)
                    lvol, _ = volume_from_layer(layer)
                    if not ivol.same_grid(lvol, tol=1e-3):
                        from napari_medseg.volume import grid_difference

                        msg = (f"'{layer.name}' holds the voxels of image '{image.name}' in another axis order "
                               f"({lvol.orientation_code()} vs {ivol.orientation_code()}); reorient it (exact, no "
                               "interpolation)." if lvol.grid_mapping(ivol) else
                               f"'{layer.name}' is not on the grid of image '{image.name}': "
                               f"{grid_difference(lvol, ivol)}; resample it first.")
                except MedsegError as e:
                    msg = str(e)
        self.grid_label.setText(msg or "")
        self.resample_button.setVisible(bool(msg) and layer is not None and np.ndim(layer.data) == 3)
        return msg

    def resample_to_image(self):
        """Add a copy of the labels resampled (nearest neighbour) onto the image grid; returns the layer."""
        from napari_medseg._napari.layers import labels_layer_data, unique_layer_name
        from napari_medseg.inference.resample import resample

        layer = self._require_layer()
        image = self._image_layer_for(layer)
        if image is None:
            raise InputError("no 3D image layer to resample the labels onto")
        ivol, _ = volume_from_layer(image)
        lvol, _ = volume_from_layer(layer)
        if lvol.grid_mapping(ivol) is not None:  # same voxels in another axis order: exact transpose/flip
            arr = lvol.on_grid_of(ivol).array
        else:
            arr = resample(lvol.array, lvol, ivol, mode="nearest", padding="zeros", dtype=lvol.array.dtype)
        data, kwargs, _ = labels_layer_data(ivol.with_array(arr), unique_layer_name(self.viewer, f"{layer.name} (resampled)"),
                                            classes=class_table(layer), source=ivol)
        new = self.viewer.add_labels(data, **kwargs)
        self.set_labels_layer(new)
        return new

    # ============================================================== slices
    def slice_axis(self) -> int:
        """Layer axis of the slices shown (the last non-displayed axis in 2D view; 0 in 3D view)."""
        layer = self.labels_layer
        dims = self.viewer.dims
        if dims.ndisplay != 2 or layer is None:
            return 0
        offset = dims.ndim - layer.ndim
        axis = int(dims.not_displayed[-1]) - offset
        return axis if 0 <= axis < layer.ndim else 0

    def current_slice(self) -> tuple[int, int]:
        layer = self._require_layer()
        axis = self.slice_axis()
        point = np.asarray(self.viewer.dims.point, dtype=float)[-layer.ndim:]
        data = np.asarray(layer.world_to_data(point), dtype=float)
        index = int(np.clip(np.round(data[axis]), 0, layer.data.shape[axis] - 1))
        return axis, index

    def jump_to(self, axis: int, index: int) -> None:
        """Show slice ``index`` along layer ``axis`` (moves the viewer's dims slider)."""
        layer = self._require_layer()
        point = np.asarray(self.viewer.dims.point, dtype=float)[-layer.ndim:]
        data = np.asarray(layer.world_to_data(point), dtype=float)
        data[axis] = index
        world = np.asarray(layer.data_to_world(data), dtype=float)
        offset = self.viewer.dims.ndim - layer.ndim
        self.viewer.dims.set_point(axis + offset, float(world[axis]))

    def mark_current_slice(self, corrected: bool = True) -> tuple[int, int]:
        axis, index = self.current_slice()
        self.tracker.mark(axis, index, corrected)
        self._after_change()
        where = f"{AXIS_NAMES.get(axis, axis)} = {index}"
        warn = self.tracker.review_warnings([(axis, index)], class_table(self.labels_layer)) if corrected else []
        self.status.setText(f"{where} marked corrected" + (": " + " ".join(warn) if warn else "")
                            if corrected else f"{where} unmarked")
        return axis, index

    def prune_edited(self) -> None:
        """Forget "edited" slices that an undo restored (checked on a timer and before listing)."""
        tracker = self.tracker
        if tracker is not None:
            tracker.prune()

    def _refresh_slices(self):
        tracker = self.tracker
        self.slice_list.blockSignals(True)
        self.slice_list.clear()
        if tracker is not None:
            rec = tracker.record
            for axis, index in rec.slices():
                flags = ["edited"] if (axis, index) in rec.edited else []
                item = QListWidgetItem(f"{AXIS_NAMES.get(axis, axis)} = {index}  ({', '.join(flags) or 'marked'})")
                item.setData(Qt.ItemDataRole.UserRole, (axis, index))
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if (axis, index) in rec.corrected else Qt.CheckState.Unchecked)
                self.slice_list.addItem(item)
        self.slice_list.blockSignals(False)

    def _on_item_changed(self, item):
        axis, index = item.data(Qt.ItemDataRole.UserRole)
        self.tracker.mark(axis, index, item.checkState() == Qt.CheckState.Checked)
        self._after_change()

    def _on_item_activated(self, item):
        if item is not None:
            self.jump_to(*item.data(Qt.ItemDataRole.UserRole))

    # ============================================================== operations
    def run_operation(self, name: str, background: bool | None = None, **overrides) -> int | None:
        """Run one operation on the current class and scope; returns the number of voxels changed.

        ``overrides`` replace widget values: ``label``, ``scope`` ("slice"/"volume"), ``distance_mm``,
        ``min_volume_mm3``, ``target``, ``fill_3d``. Whole-volume operations on large volumes
        (``background=None`` and more than `BACKGROUND_VOXELS`) are computed in a worker so the viewer
        stays responsive; the edit is then applied on the GUI thread (as one undo step) and None is
        returned at once.
        """
        layer = self._require_layer()
        compute, axis, scope, has_geometry = self._prepare(layer, name, overrides)
        if background is None:
            background = scope == "volume" and layer.data.size > BACKGROUND_VOXELS
        whole = scope == "volume" or name == "interpolate"
        if not background:
            return self._apply(layer, compute(), axis, has_geometry, whole)
        panel = self._panel()
        if panel.running:
            raise InputError("another operation is still running; wait for it or cancel it")

        def steps():
            yield Progress(0, 1, OPERATIONS[name], "computing on the whole volume")
            return compute()

        self._set_ops_enabled(False)

        def done(edit):
            self._set_ops_enabled(True)
            self._guard(lambda: self._apply(layer, edit, axis, has_geometry, whole), OPERATIONS[name])

        def failed(exc):
            self._set_ops_enabled(True)
            self.status.setText(f"{OPERATIONS[name]} failed: {exc}")
            _notify(exc, OPERATIONS[name])

        panel.start(steps, on_done=done, on_error=failed, on_cancelled=lambda: self._set_ops_enabled(True))
        return None

    def _prepare(self, layer, name: str, overrides: dict):
        """Read the controls now; return a zero-argument function computing the `Edit` on a snapshot."""
        if name not in OPERATIONS:
            raise InputError(f"unknown operation '{name}'; choose one of {', '.join(OPERATIONS)}")
        vol, has_geometry = volume_from_layer(layer)
        spacing = vol.spacing
        label = int(overrides.get("label", layer.selected_label))
        scope = overrides.get("scope", "slice" if self.scope_combo.currentIndex() == 0 else "volume")
        axis, index = self.current_slice()
        where = (axis, index) if scope == "slice" else None
        dist = float(overrides.get("distance_mm", self.distance_mm.value()))
        three_d = bool(overrides.get("fill_3d", self.fill_3d.isChecked()))
        min_mm3 = float(overrides.get("min_volume_mm3", self.island_mm3.value()))
        target = overrides.get("target", self.target_combo.currentData())
        if name == "copy_previous" and index == 0:
            raise InputError(f"slice {index} is the first along {AXIS_NAMES.get(axis, axis)}: there is no previous slice")
        if name == "relabel" and target is None:
            raise InputError("choose the class to relabel to")
        keys = None
        if name == "interpolate":  # between the slices the user painted, not every slice holding the class
            tracker = self.trackers.get(id(layer))
            keys = [i for i in (tracker.painted_slices(axis) if tracker else [])
                    if np.any(np.take(np.asarray(layer.data), i, axis=axis) == label)]
            if len(keys) < 2:
                raise InputError(
                    f"interpolation fills the slices between slices you painted: paint class {label} on at least two "
                    f"slices along {AXIS_NAMES.get(axis, axis)} first (painted so far: {keys or 'none'})")
        # whole-volume work runs on a snapshot (painting may go on meanwhile); slice work reads in place
        data = np.array(layer.data, copy=True) if scope == "volume" or name == "interpolate" else np.asarray(layer.data)

        def compute():
            if name == "interpolate":
                return editing.interpolate_slices(data, label, axis, spacing=spacing, slices=keys)
            if name == "fill_holes":
                return editing.fill_holes(data, label, where=where, spacing=spacing, per_slice_axis=None if three_d else axis)
            if name == "remove_islands":
                return editing.remove_islands(data, label, min_mm3, where=where, spacing=spacing)
            if name == "keep_largest":
                return editing.keep_largest(data, label, where=where, spacing=spacing)
            if name in ("dilate", "erode", "smooth"):
                return getattr(editing, name)(data, label, dist, where=where, spacing=spacing)
            if name == "copy_previous":
                return editing.copy_slice(data, axis, index, label=label)
            return editing.relabel(data, label, int(target), where=where)

        return compute, axis, scope, has_geometry

    def _apply(self, layer, edit, axis: int, has_geometry: bool, whole_volume: bool = False) -> int:
        if layer not in self.viewer.layers:
            raise InputError(f"labels layer '{layer.name}' was removed; nothing was changed")
        if not edit.is_empty:
            current = np.asarray(layer.data[edit.bbox])
            if not np.array_equal(current, edit.before):  # painted meanwhile: keep the newer strokes
                keep = current == edit.before
                edit = type(edit)(edit.bbox, current.copy(), np.where(keep, edit.after, current), edit.description, edit.params)
        n = apply_edit(layer, edit, self.trackers.get(id(layer)), axis, whole_volume=whole_volume)
        units = "" if has_geometry else " (no medical geometry: voxel units)"
        where = ""
        if whole_volume and n:
            where = f" on {len(edit.slices(axis))} slice(s) (logged, not listed as edited: review and mark the ones you check)"
        if edit.params.get("op") == "interpolate_slices":
            where += f"; between the painted slices {edit.params.get('key_slices')}"
        self.status.setText(f"{edit.description}: {n} voxels changed{where}{units}")
        self._after_change()
        return n

    def _panel(self):
        from napari_medseg._napari._worker import ProgressPanel

        if self._progress is None:
            self._progress = ProgressPanel(self)
            self._body_layout.insertWidget(self._body_layout.count() - 2, self._progress)
        return self._progress

    def _set_ops_enabled(self, enabled: bool) -> None:
        for b in self.buttons.values():
            b.setEnabled(enabled)

    # ============================================================== review
    def uncertainty_layer(self):
        for l in self.viewer.layers:
            md = l.metadata or {}
            if l.__class__.__name__ == "Image" and (md.get("medseg_kind") == "uncertainty" or "uncertainty" in l.name.lower()):
                return l
        return None

    def next_slice(self) -> tuple[int, int] | None:
        layer = self._require_layer()
        unc = self.uncertainty_layer()
        if unc is None:
            raise InputError("no uncertainty map: click 'Compute uncertainty' (or segment with probabilities) first")
        if np.shape(unc.data) != np.shape(layer.data):
            raise InputError(f"uncertainty map shape {np.shape(unc.data)} differs from labels {np.shape(layer.data)}")
        axis = self.slice_axis()
        reviewed = [i for a, i in self.tracker.record.corrected if a == axis]
        index = editing.next_slice_to_check(np.asarray(unc.data), axis, reviewed, labels=np.asarray(layer.data))
        return None if index is None else (axis, index)

    def go_to_next_slice(self):
        found = self.next_slice()
        if found is None:
            self.status.setText("every slice along this axis is marked reviewed")
        else:
            self.jump_to(*found)
            self.status.setText(f"least certain unreviewed slice: {AXIS_NAMES.get(found[0], found[0])} = {found[1]}")
        return found

    def compute_uncertainty(self, model=None):
        """Run the model (default: the active default model) with probabilities in a worker and add the
        uncertainty map (1 - max probability) as an image layer."""
        layer = self._require_layer()
        image = self._image_layer_for(layer)
        if image is None:
            raise InputError("no 3D image layer to compute the model's uncertainty on")
        try:
            from napari_medseg.inference import segment_steps
        except ImportError as e:
            raise InputError(f"the inference engine is not available ({e})") from e
        vol, _ = volume_from_layer(image)
        panel = self._panel()
        if panel.running:
            raise InputError("another operation is still running; wait for it or cancel it")

        def done(result):
            unc = getattr(result, "uncertainty", None)
            if unc is None:
                self.status.setText("the model returned no uncertainty map")
                return
            from napari_medseg._napari.layers import image_layer_data

            data, kwargs, _ = image_layer_data(unc, name=f"{image.name} uncertainty")
            kwargs.update(colormap="magma", contrast_limits=(0.0, max(float(np.max(unc.array)), 1e-6)), opacity=0.6,
                          blending="additive")
            kwargs["metadata"]["medseg_kind"] = "uncertainty"
            self.viewer.add_image(data, **kwargs)
            self.status.setText("uncertainty map added; use 'Next slice to check'")

        panel.start(lambda: segment_steps(vol, model=model, return_uncertainty=True), on_done=done,
                             on_error=lambda e: _notify(e, "uncertainty"))

    # ============================================================== autosave / restore
    def _after_change(self):
        self.autosave_now()

    def session_for(self, layer) -> Session:
        return Session.for_image(image_record_for(layer, self.viewer))

    def autosave_now(self, force: bool = False) -> list[str]:
        """Save every labels layer edited since its last save (all tracked ones with ``force``)."""
        saved = []
        for layer in self._labels_layers():
            tracker = self.trackers.get(id(layer))
            if tracker is None or not (tracker.dirty or force) or np.ndim(layer.data) != 3:
                continue
            if self._save_layer(layer, tracker):
                saved.append(layer.name)  # stays dirty: undo/redo change data without a paint event
        return saved

    def _save_layer(self, layer, tracker) -> bool:
        try:
            session = self.session_for(layer)
            self._offered.add(str(session.folder))  # our own autosave: nothing to offer in this viewer
            session.save(layer.name, np.asarray(layer.data), tracker.record, class_table(layer))
        except (MedsegError, OSError) as e:
            self.status.setText(f"autosave of '{layer.name}' failed: {e}")
            return False
        return True

    def _saved_for(self, layer) -> Session | None:
        if np.ndim(layer.data) != 3 or getattr(layer, "rgb", False):
            return None
        rec = (layer.metadata or {}).get(META_KEY)
        if layer.__class__.__name__ == "Image" and rec:
            session = Session.for_image(rec)
        elif layer.__class__.__name__ == "Labels":
            session = self.session_for(layer)
        else:
            return None
        return session if session.has_saved() else None

    def _offer_restore(self, layer):
        """When an image with an autosaved session is opened, offer to restore it (once per session)."""
        if layer.__class__.__name__ != "Image":
            return
        session = self._saved_for(layer)
        if session is None or str(session.folder) in self._offered:
            return
        self._offered.add(str(session.folder))
        from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

        names = ", ".join(session.saved_names())
        note = Notification(
            f"napari-medseg found autosaved corrections for '{layer.name}' ({names}).",
            severity=NotificationSeverity.INFO,
            actions=[("Restore", _restore_action(self, layer))],
        )
        notification_manager.dispatch(note)
        self.status.setText(f"autosaved corrections found ({names}): click 'Restore session'")

    def restore_session(self, layer=None) -> list:
        """Add the autosaved labels of the image as labels layers (existing layers are never overwritten)."""
        from napari_medseg._napari.layers import labels_layer_data, unique_layer_name

        candidates = [layer] if layer is not None else [l for l in self.viewer.layers if l.__class__.__name__ in ("Image", "Labels")]
        for cand in candidates:
            session = self._saved_for(cand)
            if session is None:
                continue
            image_rec = session.image_record
            if cand.__class__.__name__ == "Image":
                ivol, _ = volume_from_layer(cand)
            else:
                from napari_medseg._napari.layers import volume_from_record

                ivol = volume_from_record(np.zeros(tuple(image_rec["shape"])[-3:], np.uint8), image_rec)
            added = []
            for saved in session.load_all():
                if tuple(saved.array.shape) != tuple(ivol.spatial_shape):
                    raise InputError(f"autosaved '{saved.name}' has shape {saved.array.shape}, the image {ivol.spatial_shape}")
                lab = ivol.with_array(saved.array)
                name = unique_layer_name(self.viewer, saved.name)
                data, kwargs, _ = labels_layer_data(lab, name, classes=saved.classes, source=volume_record(ivol))
                saved.record.to_metadata(kwargs["metadata"])
                new = self.viewer.add_labels(data, **kwargs)
                tracker = self.trackers.get(id(new))
                if tracker is not None:
                    tracker.reload()
                added.append(new)
            if added:
                self.set_labels_layer(added[0])
                self.status.setText(f"restored {', '.join(l.name for l in added)} from {session.folder}")
                return added
        raise InputError("no autosaved session for the open image(s)")

    # ============================================================== viewer closing
    def _watch_viewer_close(self):
        from napari_medseg._napari.signals import CloseWatcher  # public Qt API, not napari's Window._qt_window

        self._close_watcher = CloseWatcher(self, self._on_viewer_closing)

    def _on_viewer_closing(self):
        """On closing the viewer: stop a running operation cleanly, then save the latest edits."""
        self.timer.stop()
        self._prune_timer.stop()
        if self._progress is not None and self._progress.running:
            self._progress.cancel()
            self._progress.wait(10000)
        try:
            self.autosave_now()
        except Exception:  # noqa: BLE001 - never block closing the viewer
            pass
