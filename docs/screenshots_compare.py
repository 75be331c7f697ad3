"""Screenshot of the Compare labels widget on the sample phantom (docs/images/compare_sample.png).

Needs a display: run under Xvfb with a SHOWN viewer (offscreen/hidden viewers render black)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots_compare.py

"A" is the phantom's labels as a model might give them (liver grown by 3 mm, spleen missing on 6 slices),
"B" the reference labels; the difference layer shows what only A has (orange) and what only B has (blue).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

os.environ.setdefault("MEDSEG_HOME", tempfile.mkdtemp(prefix="medseg-shots-"))  # never the user's models/sessions

from screenshots_correction import OUT, new_viewer, shoot, wait  # noqa: E402


def main():
    from napari_medseg import editing
    from napari_medseg._napari.compare_widget import CompareWidget
    from napari_medseg._napari.sample import abdomen_phantom_nifti

    viewer = new_viewer("napari-medseg: comparing two labels layers")
    (img_data, img_kw, _), (lab_data, lab_kw, _) = abdomen_phantom_nifti()
    viewer.add_image(img_data, **img_kw)
    truth = np.asarray(lab_data)
    spacing = tuple(reversed(img_kw["scale"]))
    model = editing.dilate(truth, 1, 3.0, spacing=spacing).apply(truth.copy())
    model[20:26][model[20:26] == 2] = 0
    a = viewer.add_labels(model, **{**lab_kw, "name": "model output"})
    b = viewer.add_labels(truth.copy(), **{**lab_kw, "name": "reference"})
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compare labels", area="right")
    widget.set_layers(a, b)
    cmp = widget.compare()
    for row in cmp.table():
        print(f"{row['name']}: Dice {row['dice']:.3f} ({row['voxels_a']} vs {row['voxels_b']} voxels)")
    a.visible = b.visible = False
    viewer.dims.set_point(0, float(a.data_to_world([23, 0, 0])[0]))
    wait(0.5)
    OUT.mkdir(exist_ok=True)
    shoot(viewer, "compare_sample.png")
    viewer.close()


if __name__ == "__main__":
    main()
