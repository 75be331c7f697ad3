"""The session panel of the Correction widget: autosave on a timer (the Qt-free `Autosaver` does the work),
save / restore buttons, and the offer to restore when an image with an autosaved session is opened."""

from __future__ import annotations

import os
import weakref

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QPushButton

from napari_medseg._napari.layer_info import class_table, image_grid_from_record, image_record_for, is_kind, layers_of
from napari_medseg._napari.layers import META_KEY, volume_from_layer, volume_record
from napari_medseg._napari.tracking import store_for
from napari_medseg.editing.autosave import AutosaveItem, Autosaver
from napari_medseg.errors import InputError
from napari_medseg.session import Session

AUTOSAVE_ENV = "MEDSEG_AUTOSAVE_S"


def _restore_action(panel, layer):
    """A notification button callback holding only weak references (napari keeps notifications)."""
    pref, lref = weakref.ref(panel), weakref.ref(layer)

    def restore(*_):
        p, l = pref(), lref()
        if p is not None and l is not None:
            p.host.guard(lambda: p.restore_session(l), "restore")

    return restore


class SessionPanel(QGroupBox):
    """``host`` is the `CorrectionWidget` (viewer, status, guard)."""

    def __init__(self, host):
        super().__init__("Session (autosaved to your user data folder)")
        self.host = host
        self.autosaver = Autosaver(on_error=lambda name, e: host.set_status(f"autosave of '{name}' failed: {e}"))
        h = QHBoxLayout(self)
        self.save_button = QPushButton("Save session now")
        self.save_button.clicked.connect(lambda: host.guard(lambda: self.autosave_now(force=True), "autosave"))
        self.restore_button = QPushButton("Restore session")
        self.restore_button.clicked.connect(lambda: host.guard(self.restore_session, "restore"))
        h.addWidget(self.save_button)
        h.addWidget(self.restore_button)
        self.timer = QTimer(self)
        self.timer.setInterval(int(float(os.environ.get(AUTOSAVE_ENV, "60")) * 1000))
        self.timer.timeout.connect(self.autosave_now)
        self.timer.start()
        self.destroyed.connect(self.timer.stop)
        viewer = host.viewer
        viewer.layers.events.removed.connect(self._on_removed)
        viewer.layers.events.inserted.connect(self._on_inserted)

    # ------------------------------------------------------------------ saving
    def session_for(self, layer) -> Session:
        return Session.for_image(image_record_for(layer, self.host.viewer))

    def _item(self, layer) -> AutosaveItem:
        return AutosaveItem(layer.name, layer.data, store_for(layer), class_table(layer),
                            image_record_for(layer, self.host.viewer))

    def autosave_now(self, force: bool = False) -> list[str]:
        """Save every labels layer edited since the viewer opened (all of them with ``force``)."""
        return self.autosaver.save_all([self._item(l) for l in layers_of(self.host.viewer, "Labels")], force=force)

    def _on_removed(self, event):
        layer = event.value  # removed (or the viewer is closing: it removes every layer first): save it
        store = store_for(layer, create=False) if is_kind(layer, "Labels") else None
        if store is not None and store.dirty and np.ndim(layer.data) == 3:
            self.autosaver.save(self._item(layer))

    def on_viewer_closing(self):
        self.timer.stop()
        try:
            self.autosave_now()
        except Exception:  # noqa: BLE001 - never block closing the viewer
            pass

    # ------------------------------------------------------------------ restoring
    def _saved_for(self, layer) -> Session | None:
        if np.ndim(layer.data) != 3 or getattr(layer, "rgb", False):
            return None
        rec = (layer.metadata or {}).get(META_KEY)
        if is_kind(layer, "Image") and rec:
            session = Session.for_image(rec)
        elif is_kind(layer, "Labels"):
            session = self.session_for(layer)
        else:
            return None
        return session if session.has_saved() else None

    def _on_inserted(self, event):
        """When an image with an autosaved session is opened, offer to restore it (once per session)."""
        layer = event.value
        rec = (layer.metadata or {}).get(META_KEY)
        if not is_kind(layer, "Image") or not rec or np.ndim(layer.data) != 3 or getattr(layer, "rgb", False):
            return
        session = self.autosaver.to_offer(rec)
        if session is None:
            return
        from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

        names = ", ".join(session.saved_names())
        note = Notification(
            f"napari-medseg found autosaved corrections for '{layer.name}' ({names}).",
            severity=NotificationSeverity.INFO,
            actions=[("Restore", _restore_action(self, layer))],
        )
        notification_manager.dispatch(note)
        self.host.set_status(f"autosaved corrections found ({names}): click 'Restore session'")

    def restore_session(self, layer=None) -> list:
        """Add the autosaved labels of the image as labels layers (existing layers are never overwritten)."""
        from napari_medseg._napari.layers import labels_layer_data, unique_layer_name

        viewer = self.host.viewer
        candidates = [layer] if layer is not None else [l for l in viewer.layers if is_kind(l, "Image") or is_kind(l, "Labels")]
        for cand in candidates:
            session = self._saved_for(cand)
            if session is None:
                continue
            ivol = volume_from_layer(cand)[0] if is_kind(cand, "Image") else image_grid_from_record(session.image_record)
            added = []
            for saved in session.load_all():
                if tuple(saved.array.shape) != tuple(ivol.spatial_shape):
                    raise InputError(f"autosaved '{saved.name}' has shape {saved.array.shape}, the image {ivol.spatial_shape}")
                name = unique_layer_name(viewer, saved.name)
                data, kwargs, _ = labels_layer_data(ivol.with_array(saved.array), name, classes=saved.classes,
                                                    source=volume_record(ivol))
                saved.record.to_metadata(kwargs["metadata"])  # the store of the new layer starts from it
                added.append(viewer.add_labels(data, **kwargs))
            if added:
                self.host.set_labels_layer(added[0])
                self.host.set_status(f"restored {', '.join(l.name for l in added)} from {session.folder}")
                return added
        raise InputError("no autosaved session for the open image(s)")
