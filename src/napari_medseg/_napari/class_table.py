"""The class/statistics table of the Segment widget, kept current with the labels layer it describes.

The rows are the one core table (`inference.result.class_stats`, the same columns and CSV as ``medseg
predict --stats``). After a run they come with the result; afterwards they are recomputed when the labels
change: painting and our correction operations (napari's ``paint`` event), undo/redo, or new data, debounced
(`DEBOUNCE_MS`) and computed in a worker thread (a 512² × 141 CT takes longer than a GUI frame). A labels layer
added later with a class table and a source image (a fine-tuned or re-segmented result) becomes the table's
layer. Removing the layer, or its image, clears the table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QHeaderView, QLabel, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from napari_medseg._napari.layers import META_KEY, SOURCE_KEY
from napari_medseg.errors import InputError

DEBOUNCE_MS = 300


def _geometry(record) -> tuple | None:
    if not record:
        return None
    return (tuple(record.get("shape", ())[-3:]), tuple(np.round(record.get("spacing", ()), 4)),
            tuple(np.round(record.get("origin", ()), 3)))


class ClassTablePanel(QWidget):
    """Title + table + "Export CSV…"; `track(labels_layer, image_layer, rows)` shows a layer's statistics."""

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.title = QLabel("")
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
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in (self.title, self.table, self.export_button):
            layout.addWidget(w)
        self.rows: list[dict] = []
        self.labels_layer = self.image_layer = None
        self.computations = 0  # statistics recomputed after a change (not counting those that came with a run)
        self._generation = 0
        self._history = None
        self._worker = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.recompute)
        viewer.layers.events.removed.connect(self._on_removed)
        viewer.layers.events.inserted.connect(self._on_inserted)

    # ------------------------------------------------------------------ which layer
    def track(self, labels_layer, image_layer=None, rows: list[dict] | None = None) -> None:
        """Describe ``labels_layer`` (with ``image_layer``'s intensities); ``rows``: statistics already known."""
        self._disconnect()
        self.labels_layer, self.image_layer = labels_layer, image_layer
        self._history = self._history_state()
        ev = labels_layer.events
        ev.paint.connect(self.schedule)
        ev.data.connect(self.schedule)
        ev.set_data.connect(self._on_refresh)  # undo/redo refresh the layer without a paint event
        self.title.setText(f"class statistics of '{labels_layer.name}'")
        if rows is None:
            self.recompute()
        else:
            self._show(rows)

    def clear(self) -> None:
        self._disconnect()
        self._generation += 1  # a computation still running is ignored
        self.labels_layer = self.image_layer = None
        self.title.setText("")
        self._show([])

    def _disconnect(self) -> None:
        self._timer.stop()
        layer = self.labels_layer
        if layer is None:
            return
        for ev, slot in ((layer.events.paint, self.schedule), (layer.events.data, self.schedule),
                         (layer.events.set_data, self._on_refresh)):
            try:
                ev.disconnect(slot)
            except (TypeError, ValueError, RuntimeError):
                pass

    def _on_removed(self, event) -> None:
        if event.value is not None and event.value in (self.labels_layer, self.image_layer):
            self.clear()

    def _on_inserted(self, event) -> None:
        """A labels layer with classes and a source image (a fine-tuned / re-segmented result): describe it."""
        layer = event.value
        md = getattr(layer, "metadata", None) or {}
        if layer.__class__.__name__ != "Labels" or "classes" not in md or SOURCE_KEY not in md or layer is self.labels_layer:
            return
        QTimer.singleShot(0, lambda: self._adopt(layer))

    def _adopt(self, layer) -> None:
        if layer is not self.labels_layer and layer in self.viewer.layers:  # (the Segment widget's own result is
            self.track(layer, self.image_for(layer))  # tracked with its statistics right after it is added)

    def image_for(self, labels_layer):
        """The image layer a labels layer was made from: the same geometry as its recorded source image."""
        want = _geometry((labels_layer.metadata or {}).get(SOURCE_KEY))
        for layer in self.viewer.layers:
            if layer.__class__.__name__ == "Image" and want is not None and _geometry((layer.metadata or {}).get(META_KEY)) == want:
                return layer
        return None

    # ------------------------------------------------------------------ recomputing
    def _history_state(self):
        layer = self.labels_layer
        return (len(getattr(layer, "_undo_history", ()) or ()), len(getattr(layer, "_redo_history", ()) or ()))

    def _on_refresh(self, _event=None) -> None:
        state = self._history_state()
        if state != self._history:  # an undo or redo (slicing alone leaves the history as it was)
            self._history = state
            self.schedule()

    def schedule(self, _event=None) -> None:
        """Recompute after the changes stop for `DEBOUNCE_MS`."""
        self._history = self._history_state()
        self._timer.start()

    def recompute(self) -> None:
        """Start computing the statistics of the tracked layer now (in a worker thread)."""
        layer = self.labels_layer
        if layer is None:
            return
        from napari.qt.threading import create_worker

        from napari_medseg._napari.layers import volume_from_layer
        from napari_medseg.inference.result import class_stats

        classes = {int(k): str(v) for k, v in ((layer.metadata or {}).get("classes") or {}).items() if int(k) != 0}
        labels, _ = volume_from_layer(layer)
        image = self.image_layer
        data = np.asarray(image.data) if image is not None and np.shape(image.data) == np.shape(layer.data) else None
        self._generation += 1
        gen = self._generation

        def work():
            return class_stats(np.asarray(labels.array), data, classes, labels.voxel_volume_mm3)

        worker = create_worker(work, _start_thread=False)
        worker.returned.connect(lambda stats, gen=gen: self._computed(gen, stats))
        self._worker = worker
        worker.start()

    def _computed(self, gen: int, stats: dict) -> None:
        if gen != self._generation:  # a newer change, or the layer went away
            return
        self.computations += 1
        try:
            self._show([dict(stats[v]) for v in sorted(stats)])
        except RuntimeError:  # the widget was deleted (viewer closed) while the thread ran
            pass

    @property
    def busy(self) -> bool:
        return self._timer.isActive() or (self._worker is not None and self._worker.is_running)

    # ------------------------------------------------------------------ showing and exporting
    def _show(self, rows: list[dict]) -> None:
        self.rows = rows
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            cells = [row["name"], f"{row['voxels']:d}", f"{row['volume_ml']:.2f}", f"{row['mean_intensity']:.1f}"]
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.export_button.setEnabled(bool(rows))

    def export_csv(self, path) -> Path:
        """The shown table as CSV (core `stats_csv`, the columns of ``medseg predict --stats``), atomically."""
        if not self.rows:
            raise InputError("nothing to export yet: run a segmentation first")
        from napari_medseg._atomic import atomic_path
        from napari_medseg.inference.result import stats_csv

        path = Path(path)
        if self.labels_layer is not None:
            from napari_medseg._guard import check_outputs
            from napari_medseg._napari.layers import volume_from_layer

            check_outputs(path, [volume_from_layer(self.labels_layer)[0]])
        with atomic_path(path, force=True) as tmp:
            tmp.write_text(stats_csv(self.rows), encoding="utf-8")
        return path

    def _export_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Export class statistics", "stats.csv", "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
            except Exception as e:  # noqa: BLE001 - shown to the user
                from napari_medseg._napari._worker import notify_error

                notify_error(e, "Export CSV")
