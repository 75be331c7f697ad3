"""napari reader / writers / sample data with a real viewer (Xvfb): geometry must be exact."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg._napari.layers import META_KEY, SOURCE_KEY
from napari_medseg._napari.reader import get_reader, read_layers
from napari_medseg._napari.writer import write_labels_dicom_seg, write_labels_nifti
from napari_medseg.errors import InputError
from napari_medseg.volume import Volume

pytestmark = pytest.mark.gui
PLUGIN = "napari-medseg"


def assert_layer_geometry(layer, vol: Volume):
    """Layer transform == the Volume geometry, checked on voxel positions through napari's own transform."""
    kw = vol.napari_kwargs()
    np.testing.assert_allclose(layer.scale, kw["scale"], atol=1e-9)
    np.testing.assert_allclose(layer.translate, kw["translate"], atol=1e-9)
    if "affine" in kw:
        np.testing.assert_allclose(layer.affine.affine_matrix, kw["affine"], atol=1e-9)
    k, j, i = (np.array(vol.spatial_shape) - 1)
    for idx in [(0, 0, 0), (k, j, i), (k // 2, 0, i)]:
        world = np.asarray(layer.data_to_world(np.asarray(idx, dtype=float)))
        lps = vol.index_to_physical(np.asarray(idx[::-1], dtype=float))
        np.testing.assert_allclose(world, lps[::-1], atol=1e-4)


def test_get_reader_declines_what_it_cannot_read(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert get_reader(str(text)) is None
    assert get_reader(str(tmp_path / "missing.nii.gz")) is None
    assert get_reader(str(tmp_path)) is None  # an empty folder holds no DICOM
    assert get_reader([str(text), str(text)]) is None
    assert get_reader(None) is None


def test_reader_error_becomes_notification(tmp_path, monkeypatch):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 20)
    shown = []
    import napari.utils.notifications as notes

    monkeypatch.setattr(notes, "show_error", lambda msg: shown.append(msg))
    assert get_reader(str(bad)) is read_layers
    assert read_layers(str(bad)) == [(None,)]
    assert len(shown) == 1 and "broken.nii.gz" in shown[0]


@pytest.mark.parametrize("key", ["abdomen_phantom_nifti", "abdomen_phantom_dicom"])
def test_sample_data_overlays_in_place(make_napari_viewer, key):
    from napari_medseg.sample import make_sample_phantom

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    image, labels = viewer.layers[0], viewer.layers[1]
    assert image._type_string == "image" and labels._type_string == "labels"
    src_image, src_labels = make_sample_phantom(seed=0)
    # exact physical placement: same as the generated phantom, through the real readers
    assert_layer_geometry(image, src_image)
    assert_layer_geometry(labels, src_image)
    np.testing.assert_allclose(image.extent.world, labels.extent.world, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(labels.data), src_labels.array)
    np.testing.assert_allclose(np.asarray(image.data), src_image.array, atol=0.5)
    assert list(labels.features["class"][1:7]) == ["liver", "spleen", "kidney_right", "kidney_left", "liver_tumour", "spine"]
    assert image.metadata[META_KEY]["spacing"] == pytest.approx(list(src_image.spacing))
    # hovering a liver voxel shows its class name in the status bar
    k, j, i = np.argwhere(src_labels.array == 1)[0]
    world = labels.data_to_world(np.array([k, j, i], dtype=float))
    status = labels.get_status(world, world=True, view_direction=np.array([1.0, 0, 0]), dims_displayed=[1, 2])
    assert "class: liver" in status["coordinates"]
    if key.endswith("dicom"):
        assert labels.metadata[SOURCE_KEY]["meta"].get("dicom_reference") or labels.metadata[SOURCE_KEY]["meta"].get("source_path")


def test_open_oblique_nifti_and_labels_with_class_names(make_napari_viewer, tmp_path):
    from napari_medseg.io import write_labels, write_volume

    a = np.deg2rad(30)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 50, (6, 10, 12))
    hu[:, :3] = -1000  # air: a CT-like range, so the reader picks the CT window even without a modality tag
    img = Volume(hu.astype(np.int16), (0.7, 0.9, 2.5), (10.0, -20.0, 35.0), rot, {"modality": "CT"})
    lab = img.with_array((img.array > 40).astype(np.uint8) + (img.array > 90).astype(np.uint8))
    write_volume(img, tmp_path / "ct.nii.gz")
    write_labels(lab, tmp_path / "ct_labels.nii.gz", classes={1: "organ", 2: "lesion"})
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "ct.nii.gz"), plugin=PLUGIN)
    viewer.open(str(tmp_path / "ct_labels.nii.gz"), plugin=PLUGIN)
    image, labels = viewer.layers
    assert labels._type_string == "labels"
    assert_layer_geometry(image, img)
    assert_layer_geometry(labels, img)
    assert list(labels.features["class"][:3]) == ["background", "organ", "lesion"]
    assert tuple(image.contrast_limits) == (-160.0, 240.0)


def test_save_labels_through_napari_keeps_source_affine(make_napari_viewer, tmp_path, phantom):
    import nibabel as nib

    from napari_medseg.io import write_volume

    src_image, src_labels = phantom
    write_volume(src_image, tmp_path / "ct.nii.gz")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "ct.nii.gz"), plugin=PLUGIN)
    image = viewer.layers[0]
    labels = viewer.add_labels(src_labels.array, name="seg", scale=image.scale, translate=image.translate,
                               metadata={"classes": {1: "liver", 2: "spleen"}})
    out = tmp_path / "saved_labels.nii.gz"
    viewer.layers.selection = {labels}
    written = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert [str(p) for p in written] == [str(out)]
    src = nib.load(str(tmp_path / "ct.nii.gz"))
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, src.affine, atol=1e-5)
    assert saved.shape == src.shape
    assert np.issubdtype(saved.get_data_dtype(), np.integer)
    np.testing.assert_array_equal(np.asarray(saved.dataobj).transpose(2, 1, 0), src_labels.array)
    from napari_medseg.io import read_volume

    assert {int(k): v for k, v in read_volume(out).meta["classes"].items() if int(k)} == {1: "liver", 2: "spleen"}
    # the image writer keeps geometry too, and never overwrites the file the layer came from
    viewer.layers.selection = {image}
    out_img = tmp_path / "copy.nii.gz"
    viewer.layers.save(str(out_img), selected=True, plugin=PLUGIN)
    np.testing.assert_allclose(nib.load(str(out_img)).affine, src.affine, atol=1e-5)
    with pytest.raises(InputError, match="never overwrites"):
        write_labels_nifti(str(tmp_path / "ct.nii.gz"), src_labels.array,
                           {"metadata": {SOURCE_KEY: image.metadata[META_KEY]}, "name": "seg"})


def test_dicom_seg_writer_needs_and_uses_the_source_series(tmp_path):
    from napari_medseg._napari.sample import abdomen_phantom_dicom

    (img_data, img_kw, _), (lab_data, lab_kw, _) = abdomen_phantom_dicom()
    with pytest.raises(InputError, match="DICOM SEG"):
        write_labels_dicom_seg(str(tmp_path / "x.dcm"), lab_data, {"name": "seg", "metadata": {}})
    out = tmp_path / "seg.dcm"
    written = write_labels_dicom_seg(str(out), lab_data, {"name": "seg", **lab_kw})
    assert written == [str(out)]
    import pydicom

    ds = pydicom.dcmread(str(out))
    assert ds.Modality == "SEG"
    names = {str(s.SegmentLabel) for s in ds.SegmentSequence}
    assert {"liver", "spleen", "spine"} <= names


@pytest.mark.shared_data
def test_chest_ct_opens_in_place(shared_data, make_napari_viewer):
    import SimpleITK as sitk

    folder = shared_data / "ct_chest_dicom"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin=PLUGIN)
    assert len(viewer.layers) == 1
    layer = viewer.layers[0]
    assert layer.data.shape == (141, 512, 512)
    np.testing.assert_allclose(layer.scale, ref.GetSpacing()[::-1], atol=1e-4)
    np.testing.assert_allclose(layer.translate, ref.GetOrigin()[::-1], atol=1e-4)
    last = np.array(ref.GetSize()) - 1
    np.testing.assert_allclose(layer.data_to_world(last[::-1].astype(float)),
                               ref.TransformIndexToPhysicalPoint([int(v) for v in last])[::-1], atol=1e-3)
    # a labels layer made on it (as the Segment widget does) covers the same world extent
    from napari_medseg._napari.layers import labels_layer_data, volume_from_layer

    vol, has_geometry = volume_from_layer(layer)
    assert has_geometry
    data, kw, _ = labels_layer_data(vol.with_array(np.zeros(vol.spatial_shape, np.uint8)), "seg", {1: "lung"}, source=vol)
    labels = viewer.add_labels(data, **kw)
    np.testing.assert_allclose(labels.extent.world, layer.extent.world, atol=1e-6)


@pytest.mark.shared_data
def test_abdomen_ct_and_its_labels_overlay_with_names(shared_data, make_napari_viewer):
    import json

    folder = shared_data / "ct_abdomen_3mm"
    viewer = make_napari_viewer()
    viewer.open(str(folder / "ct.nii.gz"), plugin=PLUGIN)
    viewer.open(str(folder / "labels.nii.gz"), plugin=PLUGIN)
    image, labels = viewer.layers
    assert image._type_string == "image" and labels._type_string == "labels"
    np.testing.assert_allclose(labels.extent.world, image.extent.world, atol=1e-6)
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    names = json.loads((folder / "classes.json").read_text())
    table = dict(zip(labels.features["index"], labels.features["class"]))
    assert table[5] == names["5"] == "liver" and table[1] == names["1"]


def test_4d_nifti_keeps_a_visible_channel_axis(make_napari_viewer, tmp_path):
    import nibabel as nib

    arr = np.random.default_rng(0).normal(size=(12, 10, 6, 3)).astype(np.float32)  # [i, j, k, t]
    affine = np.diag([-0.8, -0.9, 2.0, 1.0])
    affine[:3, 3] = (40.0, 30.0, -10.0)
    nib.save(nib.Nifti1Image(arr, affine), str(tmp_path / "series4d.nii.gz"))
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "series4d.nii.gz"), plugin=PLUGIN)
    layer = viewer.layers[0]
    assert layer.data.shape == (3, 6, 10, 12)
    assert viewer.dims.ndim == 4 and viewer.dims.nsteps[0] == 3  # a slider for the channel/time axis
    np.testing.assert_allclose(layer.scale, [1.0, 2.0, 0.9, 0.8])
    vol = Volume.from_nifti(arr, affine)
    np.testing.assert_allclose(layer.data_to_world([1, 2, 3, 4])[1:], vol.index_to_physical([4, 3, 2])[::-1], atol=1e-5)


def test_folder_with_two_series_opens_one_layer_each(make_napari_viewer, tmp_path):
    from napari_medseg.io.dicom_write import write_dicom_series

    rng = np.random.default_rng(2)
    a = Volume(rng.integers(-1000, 500, (5, 16, 16)).astype(np.int16), (0.7, 0.7, 3.0), (0.0, 0.0, 0.0), np.eye(3), {"modality": "CT"})
    b = Volume(rng.integers(-1000, 500, (4, 12, 12)).astype(np.int16), (1.0, 1.0, 5.0), (5.0, -5.0, 20.0), np.eye(3), {"modality": "CT"})
    write_dicom_series(a, tmp_path / "study" / "a", series_description="Arterial", series_number=3)
    write_dicom_series(b, tmp_path / "study" / "b", series_description="Venous", series_number=4)
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "study"), plugin=PLUGIN)
    names = sorted(layer.name for layer in viewer.layers)
    assert names == ["#3 Arterial", "#4 Venous"]
    assert_layer_geometry(viewer.layers["#3 Arterial"], a)
    assert_layer_geometry(viewer.layers["#4 Venous"], b)
