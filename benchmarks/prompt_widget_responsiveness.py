"""Longest GUI-thread gap while the Prompt widget segments a lung of the full-resolution chest CT by clicks.

The chest CT (../shared/data/ct_chest_dicom, 141 x 512 x 512) is opened in a real viewer with an empty labels
layer and the Prompt widget (shipped prompt model). A simulated user clicks like `benchmarks/prompt_clicks.py`
(one click inside the lung, then up to 4 at the largest error region of a threshold reference,
`prompt_clicks._threshold_lungs`), waits for each preview, then presses Accept (as the button and Enter do) and undoes it. A 10 ms QTimer
heartbeat records the gaps between ticks; each phase prints its longest gap (goal: < 200 ms) and, with
`_gap_sampler`, what the GUI thread was doing in it. Asserts nothing.

    xvfb-run -a python benchmarks/prompt_widget_responsiveness.py [--organ lung_left] [--clicks 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MEDSEG_HOME", tempfile.mkdtemp(prefix="medseg-bench-"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CHEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct_chest_dicom"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--organ", default="lung_left", choices=["lung_left", "lung_right"])
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--input", type=Path, default=CHEST)
    ap.add_argument("--depth", type=int, default=7, help="frames shown of the call path inside each longest gap")
    args = ap.parse_args(argv)
    if not args.input.is_dir():
        print(f"# {args.input} not found: nothing to measure")
        return 0

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from _gap_sampler import GapSampler
    from napari_medseg._napari.layers import image_layer_data
    from napari_medseg._napari.prompt_widget import POINTS_NAME, PromptWidget
    from napari_medseg.io import read_volume
    from napari_medseg.prompt.simulate import dice, first_click, next_click
    from prompt_clicks import _threshold_lungs

    vol = read_volume(args.input)
    truth = _threshold_lungs(vol)[args.organ]
    viewer = napari.Viewer()
    data, kw, _ = image_layer_data(vol, name="chest CT")
    viewer.add_image(data, **kw)
    labels = viewer.add_labels(np.zeros(vol.spatial_shape, np.uint8), name="seg", scale=kw["scale"],
                               translate=kw["translate"])
    labels.selected_label = 1
    widget = PromptWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.labels_combo.setCurrentText("seg")
    widget.image_combo.setCurrentText("chest CT")

    gaps: list[tuple[float, float]] = []  # (gap s, end time)
    last = [time.perf_counter()]

    def beat():
        now = time.perf_counter()
        gaps.append((now - last[0], now))
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(beat)
    timer.start()
    sampler = GapSampler().start()

    def pump(seconds=None, until=None, limit=120.0):
        end = time.perf_counter() + (seconds if seconds is not None else limit)
        while time.perf_counter() < end and not (until is not None and until()):
            QApplication.processEvents()
            time.sleep(0.002)

    def report(name, since, extra=""):
        inside = [(g, t) for g, t in gaps if t >= since]
        g, t = max(inside) if inside else (float("nan"), since)
        why = sampler.explain(t - g, t, depth=args.depth) if inside else ""
        print(f"{name:28s} longest GUI gap {g * 1000:6.0f} ms  {extra}\n    in it: {why}", flush=True)
        return g

    def mark():
        """Start a phase: the simulated user's own work on this thread before it is not a GUI gap."""
        last[0] = time.perf_counter()
        return last[0]

    worst = []
    t0 = mark()
    pump(until=lambda: not widget.warm_up.is_alive())  # the user picks the layers meanwhile
    worst.append(report("widget open: warm-up", t0, f"warm-up (imports, model read, a throw-away click) "
                                                     f"{time.perf_counter() - t0:.2f} s"))
    pump(0.5)
    mask, point, positive = None, first_click(truth), True
    t0 = mark()
    viewer.dims.set_current_step(0, int(point[0]))
    widget.start()
    pump(0.3)
    worst.append(report("start (points layer)", t0))
    for n in range(args.clicks):
        before = widget.runs
        t0 = mark()
        widget.negative.setChecked(not positive)
        widget._layers["points"].add(np.asarray(point, float))
        pump(until=lambda: widget.runs > before and not widget._progress.running and not widget._pending)
        wall = time.perf_counter() - t0
        pump(0.3)  # the preview is drawn
        mask = widget._result.array > 0
        worst.append(report(f"click {n + 1} ({'+' if positive else '-'})", t0,
                            f"click to preview {wall:5.2f} s, model {widget.last_seconds} s, Dice {dice(mask, truth):.3f}"))
        nxt = next_click(truth, mask)
        if nxt is None:
            break
        point, positive = nxt
    t0 = mark()
    widget.accept_button.click()  # as Enter: the voxels that change are found in the worker
    pump(until=lambda: widget.accepted == 1)
    wall = time.perf_counter() - t0
    pump(0.5)
    worst.append(report("accept (button)", t0, f"{int((labels.data > 0).sum())} voxels written in {wall:.2f} s"))
    t0 = mark()
    labels.undo()
    pump(0.5)
    worst.append(report("undo", t0, f"labels empty again: {not labels.data.any()}"))
    assert not viewer.layers[POINTS_NAME].visible  # parked for the next session, not removed
    timer.stop()
    sampler.stop()
    print(f"# {vol.spatial_shape} voxels; longest GUI gap over all phases {max(worst) * 1000:.0f} ms; "
          f"load average {os.getloadavg()}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
