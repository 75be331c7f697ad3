"""Issue 18 item 8: head-up coronal/sagittal views (display only), CT window presets, keyboard shortcuts,
scrolling docks."""

from __future__ import annotations

import numpy as np
import pytest

from test_correction_widget import open_viewer, small  # noqa: F401 - fixture

pytestmark = pytest.mark.gui


def test_coronal_and_sagittal_views_are_head_up_and_geometry_is_untouched(make_napari_viewer, small):  # noqa: F811
    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    image = viewer.layers["ct"]
    before = [(np.array(l.scale), np.array(l.translate), np.array(l.affine.affine_matrix)) for l in (image, layer)]
    point = np.array([3.0, 10.0, 20.0])
    world = np.asarray(layer.data_to_world(point))
    assert str(viewer.scene.camera.orientation2d[0].value) == "down"  # axial: napari's default (anterior at the top)
    for order in ((1, 0, 2), (2, 0, 1)):  # coronal, sagittal: z (superior = +world z) is the vertical axis
        viewer.dims.order = order
        assert str(viewer.scene.camera.orientation2d[0].value) == "up", order
    viewer.dims.order = (0, 1, 2)
    assert str(viewer.scene.camera.orientation2d[0].value) == "down"
    viewer.dims.order = (1, 0, 2)
    # only the camera changed: the layers map data to world exactly as before, and painting lands where it should
    for l, (scale, translate, affine) in zip((image, layer), before):
        np.testing.assert_array_equal(l.scale, scale)
        np.testing.assert_array_equal(l.translate, translate)
        np.testing.assert_array_equal(l.affine.affine_matrix, affine)
    np.testing.assert_array_equal(layer.data_to_world(point), world)
    widget.jump_to(1, 40)
    assert widget.current_slice() == (1, 40)


def test_window_presets_and_shortcuts(make_napari_viewer, small):  # noqa: F811
    from napari_medseg._napari.display import WINDOW_PRESETS, window_limits

    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    assert set(WINDOW_PRESETS) == {"lung", "bone", "soft tissue", "liver"}
    widget.window_combo.setCurrentText("lung")
    assert tuple(viewer.layers["ct"].contrast_limits) == window_limits("lung") == (-1350.0, 150.0)
    assert "lung window" in widget.status.text()
    widget.set_window("bone")
    assert tuple(viewer.layers["ct"].contrast_limits) == (-500.0, 1300.0)
    assert {"Shift+M", "Shift+N"} <= {str(k) for k in viewer.keymap}
    widget.jump_to(0, 7)
    widget.review._key_actions["Shift-M"](viewer)  # what the key press runs
    assert (0, 7) in widget.store.record.corrected
    assert "Shift+M" in widget.review.mark_button.text() and "Shift+N" in widget.review.next_button.text()


def test_docks_scroll_instead_of_growing(make_napari_viewer, small):  # noqa: F811
    from napari_medseg._napari.finetune_widget import FinetuneWidget
    from napari_medseg._napari.segment_widget import SegmentWidget

    from qtpy.QtWidgets import QApplication

    img, lab = small
    viewer, widget, layer = open_viewer(make_napari_viewer, img, lab)
    screen = QApplication.primaryScreen().availableGeometry().height()
    for w in (widget, FinetuneWidget(viewer), SegmentWidget(viewer)):
        body = w.scroll_area.widget()
        # the dock can shrink to a quarter of the screen, below its content (the rest is reachable by scrolling)
        assert w.minimumSizeHint().height() <= max(0.25 * screen, 160) + 1 < body.sizeHint().height(), type(w).__name__
