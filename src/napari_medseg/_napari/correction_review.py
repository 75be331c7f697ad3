"""The review panel of the Correction widget: the corrected-slice list (from the layer's `CorrectionStore`,
updated by its events), mark / unmark / go to, the model's uncertainty and "next slice to check"."""

from __future__ import annotations

import weakref

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from napari_medseg import editing
from napari_medseg._napari.layer_info import class_table, image_layer_for, producing_model, uncertainty_layer
from napari_medseg._napari.layers import volume_from_layer
from napari_medseg._napari.tracking import follow_store, store_for
from napari_medseg.editing.operations import AXIS_NAMES
from napari_medseg.errors import InputError
from napari_medseg.inference.config import InferenceConfig

#: the uncertainty run: the map on the model grid (the network's own voxels, placed exactly over the image)
UNCERTAINTY_RUN = InferenceConfig(uncertainty="model")


class ReviewPanel(QWidget):
    """``host`` is the `CorrectionWidget` (layer, slice, status, progress panel)."""

    def __init__(self, host):
        super().__init__()
        self.host = host
        self._store = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        sl = QGroupBox("Corrected slices (checked = reviewed/corrected, used for fine-tuning)")
        v = QVBoxLayout(sl)
        self.slice_list = QListWidget()
        self.slice_list.setMinimumHeight(110)
        self.slice_list.itemChanged.connect(self._on_item_changed)
        self.slice_list.itemDoubleClicked.connect(self.on_item_activated)
        v.addWidget(self.slice_list)
        row = QHBoxLayout()
        self.mark_button = QPushButton("Mark corrected (Shift+M)")
        self.mark_button.setToolTip("Mark the slice shown as reviewed/corrected: it will be used for fine-tuning")
        self.mark_button.clicked.connect(lambda: host.guard(lambda: self.mark_current_slice(True), "mark"))
        self.unmark_button = QPushButton("Unmark")
        self.unmark_button.clicked.connect(lambda: host.guard(lambda: self.mark_current_slice(False), "unmark"))
        self.goto_button = QPushButton("Go to")
        self.goto_button.clicked.connect(lambda: self.on_item_activated(self.slice_list.currentItem()))
        for b in (self.mark_button, self.unmark_button, self.goto_button):
            row.addWidget(b)
        v.addLayout(row)
        layout.addWidget(sl)
        rv = QGroupBox("Review")
        h = QHBoxLayout(rv)
        self.uncertainty_button = QPushButton("Compute uncertainty")
        self.uncertainty_button.setToolTip("Runs the model that produced the labels (the default model if unknown)")
        self.uncertainty_button.clicked.connect(lambda: host.guard(self.compute_uncertainty, "uncertainty"))
        self.next_button = QPushButton("Next slice to check (Shift+N)")
        self.next_button.clicked.connect(lambda: host.guard(self.go_to_next_slice, "next slice"))
        h.addWidget(self.uncertainty_button)
        h.addWidget(self.next_button)
        layout.addWidget(rv)
        self._bind_keys()

    def _bind_keys(self):
        """Shift+M: mark the slice shown as corrected; Shift+N: go to the next slice to check (keys napari leaves free)."""
        wref = weakref.ref(self)

        def mark(_viewer=None):
            w = wref()
            if w is not None:
                w.host.guard(lambda: w.mark_current_slice(True), "mark")

        def next_slice(_viewer=None):
            w = wref()
            if w is not None:
                w.host.guard(w.go_to_next_slice, "next slice")

        for key, fn in (("Shift-M", mark), ("Shift-N", next_slice)):
            self.host.viewer.bind_key(key, fn, overwrite=True)
        self._key_actions = {"Shift-M": mark, "Shift-N": next_slice}

    # ------------------------------------------------------------------ the store of the current layer
    def follow(self, layer) -> None:
        """Show the slices of ``layer``'s store and follow its events."""
        self._store = follow_store(self._store, layer, self.refresh)
        self.refresh()

    @property
    def store(self):
        return self._store

    def refresh(self) -> None:
        try:
            self.slice_list.blockSignals(True)
        except RuntimeError:  # the widget was deleted; the store outlives it
            return
        self.slice_list.clear()
        store = self._store
        if store is not None:
            rec = store.record
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
        self._store.mark(axis, index, item.checkState() == Qt.CheckState.Checked)
        self.host.after_change()

    def on_item_activated(self, item):
        if item is not None:
            self.host.jump_to(*item.data(Qt.ItemDataRole.UserRole))

    def mark_current_slice(self, corrected: bool = True) -> tuple[int, int]:
        host = self.host
        axis, index = host.current_slice()
        store = store_for(host.labels_layer)
        store.mark(axis, index, corrected)
        host.after_change()
        where = f"{AXIS_NAMES.get(axis, axis)} = {index}"
        warn = store.review_warnings([(axis, index)], class_table(host.labels_layer)) if corrected else []
        host.set_status(f"{where} marked corrected" + (": " + " ".join(warn) if warn else "")
                        if corrected else f"{where} unmarked")
        return axis, index

    # ------------------------------------------------------------------ uncertainty / next slice
    def next_slice(self) -> tuple[int, int] | None:
        host = self.host
        layer = host.require_layer()
        unc = uncertainty_layer(host.viewer)
        if unc is None:
            raise InputError("no uncertainty map: click 'Compute uncertainty' (or segment with probabilities) first")
        unc_data = np.asarray(unc.data)
        if unc_data.shape != np.shape(layer.data):  # a model-grid map: resample it onto the labels' grid
            from napari_medseg.inference.uncertainty import uncertainty_on

            unc_vol, placed = volume_from_layer(unc)
            labels_vol, labels_placed = volume_from_layer(layer)
            if not (placed and labels_placed):
                raise InputError(f"uncertainty map shape {unc_data.shape} differs from labels {np.shape(layer.data)} "
                                 "and one of them carries no geometry to resample with; recompute the uncertainty")
            unc_data = uncertainty_on(unc_vol, labels_vol)
        axis = host.slice_axis()
        reviewed = store_for(layer).corrected_on(axis)
        index = editing.next_slice_to_check(unc_data, axis, reviewed, labels=np.asarray(layer.data))
        return None if index is None else (axis, index)

    def go_to_next_slice(self):
        found = self.next_slice()
        if found is None:
            self.host.set_status("every slice along this axis is marked reviewed")
        else:
            self.host.jump_to(*found)
            self.host.set_status(f"least certain unreviewed slice: {AXIS_NAMES.get(found[0], found[0])} = {found[1]}")
        return found

    def compute_uncertainty(self, model=None):
        """Run the model with probabilities in a worker and add the uncertainty map (1 - max probability) as an
        image layer. The model is ``model`` if given, else the one that produced the labels (recorded in the
        layer's metadata), else the default model."""
        host = self.host
        layer = host.require_layer()
        image = image_layer_for(host.viewer, layer)
        if image is None:
            raise InputError("no 3D image layer to compute the model's uncertainty on")
        try:
            from napari_medseg.inference import segment_steps
        except ImportError as e:
            raise InputError(f"the inference engine is not available ({e})") from e
        model = model if model is not None else producing_model(layer)
        vol, _ = volume_from_layer(image)
        panel = host.panel()
        if panel.running:
            raise InputError("another operation is still running; wait for it or cancel it")
        self.uncertainty_model = model

        def done(result):
            unc = getattr(result, "uncertainty", None)
            if unc is None:
                host.set_status("the model returned no uncertainty map")
                return
            from napari_medseg._napari.segment_job import uncertainty_layer_data

            data, kwargs, _ = uncertainty_layer_data(unc)  # the model grid's exact geometry, as the Segment widget
            kwargs["name"] = f"{image.name} uncertainty"
            host.viewer.add_image(data, **kwargs)
            host.set_status(f"uncertainty map of model '{model or 'default'}' added; use 'Next slice to check'")

        panel.start(lambda: segment_steps(vol, model=model, config=UNCERTAINTY_RUN), on_done=done,
                    on_error=lambda e: host.fail("uncertainty", e))
