"""napari: a DICOM SEG / RTSTRUCT opens as a Labels layer exactly on its image layer, with the file's names and
colours; the RTSTRUCT writer saves a labels layer against its source series."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from labels_factory import NAMES, ct, highdicom_seg, organs  # noqa: E402

from napari_medseg._napari.writer import write_labels_rtstruct  # noqa: E402
from napari_medseg.io import read_volume, write_labels  # noqa: E402

pytestmark = pytest.mark.gui
PLUGIN = "napari-medseg"


def _same_placement(a, b):
    np.testing.assert_allclose(a.scale, b.scale, atol=1e-9)
    np.testing.assert_allclose(a.translate, b.translate, atol=1e-9)
    np.testing.assert_allclose(a.affine.affine_matrix, b.affine.affine_matrix, atol=1e-9)


def test_seg_opens_on_its_open_image_with_the_file_colours(make_napari_viewer, tmp_path):
    written, image = ct(tmp_path / "ct")
    lab = organs(image.spatial_shape)
    masks = {"Liver": lab == 1, "Spleen": lab == 2}
    seg = highdicom_seg(written.files, masks, tmp_path / "seg.dcm", colors={"Liver": (255, 0, 0), "Spleen": (0, 0, 255)})
    alone = tmp_path / "alone"
    alone.mkdir()
    seg = Path(shutil.move(seg, alone / "seg.dcm"))  # only the open image layer can give the grid
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "ct"), plugin=PLUGIN)
    viewer.open(str(seg), plugin=PLUGIN)
    img_layer, lab_layer = viewer.layers
    assert lab_layer._type_string == "labels"
    _same_placement(lab_layer, img_layer)
    np.testing.assert_array_equal(np.asarray(lab_layer.data), np.where(lab == 3, 0, lab))
    assert list(lab_layer.features["class"][:3]) == ["background", "Liver", "Spleen"]
    np.testing.assert_allclose(lab_layer.colormap.map(1)[:3], (1, 0, 0), atol=2 / 255)
    np.testing.assert_allclose(lab_layer.colormap.map(2)[:3], (0, 0, 1), atol=2 / 255)
    # saved back as RTSTRUCT through the napari writer, against the source series
    data, attrs, _ = lab_layer.as_layer_data_tuple()
    out = write_labels_rtstruct(str(tmp_path / "rt.dcm"), data, attrs)
    back = read_volume(out[0], reference=tmp_path / "ct")
    np.testing.assert_array_equal(back.array, np.where(lab == 3, 0, lab))
    assert back.meta["classes"] == {1: "Liver", 2: "Spleen"}


def test_rtstruct_in_the_series_folder_opens_with_its_image(make_napari_viewer, tmp_path):
    written, image = ct(tmp_path / "ct")
    lab = organs(image.spatial_shape)
    # exported elsewhere, then copied beside the CT, as a planning system's export arrives (we never write into
    # an input folder ourselves)
    write_labels(image.with_array(lab), tmp_path / "rtss.dcm", classes=NAMES, reference=image, format="rtstruct")
    shutil.copy(tmp_path / "rtss.dcm", tmp_path / "ct" / "rtss.dcm")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "ct"), plugin=PLUGIN)  # the folder: the CT and its RTSTRUCT
    img_layer, lab_layer = viewer.layers
    assert img_layer._type_string == "image" and lab_layer._type_string == "labels"
    _same_placement(lab_layer, img_layer)
    np.testing.assert_array_equal(np.asarray(lab_layer.data), lab)
    assert list(lab_layer.features["class"][:4]) == ["background", "liver", "spleen", "kidney_left"]


def test_our_own_seg_reopens_as_one_labels_layer_with_its_names(make_napari_viewer, tmp_path):
    """Issue 18 item 3: our SEG used to reopen as a 0/1 image layer with a misleading slice warning."""
    from napari_medseg._napari.layers import SOURCE_KEY

    written, image = ct(tmp_path / "ct")
    lab = organs(image.spatial_shape)
    out = write_labels(image.with_array(lab), tmp_path / "seg.dcm", classes=NAMES, reference=image)
    viewer = make_napari_viewer()
    viewer.open(str(out), plugin=PLUGIN)  # the series is beside: the layer is on its grid, names kept
    (layer,) = viewer.layers
    assert layer._type_string == "labels" and layer.metadata["classes"] == NAMES
    np.testing.assert_array_equal(np.asarray(layer.data), lab)
    assert layer.metadata[SOURCE_KEY]["meta"]["series_uid"] == written.series_uid  # can be saved as SEG again
    assert not layer.metadata["medseg_volume"]["meta"]["warnings"]
