"""The fine-tune widget's training settings: from scratch, freeze, class changes, name, steps, budget, rate."""

from __future__ import annotations

import dataclasses

from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox, QWidget

from napari_medseg.errors import InputError


class TrainingSettings(QWidget):
    """Controls -> `FinetuneConfig` (`config`) and the name to save the new version as (`save_name`)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        from napari_medseg.training import FinetuneConfig

        defaults = FinetuneConfig().train
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
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

    def config(self):
        """The `FinetuneConfig` from the controls (everything else keeps the shared defaults)."""
        from napari_medseg.training import FinetuneConfig

        base = FinetuneConfig()
        train = dataclasses.replace(base.train, steps=int(self.steps.value()), time_budget_s=float(self.budget.value()),
                                    lr=float(self.lr.value()), freeze_encoder=self.freeze.isChecked())
        return dataclasses.replace(base, train=train, scratch_lr=float(self.lr.value()) if self.scratch.isChecked() else base.scratch_lr)

    def save_name(self) -> str | None:
        name = self.name_edit.text().strip() or None
        if name is not None and (name in (".", "..") or any(c in name for c in '/\\:@')):
            raise InputError(f"model name {name!r} must not contain / \\ : or @")
        return name
