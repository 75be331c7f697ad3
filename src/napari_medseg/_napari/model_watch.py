"""Keep a widget's model list current: re-read it when models change (a fine-tune saved or activated a
version, see `signals.models_changed`) and whenever the widget is shown again, keeping the user's choice.

One helper for every widget that lists models (Segment, Fine-tune), instead of a ``refresh_models`` slot
and a ``showEvent`` override in each::

    self.models = ModelListWatcher(self, fill=self._fill_models, current=self.model_combo.currentData,
                                   restore=lambda d: self.model_combo.setCurrentIndex(max(self.model_combo.findData(d), 0)))
    # self.models.refresh() re-reads the list by hand
"""

from __future__ import annotations

from typing import Any, Callable

from qtpy.QtCore import QEvent, QObject


class ModelListWatcher(QObject):
    """``fill()`` rebuilds the list; ``current()`` reads the choice before, ``restore(choice)`` sets it after."""

    def __init__(self, widget, fill: Callable[[], None], current: Callable[[], Any], restore: Callable[[Any], None]):
        super().__init__(widget)
        self._widget, self._fill, self._current, self._restore = widget, fill, current, restore
        from napari_medseg._napari.signals import models_changed

        models_changed().changed.connect(self.refresh)
        widget.installEventFilter(self)

    def refresh(self, *_) -> None:
        """Re-read the installed models, keeping the current choice."""
        try:
            choice = self._current()
            self._fill()
            self._restore(choice)
        except RuntimeError:  # the widget is being deleted
            return

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt override
        if obj is getattr(self, "_widget", None) and event.type() == QEvent.Type.Show:
            self.refresh()
        return False
