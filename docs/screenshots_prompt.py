"""Screenshots of the Prompt widget (docs/images/prompt_*.png): clicks on the spleen and the liver of the
labelled abdomen CT (held out of the prompt model's training), the live preview, and the accepted result in 3D.

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots_prompt.py

Uses ../shared/data/ct_abdomen_3mm (the sample phantom when it is absent). The clicks are the simulated user's
of benchmarks/prompt_clicks.py (first click deep inside, then the centre of the largest error).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("MEDSEG_HOME", tempfile.mkdtemp(prefix="medseg-shots-"))
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from screenshots_correction import new_viewer, shoot, wait  # noqa: E402

DATA = next((p for p in (HERE.parents[1] / "shared/data", HERE.parents[2] / "shared/data", Path("/work/shared/data"))
             if p.is_dir()), HERE.parents[1] / "shared/data")


def wait_runs(widget, n, timeout=300):
    import time

    end = time.monotonic() + timeout
    while (widget.runs <= n or widget._progress.running or widget._pending) and time.monotonic() < end:
        wait(0.1)


def main():
    from napari_medseg._napari.layers import image_layer_data
    from napari_medseg._napari.prompt_widget import PromptWidget
    from napari_medseg.io import read_volume
    from napari_medseg.prompt.simulate import first_click, next_click

    ct = DATA / "ct_abdomen_3mm"
    if ct.is_dir():
        image, labels = read_volume(ct / "ct.nii.gz"), read_volume(ct / "labels.nii.gz")
        names = {v: int(k) for k, v in json.loads((ct / "classes.json").read_text()).items()}
        truths = {"spleen": labels.array == names["spleen"], "liver": labels.array == names["liver"]}
    else:
        from napari_medseg.sample import make_sample_phantom

        image, labels = make_sample_phantom()
        truths = {"spleen": labels.array == 2, "liver": labels.array == 1}
    viewer = new_viewer("napari-medseg: click prompts")
    data, kw, _ = image_layer_data(image, name="abdomen CT")
    viewer.add_image(data, **kw)
    seg = viewer.add_labels(np.zeros(image.spatial_shape, np.uint8), name="segmentation", scale=kw["scale"],
                            translate=kw["translate"], affine=kw.get("affine"))
    widget = PromptWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prompt", area="right")
    widget.labels_combo.setCurrentText("segmentation")
    widget.image_combo.setCurrentText("abdomen CT")
    for value, organ in ((2, "spleen"), (1, "liver")):
        truth = truths[organ]
        seg.selected_label = value
        widget.start()
        p = first_click(truth)
        viewer.dims.set_current_step(0, p[0])
        n = widget.runs
        widget._layers["points"].add(np.asarray(p, float))
        wait_runs(widget, n)
        for _ in range(2):
            nxt = next_click(truth, widget._result.array)
            if nxt is None:
                break
            widget.negative.setChecked(not nxt[1])
            viewer.dims.set_current_step(0, nxt[0][0])
            n = widget.runs
            widget._layers["points"].add(np.asarray(nxt[0], float))
            wait_runs(widget, n)
        widget.negative.setChecked(False)
        if organ == "spleen":
            shoot(viewer, "prompt_spleen_preview.png")
        widget.accept()
    viewer.dims.ndisplay = 3
    viewer.layers["abdomen CT"].visible = False
    wait(1.0)
    shoot(viewer, "prompt_liver_spleen_3d.png")
    viewer.close()


if __name__ == "__main__":
    main()
