"""Fine-tune widget: learn from the slices the user corrected, then re-segment and compare.

Reads the corrected slices of the chosen labels layer (``layer.metadata["medseg_corrected_slices"]``,
maintained by the correction widget), runs `napari_medseg.training.finetune_steps` followed by a
re-segmentation with the new model in a worker (`ProgressPanel`), plots the loss and the held-out Dice
live, and adds the new segmentation as a NEW labels layer (the user's edited layer is never touched).
The result shows the held-out Dice before/after and whether the new version was activated, with buttons
to activate it or roll back.
"""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_medseg._napari._worker import ProgressPanel, notify_error, warm_up_imports
from napari_medseg._napari.display import scroll_body
from napari_medseg._napari.signals import CloseWatcher, models_changed, notify_models_changed
from napari_medseg._napari.layers import (
    check_volume_layer,
    labels_layer_data,
    unique_layer_name,
    volume_from_layer,
    volume_record,
)
from napari_medseg.errors import InputError, MedsegError
from napari_medseg.progress import Progress
from napari_medseg.session import CorrectionRecord

AXIS_NAMES = {0: "z", 1: "y", 2: "x"}


def finetune_job(image, labels, slices, model, from_scratch: bool, config, resegment: bool = True, name=None,
                 allow_class_change: bool = False):
    """Step generator run by the widget: fine-tune and re-segment the image with the new model.

    The new model's whole-image segmentation is part of the fine-tune (its class check, inside the time
    budget) and is reused as the re-segmentation, so the image is not segmented twice.
    """
    from napari_medseg.inference import segment_steps
    from napari_medseg.training import finetune_steps

    result = yield from finetune_steps(image, labels, slices, model=model, from_scratch=from_scratch, config=config,
                                       name=name, allow_class_change=allow_class_change, resegment=resegment)
    seg = result.segmentation if resegment else None
    if resegment and seg is None:
        yield Progress(0, 1, "re-segment", "segmenting the volume with the new model")
        seg = yield from segment_steps(image, model=str(result.model_path))
    return result, seg


def training_labels(labels_vol, data, slices):
    """A snapshot of the labels keeping only the corrected slices (0 elsewhere).

    Training only sees the corrected slices' voxels anyway; dropping the rest means stale model output or
    classes painted elsewhere (e.g. a class the model does not know, outside the corrected slices)
    cannot get in the way, and painting can go on while the worker runs.
    """
    data = np.asarray(data)
    out = np.zeros_like(data)
    for axis, index in slices:
        sl = [slice(None)] * data.ndim
        sl[axis] = index
        out[tuple(sl)] = data[tuple(sl)]
    return labels_vol.with_array(out)


def describe_slices(slices) -> str:
    if not slices:
        return "no corrected slices yet: mark slices as corrected in the 'Correct labels' widget"
    by_axis: dict[int, list[int]] = {}
    for a, i in slices:
        by_axis.setdefault(int(a), []).append(int(i))
    parts = [f"{AXIS_NAMES.get(a, a)}: {', '.join(map(str, sorted(v)))}" for a, v in sorted(by_axis.items())]
    return f"{len(slices)} corrected slice(s) — " + "; ".join(parts)


class LossPlot(QWidget):
    """Live loss (left axis) and held-out Dice (right axis) against the training step."""

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.dice: list[tuple[int, float]] = []
        self._stage, self._offset = None, 0
        self._last_draw = 0.0
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:  # plotting is optional: fall back to a text line
            self.canvas = None
            self.text = QLabel("")
            layout.addWidget(self.text)
            return
        fig = Figure(figsize=(3.6, 2.2), dpi=90, tight_layout=True)
        self.ax = fig.add_subplot(111)
        self.ax2 = self.ax.twinx()
        self.canvas = FigureCanvasQTAgg(fig)
        self.canvas.setMinimumHeight(170)
        layout.addWidget(self.canvas)
        self._draw()

    def clear(self):
        self.steps, self.losses, self.dice = [], [], []
        self._stage, self._offset = None, 0
        self._draw()

    def add(self, step: int, loss, val_dice, stage: str = "") -> None:
        if stage != self._stage:  # a new stage (cross-validation fold, final run) continues the x axis
            self._stage, self._offset = stage, (self.steps[-1] + 1 if self.steps else 0)
        x = int(step) + self._offset
        if loss is not None:
            self.steps.append(x)
            self.losses.append(float(loss))
        if val_dice is not None:
            self.dice.append((x, float(val_dice)))
        if time.monotonic() - self._last_draw > 0.5:
            self._draw()

    def _draw(self):
        self._last_draw = time.monotonic()
        if self.canvas is None:
            last = f"loss {self.losses[-1]:.3f}" if self.losses else ""
            dice = f", held-out Dice {self.dice[-1][1]:.3f}" if self.dice else ""
            self.text.setText(last + dice)
            return
        ax, ax2 = self.ax, self.ax2
        ax.clear()
        ax2.clear()
        ax.plot(self.steps, self.losses, color="tab:blue", lw=1)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", color="tab:blue", fontsize=8)
        if self.dice:
            s, d = zip(*self.dice)
            ax2.plot(s, d, "o-", color="tab:orange", ms=3, lw=1)
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("held-out Dice", color="tab:orange", fontsize=8)
        ax2.yaxis.set_label_position("right")
        for a in (ax, ax2):
            a.tick_params(labelsize=7)
        self.canvas.draw_idle()


class FinetuneWidget(QWidget):
    """Dock widget "Fine-tune model" (see the module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__()
        from napari_medseg.training import FinetuneConfig

        self.viewer = napari_viewer
        self.result = None
        self.segmentation = None
        self.after_layer = None
        self.warm_up = warm_up_imports()  # torch and napari's first-layer costs, off the GUI thread
        self._job_layers = None
        defaults = FinetuneConfig().train
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
        self.scratch = QCheckBox("train a new model from scratch (new classes)")
        self.freeze = QCheckBox("freeze the encoder")
        self.allow_class_change = QCheckBox("allow class changes elsewhere in the image")
        self.allow_class_change.setToolTip(
            "Normally a new version is not activated when a class the current model finds outside your corrected "
            "slices vanishes, shrinks by more than half or doubles. Tick this if you expect such a change.")
        form.addRow(self.scratch)
        form.addRow(self.freeze)
        form.addRow(self.allow_class_change)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("same as the parent ('custom' from scratch)")
        form.addRow("Save as", self.name_edit)
        self.steps = QSpinBox()
        self.steps.setRange(1, 100000)
        self.steps.setValue(defaults.steps)
        self.budget = QDoubleSpinBox()
        self.budget.setRange(1, 36000)
        self.budget.setDecimals(0)
        self.budget.setSuffix(" s")
        self.budget.setValue(defaults.time_budget_s or 120)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(defaults.lr)
        self.budget.setToolTip("Bounds the whole job: segmenting the image with the current and the new model, "
                               "training with its checks, and saving.")
        form.addRow("Max steps", self.steps)
        form.addRow("Time budget (whole job)", self.budget)
        form.addRow("Learning rate", self.lr)
        layout.addLayout(form)
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
        row2 = QHBoxLayout()
        self.activate_button = QPushButton("Activate new version")
        self.activate_button.clicked.connect(lambda: self._guard(self.activate_new, "activate"))
        self.rollback_button = QPushButton("Roll back")
        self.rollback_button.clicked.connect(lambda: self._guard(self.roll_back, "roll back"))
        for b in (self.activate_button, self.rollback_button):
            b.setEnabled(False)
            row2.addWidget(b)
        layout.addLayout(row2)
        layout.addStretch(1)
        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)
        self._fill_models()
        models_changed().changed.connect(self.refresh_models)
        self._refresh_layers()
        self._close_watcher = CloseWatcher(self, self._on_viewer_closing)
        # the correction widget marks slices in layer metadata (no event): re-read it every second
        from qtpy.QtCore import QTimer

        self._slice_timer = QTimer(self)
        self._slice_timer.setInterval(1000)
        self._slice_timer.timeout.connect(self.refresh_slices)
        self._slice_timer.start()

    # ============================================================== controls
    def _guard(self, fn, what):
        try:
            return fn()
        except MedsegError as e:
            self.result_label.setText(f"{what} failed: {e}")
            notify_error(e, what)
        return None

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
        try:
            current = self.model_combo.currentText()
            self._fill_models()
        except RuntimeError:  # the widget is being deleted
            return
        if current:
            self.set_model(current)

    def showEvent(self, event):  # noqa: N802 - Qt override
        self.refresh_models()
        super().showEvent(event)

    def _browse_model(self):
        path = QFileDialog.getExistingDirectory(self, "Model package or MONAI bundle folder")
        if path:
            self.set_model(path)

    def set_model(self, spec: str) -> None:
        if self.model_combo.findText(str(spec)) < 0:
            self.model_combo.addItem(str(spec))
        self.model_combo.setCurrentText(str(spec))

    def _layers_of(self, kind):
        return [l for l in self.viewer.layers if l.__class__.__name__ == kind]

    def _refresh_layers(self, *_):
        for combo, kind in ((self.image_combo, "Image"), (self.labels_combo, "Labels")):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            for l in self._layers_of(kind):
                if kind == "Image" and (l.metadata or {}).get("medseg_kind") == "uncertainty":
                    continue
                combo.addItem(l.name)
            if current and combo.findText(current) >= 0:
                combo.setCurrentText(current)
            elif kind == "Labels":  # prefer a layer with corrected slices
                for l in self._layers_of("Labels"):
                    if CorrectionRecord.from_metadata(l.metadata).corrected:
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
        if layer is None:
            return []
        try:
            return sorted(CorrectionRecord.from_metadata(layer.metadata).corrected)
        except MedsegError:
            return []

    def refresh_slices(self, *_):
        slices = self.corrected_slices()
        key = (self.labels_combo.currentText(), tuple(slices))
        if key != getattr(self, "_warn_key", None):  # checking the slices costs a little: only when they change
            self._warn_key, self._warnings = key, self.review_warnings(slices)
        self.slices_label.setText(describe_slices(slices))
        self.warn_label.setText("\n".join(f"⚠ {w}" for w in self._warnings))
        self.warn_label.setVisible(bool(self._warnings))

    def review_warnings(self, slices) -> list[str]:
        """Classes on ticked slices left exactly as the model had them, and stray labels (see SliceTracker)."""
        from napari_medseg._napari.correction_widget import class_table
        from napari_medseg._napari.tracking import tracker_for

        layer = self._layer(self.labels_combo)
        tracker = tracker_for(layer) if layer is not None else None
        if tracker is None or not slices:
            return []
        try:
            return tracker.review_warnings(slices, class_table(layer))
        except (IndexError, ValueError):  # the layer's shape changed under the record
            return []

    def config(self):
        """The `FinetuneConfig` from the controls (everything else keeps the shared defaults)."""
        import dataclasses

        from napari_medseg.training import FinetuneConfig

        base = FinetuneConfig()
        train = dataclasses.replace(base.train, steps=int(self.steps.value()), time_budget_s=float(self.budget.value()),
                                    lr=float(self.lr.value()), freeze_encoder=self.freeze.isChecked())
        return dataclasses.replace(base, train=train, scratch_lr=float(self.lr.value()) if self.scratch.isChecked() else base.scratch_lr)

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
        if self.scratch.isChecked():
            return
        from napari_medseg.models.package import read_card
        from napari_medseg.models.registry import resolve_model

        card = read_card(resolve_model(model))
        known = {int(c.value) for c in card.classes} | {0}
        present = set()
        for a, i in slices:
            present |= {int(v) for v in np.unique(np.take(labels.array, i, axis=a))}
        unknown = sorted(present - known)
        if unknown:
            raise InputError(
                f"the corrected slices hold label values {unknown} that model '{model}' does not know "
                f"({sorted(known - {0})}); tick 'train a new model from scratch' to learn new classes"
            )

    def start(self):
        """Start fine-tuning in a worker (returns immediately)."""
        if self.panel.running:
            raise InputError("a fine-tuning run is already in progress; stop it first")
        image_layer, labels_layer, image, labels, slices = self._inputs()
        model = self.model_combo.currentText().strip() or "default"
        self._check_classes(labels, slices, model)
        config, scratch = self.config(), self.scratch.isChecked()
        name = self.name_edit.text().strip() or None
        if name is not None and (name in (".", "..") or any(c in name for c in '/\\:@')):
            raise InputError(f"model name {name!r} must not contain / \\ : or @")
        self._job_layers = (image_layer, labels_layer)
        self.plot.clear()
        self._warn_key = None
        self.refresh_slices()
        warn = "".join(f"\n⚠ {w}" for w in self._warnings)
        self.result_label.setText(f"fine-tuning on {len(slices)} corrected slice(s)…{warn}")
        self.start_button.setEnabled(False)
        allow = self.allow_class_change.isChecked()
        self._close_watcher.attach()
        worker = self.panel.start(
            lambda: finetune_job(image, labels, slices, None if scratch else model, scratch, config, name=name,
                                 allow_class_change=allow),
            on_done=self._on_done, on_error=self._on_error, on_cancelled=self._on_cancelled,
        )
        if worker is not None and worker != "sync":
            worker.yielded.connect(self._on_progress)
        return worker

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
        self.activate_button.setEnabled(result.version is not None and not result.activated)
        self.rollback_button.setEnabled(result.version is not None and result.activated)
        notify_models_changed()

    @staticmethod
    def describe_result(result) -> str:
        """Plain words: decision and why, held-out slices, per-class Dice and volumes, time."""
        return result.summary()

    # ============================================================== versions
    def activate_new(self):
        from napari_medseg.training import activate

        r = self.result
        if r is None or r.version is None:
            raise InputError("no new model version to activate")
        activate(r.name, r.version, reason="activated by the user in the Fine-tune widget")
        r.activated = True
        self.result_label.setText(f"{r.name}@{r.version} is now active (roll back with 'Roll back').")
        self.activate_button.setEnabled(False)
        self.rollback_button.setEnabled(True)
        notify_models_changed()
        return r.version

    def roll_back(self):
        """Make the previously *active* version active again (from the activation history; never a version
        that was not activated). The new package stays on disk."""
        from napari_medseg.training import active_version, versions

        r = self.result
        if r is None or r.version is None:
            raise InputError("nothing to roll back")
        if active_version(r.name) != r.version:
            raise InputError(f"{r.name}@{r.version} is not the active version ({r.name}@{active_version(r.name)} is): "
                             "nothing to roll back")
        target = versions.roll_back(r.name)
        r.activated = False
        self.result_label.setText(f"rolled back: {r.name}@{target} is active again ({r.version} is kept on disk)")
        self.rollback_button.setEnabled(False)
        self.activate_button.setEnabled(True)
        notify_models_changed()
        return target

    # ============================================================== viewer closing
    def _on_viewer_closing(self):
        if self.panel.running:
            self.panel.cancel()
            self.panel.wait(10000)
