"""Small Qt helpers shared by the dock widgets: a "models changed" signal and a viewer-close watcher.

* `models_changed()` — one process-wide Qt signal emitted after a fine-tune saves a version, or a version is
  activated / rolled back, so every widget listing models (Segment, Fine-tune) refreshes its list.
* `CloseWatcher` — calls back when the top-level window that holds a docked widget closes, using only public
  Qt API (``QWidget.window()``), instead of napari's private ``Window._qt_window``.
"""

from __future__ import annotations

from typing import Callable

from qtpy.QtCore import QEvent, QObject, Signal


class _ModelEvents(QObject):
    changed = Signal()


_EVENTS: _ModelEvents | None = None


def models_changed() -> _ModelEvents:
    """The shared emitter; connect to ``models_changed().changed``."""
    global _EVENTS
    if _EVENTS is None:
        _EVENTS = _ModelEvents()
    return _EVENTS


def notify_models_changed() -> None:
    models_changed().changed.emit()


class CloseWatcher(QObject):
    """Calls ``on_close()`` when the window holding ``widget`` gets its Close event.

    The window is looked up (``widget.window()``) when the widget, or the window found so far (a dock widget
    not yet in the main window), is shown or re-parented, and whenever the owner calls `attach`.
    """

    def __init__(self, widget, on_close: Callable[[], None]):
        super().__init__(widget)
        self._widget = widget
        self._on_close = on_close
        self._window = None
        widget.installEventFilter(self)
        self.attach()

    @property
    def window(self):
        return self._window

    def attach(self) -> None:
        try:
            w = self._widget.window()
        except RuntimeError:  # the widget is being deleted
            return
        if w is None or w is self._widget or w is self._window:
            return
        if self._window is not None:
            try:
                self._window.removeEventFilter(self)
            except RuntimeError:
                pass
        self._window = w
        w.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt override
        if not hasattr(self, "_window"):  # events during construction or teardown
            return False
        kind = event.type()
        if kind in (QEvent.Type.Show, QEvent.Type.ParentChange) and obj in (self._widget, self._window):
            self.attach()  # e.g. the dock holding the widget was just added to the main window
        elif obj is self._window and kind == QEvent.Type.Close:
            self._on_close()
        return False
