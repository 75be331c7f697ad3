"""Result layers added turn by turn (`layer_turns`) end up exactly as napari's own one-call add leaves them:
controls, selection, the Labels editing overlays' visuals; a layer removed or selected before its turns
have run is handled, and the garbage-collector freeze is released when the queue ends."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QWidget

from napari_medseg._napari._worker import gc_holds
from napari_medseg._napari.layer_turns import DEFERRED_OVERLAYS, TurnQueue, add_layer_in_turns

pytestmark = pytest.mark.gui


def _labels(name):
    from napari.layers import Labels

    data = np.zeros((6, 20, 24), np.uint8)
    data[2:4, 5:15, 6:18] = 3
    return Labels(data, name=name)


def _setup(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).normal(size=(6, 20, 24)).astype(np.float32), name="image")
    owner = QWidget()
    errors = []
    turns = TurnQueue(owner, errors.append)
    return viewer, owner, turns, errors


def _state(viewer, layer):
    """What napari built for ``layer``: its controls' type, its overlays' visuals, whether it is selected."""
    qt_viewer = viewer.window._qt_viewer
    canvas = qt_viewer.canvas
    visuals = canvas._layer_overlay_to_visual.get(layer, {})
    controls = qt_viewer.controls.widgets.get(layer)
    return (type(controls).__name__ if controls is not None else None,
            sorted(type(v).__name__ for v in visuals.values()),
            viewer.layers.selection.active is layer,
            [layer._overlays[k].visible for k in DEFERRED_OVERLAYS if k in layer._overlays])


def test_turn_by_turn_add_ends_as_napari_own_add(make_napari_viewer, qtbot):
    viewer, owner, turns, errors = _setup(make_napari_viewer)
    reference = viewer.add_layer(_labels("plain"))  # napari's one-call add
    expected = _state(viewer, reference)
    assert expected[0] == "QtLabelsControls" and len(expected[1]) == 2 and expected[2] and all(expected[3])
    holds = gc_holds()
    layer = add_layer_in_turns(viewer, _labels("turns"), turns)
    # in this turn: the layer and its vispy layer, nothing else yet
    assert layer in viewer.layers and layer in viewer.window._qt_viewer.canvas.layer_to_visual
    assert _state(viewer, layer) == (None, [], False, [False, False]) and not layer.visible
    assert turns.busy and gc_holds() == holds + 1
    qtbot.waitUntil(lambda: not turns.busy, timeout=5_000)
    assert _state(viewer, layer) == expected
    assert gc_holds() == holds and not errors
    assert layer.visible
    assert [name for name, _, _ in turns.log] == ["'turns' shown", "'turns' controls", "select 'turns'",
                                                 "'turns' overlay LabelsPolygonOverlay",
                                                 "'turns' overlay LabelsBrushStrokeOverlay"]
    owner.deleteLater()


def test_selected_or_removed_before_its_controls_turn(make_napari_viewer, qtbot):
    viewer, owner, turns, errors = _setup(make_napari_viewer)
    holds = gc_holds()
    picked = add_layer_in_turns(viewer, _labels("picked"), turns)
    gone = add_layer_in_turns(viewer, _labels("gone"), turns)
    controls = viewer.window._qt_viewer.controls
    assert picked not in controls.widgets and gone not in controls.widgets
    viewer.layers.selection.active = picked  # a click on its row: its controls are built right then
    assert controls.currentWidget() is controls.widgets[picked]
    viewer.layers.remove(gone)  # napari's container drops the controls it then finds
    assert gone not in controls.widgets and gone not in viewer.layers
    qtbot.waitUntil(lambda: not turns.busy, timeout=5_000)
    assert not errors and gc_holds() == holds
    assert gone not in controls.widgets and viewer.layers.selection.active is picked
    assert len(_state(viewer, picked)[1]) == 2 and all(_state(viewer, picked)[3])
    owner.deleteLater()


def test_a_failing_step_ends_the_queue_and_releases_the_gc_freeze(qtbot):
    owner = QWidget()
    errors, ran = [], []
    turns = TurnQueue(owner, errors.append)
    holds = gc_holds()
    turns.push("one", lambda: ran.append(1))
    turns.push("boom", lambda: 1 / 0)
    turns.push("never", lambda: ran.append(3))
    assert gc_holds() == holds + 1
    qtbot.waitUntil(lambda: bool(errors), timeout=5_000)
    assert ran == [1] and isinstance(errors[0], ZeroDivisionError) and not turns.busy and gc_holds() == holds
    turns.push("again", lambda: ran.append(4))
    turns.clear()  # e.g. the viewer closes: nothing more runs, the freeze is released
    assert not turns.busy and gc_holds() == holds
    qtbot.wait(100)
    assert ran == [1]
    owner.deleteLater()
