"""Screenshots of the correction and fine-tune widgets in use (docs/images/correction_*.png, finetune_*.png).

Needs a display: run under Xvfb with a SHOWN viewer (offscreen/hidden viewers render black)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots_correction.py [--only sample|chest]

The chest CT shots use ../shared/data/ct_chest_dicom and are skipped when it is absent. On the sample,
fine-tuning trains a new model from scratch on the slices marked corrected (a short budget); on the chest CT it
fine-tunes the shipped default model after the user erased its false "liver" on the heart on three slices.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("MEDSEG_HOME", tempfile.mkdtemp(prefix="medseg-shots-"))  # never the user's models/sessions
HERE = Path(__file__).resolve().parent
OUT = HERE / "images"
DATA = HERE.parents[1] / "shared" / "data"


def wait(seconds: float = 0.5):
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def wait_for(panel, timeout_s: float = 900):
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout_s
    while panel.running and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.05)


def shoot(viewer, name: str):
    from PIL import Image

    wait(1.0)
    path = OUT / name
    img = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(img).convert("RGB").quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path} {path.stat().st_size // 1024} KB", flush=True)


def new_viewer(title):
    import napari

    viewer = napari.Viewer(title=title)
    viewer.window.show()
    viewer.window._qt_window.setGeometry(0, 0, 1560, 960)
    wait(0.5)
    return viewer


def docks(viewer):
    from napari_medseg._napari.correction_widget import CorrectionWidget
    from napari_medseg._napari.finetune_widget import FinetuneWidget

    corr = CorrectionWidget(viewer)
    fine = FinetuneWidget(viewer)
    DOCKS[id(viewer), "Correct labels"] = viewer.window.add_dock_widget(corr, name="Correct labels", area="right")
    DOCKS[id(viewer), "Fine-tune model"] = viewer.window.add_dock_widget(fine, name="Fine-tune model", area="right", tabify=True)
    return corr, fine


def finetune_run(viewer, corr, fine, image_layer, layer, steps, budget, scratch=True):
    fine._refresh_layers()
    fine.set_layers(image_layer, layer)
    fine.scratch.setChecked(scratch)
    fine.steps.setValue(steps)
    fine.budget.setValue(budget)
    fine.start()
    wait_for(fine.panel)
    print(fine.result_label.text(), flush=True)


def sample():
    from napari_medseg._napari.sample import abdomen_phantom_nifti

    viewer = new_viewer("napari-medseg: correcting the sample phantom")
    (img_data, img_kw, _), (lab_data, lab_kw, _) = abdomen_phantom_nifti()
    image_layer = viewer.add_image(img_data, **img_kw)
    lab_kw["name"] = "abdomen labels"
    labels = np.array(lab_data, copy=True)
    # a "model output" to correct: the liver is missing on slices 21-27 and has holes on slice 30
    labels[21:28][labels[21:28] == 1] = 0
    labels[30, 55:60, 30:36][labels[30, 55:60, 30:36] == 1] = 0
    layer = viewer.add_labels(labels, **lab_kw)
    corr, fine = docks(viewer)
    corr.set_labels_layer(layer)
    corr.set_class("liver")
    for k in (12, 20, 28, 36):
        corr.jump_to(0, k)
        corr.mark_current_slice()
    corr.jump_to(0, 30)
    corr.run_operation("fill_holes", scope="slice")
    corr.run_operation("interpolate")
    corr.jump_to(0, 24)
    layer.paint((24, 70, 34), 1)  # a brush stroke, as the user would
    corr.mark_current_slice()
    layer.mode = "paint"
    _raise_dock(viewer, "Correct labels")
    shoot(viewer, "correction_sample.png")
    # a new class from scratch: the user outlined the liver on 5 slices of an empty labels layer
    gt = np.asarray(lab_data)
    painted = np.zeros_like(gt)
    slices = (10, 17, 24, 31, 38)
    for k in slices:
        painted[k][gt[k] == 1] = 1
    kw = dict(lab_kw, name="liver (painted)", metadata={**lab_kw["metadata"], "classes": {0: "background", 1: "liver"}})
    kw.pop("features", None)
    liver = viewer.add_labels(painted, **kw)
    from napari_medseg._napari.tracking import store_for

    for k in slices:  # the slices the user outlined, marked corrected (the store; metadata is its saved form)
        store_for(liver).mark(0, k)
    layer.visible = False
    finetune_run(viewer, corr, fine, image_layer, liver, steps=400, budget=240)
    after = fine.after_layer
    if after is not None:
        others = [k for k in range(gt.shape[0]) if k not in slices]
        a, b = np.asarray(after.data)[others] == 1, gt[others] == 1
        print(f"liver Dice on the {len(others)} unpainted slices: {2 * (a & b).sum() / (a.sum() + b.sum()):.3f}")
    liver.visible = False
    _raise_dock(viewer, "Fine-tune model")
    shoot(viewer, "finetune_sample.png")
    viewer.close()


DOCKS: dict = {}


def _raise_dock(viewer, name):
    dock = DOCKS.get((id(viewer), name))
    if dock is not None:
        dock.show()
        dock.raise_()


def chest():
    from napari_medseg._napari.layers import image_layer_data, labels_layer_data
    from napari_medseg.inference import segment
    from napari_medseg.io import read_volume

    folder = DATA / "ct_chest_dicom"
    if not folder.is_dir():
        print("no ../shared/data/ct_chest_dicom: chest CT screenshots skipped")
        return
    vol = read_volume(folder)
    viewer = new_viewer("napari-medseg: correcting a chest CT")
    data, kw, _ = image_layer_data(vol, name="chest CT")
    image_layer = viewer.add_image(data, **kw)
    res = segment(vol, model="default", device="cpu")
    before = res.labels.array.copy()  # the layer shares the result's array and the user edits it
    data, kw, _ = labels_layer_data(res.labels, "chest CT labels", res.classes, res.colors, source=vol)
    layer = viewer.add_labels(data, **kw)
    corr, fine = docks(viewer)
    corr.set_labels_layer(layer)
    corr.set_class("liver")
    corr.scope_combo.setCurrentIndex(0)
    # the default model calls the lower heart "liver" (it rests on the liver dome): the user erases it on three
    # slices through the heart and marks two slices through the upper abdomen as checked and right
    for k in (36, 46, 56):
        corr.jump_to(0, k)
        sl = np.asarray(layer.data[k])
        erase = (sl == 1) | (sl == 5)
        if erase.any():
            layer.data_setitem((np.full(int(erase.sum()), k), *np.nonzero(erase)), 0)  # as the eraser does (undoable)
        corr.mark_current_slice()
    for k in (8, 20):
        corr.jump_to(0, k)
        corr.mark_current_slice()
    corr.jump_to(0, 46)
    layer.mode = "erase"
    _raise_dock(viewer, "Correct labels")
    shoot(viewer, "correction_chest.png")
    finetune_run(viewer, corr, fine, image_layer, layer, steps=300, budget=240, scratch=False)
    after = fine.after_layer
    if after is not None:
        a = np.asarray(after.data)
        ml = vol.voxel_volume_mm3 / 1000
        print(f"after fine-tuning: liver below k=30 {(a[:30] == 1).sum() * ml:.0f} mL, above {(a[30:] == 1).sum() * ml:.0f} mL "
              f"(model before: {(before[:30] == 1).sum() * ml:.0f} / {(before[30:] == 1).sum() * ml:.0f} mL)")
    layer.visible = False
    corr.jump_to(0, 40)
    _raise_dock(viewer, "Fine-tune model")
    shoot(viewer, "finetune_chest.png")
    viewer.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["sample", "chest"])
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "sample"):
        sample()
    if args.only in (None, "chest"):
        chest()
    return 0


if __name__ == "__main__":
    sys.exit(main())
