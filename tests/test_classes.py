"""`ClassTable`: one class table (value -> name, colour) for models, readers, writers and layers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medseg.classes import ABDOMEN_CLASSES, ClassInfo, ClassTable, class_colors, class_names
from napari_medseg.models.card import ClassInfo as CardClassInfo
from napari_medseg.models.card import ModelCard
from napari_medseg.volume import Volume

RED, GREEN = (1.0, 0.0, 0.0, 1.0), (0.0, 0.5, 0.0, 1.0)


def test_every_form_gives_the_same_table():
    want = ClassTable((ClassInfo(2, "kidney", GREEN), ClassInfo(1, "liver", RED)))
    forms = [
        {1: ("liver", RED), 2: ("kidney", GREEN)},
        {"1": {"name": "liver", "color": list(RED)}, "2": {"name": "kidney", "color": GREEN[:3]}},
        [{"value": 2, "name": "kidney", "color": GREEN}, {"value": 1, "name": "liver", "color": RED}],
        [ClassInfo(1, "liver", RED), ClassInfo(2, "kidney", GREEN)],
        ModelCard("m", classes=[CardClassInfo(1, "liver", RED), CardClassInfo(2, "kidney", GREEN)]),
    ]
    for form in forms:
        assert ClassTable.from_any(form) == want, form
    assert ClassTable.from_any({0: "background", 1: "liver", 2: "kidney"}, colors={1: RED, 2: GREEN}) == want
    assert [c.value for c in want] == [1, 2] and want.names() == {1: "liver", 2: "kidney"}
    assert want.names(background=True) == {0: "background", 1: "liver", 2: "kidney"}
    assert want.by_channel() == {1: "liver", 2: "kidney"} and ClassInfo is CardClassInfo
    assert ClassTable.from_json(json.loads(json.dumps(want.to_json()))) == want


def test_meta_round_trip_and_the_old_colors_key():
    table = ClassTable.from_any({1: ("liver", RED), 2: "kidney"})
    meta = table.to_meta({})
    assert meta["classes"] == {1: "liver", 2: "kidney"} and meta["class_colors"] == {1: RED} == meta["colors"]
    assert ClassTable.from_meta(meta) == table
    old_pipeline = {"classes": {0: "background", 1: "liver"}, "colors": {1: RED}}  # what the pipeline stored
    assert ClassTable.from_meta(old_pipeline).colors() == {1: RED}
    old_reader = {"classes": {1: "liver"}, "class_colors": {1: RED[:3]}}  # what the readers stored (RGB ok)
    assert ClassTable.from_meta(old_reader).colors() == {1: RED}


def test_default_colors_only_for_matching_names():
    table = ClassTable.from_any({1: "liver", 2: "not spleen", 3: ("kidney_right", RED)}).with_default_colors()
    assert table.colors() == {1: ABDOMEN_CLASSES[1][1], 3: RED}
    assert class_names() == {0: "background", **{v: n for v, (n, _) in ABDOMEN_CLASSES.items()}}
    assert class_colors() == {v: c for v, (_, c) in ABDOMEN_CLASSES.items()}


@pytest.mark.parametrize("name", ["labels.nii.gz", "labels.nrrd"])
def test_pipeline_colours_survive_writing_and_reading(tmp_path, name):
    """Labels as the pipeline makes them (meta["colors"]) keep their colours through a file."""
    from napari_medseg.io import read_volume, write_labels

    arr = np.zeros((4, 5, 6), np.uint8)
    arr[1:3, 1:4, 1:5] = 1
    arr[2, 2, 2] = 7
    labels = Volume(arr, (0.8, 0.8, 2.0), meta={"classes": {1: "lesion", 7: "cyst"}, "colors": {1: RED, 7: GREEN}})
    back = read_volume(write_labels(labels, tmp_path / name))
    table = ClassTable.from_meta(back.meta)
    assert table.names() == {1: "lesion", 7: "cyst"}
    assert set(table.colors()) == {1, 7}
    np.testing.assert_allclose(table.colors()[1], RED, atol=1e-6)
    np.testing.assert_allclose(table.colors()[7], GREEN, atol=1e-6)
