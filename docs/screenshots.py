"""Regenerate the screenshots in docs/images/ (needs a display: run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots.py [--only NAME ...]

A *shown* viewer is required (hidden or offscreen viewers render black). Images are downscaled and
palette-quantised to stay small. The Segment screenshot uses the default model when it is installed,
otherwise a small random-weight model (the labels then look like noise; the caption says so).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
CHEST = ROOT.parent / "shared" / "data" / "ct_chest_dicom"
MAX_BYTES = 300_000


def settle(viewer, seconds: float = 0.6):
    from napari.qt import get_qapp

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        get_qapp().processEvents()
        time.sleep(0.02)


def save(viewer, name: str, canvas_only: bool = False, width: int = 1100):
    from PIL import Image

    settle(viewer)
    arr = viewer.screenshot(canvas_only=canvas_only, flash=False)
    img = Image.fromarray(np.asarray(arr)[..., :3])
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    path = OUT / f"{name}.png"
    for colors in (256, 128, 64):
        img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size < MAX_BYTES:
            break
    print(f"{path.relative_to(ROOT)}: {img.width}x{img.height}, {path.stat().st_size // 1024} KB")


def new_viewer():
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    return viewer


def phantom_views():
    viewer = new_viewer()
    viewer.open_sample("napari-medseg", "abdomen_phantom_nifti")
    image, labels = viewer.layers
    viewer.dims.set_point(0, float(np.mean(image.extent.world[:, 0])))
    viewer.reset_view()
    viewer.layers.selection = {labels}
    save(viewer, "phantom_2d")
    viewer.dims.ndisplay = 3
    image.rendering = "attenuated_mip"
    image.attenuation = 0.02
    image.contrast_limits = (-200, 400)
    image.opacity = 0.35
    labels.opacity = 0.9
    labels.blending = "translucent"
    viewer.camera.angles = (-20, 30, 130)
    viewer.camera.zoom = viewer.camera.zoom * 0.9
    save(viewer, "phantom_3d", canvas_only=True, width=800)
    viewer.close()


def chest_threshold_labels(volume):
    """Quick threshold labels for the chest CT (1 lung: air inside the body, 2 bone: > 250 HU)."""
    from scipy import ndimage as ndi

    hu = volume.array
    air = hu < -400
    comp, n = ndi.label(air)
    border = np.unique(np.concatenate([comp[:, 0].ravel(), comp[:, -1].ravel(), comp[:, :, 0].ravel(), comp[:, :, -1].ravel()]))
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    sizes[border] = 0
    sizes[0] = 0
    lungs = np.isin(comp, np.argsort(sizes)[::-1][:2])
    labels = np.zeros(hu.shape, np.uint8)
    labels[lungs] = 1
    labels[hu > 250] = 2
    return volume.with_array(labels, classes={1: "lung", 2: "bone"})


def chest_views():
    if not CHEST.is_dir():
        print(f"{CHEST} absent: chest CT screenshots skipped")
        return
    from napari_medseg._napari.layers import labels_layer_data, volume_from_layer

    viewer = new_viewer()
    viewer.open(str(CHEST), plugin="napari-medseg")
    image = viewer.layers[0]
    vol, _ = volume_from_layer(image)
    data, kwargs, _ = labels_layer_data(chest_threshold_labels(vol), f"{image.name} threshold labels",
                                        colors={1: (0.3, 0.6, 1.0, 1.0), 2: (1.0, 0.85, 0.4, 1.0)}, source=vol)
    labels = viewer.add_labels(data, **kwargs)
    labels.opacity = 0.35
    viewer.dims.set_point(0, float(np.mean(image.extent.world[:, 0])))
    viewer.reset_view()
    save(viewer, "chest_ct_2d")
    viewer.dims.ndisplay = 3
    image.rendering = "attenuated_mip"
    image.attenuation = 0.01
    image.contrast_limits = (-300, 1200)
    image.opacity = 0.5
    labels.opacity = 0.6
    labels.visible = True
    labels.colormap = type(labels.colormap)(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (0.3, 0.6, 1.0, 0.25),
                                                        2: (1.0, 0.85, 0.4, 1.0)}, background_value=0)
    viewer.camera.angles = (90, 20, -20)  # from the front (anterior), slightly turned
    save(viewer, "chest_ct_3d", canvas_only=True, width=800)
    viewer.close()


def _model(tmp: Path) -> tuple[str, bool]:
    from napari_medseg.errors import ModelError
    from napari_medseg.models import resolve_model

    try:
        return str(resolve_model("default")), True
    except ModelError:
        import torch

        from napari_medseg.classes import ABDOMEN_CLASSES
        from napari_medseg.models import ClassInfo, ModelCard, build_network, save_model_package

        card = ModelCard(name="random-demo", arch_args={"spatial_dims": 3, "channels": [8, 16], "strides": [2], "num_res_units": 0},
                         classes=[ClassInfo(v, n, c) for v, (n, c) in ABDOMEN_CLASSES.items()], roi_size=(64, 64, 32))
        torch.manual_seed(0)
        return str(save_model_package(build_network(card), card, tmp / "random_demo")), False


def _segment_and_shoot(viewer, image, name: str, slice_fraction: float = 0.5):
    from qtpy.QtCore import QEventLoop

    from napari_medseg._napari.segment_widget import SegmentWidget

    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment", area="right")
    model, real = _model(Path(tempfile.mkdtemp(prefix="medseg-shots-")))
    widget.add_model_path(model)
    widget.set_image(image.name)
    widget.device_combo.setCurrentText("cpu")
    loop = QEventLoop()
    widget.panel.finished.connect(lambda _: loop.quit())
    widget.run()
    loop.exec()
    lo, hi = image.extent.world[:, 0]
    viewer.dims.set_point(0, float(lo + slice_fraction * (hi - lo)))
    viewer.reset_view()
    save(viewer, name, width=1200)
    if not real:
        print(f"note: the default model is not installed; {name}.png shows a random-weight model")


def segment_widget_view():
    viewer = new_viewer()
    viewer.open_sample("napari-medseg", "abdomen_phantom_dicom")
    image = viewer.layers[0]
    viewer.layers.remove(viewer.layers[1])  # keep only the CT: the widget adds the model's labels
    _segment_and_shoot(viewer, image, "segment_widget")
    viewer.close()


def segment_chest_view():
    if not CHEST.is_dir():
        print(f"{CHEST} absent: chest CT Segment screenshot skipped")
        return
    viewer = new_viewer()
    viewer.open(str(CHEST), plugin="napari-medseg")
    # the lowest slices of this chest CT reach the liver and spleen domes
    _segment_and_shoot(viewer, viewer.layers[0], "segment_widget_chest", slice_fraction=0.12)
    viewer.close()


SCENES = {"phantom": phantom_views, "chest": chest_views, "segment": segment_widget_view, "segment_chest": segment_chest_view}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", choices=list(SCENES))
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.only or SCENES:
        SCENES[name]()


if __name__ == "__main__":
    main()
