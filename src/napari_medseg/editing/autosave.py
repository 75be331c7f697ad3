"""`Autosaver`: saves edited labels and their correction record to the per-image session (no Qt, no napari).

The caller (the Correction widget, on a timer, after each operation and when the viewer closes) hands it
`AutosaveItem`s; an item whose `CorrectionStore` is not dirty is skipped unless ``force``. A store stays
dirty after a save: undo/redo change the labels without an edit event, so the next tick saves again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from napari_medseg.editing.store import CorrectionStore
from napari_medseg.errors import MedsegError
from napari_medseg.session import Session


@dataclass
class AutosaveItem:
    name: str  # the labels layer's name (the saved entry's name)
    data: object  # the labels array
    store: CorrectionStore
    classes: dict[int, str]
    image_record: dict  # geometry record of the image: the session key is derived from it


class Autosaver:
    """Saves items to ``Session.for_image(item.image_record)``; remembers the sessions it wrote."""

    def __init__(self, on_error: Callable[[str, Exception], None] | None = None):
        self.on_error = on_error
        self.offered: set[str] = set()  # sessions offered once, or written here: nothing (more) to offer

    @staticmethod
    def session_for(image_record: dict) -> Session:
        return Session.for_image(image_record)

    def save(self, item: AutosaveItem) -> bool:
        try:
            session = self.session_for(item.image_record)
            self.offered.add(str(session.folder))
            session.save(item.name, np.asarray(item.data), item.store.record, item.classes)
        except (MedsegError, OSError) as e:
            if self.on_error is not None:
                self.on_error(item.name, e)
            return False
        return True

    def save_all(self, items: Iterable[AutosaveItem], force: bool = False) -> list[str]:
        """Save every dirty item (every item with ``force``); returns the names saved."""
        saved = []
        for item in items:
            if not (item.store.dirty or force) or np.ndim(item.data) != 3:
                continue
            if self.save(item):
                saved.append(item.name)
        return saved

    def to_offer(self, image_record: dict) -> Session | None:
        """The session of an image with saved labels not yet offered (nor written here), else None."""
        session = self.session_for(image_record)
        key = str(session.folder)
        if key in self.offered or not session.has_saved():
            return None
        self.offered.add(key)
        return session
