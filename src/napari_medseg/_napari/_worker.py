"""Run core step generators (see `napari_medseg.progress`) from napari widgets without blocking the GUI.

`ProgressPanel` is a small reusable widget: a progress bar, a status line (``done/total``, stage, time left)
and a Cancel button. ``panel.start(make_steps, on_done=..., on_error=...)`` runs ``make_steps()`` — a
zero-argument callable returning a step generator — in a napari ``thread_worker``; every yielded
`Progress` updates the bar, Cancel (or closing the viewer) stops the work at the next yield and calls
``on_cancelled``. Nothing in the callbacks runs in the worker thread: results, errors and cancellation
are delivered on the GUI thread.

Set the environment variable ``MEDSEG_SYNC=1`` to run the same generator synchronously on the GUI thread
(tracebacks are then plain and debuggers work), which is also handy in scripts. ``start`` returns a
`PanelRun` in both modes (its ``yielded`` signal carries that run's `Progress`).

Errors: a `MedsegError` (bad input, a model that does not fit, ...) is the user's to fix and becomes a
readable napari notification (`notify_error`); any other exception is a bug and keeps its traceback: it is
logged with it and handed to ``sys.excepthook`` (napari's handler, whose notification shows the traceback).

``gc.freeze()`` during runs is reference-counted over all panels (`_gc_hold`/`_gc_release`): two panels
running at once unfreeze only when the last run ends.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from typing import Any, Callable

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import QApplication, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_medseg.errors import CancelledError, MedsegError
from napari_medseg.progress import Progress, Steps

SYNC_ENV = "MEDSEG_SYNC"
log = logging.getLogger("napari_medseg")

# ---------------------------------------------------------------------------- gc.freeze, shared by all panels
_GC_LOCK = threading.Lock()
_GC_HOLDS = 0


def _gc_hold() -> None:
    """A full garbage collection over napari + torch + MONAI objects holds the GIL for ~0.5 s and freezes the
    GUI. Freezing the objects that exist now (the long-lived ones) keeps collections during a run short. Each
    start holds the freeze; it is lifted (objects collectable again) when the last running panel releases it."""
    global _GC_HOLDS
    with _GC_LOCK:
        _GC_HOLDS += 1
        gc.freeze()  # again for a second panel: also freezes what was made since (harmless)


def _gc_release() -> None:
    global _GC_HOLDS
    with _GC_LOCK:
        _GC_HOLDS = max(0, _GC_HOLDS - 1)
        if _GC_HOLDS == 0:
            gc.unfreeze()


def gc_holds() -> int:
    """How many runs hold the freeze now."""
    return _GC_HOLDS


class PanelRun(QObject):
    """One run of a `ProgressPanel` (threaded or synchronous): ``yielded`` carries its `Progress` events."""

    yielded = Signal(object)

    def __init__(self, run_id: int, synchronous: bool, parent=None):
        super().__init__(parent)
        self.run_id, self.synchronous = run_id, synchronous


def run_synchronously() -> bool:
    """True when ``MEDSEG_SYNC`` asks for synchronous work (debugging)."""
    return os.environ.get(SYNC_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Eta:
    """Time-left estimate from the fraction done within the current stage (restarts when the stage changes)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._stage: str | None = None
        self._t0 = clock()
        self._f0 = 0.0

    def update(self, p: Progress) -> float | None:
        now = self._clock()
        if p.stage != self._stage:
            self._stage, self._t0, self._f0 = p.stage, now, p.fraction
            return None
        df = p.fraction - self._f0
        if df <= 0 or p.total <= 0:
            return None
        return (now - self._t0) / df * (1.0 - p.fraction)


def describe(p: Progress, eta: float | None) -> str:
    parts = [p.stage or "working"]
    if p.total > 0:
        unit = getattr(p, "unit", "")
        parts.append(f"{p.done} {unit} of {p.total} {unit}" if unit else f"{p.done}/{p.total}")
    if p.message:
        parts.append(p.message)
    if eta is not None:
        parts.append(f"about {format_seconds(eta)} left")
    return " · ".join(parts)


def _drive(make_steps: Callable[[], Steps]):
    """Generator run by the thread worker: re-yields each Progress and returns the steps' result.

    The worker stops iterating as soon as an abort is requested; closing this generator (``finally``)
    then closes the inner step generator so its own cleanup runs.
    """
    steps = make_steps()
    try:
        while True:
            try:
                p = next(steps)
            except StopIteration as stop:
                return stop.value
            yield p
    finally:
        steps.close()


class ProgressPanel(QWidget):
    """Progress bar + status line + Cancel button that runs one step generator at a time."""

    #: emitted on the GUI thread when a run ends, with "done", "error" or "cancelled"
    finished = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setTextVisible(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.worker = None  # the napari thread worker of the current threaded run
        self._sync_running = False
        self._holds_gc = False
        self.current_run: PanelRun | None = None
        self._run_id = 0
        self._draining: set = set()
        self._cancel_requested = False
        self._callbacks: dict[str, Callable | None] = {}
        self._eta = Eta()
        self.last_progress: Progress | None = None

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self.worker is not None or self._sync_running

    def start(
        self,
        make_steps: Callable[[], Steps],
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> PanelRun:
        """Run ``make_steps()`` in a thread worker (or synchronously with ``MEDSEG_SYNC=1``); returns its `PanelRun`.

        ``on_error`` is called with a `MedsegError` (the widget shows it); any other exception is also passed to
        ``on_error`` (to reset the widget) and then reported with its traceback (see the module docstring).
        ``on_progress`` gets every `Progress` of the run, in both modes.
        """
        if self.running:
            raise RuntimeError("a run is already in progress; cancel it first")
        self._callbacks = {"done": on_done, "error": on_error, "cancelled": on_cancelled}
        self._cancel_requested = False
        self._eta = Eta()
        self.last_progress = None
        self.bar.setRange(0, 0)  # busy until the first Progress arrives
        self.status.setText("starting…")
        self.cancel_button.setEnabled(True)
        _gc_hold()  # see _gc_hold; released in _finish
        self._holds_gc = True
        self._run_id += 1
        run = self._run_id
        self.current_run = handle = PanelRun(run, run_synchronously(), self)
        if on_progress is not None:
            handle.yielded.connect(on_progress)
        if handle.synchronous:
            self._run_sync(make_steps)
            return handle

        from napari.qt.threading import create_worker

        worker = create_worker(_drive, make_steps, _start_thread=False, _ignore_errors=True)
        # signals of a run that was cancelled (detached) are ignored: see `cancel`
        worker.yielded.connect(lambda p, run=run: self._current(run) and self._on_progress(p))
        worker.returned.connect(lambda r, run=run: self._current(run) and self._on_returned(r))
        worker.errored.connect(lambda e, run=run: self._current(run) and self._on_errored(e))
        worker.aborted.connect(lambda run=run: self._current(run) and self._on_aborted())
        worker.finished.connect(lambda w=worker: self._draining.discard(w))
        self._draining.add(worker)
        self.worker = worker
        worker.start()
        return handle

    def _current(self, run: int) -> bool:
        return run == self._run_id and self.worker is not None

    def cancel_check(self) -> Callable[[], bool]:
        """A predicate for the run now starting (call it inside ``make_steps``): True once that run was cancelled
        or detached, also after a later run has started. Jobs check it right before committing their result (a
        fine-tune renames its new version into place only if it is False)."""
        run = self._run_id
        return lambda: run != self._run_id or self._cancel_requested

    @property
    def draining(self) -> bool:
        """True while a worker thread (possibly a cancelled, detached one) has not ended yet."""
        return bool(self._draining)

    def _run_sync(self, make_steps):
        from napari_medseg.progress import run_steps

        self._sync_running = True

        def progress(p):
            self._on_progress(p)
            QApplication.processEvents()  # lets Cancel be clicked even in synchronous mode

        try:
            result = run_steps(make_steps(), progress, cancel=lambda: self._cancel_requested)
        except CancelledError:
            self._on_aborted()
        except Exception as e:  # noqa: BLE001 - reported to the user by the widget
            self._on_errored(e)
        else:
            self._on_returned(result)
        return None

    def cancel(self):
        """Cancel the run: the GUI is released at once, the worker thread stops at its next step.

        The worker is asked to abort and detached: whatever it still reports or returns is ignored, so a
        long step that cannot be interrupted (a network forward pass, a resampling) never delays the
        user. `draining` tells whether the thread has actually ended.
        """
        if not self.running:
            return
        self._cancel_requested = True
        self.cancel_button.setEnabled(False)
        if self._sync_running:
            self.status.setText("cancelling…")  # run_steps polls the flag at the next step
            return
        self.worker.quit()
        self._run_id += 1  # detach
        self._on_aborted()

    def wait(self, timeout_ms: int = 5000) -> bool:
        """Block until every worker thread of this panel has ended (used when the viewer closes)."""
        if self.running:
            self.cancel()
        deadline = time.monotonic() + timeout_ms / 1000
        while self._draining and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.01)
        return not self._draining

    # ------------------------------------------------------------------ worker signals (GUI thread)
    def _on_progress(self, p):
        if not isinstance(p, Progress):
            return
        self.last_progress = p
        if self.current_run is not None:
            self.current_run.yielded.emit(p)
        eta = self._eta.update(p)
        if p.total > 0:
            self.bar.setRange(0, p.total)
            self.bar.setValue(min(p.done, p.total))
        else:
            self.bar.setRange(0, 0)
        if not self._cancel_requested:
            self.status.setText(describe(p, eta))

    def _finish(self, outcome: str, *args):
        self.worker = None
        self._sync_running = False
        self.current_run = None
        self.cancel_button.setEnabled(False)
        self.bar.setRange(0, 1)
        self.bar.setValue(1 if outcome == "done" else 0)
        callback = self._callbacks.get(outcome)
        self._callbacks = {}
        try:
            if callback is not None:
                callback(*args)
        finally:
            if self._holds_gc:
                self._holds_gc = False
                _gc_release()
            self.finished.emit(outcome)
            if outcome == "error" and args and not isinstance(args[0], MedsegError):
                report_bug(args[0])

    def _on_returned(self, result):
        if self._cancel_requested:  # finished between the click and the next step: still honour Cancel
            self.status.setText("cancelled")
            self._finish("cancelled")
            return
        self.status.setText("done")
        self._finish("done", result)

    def _on_errored(self, exc):
        if isinstance(exc, CancelledError):
            self._on_aborted()
            return
        self.status.setText(f"failed: {exc}")
        self._finish("error", exc)

    def _on_aborted(self):
        self.status.setText("cancelled; nothing was changed")
        self._finish("cancelled")


def notify_error(exc: BaseException, what: str = "") -> None:
    """Show a `MedsegError` as a napari error notification (a readable message, not a traceback dump).

    Any other exception is a bug, not the user's to fix: it goes to `report_bug` (once, also when the panel
    reports it too), so its traceback is kept rather than flattened into a one-line notification.
    """
    if not isinstance(exc, MedsegError):
        report_bug(exc)
        return
    from napari.utils.notifications import show_error

    prefix = f"{what}: " if what else ""
    show_error(f"{prefix}{exc}")


def report_bug(exc: BaseException) -> None:
    """Log ``exc`` with its traceback and hand it to ``sys.excepthook`` (napari's handler shows it with the
    traceback), once per exception."""
    if getattr(exc, "_medseg_reported", False):
        return
    try:
        exc._medseg_reported = True  # type: ignore[attr-defined]
    except AttributeError:
        pass
    log.error("napari-medseg: unexpected error", exc_info=(type(exc), exc, exc.__traceback__))
    sys.excepthook(type(exc), exc, exc.__traceback__)

