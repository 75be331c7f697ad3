"""Issue 18 item 8: compare two labels layers on the same grid (per-class Dice, difference layer)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg._napari.compare_widget import CompareWidget
from napari_medseg._napari.layers import image_layer_data, labels_layer_data
from napari_medseg.commands.model_commands import dice_per_class
from napari_medseg.editing.compare import DIFFERENT, ONLY_A, ONLY_B
from napari_medseg.errors import GeometryError

from test_correction_widget import small  # noqa: F401 - fixture

pytestmark = pytest.mark.gui


def test_compare_two_layers(make_napari_viewer, small):  # noqa: F811
    img, lab = small
    viewer = make_napari_viewer()
    data, kw, _ = image_layer_data(img, name="ct")
    viewer.add_image(data, **kw)
    data, kw, _ = labels_layer_data(lab, "model", classes=lab.meta["classes"], source=img)
    a = viewer.add_labels(data.copy(), **kw)
    corrected = lab.array.copy()
    corrected[8:12][corrected[8:12] == 1] = 0  # the user removed the liver on four slices
    corrected[5, 0:4, 0:4] = 2  # and added some spleen
    data, kw, _ = labels_layer_data(lab.with_array(corrected), "corrected", classes=lab.meta["classes"], source=img)
    b = viewer.add_labels(data, **kw)
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert (widget.a_combo.currentText(), widget.b_combo.currentText()) == ("model", "corrected")
    cmp = widget.compare()
    want = dice_per_class(lab.array, corrected, sorted(set(np.unique(lab.array)) - {0}))
    rows = {r["value"]: r for r in cmp.table()}
    for v, d in want.items():
        assert rows[v]["dice"] == pytest.approx(d) or (np.isnan(d) and np.isnan(rows[v]["dice"]))
    assert rows[1]["name"] == "liver" and rows[1]["dice"] < 1.0 and rows[3]["dice"] == pytest.approx(1.0)
    assert widget.table.rowCount() == len(rows) and widget.table.item(0, 0).text() == rows[min(rows)]["name"]
    diff = widget.diff_layer
    assert diff.name == "model vs corrected" and diff.data.shape == a.data.shape
    np.testing.assert_allclose(diff.scale, a.scale)
    np.testing.assert_allclose(diff.translate, a.translate)
    only_a = (lab.array == 1) & (corrected == 0)
    assert (diff.data[only_a] == ONLY_A).all() and cmp.only_a == int(only_a.sum())
    assert diff.data[5, 0, 0] in (ONLY_B, DIFFERENT) and (diff.data[lab.array == corrected] == 0).all()
    names = dict(zip(diff.features["index"], diff.features["class"]))
    assert names[ONLY_A] == "only in A (model)" and names[ONLY_B] == "only in B (corrected)"
    assert "only in A" in widget.status.text()
    # again: the same difference layer is updated, not a second one; the layers compared are unchanged
    n = len(viewer.layers)
    widget.compare()
    assert len(viewer.layers) == n and widget.b_combo.findText(diff.name) < 0
    np.testing.assert_array_equal(b.data, corrected)
    # different grids: a clear error, nothing added
    other = viewer.add_labels(np.zeros((10, 40, 50), np.uint8), scale=(5.0, 1.6, 1.6), name="coarse")
    widget.set_layers(a, other)
    with pytest.raises(GeometryError, match="not on the same grid"):
        widget._pair()
    widget.compare_button.click()
    assert "compare failed" in widget.status.text() and len(viewer.layers) == n + 1
