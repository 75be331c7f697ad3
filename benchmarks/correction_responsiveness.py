"""Longest GUI-thread gap while the correction widget runs whole-volume operations on the chest CT
(../shared/data/ct_chest_dicom, 141 x 512 x 512). A 10 ms QTimer heartbeat records the gaps between
ticks while each operation is computed in the background and applied as one undo step; then undo is
timed too. Prints a table; asserts nothing.

    xvfb-run -a nice python benchmarks/correction_responsiveness.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MEDSEG_HOME", tempfile.mkdtemp(prefix="medseg-bench-"))


def main():
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication
    from scipy import ndimage as ndi

    from napari_medseg._napari.correction_widget import CorrectionWidget
    from napari_medseg._napari.layers import image_layer_data, labels_layer_data
    from napari_medseg.io import read_volume

    data_dir = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct_chest_dicom"
    vol = read_volume(data_dir)
    body = ndi.binary_fill_holes(vol.array > -400, structure=np.ones((1, 3, 3), bool))
    lab = ((vol.array < -400) & body).astype(np.uint8)
    viewer = napari.Viewer()
    data, kw, _ = image_layer_data(vol, name="chest CT")
    viewer.add_image(data, **kw)
    data, kw, _ = labels_layer_data(vol.with_array(lab), "lungs", classes={0: "background", 1: "lung"}, source=vol)
    layer = viewer.add_labels(data, **kw)
    widget = CorrectionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_class("lung")
    widget.jump_to(0, 70)
    gaps: list[float] = []
    last = [time.perf_counter()]

    def beat():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(beat)
    timer.start()

    def pump(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            QApplication.processEvents()
            time.sleep(0.002)

    pump(1.0)
    print(f"{'operation (whole volume)':26s} {'wall s':>7s} {'longest GUI gap ms':>19s} {'undo ms':>8s}")
    for name, kwargs in [("fill_holes", {}), ("remove_islands", {"min_volume_mm3": 100}), ("keep_largest", {}),
                         ("dilate", {"distance_mm": 3.0}), ("erode", {"distance_mm": 3.0}), ("relabel", {"target": 0})]:
        before = layer.data.copy()
        gaps.clear()
        last[0] = t0 = time.perf_counter()
        widget.run_operation(name, background=True, scope="volume", **kwargs)
        while widget._progress.running:
            QApplication.processEvents()
            time.sleep(0.002)
        wall = time.perf_counter() - t0
        pump(0.3)
        worst = max(gaps) * 1000 if gaps else float("nan")
        t = time.perf_counter()
        layer.undo()
        undo_ms = (time.perf_counter() - t) * 1000
        assert np.array_equal(layer.data, before)
        print(f"{name:26s} {wall:7.2f} {worst:19.0f} {undo_ms:8.0f}", flush=True)
    timer.stop()
    viewer.close()


if __name__ == "__main__":
    main()
