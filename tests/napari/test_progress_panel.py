"""`ProgressPanel`: one return type, errors (a `MedsegError` is notified, any other keeps its traceback), and
``gc.freeze`` shared by two panels running at once."""

from __future__ import annotations

import gc
import sys
import threading
import traceback

import pytest

from napari_medseg._napari._worker import PanelRun, ProgressPanel, gc_holds
from napari_medseg.errors import InputError
from napari_medseg.progress import Progress

pytestmark = pytest.mark.gui


def _failing(exc):
    def steps():
        yield Progress(0, 1, "work")
        raise exc

    return steps


def _broken_step():
    yield Progress(0, 1, "work")
    return {}["missing"]  # a bug: KeyError deep in the work


@pytest.mark.parametrize("sync", [False, True])
def test_start_returns_a_run_in_both_modes(qtbot, monkeypatch, sync):
    if sync:
        monkeypatch.setenv("MEDSEG_SYNC", "1")
    panel = ProgressPanel()
    qtbot.addWidget(panel)
    seen, done = [], []

    def steps():
        yield Progress(1, 2, "work")
        return 42

    run = panel.start(steps, on_done=done.append, on_progress=seen.append)
    assert isinstance(run, PanelRun) and run.synchronous == sync
    qtbot.waitUntil(lambda: done == [42], timeout=10_000)
    assert [p.done for p in seen] == [1] and not panel.running


@pytest.mark.parametrize("sync", [False, True])
def test_medseg_errors_are_notified_other_errors_keep_their_traceback(qtbot, monkeypatch, sync):
    if sync:
        monkeypatch.setenv("MEDSEG_SYNC", "1")
    shown, hooked, failed = [], [], []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    monkeypatch.setattr(sys, "excepthook", lambda *info: hooked.append(info))
    from napari_medseg._napari._worker import notify_error

    panel = ProgressPanel()
    qtbot.addWidget(panel)

    def on_error(e):
        failed.append(e)
        notify_error(e, "Test")  # what every widget does in its on_error

    panel.start(_failing(InputError("the image is 2D")), on_done=lambda r: None, on_error=on_error)
    qtbot.waitUntil(lambda: len(failed) == 1, timeout=10_000)
    assert shown == ["Test: the image is 2D"] and hooked == []
    panel.start(_broken_step, on_done=lambda r: None, on_error=on_error)
    qtbot.waitUntil(lambda: len(failed) == 2 and bool(hooked), timeout=10_000)
    assert len(shown) == 1  # no flattened one-line notification for a bug
    assert len(hooked) == 1  # napari's handler gets it once (not again from notify_error)
    kind, exc, tb = hooked[0]
    assert kind is KeyError and exc is failed[1]
    assert "_broken_step" in "".join(traceback.format_tb(tb))  # the traceback into the work is kept
    assert panel.status.text().startswith("failed")


def test_gc_freeze_is_shared_by_two_running_panels(qtbot):
    gates = [threading.Event(), threading.Event()]
    done = []

    def waiting(gate):
        def steps():
            yield Progress(0, 1, "work")
            while not gate.wait(0.01):
                yield Progress(0, 1, "work")
            return "ok"

        return steps

    panels = [ProgressPanel(), ProgressPanel()]
    for p in panels:
        qtbot.addWidget(p)
    base = gc_holds()
    for p, gate in zip(panels, gates):
        p.start(waiting(gate), on_done=done.append)
    assert gc_holds() == base + 2 and gc.get_freeze_count() > 0
    gates[0].set()
    qtbot.waitUntil(lambda: len(done) == 1, timeout=10_000)
    assert gc_holds() == base + 1
    assert gc.get_freeze_count() > 0  # the other panel's run is still protected
    gates[1].set()
    qtbot.waitUntil(lambda: len(done) == 2, timeout=10_000)
    assert gc_holds() == base
    if base == 0:
        assert gc.get_freeze_count() == 0  # collectable again once no run holds it
