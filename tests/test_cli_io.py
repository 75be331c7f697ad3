"""``medseg info`` / ``convert`` / ``sample``, run in-process (and once as a real subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg.cli import main
from napari_medseg.io import read_volume
from napari_medseg.io.dicom_write import write_dicom_series
from napari_medseg.sample import LIVER, SAMPLE_GEOMETRY, make_phantom, make_sample_phantom
from napari_medseg.volume import Volume


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def dicom_sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sample")
    assert main(["sample", "abdomen-dicom", "-o", str(folder)]) == 0
    return folder


def test_sample_abdomen_nifti(tmp_path, capsys):
    rc, out, _ = _run(capsys, "sample", "abdomen", "-o", tmp_path, "--seed", 3)
    assert rc == 0 and "abdomen_ct.nii.gz" in out and "abdomen_labels.nii.gz" in out
    image = read_volume(tmp_path / "abdomen_ct.nii.gz")
    labels = read_volume(tmp_path / "abdomen_labels.nii.gz")
    expected_image, expected_labels = make_sample_phantom(seed=3)
    np.testing.assert_array_equal(image.array, expected_image.array)
    np.testing.assert_array_equal(labels.array, expected_labels.array)
    assert labels.same_grid(image, tol=0)
    assert labels.meta["classes"][LIVER] == "liver"
    rc, _, err = _run(capsys, "sample", "abdomen", "-o", tmp_path)
    assert rc == 2 and "already exists" in err and "--force" in err
    assert _run(capsys, "sample", "abdomen", "-o", tmp_path, "--force")[0] == 0


def test_sample_dicom_reads_back_on_the_simpleitk_grid(dicom_sample):
    series = dicom_sample / "abdomen_ct_dicom"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    ref = reader.Execute()
    image = read_volume(series)
    expected, expected_labels = make_sample_phantom(seed=0)
    np.testing.assert_array_equal(image.array, expected.array)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ref), expected.array)
    labels = sitk.ReadImage(str(dicom_sample / "abdomen_ct_dicom_labels.nii.gz"))
    np.testing.assert_allclose(labels.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(labels.GetSpacing(), ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(labels.GetDirection(), ref.GetDirection(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), expected_labels.array)


def test_info_text_and_json(dicom_sample, capsys):
    series = dicom_sample / "abdomen_ct_dicom"
    rc, out, _ = _run(capsys, "info", series)
    assert rc == 0
    assert "1 series" in out and "medseg abdomen phantom" in out
    assert "48 x 160 x 160" in out and "direction (LPS, row-major 3x3)" in out and "orientation:  LPS" in out
    rc, out, _ = _run(capsys, "info", series, "--json")
    doc = json.loads(out)
    (s,) = doc["series"]
    assert set(s) >= {"uid", "shape", "spacing", "origin", "direction", "warnings", "orientation"}
    assert s["shape"] == [48, 160, 160]
    np.testing.assert_allclose(s["spacing"], SAMPLE_GEOMETRY["spacing"])
    np.testing.assert_allclose(s["direction"], np.eye(3).reshape(-1))
    np.testing.assert_allclose(s["origin"], make_sample_phantom(seed=0)[0].origin, atol=1e-4)


def test_info_json_as_a_subprocess(dicom_sample):
    exe = shutil.which("medseg")
    cmd = [exe] if exe else [sys.executable, "-m", "napari_medseg.cli"]
    proc = subprocess.run(
        cmd + ["info", str(dicom_sample / "abdomen_ct_dicom_labels.nii.gz"), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (s,) = json.loads(proc.stdout)["series"]
    assert s["format"] == "nifti" and s["shape"] == [48, 160, 160] and s["orientation"] == "LPS"


def test_convert_dicom_to_nifti_exact_geometry_and_overwrite(dicom_sample, tmp_path, capsys):
    series = dicom_sample / "abdomen_ct_dicom"
    out = tmp_path / "ct.nii.gz"
    rc, stdout, _ = _run(capsys, "convert", series, "-o", out)
    assert rc == 0 and "wrote" in stdout
    converted = read_volume(out)
    source = read_volume(series)
    assert converted.same_grid(source, tol=1e-4)
    np.testing.assert_array_equal(converted.array, source.array)
    stamp = out.stat().st_mtime_ns
    rc, _, err = _run(capsys, "convert", series, "-o", out)
    assert rc == 2 and "already exists" in err
    assert out.stat().st_mtime_ns == stamp
    assert _run(capsys, "convert", series, "-o", out, "--force")[0] == 0


def test_convert_oblique_nrrd_to_nifti(tmp_path, capsys):
    a = np.deg2rad(30)
    direction = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    vol = Volume(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), (0.5, 0.75, 2.0), (3.0, -4.0, 5.5), direction)
    img = sitk.GetImageFromArray(vol.array)
    img.SetSpacing(vol.spacing)
    img.SetOrigin(vol.origin)
    img.SetDirection(direction.reshape(-1).tolist())
    sitk.WriteImage(img, str(tmp_path / "in.nrrd"))
    assert _run(capsys, "convert", tmp_path / "in.nrrd", "-o", tmp_path / "out.nii")[0] == 0
    nimg = nib.load(str(tmp_path / "out.nii"))
    np.testing.assert_allclose(nimg.affine, vol.nifti_affine(), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(nimg.dataobj), vol.array.T)


def test_convert_with_several_series_needs_a_choice(tmp_path, capsys):
    vol = Volume(np.zeros((3, 4, 5), np.int16), (1.0, 1.0, 2.0))
    write_dicom_series(vol, tmp_path / "study" / "a", series_description="first", series_uid="1.2.3.4.1", series_number=1)
    write_dicom_series(vol.with_array(vol.array + 7), tmp_path / "study" / "b", series_description="second",
                       series_uid="1.2.3.4.2", series_number=2)
    rc, _, err = _run(capsys, "convert", tmp_path / "study", "-o", tmp_path / "x.nii.gz")
    assert rc == 2 and "1.2.3.4.1" in err and "1.2.3.4.2" in err
    assert not (tmp_path / "x.nii.gz").exists()
    rc, out, _ = _run(capsys, "convert", tmp_path / "study", "-o", tmp_path / "x.nii.gz", "--series", "1.2.3.4.2")
    assert rc == 0
    assert int(read_volume(tmp_path / "x.nii.gz").array.max()) == 7
    rc, out, _ = _run(capsys, "info", tmp_path / "study", "--json")
    assert sorted(s["uid"] for s in json.loads(out)["series"]) == ["1.2.3.4.1", "1.2.3.4.2"]


def test_convert_refuses_to_overwrite_its_input(tmp_path, capsys):
    vol = Volume(np.zeros((3, 4, 5), np.int16))
    img = sitk.GetImageFromArray(vol.array)
    sitk.WriteImage(img, str(tmp_path / "in.nii.gz"))
    rc, _, err = _run(capsys, "convert", tmp_path / "in.nii.gz", "-o", tmp_path / "in.nii.gz", "--force")
    assert rc == 2 and "never overwrites" in err


def test_info_on_bad_paths(tmp_path, capsys):
    rc, _, err = _run(capsys, "info", tmp_path / "missing")
    assert rc == 2 and "no such file" in err
    (tmp_path / "notes.txt").write_text("hello")
    rc, _, err = _run(capsys, "info", tmp_path / "notes.txt")
    assert rc == 2 and "notes.txt" in err


@pytest.mark.shared_data
def test_convert_chest_ct_matches_simpleitk_series_reader(shared_data, tmp_path, capsys):
    folder = shared_data / "ct_chest_dicom"
    rc, _, err = _run(capsys, "convert", folder, "-o", tmp_path / "chest.nii.gz")
    assert rc == 0, err
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    out = sitk.ReadImage(str(tmp_path / "chest.nii.gz"))
    assert out.GetSize() == ref.GetSize()
    np.testing.assert_allclose(out.GetSpacing(), ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(out.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(out.GetDirection(), ref.GetDirection(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(ref))
