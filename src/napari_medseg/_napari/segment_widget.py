"""The Segment dock widget: image layer + model + device + preset -> a Labels layer with class names.

Thin by design: its settings panel (`segment_settings`) gives an `InferenceConfig`, the chosen layer becomes
a `Volume`, `segment_job` runs the core pipeline in a thread worker (`ProgressPanel`) and the `LabelResult`
comes back as layers; the class table (`class_table`) then follows the labels layer. Re-running never
replaces a layer: results get a new unique name.
"""

from __future__ import annotations

import time

from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from napari_medseg._napari._worker import ProgressPanel, notify_error
from napari_medseg._napari.warm_up import warm_up_imports
from napari_medseg._napari.class_table import ClassTablePanel
from napari_medseg._napari.layer_turns import TurnQueue, add_layer_in_turns
from napari_medseg._napari.layers import check_volume_layer, unique_layer_name, volume_from_layer
from napari_medseg._napari.recent_models import config_dir, load_recent, remember_model  # noqa: F401 - re-exported
from napari_medseg._napari.segment_job import SegmentOutcome, build_layer, segment_job, stage_profile  # noqa: F401 - re-exported
from napari_medseg._napari.segment_settings import SegmentSettingsPanel
from napari_medseg.errors import InputError
from napari_medseg.inference.config import DEVICES, PRESETS  # noqa: F401 - re-exported


class SegmentWidget(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        from napari_medseg._napari.tracking import ensure_correction_stores

        ensure_correction_stores(napari_viewer)  # every labels layer gets its CorrectionStore from now on
        self.result = None
        self.result_layer = None
        self.uncertainty_layer = None
        self._source_layer = None
        self.settings_panel = s = SegmentSettingsPanel(napari_viewer)
        # the controls, by their names of old (tests, scripts and benchmarks drive them)
        self.image_combo, self.model_combo, self.browse_button = s.image_combo, s.model_combo, s.browse_button
        self.device_combo, self.preset_combo, self.uncertainty_check = s.device_combo, s.preset_combo, s.uncertainty_check
        self.channels = s.channels
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.panel = ProgressPanel()
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.class_table = ClassTablePanel(napari_viewer)
        self.turns = TurnQueue(self, self._on_turn_error)  # the result's layers, added turn by turn
        self.turns.done.connect(self._final_info)
        self.table, self.export_button = self.class_table.table, self.class_table.export_button
        from napari_medseg._napari.display import scroll_body

        layout = QVBoxLayout(scroll_body(self))  # scrolls when three docks share a 1080-pixel screen
        for w in (s, self.run_button, self.panel, self.info, self.class_table):
            layout.addWidget(w)
        layout.addStretch(1)
        from napari_medseg._napari.signals import CloseWatcher  # public Qt API, not napari's Window._qt_window

        self._close_watcher = CloseWatcher(self, self._on_viewer_closing)
        self.warm_up = warm_up_imports()

    # ------------------------------------------------------------------ controls (the settings panel's)
    @property
    def stats_rows(self) -> list[dict]:
        return self.class_table.rows

    def refresh_models(self, *_):
        """Re-read the installed models, keeping the current choice (also done when the dock is shown again)."""
        self.settings_panel.models.refresh()

    def add_model_path(self, path) -> None:
        self.settings_panel.add_model_path(path)

    def _open_zoo(self, index_url=None):
        return self.settings_panel.open_zoo(index_url=index_url)

    def set_image(self, name: str) -> None:
        self.settings_panel.set_image(name)

    def config(self):
        """The `InferenceConfig` the next run uses."""
        return self.settings_panel.config()

    # ------------------------------------------------------------------ run
    def run(self):
        """Start segmenting the chosen image layer (the Run button)."""
        if self.panel.running:
            return
        name = self.image_combo.currentText()
        try:
            if not name or name not in self.viewer.layers:
                raise InputError("no image layer chosen: open a volume first (File → Open, or a sample)")
            layer = self.viewer.layers[name]
            if self.channels.active:  # a multi-channel model: the chosen layer per channel, stacked
                volume, has_geometry = self.channels.volume(), True
                layer = self.viewer.layers[self.channels.combos[0].currentText()]
            else:
                check_volume_layer(layer)
                volume, has_geometry = volume_from_layer(layer)
            config, model = self.config(), self.settings_panel.model()
        except Exception as e:  # noqa: BLE001 - shown to the user
            self.info.setText(str(e))
            notify_error(e, "Segment")
            return
        if not has_geometry:
            from napari.utils.notifications import show_warning

            msg = f"'{name}' has no medical geometry (plain array): segmenting in voxel units (1 voxel = 1 mm)"
            show_warning(msg)
            self.info.setText(msg)
        else:
            self.info.setText("")
        self._source_layer = layer
        self._config = config
        self._t_run = time.perf_counter()
        self._set_busy(True)
        self.panel.start(lambda: segment_job(volume, model, config), on_done=self._on_done, on_error=self._on_error,
                         on_cancelled=self._on_cancelled)

    def cancel(self):
        self.panel.cancel()

    def _set_busy(self, busy: bool):
        self.run_button.setEnabled(not busy)
        self.settings_panel.set_busy(busy)

    def _on_cancelled(self):
        self._set_busy(False)
        self.info.setText("cancelled; the viewer was left as it was")

    def _on_error(self, exc):
        self._set_busy(False)
        self.info.setText(str(exc))
        notify_error(exc, "Segment")

    def _on_done(self, result):
        self._set_busy(False)
        try:
            self._show_result(result)
        except Exception as e:  # noqa: BLE001 - said in the info line and as a notification
            self._on_error(e)

    def _show_result(self, outcome: SegmentOutcome):
        """Add the result's layers. What the user sees first (the labels, their class table and the info line)
        comes in this turn; napari's remaining set-up (selection, editing overlays) and the uncertainty layer
        follow one per event-loop turn (`layer_turns`), so that no turn blocks the GUI for long."""
        source = self._source_layer
        result, classes = outcome.result, outcome.classes
        unknown = [row["value"] for row in outcome.stats if row["value"] not in classes and row["voxels"]]
        if unknown:
            from napari.utils.notifications import show_warning

            show_warning(f"the model produced label values {unknown} that its card does not name")
        if source.name not in self.viewer.layers:  # the image was removed during the run
            raise InputError(f"the image layer '{source.name}' was removed during the run; nothing was added")
        name = unique_layer_name(self.viewer, f"{source.name} labels")
        self.result = result
        t_show = time.perf_counter()
        layer = outcome.labels_layer if outcome.labels_layer is not None else build_layer(outcome.layer_data)
        layer.name = name
        self.result_layer = add_layer_in_turns(self.viewer, layer, self.turns)
        result.timings["show"] = time.perf_counter() - t_show
        self.class_table.track(self.result_layer, source, rows=outcome.stats)
        if outcome.uncertainty_data is not None:
            self.turns.push("uncertainty layer", lambda: self._add_uncertainty(outcome, source.name))
        self._info_final = f"added '{name}'"
        self.info.setText(f"{self._info_final} {stage_profile(result.timings, time.perf_counter() - self._t_run)}")

    def _final_info(self) -> None:
        """The info line once every layer is shown: the run's stages and the time from the click on Run."""
        if self.result is not None:
            self.info.setText(f"{self._info_final} {stage_profile(self.result.timings, time.perf_counter() - self._t_run)}")

    @property
    def showing(self) -> bool:
        """True while the result's layers are still being added (turn by turn, after the run has ended)."""
        return self.turns.busy

    def _add_uncertainty(self, outcome: SegmentOutcome, source_name: str):
        if source_name not in self.viewer.layers:  # the image (or the whole viewer) went away meanwhile
            return
        t = time.perf_counter()
        layer = outcome.uncertainty_layer if outcome.uncertainty_layer is not None else build_layer(outcome.uncertainty_data)
        layer.name = unique_layer_name(self.viewer, f"{source_name} uncertainty")
        # not selected: the labels stay the active layer (the one to correct next); the map's controls are
        # built when the user selects it
        self.uncertainty_layer = add_layer_in_turns(self.viewer, layer, self.turns, select=False)
        if self.result is not None:
            self.result.timings["show_uncertainty"] = time.perf_counter() - t

    def _on_turn_error(self, exc):  # e.g. the viewer closed in between: say so, never raise in a slot
        notify_error(exc, "Segment (showing the result)")

    def export_csv(self, path):
        """Write the class table (as shown: recomputed after corrections) as CSV."""
        return self.class_table.export_csv(path)

    # ------------------------------------------------------------------ viewer closing
    def _on_viewer_closing(self):
        turns = getattr(self, "turns", None)
        if turns is not None:
            turns.clear()
        panel = getattr(self, "panel", None)
        if panel is not None and panel.running:
            panel.cancel()
            panel.wait(5000)
