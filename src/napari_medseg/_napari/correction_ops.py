"""The operations panel of the Correction widget: one button per registered operation
(:mod:`napari_medseg.editing.operations`), its parameter controls, and running it as one undo step."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QGridLayout, QGroupBox, QLabel, QPushButton

from napari_medseg._napari.layers import volume_from_layer
from napari_medseg._napari.tracking import apply_edit, store_for
from napari_medseg.editing.operations import OPERATIONS, OpContext, get_operation
from napari_medseg.errors import InputError
from napari_medseg.progress import Progress

#: whole-volume operations on more voxels than this run in a worker thread
BACKGROUND_VOXELS = 4_000_000


class OperationsPanel(QGroupBox):
    """Buttons and parameters; ``host`` is the `CorrectionWidget` (layer, slice, status, progress panel)."""

    def __init__(self, host):
        super().__init__("Operations (undo with Ctrl+Z)")
        self.host = host
        grid = QGridLayout(self)
        self.buttons: dict[str, QPushButton] = {}
        self.controls: dict[str, object] = {}  # parameter name -> its control (shared by operations)
        for row, op in enumerate(OPERATIONS.values()):
            button = QPushButton(op.label)
            button.clicked.connect(lambda _=False, n=op.name: host.guard(lambda: self.run_operation(n),
                                                                         OPERATIONS[n].label))
            self.buttons[op.name] = button
            grid.addWidget(button, row, 0)
            for p in op.params[:1]:
                if p.name in self.controls:
                    grid.addWidget(QLabel("(same distance)" if p.name == "distance_mm" else "(same)"), row, 1)
                else:
                    self.controls[p.name] = self._control(p)
                    grid.addWidget(self.controls[p.name], row, 1)

    @staticmethod
    def _control(p):
        if p.kind == "bool":
            box = QCheckBox(p.label or p.name)
            box.setChecked(bool(p.default))
            return box
        if p.kind == "class":
            return QComboBox()
        s = QDoubleSpinBox()
        s.setRange(p.minimum, p.maximum)
        s.setDecimals(p.decimals)
        s.setValue(float(p.default))
        s.setSuffix(p.suffix)
        return s

    def set_classes(self, table: dict[int, str]) -> None:
        """Fill the class controls (e.g. the relabel target) with ``{value: name}``."""
        for c in self.controls.values():
            if isinstance(c, QComboBox):
                c.clear()
                for value, name in sorted(table.items()):
                    c.addItem(f"{value}: {name}", value)

    def add_class(self, value: int, name: str) -> None:
        for c in self.controls.values():
            if isinstance(c, QComboBox) and c.findData(value) < 0:
                c.addItem(f"{value}: {name}", value)

    def control_value(self, name: str):
        c = self.controls[name]
        if isinstance(c, QCheckBox):
            return c.isChecked()
        if isinstance(c, QComboBox):
            return c.currentData()
        return float(c.value())

    def set_enabled(self, enabled: bool) -> None:
        for b in self.buttons.values():
            b.setEnabled(enabled)

    # ------------------------------------------------------------------ running
    def run_operation(self, name: str, background: bool | None = None, **overrides) -> int | None:
        """Run one operation on the current class and scope; returns the number of voxels changed.

        ``overrides`` replace widget values: ``label``, ``scope`` ("slice"/"volume") and the parameters
        (``distance_mm``, ``min_volume_mm3``, ``target``, ``fill_3d``). Whole-volume operations on large volumes
        (``background=None`` and more than `BACKGROUND_VOXELS`) are computed in a worker so the viewer stays
        responsive; the edit is then applied on the GUI thread (as one undo step) and None is returned at once.
        """
        op = get_operation(name)
        host = self.host
        layer = host.require_layer()
        vol, has_geometry = volume_from_layer(layer)
        label = int(overrides.get("label", layer.selected_label))
        scope = overrides.get("scope", host.scope())
        axis, index = host.current_slice()
        values = {p.name: overrides.get(p.name, self.control_value(p.name)) for p in op.params}
        whole = scope == "volume" or op.whole_volume
        store = store_for(layer)
        painted = []
        if name == "interpolate":  # between the slices the user painted, not every slice holding the class
            painted = [i for i in store.painted_slices(axis) if np.any(np.take(np.asarray(layer.data), i, axis=axis) == label)]
        # whole-volume work runs on a snapshot (painting may go on meanwhile); slice work reads in place
        data = np.array(layer.data, copy=True) if whole else np.asarray(layer.data)
        ctx = OpContext(data, label, axis, index, scope, vol.spacing, painted)
        compute = op.prepare(ctx, values)
        if background is None:
            background = scope == "volume" and layer.data.size > BACKGROUND_VOXELS
        if not background:
            return self.apply(layer, compute(), axis, has_geometry, whole)
        panel = host.panel()
        if panel.running:
            raise InputError("another operation is still running; wait for it or cancel it")

        def steps():
            yield Progress(0, 1, op.label, "computing on the whole volume")
            return compute()

        self.set_enabled(False)

        def done(edit):
            self.set_enabled(True)
            host.guard(lambda: self.apply(layer, edit, axis, has_geometry, whole), op.label)

        def failed(exc):
            self.set_enabled(True)
            host.fail(op.label, exc)

        panel.start(steps, on_done=done, on_error=failed, on_cancelled=lambda: self.set_enabled(True))
        return None

    def apply(self, layer, edit, axis: int, has_geometry: bool, whole_volume: bool = False) -> int:
        host = self.host
        if layer not in host.viewer.layers:
            raise InputError(f"labels layer '{layer.name}' was removed; nothing was changed")
        if not edit.is_empty:
            current = np.asarray(layer.data[edit.bbox])
            if not np.array_equal(current, edit.before):  # painted meanwhile: keep the newer strokes
                keep = current == edit.before
                edit = type(edit)(edit.bbox, current.copy(), np.where(keep, edit.after, current), edit.description, edit.params)
        n = apply_edit(layer, edit, store_for(layer), axis, whole_volume=whole_volume)
        units = "" if has_geometry else " (no medical geometry: voxel units)"
        where = ""
        if whole_volume and n:
            where = f" on {len(edit.slices(axis))} slice(s) (logged, not listed as edited: review and mark the ones you check)"
        if edit.params.get("op") == "interpolate_slices":
            where += f"; between the painted slices {edit.params.get('key_slices')}"
        host.set_status(f"{edit.description}: {n} voxels changed{where}{units}")
        host.after_change()
        return n
