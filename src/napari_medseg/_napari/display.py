"""Display helpers for medical volumes in napari: head-up coronal/sagittal views, CT window presets, and a
scrolling body for dock widgets.

World axes of our layers are LPS ``(z, y, x)`` (see `Volume.napari_kwargs`), whatever the image's direction
cosines, so "superior" is always +world axis 0. napari draws the first displayed axis increasing downwards:
in a coronal or sagittal view (z vertical) the head ends up at the bottom. `head_up` flips only the 2D
camera's vertical orientation (``camera.orientation2d``) when z is the vertical axis — a display setting:
layer data, scale, translate and affine, and so every coordinate a brush or a measurement uses, are not
touched. Axial views keep napari's default (anterior at the top, patient's left on the right: radiological).
"""

from __future__ import annotations

#: CT window presets: name -> (level, width) in HU
WINDOW_PRESETS = {
    "soft tissue": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


def window_limits(preset: str) -> tuple[float, float]:
    level, width = WINDOW_PRESETS[preset]
    return level - width / 2, level + width / 2


def apply_window(layer, preset: str) -> tuple[float, float]:
    """Set an image layer's contrast limits to a CT window preset; returns ``(low, high)``."""
    low, high = window_limits(preset)
    lo_range, hi_range = layer.contrast_limits_range
    layer.contrast_limits_range = (min(lo_range, low), max(hi_range, high))
    layer.contrast_limits = (low, high)
    return low, high


def head_up(viewer) -> str | None:
    """Orient the 2D camera so superior (world z) points up when z is the vertical displayed axis.

    Returns the vertical orientation set ("up"/"down"), or None in 3D or with fewer than 3 dims.
    """
    dims = viewer.dims
    if dims.ndisplay != 2 or dims.ndim < 3:
        return None
    vertical = int(dims.displayed[0]) - (dims.ndim - 3)  # index among the last three (z, y, x) world axes
    want = "up" if vertical == 0 else "down"
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    camera = scene.camera if scene is not None else viewer.camera
    current = camera.orientation2d
    if str(getattr(current[0], "value", current[0])) != want:
        camera.orientation2d = (want, current[1])
    return want


#: a dock asks for at most this share of the screen height (three docks share a 1080-pixel screen)
DOCK_HEIGHT_SHARE = 0.3
#: ... and at least this share (or its whole content when smaller): napari docks a new widget at its minimum
DOCK_MIN_SHARE = 0.25


def scroll_body(widget):
    """Give ``widget`` a vertical scroll area filling it; returns the inner widget to lay the controls out in.

    The area asks for its content's width (nothing is cut off sideways) and for at most `DOCK_HEIGHT_SHARE`
    of the screen height, and can shrink further: docked together on a 1080-pixel screen the docks share
    the height and every control stays reachable by scrolling.
    """
    from qtpy.QtCore import QSize, Qt
    from qtpy.QtWidgets import QApplication, QFrame, QScrollArea, QStyle, QVBoxLayout, QWidget

    class _Area(QScrollArea):
        def _bar(self) -> int:
            return self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent) + 2

        def _cap(self, share: float) -> int:
            screen = QApplication.primaryScreen()
            return max(int(screen.availableGeometry().height() * share) if screen is not None else 300, 160)

        def sizeHint(self):  # noqa: N802 - Qt override
            hint = self.widget().sizeHint()
            return QSize(hint.width() + self._bar(), min(hint.height(), self._cap(DOCK_HEIGHT_SHARE)))

        def minimumSizeHint(self):  # noqa: N802 - Qt override
            # napari gives a dock added below others its minimum height: ask for a useful share of the screen
            hint = self.widget().sizeHint()
            return QSize(self.widget().minimumSizeHint().width() + self._bar(),
                         min(hint.height(), self._cap(DOCK_MIN_SHARE)))

    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = _Area(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    body = QWidget()
    area.setWidget(body)
    outer.addWidget(area)
    widget.scroll_area = area
    return body
