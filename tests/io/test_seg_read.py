"""Reading DICOM SEG: our own (voxel-identical), highdicom-made (on the CT grid, names, colours), fractional,
overlapping, > 255 segments, missing or wrong referenced series, frames off the grid; folder scans and dispatch."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from labels_factory import NAMES, OBLIQUE, ct, highdicom_seg, organs

from napari_medseg.errors import GeometryError, InputError
from napari_medseg.io import list_series, read_all, read_volume, write_labels
from napari_medseg.volume import Volume

COLORS = {1: (0.86, 0.47, 0.35, 1.0), 2: (0.2, 0.4, 0.9, 1.0), 3: (0.1, 0.8, 0.2, 1.0)}


def _ours(tmp_path, folder="ct"):
    written, image = ct(tmp_path / folder)
    lab = organs(image.spatial_shape)
    lab[lab == 3] = 7  # a gap in the values: kept exactly
    classes = {1: (NAMES[1], COLORS[1]), 2: (NAMES[2], COLORS[2]), 7: (NAMES[3], COLORS[3])}
    out = write_labels(image.with_array(lab), tmp_path / "seg.dcm", classes=classes, reference=image)
    return written, image, lab, out


def test_our_seg_reads_back_voxel_identical_with_names_and_colours(tmp_path):
    written, image, lab, out = _ours(tmp_path)
    back = read_volume(out)  # the CT folder is beside the SEG
    assert back.same_grid(image, tol=0)
    np.testing.assert_array_equal(back.array, lab)
    assert back.array.dtype == np.uint8
    assert back.meta["classes"] == {1: "liver", 2: "spleen", 7: "kidney_left"}
    for value, rgba in COLORS.items():  # CIELab in the file -> RGB within the 8-bit rounding
        np.testing.assert_allclose(back.meta["class_colors"][7 if value == 3 else value], rgba, atol=2.5 / 255)
    assert back.meta["reference_series_uid"] == written.series_uid
    assert not back.warnings
    assert read_volume(image.meta["source_path"]).meta["modality"] == "CT"  # the folder still reads as the CT


def test_highdicom_seg_lands_on_the_ct_grid_with_its_segment_names(tmp_path):
    written, image = ct(tmp_path / "ct")
    lab = organs(image.spatial_shape)
    masks = {"Liver": lab == 1, "Spleen": lab == 2, "Left kidney": lab == 3}
    path = highdicom_seg(written.files, masks, tmp_path / "ct" / "seg.dcm", colors={"Liver": (255, 0, 0)})
    back = read_volume(path)
    assert back.same_grid(image, tol=0) and back.shape == image.shape
    np.testing.assert_array_equal(back.array, lab)  # value = segment number
    assert back.meta["classes"] == {1: "Liver", 2: "Spleen", 3: "Left kidney"}
    np.testing.assert_allclose(back.meta["class_colors"][1], (1.0, 0.0, 0.0, 1.0), atol=2 / 255)
    # an explicit reference (a path, or the Volume) gives the same
    np.testing.assert_array_equal(read_volume(path, reference=tmp_path / "ct").array, lab)
    np.testing.assert_array_equal(read_volume(path, reference=image).array, lab)


def test_label_map_segmentation_is_a_seg_too(tmp_path):
    written, image = ct(tmp_path / "ct")
    lab = organs(image.spatial_shape)
    path = highdicom_seg(written.files, {n: lab == v for v, n in NAMES.items()}, tmp_path / "lm.dcm", labelmap=True)
    back = read_volume(path, reference=tmp_path / "ct")
    assert back.meta["modality"] == "SEG" and back.same_grid(image, tol=0)
    np.testing.assert_array_equal(back.array, lab)
    assert back.meta["classes"] == NAMES


def test_fractional_seg_is_thresholded_at_half(tmp_path):
    written, image = ct(tmp_path / "ct")
    lab = organs(image.spatial_shape)
    prob = np.where(lab == 1, 0.8, 0.0).astype(np.float32)
    prob[lab == 2] = 0.3  # below one half: not in the segment
    path = highdicom_seg(written.files, {"tumour": prob}, tmp_path / "seg.dcm", fractional=True)
    back = read_volume(path, reference=tmp_path / "ct")
    np.testing.assert_array_equal(back.array, (lab == 1).astype(np.uint8))
    assert any("thresholded at 0.5" in w for w in back.warnings)


def test_overlapping_segments_the_smaller_wins_with_a_warning(tmp_path):
    written, image = ct(tmp_path / "ct")
    lab = organs(image.spatial_shape)
    body = lab > 0
    body[:, 5:-5, 5:-5] = True
    path = highdicom_seg(written.files, {"BODY": body, "liver": lab == 1, "spleen": lab == 2}, tmp_path / "seg.dcm")
    back = read_volume(path, reference=tmp_path / "ct")
    assert np.all(back.array[lab == 1] == 2) and np.all(back.array[lab == 2] == 3)
    assert np.all(back.array[body & (lab == 0)] == 1)
    text = " ".join(back.warnings)
    assert "'liver' overlaps 'BODY'" in text and "'spleen' overlaps 'BODY'" in text and "smaller one wins" in text


def test_an_empty_segment_keeps_its_name_with_a_warning(tmp_path):
    written, image = ct(tmp_path / "ct")
    lab = organs(image.spatial_shape)
    masks = {"liver": lab == 1, "nothing": np.zeros(lab.shape, bool), "spleen": lab == 2}
    back = read_volume(highdicom_seg(written.files, masks, tmp_path / "seg.dcm"), reference=image)
    assert back.meta["classes"] == {1: "liver", 2: "nothing", 3: "spleen"}
    np.testing.assert_array_equal(back.array, np.select([lab == 1, lab == 2], [1, 3], 0))
    assert back.warnings == ["DICOM SEG: 'nothing' is empty (no voxel on this grid)"]


def test_more_than_255_segments_give_uint16_labels(tmp_path):
    written, image = ct(tmp_path / "ct", geometry=dict(shape=(3, 20, 20), spacing=(1.0, 1.0, 2.0)))
    masks = {}
    for n in range(300):
        m = np.zeros(image.spatial_shape, bool)
        m[n % 3, (n // 3) // 20 * 2 % 20, (n // 3) % 20] = True
        masks[f"s{n + 1}"] = m
    path = highdicom_seg(written.files, masks, tmp_path / "seg.dcm", shuffle=False)
    back = read_volume(path, reference=tmp_path / "ct")
    assert back.array.dtype == np.uint16 and int(back.array.max()) == 300
    assert len(back.meta["classes"]) == 300
    expected = np.zeros(image.spatial_shape, np.uint16)
    for n, m in enumerate(masks.values(), start=1):
        expected[m] = n
    np.testing.assert_array_equal(back.array, expected)


def test_seg_without_its_series_uses_its_own_geometry_with_a_warning(tmp_path):
    written, image, lab, out = _ours(tmp_path)
    alone = tmp_path / "alone"
    alone.mkdir()
    moved = shutil.copy(out, alone / "seg.dcm")
    back = read_volume(moved)
    assert any(written.series_uid in w and "own frame geometry" in w for w in back.warnings)
    # the SEG's frames span the slices holding labels: that part of the CT grid, exactly
    ks = np.nonzero(lab.any(axis=(1, 2)))[0]
    np.testing.assert_allclose(back.origin, image.index_to_physical((0, 0, ks[0])), atol=1e-3)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-6)
    np.testing.assert_allclose(back.spacing, image.spacing, atol=1e-4)
    np.testing.assert_array_equal(back.array, lab[ks[0]: ks[-1] + 1])


def test_wrong_reference_is_an_error_naming_the_series(tmp_path):
    written, image, lab, out = _ours(tmp_path)
    ct(tmp_path / "other", seed=5)
    with pytest.raises(InputError, match=written.series_uid):
        read_volume(out, reference=tmp_path / "other")
    other = read_volume(tmp_path / "other")
    with pytest.raises(InputError, match=written.series_uid):
        read_volume(out, reference=other)


def test_frames_that_match_no_slice_of_the_reference_are_refused(tmp_path):
    written, image, lab, out = _ours(tmp_path)
    half = image.index_to_physical((0, 0, 0.5))  # the same series, half a slice off
    shifted = Volume(np.zeros(image.spatial_shape, np.int16), image.spacing, half, image.direction, dict(image.meta))
    with pytest.raises(GeometryError, match="match no slice"):
        read_volume(out, reference=shifted)


def test_voxels_outside_a_smaller_reference_are_dropped_with_a_warning(tmp_path):
    written, image, lab, out = _ours(tmp_path)
    top = Volume(image.array[:6], image.spacing, image.origin, image.direction, dict(image.meta))  # 6 of 14 slices
    back = read_volume(out, reference=top)
    np.testing.assert_array_equal(back.array, lab[:6])
    dropped = int(np.count_nonzero(lab[6:]))
    assert any(f"{dropped} voxel(s) of the SEG lie outside the image" in w for w in back.warnings)


def test_seg_without_sop_class_is_still_a_seg(tmp_path):
    import pydicom

    written, image, lab, out = _ours(tmp_path)
    ds = pydicom.dcmread(out)
    del ds.SOPClassUID  # as an anonymiser leaves it; Modality SEG remains
    ds.file_meta.MediaStorageSOPClassUID = ""
    ds.save_as(tmp_path / "anon.dcm")
    back = read_volume(tmp_path / "anon.dcm")
    assert back.meta["modality"] == "SEG" and back.same_grid(image, tol=0)
    np.testing.assert_array_equal(back.array, lab)
    assert any("no SOP Class UID" in w for w in back.warnings)


def test_broken_seg_is_a_clear_error(tmp_path):
    written, image, lab, out = _ours(tmp_path)
    data = out.read_bytes()
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="broken.dcm"):
        read_volume(broken)


def test_folders_and_zips_holding_a_seg(tmp_path):
    from dicom_factory import zip_folder

    written, image, lab, out = _ours(tmp_path)
    shutil.move(out, tmp_path / "ct" / "seg.dcm")
    assert [s.uid for s in list_series(tmp_path / "ct")] == [written.series_uid]  # SEG is not an image series
    vol = read_volume(tmp_path / "ct")
    assert vol.meta["modality"] == "CT" and vol.shape == image.shape
    for path in (tmp_path / "ct", zip_folder(tmp_path / "ct", tmp_path / "export.zip")):
        vols = read_all(path)
        assert [v.meta["modality"] for v in vols] == ["CT", "SEG"]
        assert vols[1].same_grid(vols[0], tol=0)
        np.testing.assert_array_equal(vols[1].array, lab)
    info = list_series(tmp_path / "ct" / "seg.dcm")[0]
    assert info.format == "dicom-seg" and tuple(info.shape) == image.shape
    assert any("liver" in w for w in info.warnings)


def test_a_folder_with_only_a_seg_says_so(tmp_path):
    written, image, lab, out = _ours(tmp_path)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out, alone / "seg.dcm")
    with pytest.raises(InputError, match="SEG/RTSTRUCT"):
        read_volume(alone)
    assert read_all(alone)[0].meta["modality"] == "SEG"


def test_oblique_geometry_is_really_oblique():
    assert not np.allclose(OBLIQUE["direction"], np.eye(3)) and OBLIQUE["spacing"][0] != OBLIQUE["spacing"][1]
