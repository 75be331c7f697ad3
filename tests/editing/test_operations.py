"""The operations registry (core): every operation is the editing function it names, with its parameters."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg import editing
from napari_medseg.editing.operations import OPERATIONS, Operation, OpContext, get_operation, register
from napari_medseg.errors import InputError

SPACING = (0.8, 0.8, 2.5)


@pytest.fixture
def labels():
    arr = np.zeros((12, 40, 40), np.uint8)
    arr[2:10, 10:30, 10:30] = 1
    arr[5, 15:18, 15:18] = 0  # a hole
    arr[5, 2, 2] = 1  # an island
    return arr


def test_registry_matches_the_editing_functions(labels):
    ctx = OpContext(labels, 1, 0, 5, "slice", SPACING, painted=[2, 9])
    expected = {
        "interpolate": editing.interpolate_slices(labels, 1, 0, spacing=SPACING, slices=[2, 9]),
        "fill_holes": editing.fill_holes(labels, 1, where=(0, 5), spacing=SPACING, per_slice_axis=0),
        "remove_islands": editing.remove_islands(labels, 1, 100.0, where=(0, 5), spacing=SPACING),
        "keep_largest": editing.keep_largest(labels, 1, where=(0, 5), spacing=SPACING),
        "dilate": editing.dilate(labels, 1, 2.0, where=(0, 5), spacing=SPACING),
        "erode": editing.erode(labels, 1, 2.0, where=(0, 5), spacing=SPACING),
        "smooth": editing.smooth(labels, 1, 2.0, where=(0, 5), spacing=SPACING),
        "copy_previous": editing.copy_slice(labels, 0, 5, label=1),
        "relabel": editing.relabel(labels, 1, 3, where=(0, 5)),
    }
    assert list(OPERATIONS) == list(expected)
    for name, want in expected.items():
        op = get_operation(name)
        values = op.values({"target": 3})
        got = op.prepare(ctx, values)()
        assert got.bbox == want.bbox and np.array_equal(got.after, want.after), name
        assert got.params == want.params, name
    assert get_operation("interpolate").whole_volume and not get_operation("dilate").whole_volume
    vol = OpContext(labels, 1, 0, 5, "volume", SPACING)
    assert vol.where is None
    got = get_operation("fill_holes").prepare(vol, {"fill_3d": True})()
    assert got.params["per_slice_axis"] is None


def test_checks_and_unknown_names(labels):
    with pytest.raises(InputError, match="unknown operation 'warp'"):
        get_operation("warp")
    with pytest.raises(InputError, match="paint class 1 on at least two slices along z"):
        get_operation("interpolate").prepare(OpContext(labels, 1, 0, 5, "slice", SPACING, painted=[4]), {})
    with pytest.raises(InputError, match="no previous slice"):
        get_operation("copy_previous").prepare(OpContext(labels, 1, 0, 0, "slice", SPACING), {})
    with pytest.raises(InputError, match="choose the class to relabel to"):
        get_operation("relabel").prepare(OpContext(labels, 1, 0, 5, "slice", SPACING), {"target": None})


def test_register_an_operation(labels):
    op = Operation("erase_class", "Erase class", lambda ctx: editing.relabel(ctx.labels, ctx.label, 0, where=ctx.where))
    try:
        register(op)
        assert list(OPERATIONS)[-1] == "erase_class"
        edit = get_operation("erase_class").prepare(OpContext(labels, 1, 0, 5, "slice"), {})()
        assert not (edit.apply(labels.copy())[5] == 1).any() and (labels[5] == 1).any()
    finally:
        OPERATIONS.pop("erase_class", None)
