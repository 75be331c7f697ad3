"""The fine-tune widget's version buttons: activate the new version, or roll back to the previously active one."""

from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QPushButton, QWidget

from napari_medseg._napari.signals import notify_models_changed
from napari_medseg.errors import InputError


class VersionsPanel(QWidget):
    """``host`` is the `FinetuneWidget` (its ``result``, ``result_label`` and ``guard``)."""

    def __init__(self, host):
        super().__init__()
        self.host = host
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.activate_button = QPushButton("Activate new version")
        self.activate_button.clicked.connect(lambda: host.guard(self.activate_new, "activate"))
        self.rollback_button = QPushButton("Roll back")
        self.rollback_button.clicked.connect(lambda: host.guard(self.roll_back, "roll back"))
        for b in (self.activate_button, self.rollback_button):
            b.setEnabled(False)
            row.addWidget(b)

    def show_result(self, result) -> None:
        self.activate_button.setEnabled(result.version is not None and not result.activated)
        self.rollback_button.setEnabled(result.version is not None and result.activated)

    def activate_new(self):
        from napari_medseg.training import activate

        r = self.host.result
        if r is None or r.version is None:
            raise InputError("no new model version to activate")
        activate(r.name, r.version, reason="activated by the user in the Fine-tune widget")
        r.activated = True
        self.host.result_label.setText(f"{r.name}@{r.version} is now active (roll back with 'Roll back').")
        self.activate_button.setEnabled(False)
        self.rollback_button.setEnabled(True)
        notify_models_changed()
        return r.version

    def roll_back(self):
        """Make the previously *active* version active again (from the activation history; never a version
        that was not activated). The new package stays on disk."""
        from napari_medseg.training import active_version, versions

        r = self.host.result
        if r is None or r.version is None:
            raise InputError("nothing to roll back")
        if active_version(r.name) != r.version:
            raise InputError(f"{r.name}@{r.version} is not the active version ({r.name}@{active_version(r.name)} is): "
                             "nothing to roll back")
        target = versions.roll_back(r.name)
        r.activated = False
        self.host.result_label.setText(f"rolled back: {r.name}@{target} is active again ({r.version} is kept on disk)")
        self.rollback_button.setEnabled(False)
        self.activate_button.setEnabled(True)
        notify_models_changed()
        return target
