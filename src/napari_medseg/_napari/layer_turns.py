"""Adding result layers to a viewer without one long GUI stall: napari's set-up spread over event-loop turns.

Adding a layer runs all of napari's reactions in one call on the GUI thread: the vispy layer, the layer's
Qt controls, selecting it (which swaps the controls panel and restyles the layer buttons), and, for a
Labels layer, two editing overlays (the polygon tool's and the brush outline's vispy visuals, more than
a third of the whole ``add_labels``), followed by the first draw. Measured on the chest CT: 110–210 ms for
the labels layer and 90–140 ms for the uncertainty image, each in one turn, so the two together (or a busy
CPU) passed the 200 ms the GUI may stall.

`TurnQueue` runs callables one per event-loop turn, about a frame apart, so that Qt draws and handles
input (and a heartbeat timer fires) between them. `add_layer_in_turns` adds a layer with only what the
first draw needs, and queues the rest, in napari's own ways of deferring them:

- napari slices a visible layer (and redoes its thumbnail) when it is added: the layer is added hidden and
  shown in the next turn;
- a layer overlay that is not visible gets no vispy visual until it becomes visible (napari's canvas
  creates it then), so the Labels overlays are added hidden and made visible one per turn;
- napari's layer-controls container builds a layer's Qt controls on insert (that call is blocked) and looks
  them up as ``widgets[layer]``: that dict builds them when first asked (`_ControlsOnDemand`), in their own
  turn or earlier should napari need them (a click selecting the new row, the layer removed);
- the layer list selects a new layer only when it activates on insert: the selection (napari's behaviour,
  kept) follows in its own turn, after the controls.

These use napari attributes without a public setter (``Layer._overlays``, ``LayerList._activate_on_insert``,
the Qt viewer's ``controls``); where a napari version lacks one, that part is done the plain way.

The garbage collector stays frozen (`_worker._gc_hold`) while turns are queued: a full collection over
napari + torch objects takes about half a second, far more than any turn.
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import contextmanager, nullcontext
from typing import Callable

from qtpy.QtCore import QObject, QTimer, Signal

#: pause between two turns (ms), about a frame: the draw a step causes comes right after it, and timers
#: and input that became due meanwhile are handled before the next step (a shorter pause lets the next
#: step run straight after the draw, the two then block as one)
TURN_GAP_MS = 25
#: Labels overlays whose vispy visuals are built in later turns (napari's names)
DEFERRED_OVERLAYS = ("polygon", "brush_stroke")


class TurnQueue(QObject):
    """Callables run one per event-loop turn; ``done`` is emitted when the queue runs empty.

    A step that raises ends the queue (the rest is dropped) and goes to ``on_error``. A child of its owner
    widget: deleted with it, it never fires into a deleted widget.
    """

    done = Signal()

    def __init__(self, parent: QObject, on_error: Callable[[BaseException], None]):
        super().__init__(parent)
        self._steps: deque = deque()
        self._on_error = on_error
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(TURN_GAP_MS)
        self._timer.timeout.connect(self._next)
        self._holds_gc = False
        #: (name, start, seconds) of every step run, in order (``time.perf_counter`` clock): where the turns went
        self.log: list[tuple[str, float, float]] = []

    @property
    def busy(self) -> bool:
        return bool(self._steps)

    def push(self, name: str, step: Callable[[], None]) -> None:
        """Queue ``step`` (``name`` is for `log`); the first one runs in the next turn."""
        if not self._steps and not self._holds_gc:
            from napari_medseg._napari._worker import _gc_hold

            _gc_hold()
            self._holds_gc = True
        self._steps.append((name, step))
        if not self._timer.isActive():
            self._timer.start()

    def clear(self) -> None:
        """Drop what is still queued (e.g. the viewer closes)."""
        self._steps.clear()
        self._timer.stop()
        self._release()

    def _release(self) -> None:
        if self._holds_gc:
            from napari_medseg._napari._worker import _gc_release

            self._holds_gc = False
            _gc_release()

    def _next(self) -> None:
        if not self._steps:
            return
        name, step = self._steps.popleft()
        t = time.perf_counter()
        try:
            step()
        except Exception as e:  # noqa: BLE001 - a slot must not raise: said by the owner
            self._steps.clear()
            self._release()
            self._on_error(e)
            return
        finally:
            self.log.append((name, t, time.perf_counter() - t))
        if self._steps:
            self._timer.start()
        else:
            self._release()
            self.done.emit()


@contextmanager
def _not_activated(layers):
    """Inserting into ``layers`` does not select the new layer (napari's ``_activate_on_insert``)."""
    had = getattr(layers, "_activate_on_insert", None)
    if had is None:
        yield False
        return
    layers._activate_on_insert = False
    try:
        yield True
    finally:
        layers._activate_on_insert = had


def _hide_overlays(layer) -> list:
    """Hide ``layer``'s deferrable overlays that are visible now; returns them (to be shown again)."""
    overlays = getattr(layer, "_overlays", None)
    hidden = []
    for key in DEFERRED_OVERLAYS:
        try:
            overlay = overlays[key]
        except (TypeError, KeyError):
            continue
        if getattr(overlay, "visible", False):
            overlay.visible = False
            hidden.append(overlay)
    return hidden


def _controls_container(viewer):
    """napari's Qt layer-controls container of ``viewer`` (None without a Qt window, or where it differs)."""
    qt_viewer = getattr(getattr(viewer, "window", None), "_qt_viewer", None)
    container = getattr(qt_viewer, "controls", None)
    if callable(getattr(container, "_add", None)) and isinstance(getattr(container, "widgets", None), dict):
        return container
    return None


class _ControlsOnDemand(dict):
    """napari's ``{layer: Qt controls}`` of its layer-controls container, whose controls for a layer added in
    turns are built when napari first asks for them: in the layer's controls turn, or earlier when napari
    needs them (the layer selected by a click on its new row, or removed) -- napari looks them up by
    ``widgets[layer]`` for both."""

    def __init__(self, container, widgets: dict):
        super().__init__(widgets)
        self.container = container
        self.pending: list = []  # layers (by identity: napari layers compare by identity)

    def defer(self, layer) -> None:
        self.pending.append(layer)

    def __missing__(self, layer):
        self.build(layer)
        if not dict.__contains__(self, layer):
            raise KeyError(layer)
        return dict.__getitem__(self, layer)

    def build(self, layer) -> None:
        if any(p is layer for p in self.pending):
            from types import SimpleNamespace

            self.pending = [p for p in self.pending if p is not layer]
            self.container._add(SimpleNamespace(value=layer))  # napari's own handler of the insert


def _deferred_controls(viewer) -> _ControlsOnDemand | None:
    container = _controls_container(viewer)
    if container is None:
        return None
    if not isinstance(container.widgets, _ControlsOnDemand):
        container.widgets = _ControlsOnDemand(container, container.widgets)
    return container.widgets


def add_layer_in_turns(viewer, layer, turns: TurnQueue, select: bool = True):
    """Add ``layer`` to ``viewer`` now with its vispy layer; queue on ``turns`` its slice (napari slices a
    visible layer, and updates its thumbnail, when it is added: the layer is added hidden and shown in the
    next turn), its Qt controls, its selection and the visuals of its editing overlays, each in a turn of its
    own. Returns ``layer``.

    ``select=False``: the selection stays as it is, and the layer's controls are built only when napari first
    asks for them (the user selects the layer): no turn is spent on controls nobody looks at."""
    hidden = _hide_overlays(layer)
    shown = bool(layer.visible)
    layer.visible = False
    controls = _deferred_controls(viewer)
    blocked = viewer.layers.events.inserted.blocker(controls.container._add) if controls is not None else nullcontext()
    try:
        with _not_activated(viewer.layers) as not_activated, blocked:
            viewer.add_layer(layer)
    except Exception:
        for overlay in hidden:
            overlay.visible = True
        layer.visible = shown
        raise
    if controls is not None:
        controls.defer(layer)
    name = getattr(layer, "name", "layer")

    def present() -> bool:
        return layer in viewer.layers

    if shown:
        turns.push(f"'{name}' shown", lambda: setattr(layer, "visible", True))
    if controls is not None and select:
        turns.push(f"'{name}' controls", lambda: present() and controls.build(layer))
    if select and not_activated:
        turns.push(f"select '{name}'", lambda: present() and _select(viewer, layer))
    for overlay in hidden:
        turns.push(f"'{name}' overlay {type(overlay).__name__}", lambda o=overlay: _show(o))
    return layer


def _select(viewer, layer) -> None:
    viewer.layers.selection.active = layer


def _show(overlay) -> None:
    overlay.visible = True  # also when the layer was removed meanwhile: napari's canvas then builds nothing
