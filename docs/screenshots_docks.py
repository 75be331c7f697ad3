"""The three napari-medseg docks together on a 1920 x 1080 screen (issue 18): screenshots and a reachability check.

    xvfb-run -a -s "-screen 0 1920x1080x24" python docs/screenshots_docks.py [--budget 40]

Opens the sample phantom in a shown viewer filling the screen, docks Segment, Correct labels and Fine-tune model
on the right (stacked, not tabbed), paints and marks a few slices, runs a short fine-tune (a new model from
the built-in default model) and saves ``docs/images/docks_1080p.png`` plus one shot per dock
scrolled to its end (``docks_1080p_scrolled.png``: Correct labels and Fine-tune scrolled to their ends). Prints each dock's height, its content's height and
whether every button lies inside the dock's scroll area (reachable by scrolling).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MEDSEG_HOME", tempfile.mkdtemp(prefix="medseg-shots-"))  # never the user's models/sessions
OUT = Path(__file__).resolve().parent / "images"


def wait(seconds=0.5):
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def shoot(viewer, name):
    from PIL import Image

    wait(1.0)
    path = OUT / name
    img = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(img).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path.name}: {img.shape[1]}x{img.shape[0]}, {path.stat().st_size // 1024} KB", flush=True)


def reachable(widget) -> tuple[int, int, bool]:
    """(dock content height shown, content height, every button inside the scroll area)."""
    from qtpy.QtWidgets import QAbstractButton

    area = widget.scroll_area
    body = area.widget()
    buttons = body.findChildren(QAbstractButton)
    inside = all(body.isAncestorOf(b) for b in buttons)
    return area.viewport().height(), body.sizeHint().height(), inside and bool(buttons)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=60.0, help="fine-tune time budget (whole job), s")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    import napari

    from napari_medseg._napari.correction_widget import CorrectionWidget
    from napari_medseg._napari.finetune_widget import FinetuneWidget
    from napari_medseg._napari.sample import abdomen_phantom_nifti
    from napari_medseg._napari.segment_widget import SegmentWidget

    viewer = napari.Viewer(title="napari-medseg: three docks on 1920 x 1080")
    viewer.window.show()
    viewer.window.set_geometry(0, 0, 1920, 1080)
    (img_data, img_kw, _), (lab_data, lab_kw, _) = abdomen_phantom_nifti()
    image_layer = viewer.add_image(img_data, **img_kw)
    lab_kw["name"] = "abdomen labels"
    layer = viewer.add_labels(np.array(lab_data, copy=True), **lab_kw)
    seg, corr, fine = SegmentWidget(viewer), CorrectionWidget(viewer), FinetuneWidget(viewer)
    docks = {}
    for name, w in (("Segment", seg), ("Correct labels", corr), ("Fine-tune model", fine)):
        docks[name] = viewer.window.add_dock_widget(w, name=name, area="right")
    wait(1.0)
    corr.set_labels_layer(layer)
    corr.set_class("liver")
    for k in (18, 24, 30, 36):
        corr.jump_to(0, k)
        layer.paint((k, 60, 40), 1)  # painting liver on liver: the ticked slices are the truth here
        corr.mark_current_slice()
    corr.jump_to(0, 30)
    fine._refresh_layers()
    fine.set_layers(image_layer, layer)
    fine.scratch.setChecked(False)
    fine.set_model("default")
    fine.steps.setValue(100000)
    fine.budget.setValue(args.budget)
    t = time.perf_counter()
    fine.start()
    while fine.panel.running:
        wait(0.2)
    print(f"fine-tune job: {time.perf_counter() - t:.1f} s wall for a {args.budget:.0f} s budget")
    print(fine.result_label.text())
    qt_window = fine.window()
    print(f"main window {qt_window.width()} x {qt_window.height()}")
    for name, w in (("Segment", seg), ("Correct labels", corr), ("Fine-tune model", fine)):
        shown, content, ok = reachable(w)
        print(f"{name:<16} dock {docks[name].height():4d} px, shows {shown:4d} of {content:4d} px of content; "
              f"every button in its scroll area: {ok}")
    shoot(viewer, "docks_1080p.png")
    for name, w in (("Correct labels", corr), ("Fine-tune model", fine)):
        wait(0.5)
        bar = w.scroll_area.verticalScrollBar()
        bar.setValue(bar.maximum())
    shoot(viewer, "docks_1080p_scrolled.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
