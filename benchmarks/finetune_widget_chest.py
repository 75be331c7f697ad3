"""The Fine-tune widget on the real chest CT, as a user runs it: optimiser steps, steps per minute, budget.

Opens the chest CT in a napari viewer (under Xvfb), segments it with the default model, erases the false
"liver" on axial slices through the heart, marks them corrected and clicks Start in the Fine-tune widget with
the given budget. Prints the wall time from the click to the result, the steps and steps/min the job reports
(the progress line the widget shows), CPU seconds and the load average. Runs in a temporary models home.

    xvfb-run -a python benchmarks/finetune_widget_chest.py [--budget 120] [--data ../shared/data/ct_chest_dicom]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _chest_walk import DATA, corrected_walk, cpu_seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA / "ct_chest_dicom"))
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--slices", default="30,36,46,56,80")
    args = ap.parse_args(argv)
    folder = Path(args.data)
    if not folder.is_dir():
        print(f"no {folder}: nothing to do")
        return 0
    os.environ["MEDSEG_HOME"] = tempfile.mkdtemp(prefix="medseg_bench_")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_medseg._napari.finetune_widget import FinetuneWidget
    from napari_medseg._napari.layers import image_layer_data, labels_layer_data
    from napari_medseg._napari.tracking import store_for

    ks = [int(k) for k in args.slices.split(",")]
    vol, start, lab = corrected_walk(folder, ks)
    viewer = napari.Viewer(show=False)
    data, kw, _ = image_layer_data(vol, name="chest")
    viewer.add_image(data, **kw)
    data, kw, _ = labels_layer_data(start.labels.with_array(lab), "chest labels", classes=start.classes, source=vol)
    layer = viewer.add_labels(data, **kw)
    store = store_for(layer)  # the layer's corrected-slice record (its metadata is only the saved form)
    for k in ks:
        store.mark(0, k)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._refresh_layers()
    widget.set_layers(viewer.layers["chest"], layer)
    widget.set_model("default")
    widget.budget.setValue(args.budget)
    widget.refresh_slices()
    seen = []
    outcome = []
    widget.panel.finished.connect(outcome.append)
    cpu0 = cpu_seconds()
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    run = widget.start()
    run.yielded.connect(lambda p: seen.append((time.perf_counter() - t, p)))
    while not outcome:
        QApplication.processEvents()
        time.sleep(0.02)
    wall = time.perf_counter() - t
    cpu = cpu_seconds() - cpu0
    res = widget.result
    print(widget.result_label.text())
    msgs = [p.message for _, p in seen if "steps/min" in getattr(p, "message", "")]
    print(f"last progress lines: {msgs[-3:]}")
    if res is not None:
        tm = res.timing
        print(f"widget: {wall:.1f} s from Start to the result for a {args.budget:.0f} s budget "
              f"({(wall / args.budget - 1) * 100:+.1f} %), {tm['steps']} steps, {tm.get('steps_per_min')} steps/min, "
              f"{cpu:.0f} CPU-s, load average {load0:.2f} -> {os.getloadavg()[0]:.2f}")
        print(f"  stages (s): {tm.get('stages_s')}; reserved (s): {tm.get('reserved_s')}")
    else:
        print(f"outcome {outcome}: {widget.result_label.text()}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
