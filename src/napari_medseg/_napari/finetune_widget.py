"""Fine-tune widget: learn from the slices the user corrected, then re-segment and compare.

Reads the corrected slices of the chosen labels layer from its `CorrectionStore` (attached to every labels
layer once any napari-medseg widget is open; the widget follows the store's events), runs
`napari_medseg.training.finetune_steps` followed by a re-segmentation with the new model in a worker
(`ProgressPanel`, which shows each Progress message as given), plots the loss and the held-out Dice live
(`LossPlot`), and adds the new segmentation as a NEW labels layer (the user's edited layer is never touched).
The result shows the held-out Dice before/after and whether the new version was activated, with buttons
to activate it or roll back (`VersionsPanel`). The training labels and the class check are core
(:mod:`napari_medseg.editing.training_labels`).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_medseg._napari._worker import ProgressPanel, notify_error
from napari_medseg._napari.warm_up import warm_up_imports
from napari_medseg._napari.display import scroll_body
from napari_medseg._napari.finetune_settings import TrainingSettings
from napari_medseg._napari.finetune_versions import VersionsPanel
from napari_medseg._napari.layer_info import class_table, layers_of
from napari_medseg._napari.loss_plot import LossPlot
from napari_medseg._napari.model_watch import ModelListWatcher
from napari_medseg._napari.signals import CloseWatcher, notify_models_changed
from napari_medseg._napari.tracking import ensure_correction_stores, follow_store, store_for
from napari_medseg._napari.layers import (
    check_volume_layer,
    labels_layer_data,
    unique_layer_name,
    volume_from_layer,
    volume_record,
)
from napari_medseg.errors import InputError, MedsegError
from napari_medseg.editing.training_labels import (  # noqa: F401 - describe_slices re-exported
    check_known_classes,
    describe_slices,
    model_class_values,
    training_labels,
)
from napari_medseg.progress import Progress


def finetune_job(image, labels, slices, model, from_scratch: bool, config, resegment: bool = True, name=None,
                 allow_class_change: bool = False, cancel=None, check_images=()):
    """Step generator run by the widget: fine-tune and re-segment the image with the new model.

    The new model's whole-image segmentation is part of the fine-tune (its class check, inside the time
    budget) and is reused as the re-segmentation, so the image is not segmented twice.
    """
    from napari_medseg.inference import segment_steps
    from napari_medseg.training import finetune_steps

    result = yield from finetune_steps(image, labels, slices, model=model, from_scratch=from_scratch, config=config,
                                       name=name, allow_class_change=allow_class_change, resegment=resegment,
                                       cancel=cancel, check_images=check_images)
    seg = result.segmentation if resegment else None
    if resegment and seg is None:
        yield Progress(0, 1, "re-segment", "segmenting the volume with the new model")
        seg = yield from segment_steps(image, model=str(result.model_path))
    return result, seg


class FinetuneWidget(QWidget):
    """Dock widget "Fine-tune model" (see the module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        ensure_correction_stores(napari_viewer)
        self._store = None
        self.result = None
        self.segmentation = None
        self.after_layer = None
        self.warm_up = warm_up_imports()  # torch and napari's first-layer costs, off the GUI thread
        self._job_layers = None
        layout = QVBoxLayout(scroll_body(self))  # scrolls when the docks share a small screen
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.labels_combo.currentIndexChanged.connect(self.refresh_slices)
        form.addRow("Image", self.image_combo)
        form.addRow("Corrected labels", self.labels_combo)
        self.slices_label = QLabel("")
        self.slices_label.setWordWrap(True)
        form.addRow(self.slices_label)
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._browse_model)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(browse)
        form.addRow("Model", row)
        layout.addLayout(form)
        self.settings = TrainingSettings(self)
        for attr in ("scratch", "freeze", "allow_class_change", "name_edit", "steps", "budget", "lr"):
            setattr(self, attr, getattr(self.settings, attr))
        self.scratch.toggled.connect(self.refresh_slices)  # what the check can measure depends on the mode
        layout.addWidget(self.settings)
        self.warn_label = QLabel("")  # classes on ticked slices that look unreviewed (outside the form: wraps)
        self.warn_label.setWordWrap(True)
        self.warn_label.setStyleSheet("color: #e8a33d;")
        self.warn_label.hide()
        layout.addWidget(self.warn_label)
        self.start_button = QPushButton("Start fine-tuning")
        self.start_button.clicked.connect(self._start_clicked)
        layout.addWidget(self.start_button)
        self.panel = ProgressPanel(self)
        self.panel.cancel_button.setText("Stop")
        layout.addWidget(self.panel)
        self.plot = LossPlot(self)
        layout.addWidget(self.plot)
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.result_label)
        self.versions = VersionsPanel(self)
        self.activate_button, self.rollback_button = self.versions.activate_button, self.versions.rollback_button
        self.activate_new, self.roll_back = self.versions.activate_new, self.versions.roll_back
        layout.addWidget(self.versions)
        layout.addStretch(1)
        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)
        self._fill_models()
        self.models = ModelListWatcher(self, fill=self._fill_models, current=self.model_combo.currentText,
                                       restore=lambda text: text and self.set_model(text))
        self._refresh_layers()
        self._close_watcher = CloseWatcher(self, self._on_viewer_closing)

    # ============================================================== controls
    def guard(self, fn, what):
        try:
            return fn()
        except MedsegError as e:
            self.result_label.setText(f"{what} failed: {e}")
            notify_error(e, what)
        return None

    _guard = guard

    def _fill_models(self):
        """Each model name (its active version) and every version ``name@vN``; text = the spec used."""
        try:
            from napari_medseg.models.registry import list_models

            rows = list_models()
        except Exception:  # noqa: BLE001 - an unreadable models home must not break the widget
            rows = []
        self.model_combo.clear()
        names = sorted({r["name"] for r in rows}) or ["default"]
        for n in names:
            self.model_combo.addItem(n)
        for r in rows:
            self.model_combo.addItem(f"{r['name']}@{r['version']}")
            if r.get("active"):
                self.model_combo.setItemData(self.model_combo.count() - 1, "active version",
                                             Qt.ItemDataRole.ToolTipRole)

    def model_specs(self) -> list[str]:
        return [self.model_combo.itemText(i) for i in range(self.model_combo.count())]

    def refresh_models(self, *_):
        """Re-read the installed models (after a fine-tune, an activation, or when shown), keeping the choice."""
        self.models.refresh()

    def _browse_model(self):
        path = QFileDialog.getExistingDirectory(self, "Model package or MONAI bundle folder")
        if path:
            self.set_model(path)

    def set_model(self, spec: str) -> None:
        if self.model_combo.findText(str(spec)) < 0:
            self.model_combo.addItem(str(spec))
        self.model_combo.setCurrentText(str(spec))

    def _refresh_layers(self, *_):
        for combo, kind in ((self.image_combo, "Image"), (self.labels_combo, "Labels")):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            for l in layers_of(self.viewer, kind):
                if kind == "Image" and (l.metadata or {}).get("medseg_kind") == "uncertainty":
                    continue
                combo.addItem(l.name)
            if current and combo.findText(current) >= 0:
                combo.setCurrentText(current)
            elif kind == "Labels":  # prefer a layer with corrected slices
                for l in layers_of(self.viewer, "Labels"):
                    if store_for(l).corrected:
                        combo.setCurrentText(l.name)
                        break
            combo.blockSignals(False)
        self.refresh_slices()

    def set_layers(self, image, labels) -> None:
        self.image_combo.setCurrentText(image.name)
        self.labels_combo.setCurrentText(labels.name)
        self.refresh_slices()

    def _layer(self, combo):
        name = combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def corrected_slices(self) -> list[tuple[int, int]]:
        layer = self._layer(self.labels_combo)
        return [] if layer is None else store_for(layer).corrected_slices()

    def refresh_slices(self, *_):
        layer = self._layer(self.labels_combo)
        try:  # refresh whenever the store of the chosen labels layer changes (no polling)
            self._store = follow_store(self._store, layer, self.refresh_slices)
        except RuntimeError:  # the widget was deleted; the store outlives it
            return
        slices = self.corrected_slices()
        key = (self.labels_combo.currentText(), tuple(slices))
        if key != getattr(self, "_warn_key", None):  # checking the slices costs a little: only when they change
            self._warn_key, self._warnings = key, self.review_warnings(slices)
        text = describe_slices(slices)
        if slices:  # what the safety check will be able to measure (one slice: not much; say so before the run)
            from napari_medseg.training.safety import check_plan

            text += "\nCheck: " + check_plan(len(slices), self.scratch.isChecked())
        pending = store_for(layer).edited_unmarked() if layer is not None else []
        if pending:
            text += (f"\n{len(pending)} edited slice(s) not marked corrected (not used until marked in 'Correct "
                     f"labels'): " + ", ".join(f"{'zyx'[a]} {i}" for a, i in pending[:12]) + (" …" if len(pending) > 12 else ""))
        self.slices_label.setText(text)
        self.warn_label.setText("\n".join(f"⚠ {w}" for w in self._warnings))
        self.warn_label.setVisible(bool(self._warnings))

    def review_warnings(self, slices) -> list[str]:
        """Classes on ticked slices left exactly as the model had them, and stray labels (see `CorrectionStore`)."""
        layer = self._layer(self.labels_combo)
        if layer is None or not slices:
            return []
        try:
            return store_for(layer).review_warnings(slices, class_table(layer))
        except (IndexError, ValueError):  # the layer's shape changed under the record
            return []

    def config(self):
        """The `FinetuneConfig` from the controls (everything else keeps the shared defaults)."""
        return self.settings.config()

    # ============================================================== run
    def _start_clicked(self):
        self._guard(self.start, "fine-tune")

    def _inputs(self):
        image_layer, labels_layer = self._layer(self.image_combo), self._layer(self.labels_combo)
        if image_layer is None or labels_layer is None:
            raise InputError("choose an image layer and the labels layer you corrected")
        check_volume_layer(image_layer)
        if np.ndim(labels_layer.data) != 3:
            raise InputError(f"'{labels_layer.name}' is not a 3D labels layer")
        image, _ = volume_from_layer(image_layer)
        labels, _ = volume_from_layer(labels_layer)
        if not image.same_grid(labels, tol=1e-3):
            from napari_medseg.volume import grid_difference

            raise InputError(
                f"labels '{labels_layer.name}' are not on the grid of image '{image_layer.name}' "
                f"({grid_difference(labels, image)}); reorient or resample them with the 'Correct labels' widget first"
            )
        slices = self.corrected_slices()
        if not slices:
            raise InputError("no corrected slices: mark the slices you corrected in the 'Correct labels' widget")
        return image_layer, labels_layer, image, training_labels(labels, labels_layer.data, slices), slices

    def _check_classes(self, labels, slices, model):
        """Quick check that the model knows every class painted on the corrected slices."""
        if not self.scratch.isChecked():
            check_known_classes(labels.array, slices, model_class_values(model), model)

    def start(self):
        """Start fine-tuning in a worker (returns immediately)."""
        if self.panel.running:
            raise InputError("a fine-tuning run is already in progress; stop it first")
        image_layer, labels_layer, image, labels, slices = self._inputs()
        model = self.model_combo.currentText().strip() or "default"
        self._check_classes(labels, slices, model)
        config, scratch = self.config(), self.scratch.isChecked()
        name = self.settings.save_name()
        self._job_layers = (image_layer, labels_layer)
        self.plot.clear()
        self._warn_key = None
        self.refresh_slices()
        warn = "".join(f"\n⚠ {w}" for w in self._warnings)
        self.result_label.setText(f"fine-tuning on {len(slices)} corrected slice(s)…{warn}")
        if self._warnings:  # never into training unwarned: a notification too (the label may be scrolled away)
            from napari.utils.notifications import show_warning

            show_warning("Fine-tune: " + " ".join(self._warnings))
        self.start_button.setEnabled(False)
        allow = self.allow_class_change.isChecked()
        self._close_watcher.attach()
        others = self.check_images(image_layer)
        panel = self.panel
        return panel.start(
            lambda: finetune_job(image, labels, slices, None if scratch else model, scratch, config, name=name,
                                 allow_class_change=allow, cancel=panel.cancel_check(), check_images=others),
            on_done=self._on_done, on_error=self._on_error, on_cancelled=self._on_cancelled,
            on_progress=self._on_progress,
        )

    def check_images(self, image_layer, limit: int = 3) -> list:
        """The other 3D images open in the viewer (at most ``limit``): the new model must not lose a class on
        them either (see ``finetune(check_images=...)``)."""
        out = []
        for layer in layers_of(self.viewer, "Image"):
            if layer is image_layer or (layer.metadata or {}).get("medseg_kind") == "uncertainty" or layer.ndim != 3:
                continue
            if getattr(layer, "rgb", False) or getattr(layer, "multiscale", False):
                continue
            out.append((layer.name, volume_from_layer(layer)[0]))
            if len(out) >= limit:
                break
        return out

    def stop(self):
        self.panel.cancel()

    def _on_progress(self, p):
        step = getattr(p, "step", None)
        if step is not None and (getattr(p, "loss", None) is not None or getattr(p, "val_dice", None) is not None):
            self.plot.add(int(step), p.loss, p.val_dice, p.stage)

    def _on_cancelled(self):
        self.start_button.setEnabled(True)
        self.result_label.setText("stopped: nothing was saved and no layer was changed")

    def _on_error(self, exc):
        self.start_button.setEnabled(True)
        self.result_label.setText(f"fine-tuning failed: {exc}")
        notify_error(exc, "fine-tune")

    def _on_done(self, out):
        self.start_button.setEnabled(True)
        result, seg = out
        self.result, self.segmentation = result, seg
        self.plot._draw()
        image_layer, labels_layer = self._job_layers
        if seg is not None and image_layer.name in self.viewer.layers:
            tag = result.version or "new"
            name = unique_layer_name(self.viewer, f"{image_layer.name} labels ({result.name}@{tag})")
            image, _ = volume_from_layer(image_layer)
            data, kwargs, _ = labels_layer_data(seg.labels, name, classes=seg.classes, colors=seg.colors or None,
                                                source=volume_record(image))
            self.after_layer = self.viewer.add_labels(data, **kwargs)
            labels_layer.visible = True
        self.result_label.setText(self.describe_result(result))
        self.versions.show_result(result)
        notify_models_changed()

    @staticmethod
    def describe_result(result) -> str:
        """Plain words: decision and why, held-out slices, per-class Dice and volumes, time."""
        return result.summary()

    # ============================================================== viewer closing
    def _on_viewer_closing(self):
        if self.panel.running:
            self.panel.cancel()
            self.panel.wait(10000)
