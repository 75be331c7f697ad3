"""Training labels from corrected slices and the unknown-class check (core)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.editing.training_labels import (
    check_known_classes,
    describe_slices,
    model_class_values,
    training_labels,
    values_on_slices,
)
from napari_medseg.errors import InputError
from napari_medseg.volume import Volume


def test_training_labels_keep_only_corrected_slices():
    arr = np.random.default_rng(0).integers(0, 4, (6, 8, 9)).astype(np.uint8)
    vol = Volume(np.zeros_like(arr), (0.8, 0.9, 2.5), (1.0, 2.0, 3.0), np.eye(3), {})
    out = training_labels(vol, arr, [(0, 2), (2, 5)])
    assert out.same_grid(vol) and out.array.shape == arr.shape
    np.testing.assert_array_equal(out.array[2], arr[2])
    np.testing.assert_array_equal(out.array[:, :, 5], arr[:, :, 5])
    keep = np.zeros(arr.shape, bool)
    keep[2] = True
    keep[:, :, 5] = True
    assert not out.array[~keep].any()
    assert values_on_slices(arr, [(0, 2)]) == set(np.unique(arr[2]).tolist())


def test_unknown_classes_are_named(tmp_path):
    arr = np.zeros((4, 5, 5), np.uint8)
    arr[1, 0, 0] = 9
    arr[2, 0, 0] = 1
    check_known_classes(arr, [(0, 2)], {1, 2}, "m")  # class 9 is not on a corrected slice
    with pytest.raises(InputError, match=r"label values \[9\] that model 'm' does not know \(\[1, 2\]\)"):
        check_known_classes(arr, [(0, 1), (0, 2)], {1, 2}, "m")
    assert "no corrected slices" in describe_slices([])
    assert describe_slices([(0, 3), (0, 1), (1, 4)]) == "3 corrected slice(s) — z: 1, 3; y: 4"


def test_model_class_values_read_the_card(tmp_path):
    from napari_medseg.models import ClassInfo, ModelCard, build_network, save_model_package

    card = ModelCard(name="t", architecture="UNet",
                     arch_args={"spatial_dims": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0},
                     classes=[ClassInfo(0, "background"), ClassInfo(1, "liver"), ClassInfo(4, "kidney")],
                     spacing=(2.0, 2.0, 2.0), roi_size=(16, 16, 16))
    path = save_model_package(build_network(card), card, tmp_path / "t")
    assert model_class_values(str(path)) == {0, 1, 4}
