"""Colours stored in a labels file are the colours napari shows (one `ClassTable` from file to layer)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medseg.io import write_labels
from napari_medseg.volume import Volume

pytestmark = pytest.mark.gui
PLUGIN = "napari-medseg"
RED, TEAL = (1.0, 0.0, 0.0, 1.0), (0.0, 0.6, 0.6, 1.0)


def _labels() -> Volume:
    arr = np.zeros((6, 7, 8), np.uint8)
    arr[1:4, 1:5, 1:6] = 1
    arr[4, 3, 3] = 9
    return Volume(arr, (0.8, 0.9, 2.0), (10.0, -5.0, 3.0))


def _shown(layer, value) -> np.ndarray:
    return np.asarray(layer.colormap.map(np.array([value]))).reshape(-1)


@pytest.mark.parametrize("name", ["tumour_labels.nii.gz", "tumour_labels.nrrd"])
def test_colours_from_a_file_are_shown(make_napari_viewer, tmp_path, name):
    path = write_labels(_labels(), tmp_path / name, classes={1: ("lesion", RED), 9: ("cyst", TEAL)})
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    (layer,) = viewer.layers
    assert layer._type_string == "labels"
    np.testing.assert_allclose(_shown(layer, 1), RED, atol=1e-6)
    np.testing.assert_allclose(_shown(layer, 9), TEAL, atol=1e-6)
    assert dict(zip(layer.features["index"], layer.features["class"]))[9] == "cyst"


def test_colours_from_a_classes_json_sidecar_are_shown(make_napari_viewer, tmp_path):
    import nibabel as nib

    vol = _labels()
    nib.save(nib.Nifti1Image(vol.nifti_array(), vol.nifti_affine()), str(tmp_path / "mask.nii.gz"))
    (tmp_path / "classes.json").write_text(json.dumps({"1": {"name": "lesion", "color": [1, 0, 0]}, "9": "cyst"}))
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "mask.nii.gz"), plugin=PLUGIN)
    (layer,) = viewer.layers
    np.testing.assert_allclose(_shown(layer, 1), RED, atol=1e-6)
    assert dict(zip(layer.features["index"], layer.features["class"]))[1] == "lesion"


def test_labels_layer_data_reads_either_colour_key():
    from napari_medseg._napari.layers import labels_layer_data

    for key in ("class_colors", "colors"):
        vol = _labels()
        vol.meta.update(classes={1: "lesion", 9: "cyst"}, **{key: {1: RED, 9: TEAL}})
        _, kwargs, _ = labels_layer_data(vol, "labels", classes={1: "lesion", 9: "cyst"})
        np.testing.assert_allclose(kwargs["colormap"].map(np.array([9])).reshape(-1), TEAL, atol=1e-6)


def test_geometry_of_layer_without_touching_voxels(make_napari_viewer, tmp_path):
    from napari_medseg._napari.layers import blank_volume, geometry_of_layer, volume_from_layer

    vol = _labels()
    path = write_labels(vol, tmp_path / "x_labels.nii.gz", classes={1: "a", 9: "b"})
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    layer = viewer.layers[0]
    assert geometry_of_layer(layer).same_grid(vol.geometry, tol=1e-5)
    assert geometry_of_layer(layer) == volume_from_layer(layer)[0].geometry
    plain = viewer.add_image(np.zeros((3, 4, 5)), scale=(2.0, 0.5, 0.25), translate=(1.0, 2.0, 3.0))
    g = geometry_of_layer(plain)
    assert g.shape == (3, 4, 5) and g.spacing == (0.25, 0.5, 2.0) and g.origin == (3.0, 2.0, 1.0)
    blank = blank_volume(layer.metadata["medseg_volume"])
    assert blank.geometry == geometry_of_layer(layer) and blank.array.strides == (0, 0, 0)
