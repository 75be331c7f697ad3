""""Get from MONAI Model Zoo…": list the zoo's 3D segmentation bundles and download one (in a worker).

The list comes from `napari_medseg.models.zoo.list_zoo_bundles` and the download runs `pull_steps` through a
`ProgressPanel` (progress in bytes, Cancel removes the partial file). On success ``on_pulled(name, version)`` is
called, so the Segment widget can refresh and select ``name@version``.
"""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QDialog, QHBoxLayout, QLabel, QListWidget, QPushButton, QVBoxLayout

from napari_medseg._napari._worker import ProgressPanel, notify_error


class ZooDialog(QDialog):
    def __init__(self, parent=None, on_pulled=None, index_url=None):
        super().__init__(parent)
        self.setWindowTitle("Get from MONAI Model Zoo")
        self.on_pulled, self.index_url = on_pulled, index_url
        self.rows: list[dict] = []
        self.pulled = None
        self.list = QListWidget()
        self.version_combo = QComboBox()
        self.refresh_button = QPushButton("Refresh list")
        self.get_button = QPushButton("Download")
        self.get_button.setEnabled(False)
        self.info = QLabel("3D segmentation bundles of the MONAI Model Zoo; downloads are checked against the "
                           "zoo's published checksum and stored in the models home.")
        self.info.setWordWrap(True)
        self.panel = ProgressPanel()
        row = QHBoxLayout()
        row.addWidget(QLabel("version"))
        row.addWidget(self.version_combo, 1)
        row.addWidget(self.get_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.info)
        layout.addWidget(self.list, 1)
        layout.addLayout(row)
        layout.addWidget(self.refresh_button)
        layout.addWidget(self.panel)
        self.list.currentRowChanged.connect(self._select)
        self.refresh_button.clicked.connect(self.refresh)
        self.get_button.clicked.connect(self.download)

    def refresh(self) -> None:
        """Read the zoo's index (in a worker: it is a network request)."""
        from napari_medseg.models.zoo import list_zoo_bundles
        from napari_medseg.progress import Progress

        def steps():
            yield Progress(0, 0, "index", "reading the MONAI Model Zoo index")
            return list_zoo_bundles(self.index_url)

        self._busy(True)
        self.panel.start(steps, on_done=self._listed, on_error=self._failed, on_cancelled=lambda: self._busy(False))

    def _listed(self, rows) -> None:
        self.rows = list(rows)
        self.list.clear()
        self.list.addItems([r["name"] for r in self.rows])
        self.panel.status.setText(f"{len(self.rows)} bundles")
        self._busy(False)
        if self.rows:
            self.list.setCurrentRow(0)

    def _select(self, i: int) -> None:
        self.version_combo.clear()
        if 0 <= i < len(self.rows):
            self.version_combo.addItems(list(reversed(self.rows[i]["versions"])))  # the latest first
        self.get_button.setEnabled(0 <= i < len(self.rows) and not self.panel.running)

    def select(self, name: str, version: str | None = None) -> None:
        names = [r["name"] for r in self.rows]
        self.list.setCurrentRow(names.index(name))
        if version:
            self.version_combo.setCurrentText(version)

    def download(self) -> None:
        from napari_medseg.models.zoo import pull_steps

        i = self.list.currentRow()
        if not 0 <= i < len(self.rows):
            return
        name, version = self.rows[i]["name"], self.version_combo.currentText() or None
        self._busy(True)
        self.panel.start(lambda: pull_steps(name, version, self.index_url),
                         on_done=lambda path: self._pulled(name, version, path), on_error=self._failed,
                         on_cancelled=lambda: self._busy(False))

    def _pulled(self, name, version, path) -> None:
        self._busy(False)
        self.pulled = path
        self.panel.status.setText(f"{name} {version} stored in {path}")
        if self.on_pulled is not None:
            self.on_pulled(name, path.stem)

    def _failed(self, exc) -> None:
        self._busy(False)
        self.panel.status.setText(str(exc))
        notify_error(exc, "MONAI Model Zoo")

    def _busy(self, busy: bool) -> None:
        for w in (self.list, self.version_combo, self.refresh_button):
            w.setEnabled(not busy)
        self.get_button.setEnabled(not busy and self.list.currentRow() >= 0)
