"""Issue 9, defects 1, 5a and 9: no output over or into an input (any spelling, any command, with --force);
unwritable output folders refused before the work; predict prints the input warnings once."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medseg._guard import check_outputs, check_writable, input_paths
from napari_medseg.cli import main
from napari_medseg.errors import OutputNotWritableError, OutputOverInputError
from napari_medseg.io import read_volume, write_labels, write_volume
from napari_medseg.io.dicom_write import write_dicom_series
from napari_medseg.models import ClassInfo, ModelCard, build_network, save_model_package
from napari_medseg.volume import Volume


def _digest(path: Path) -> dict:
    """SHA-256 of every file under ``path`` (or of the file): proves nothing was written."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def tiny_model(tmp_path):
    card = ModelCard(name="tiny", arch_args=dict(spatial_dims=3, channels=(4, 8), strides=(2,), num_res_units=1),
                     classes=[ClassInfo(1, "liver")], roi_size=(16, 16, 16), spacing=(2.0, 2.0, 2.0))
    torch.manual_seed(0)
    return save_model_package(build_network(card), card, tmp_path / "models" / "tiny")


def _image(shape=(10, 16, 14), nan=False):
    rng = np.random.default_rng(0)
    arr = (rng.normal(size=shape) * 100).astype(np.float32 if nan else np.int16)
    if nan:
        arr[0, 0, :3] = np.nan
    return Volume(arr, (1.5, 1.5, 2.5), (3.0, -7.0, 11.0))


def _predict(*args) -> int:
    return main(["predict", *map(str, args), "--device", "cpu", "--quiet"])


@contextlib.contextmanager
def unwritable_folder(path: Path):
    """A folder nobody (root included) can create files in: chmod, else chattr +i, else skip."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o555)
    immutable = False
    try:
        try:
            check_writable(path / "x")
            writable = True
        except OutputNotWritableError:
            writable = False
        if writable:  # root ignores permissions: make the folder immutable
            immutable = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
            try:
                check_writable(path / "x")
                pytest.skip("cannot make an unwritable folder on this filesystem")
            except OutputNotWritableError:
                pass
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        os.chmod(path, 0o755)


# ---------------------------------------------------------------------------------------------- predict
def test_predict_onto_its_own_input_is_refused_even_with_force(tmp_path, tiny_model, capsys):
    ct = write_volume(_image(), tmp_path / "ct.nii.gz")
    before = _digest(ct)
    spellings = [ct, tmp_path / "." / "ct.nii.gz", tmp_path / "sub" / ".." / "ct.nii.gz"]
    (tmp_path / "sub").mkdir()
    os.symlink(ct, tmp_path / "link.nii.gz")
    os.link(ct, tmp_path / "hard.nii.gz")
    spellings += [tmp_path / "link.nii.gz", tmp_path / "hard.nii.gz"]
    for target in spellings:
        capsys.readouterr()
        assert _predict(ct, "-o", target, "--model", tiny_model, "--force") == 2
        err = capsys.readouterr().err
        assert err.count("refusing to write") == 1, err  # printed once
        assert "ct.nii.gz" in err and "Choose an output outside" in err
    assert _digest(ct) == before


@pytest.mark.parametrize("flag", ["--report", "--stats"])
def test_predict_report_or_stats_onto_an_input_is_refused(tmp_path, tiny_model, capsys, flag):
    ct = write_volume(_image(), tmp_path / "ct.nii.gz")
    before = _digest(ct)
    assert _predict(ct, "-o", tmp_path / "out", "--model", tiny_model, flag, ct, "--force") == 2
    assert "refusing to write" in capsys.readouterr().err
    assert _digest(ct) == before and not (tmp_path / "out").exists()


def test_predict_dicom_folder_into_itself_is_refused(tmp_path, tiny_model, capsys):
    series = tmp_path / "series"
    write_dicom_series(_image(), series)
    before = _digest(Path(series))
    for fmt in ("nifti", "dicom-seg"):
        assert _predict(series, "-o", series, "--model", tiny_model, "--format", fmt, "--force") == 2
        err = capsys.readouterr().err
        assert "lies inside the input folder" in err and err.count("refusing") == 1
    assert _digest(Path(series)) == before


def test_predict_cases_folder_into_itself_is_refused(tmp_path, tiny_model, capsys):
    cases = tmp_path / "cases"
    write_volume(_image(), cases / "a.nii.gz")
    before = _digest(cases)
    assert _predict(cases, "-o", cases, "--model", tiny_model) == 2
    assert _predict(cases, "-o", cases / "sub", "--model", tiny_model) == 2
    assert _digest(cases) == before


def test_predict_unwritable_output_is_refused_before_any_work(tmp_path, tiny_model, capsys, monkeypatch):
    ct = write_volume(_image(), tmp_path / "ct.nii.gz")
    import napari_medseg.models as models

    loaded = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loaded.append(1))  # the work must not start
    with unwritable_folder(tmp_path / "ro") as ro:
        assert _predict(ct, "-o", ro / "out", "--model", tiny_model) == 2
        err = capsys.readouterr().err
        assert "not writable" in err and "Traceback" not in err and str(ro) in err
    assert loaded == []


def test_predict_prints_the_input_warnings_once(tmp_path, tiny_model, capsys):
    ct = write_volume(_image(nan=True), tmp_path / "ct.nii.gz")
    assert _predict(ct, "-o", tmp_path / "seg.nii.gz", "--model", tiny_model) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "non-finite voxels" in ln]
    assert len(lines) == 1 and "warning" in lines[0]


# ---------------------------------------------------------------------------------------------- convert, API
def test_convert_into_an_input_folder_or_over_a_hard_link_is_refused(tmp_path, capsys):
    series = tmp_path / "series"
    write_dicom_series(_image(), series)
    before = _digest(Path(series))
    assert main(["convert", str(series), "-o", str(Path(series) / "ct.nii.gz"), "--force"]) == 2
    assert "lies inside the input folder" in capsys.readouterr().err
    ct = write_volume(_image(), tmp_path / "ct.nrrd")
    os.link(ct, tmp_path / "same.nrrd")
    assert main(["convert", str(ct), "-o", str(tmp_path / "same.nrrd"), "--force"]) == 2
    assert _digest(Path(series)) == before


def test_write_labels_never_over_or_into_the_source(tmp_path):
    ct = write_volume(_image(), tmp_path / "ct.nii.gz")
    image = read_volume(ct)
    labels = image.with_array(np.zeros(image.spatial_shape, np.uint8))
    with pytest.raises(OutputOverInputError, match="ct.nii.gz"):
        write_labels(labels, ct, force=True)  # the labels carry the CT's source path
    with pytest.raises(OutputOverInputError):
        write_labels(np.zeros(image.spatial_shape, np.uint8), tmp_path / "ct.nii.gz", reference=image, force=True)
    with pytest.raises(OutputOverInputError):
        write_volume(image, tmp_path / "./ct.nii.gz", force=True)
    series = tmp_path / "series"
    write_dicom_series(_image(), series)
    dicom = read_volume(series)
    seg = dicom.with_array(np.ones(dicom.spatial_shape, np.uint8))
    with pytest.raises(OutputOverInputError, match="lies inside the input folder"):
        write_labels(seg, Path(series) / "seg.dcm", reference=dicom)
    out = write_labels(seg, tmp_path / "seg.dcm", reference=dicom)  # beside the folder is fine
    assert out.is_file()


def test_dicom_seg_export_from_a_folder_named_with_colons(tmp_path):
    series = tmp_path / "study::1" / "series"
    write_dicom_series(_image(), series)
    dicom = read_volume(series)
    out = write_labels(dicom.with_array(np.ones(dicom.spatial_shape, np.uint8)), tmp_path / "seg.dcm",
                       classes={1: "liver"}, reference=dicom)
    import pydicom

    assert pydicom.dcmread(out).Modality == "SEG"


def test_guard_spellings_and_folders(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.nii.gz").write_bytes(b"x")
    for out in (src, src / "x.nii.gz", tmp_path / "in" / "." / "deep" / "x.nrrd"):
        with pytest.raises(OutputOverInputError):
            check_outputs(out, [src])
    check_outputs(tmp_path / "in2" / "x.nii.gz", [src])  # a sibling with a common prefix is fine
    with pytest.raises(OutputOverInputError, match="contains the input"):
        check_outputs(tmp_path, [src / "a.nii.gz"], replaces_folder=True)
    os.symlink(src, tmp_path / "alias")
    with pytest.raises(OutputOverInputError):
        check_outputs(tmp_path / "alias" / "x.nii.gz", [src])
    assert input_paths(f"{src / 'a.nii.gz'}::member.dcm") == [src / "a.nii.gz"]


# ---------------------------------------------------------------------------------------------- napari writer
def test_napari_writer_refuses_the_source_folder(tmp_path):
    from napari_medseg._napari.writer import write_labels_nifti

    series = tmp_path / "series"
    write_dicom_series(_image(), series)
    vol = read_volume(series)
    record = {"meta": {"source_path": str(series)}}
    attrs = {"metadata": {"medseg_volume": record}, "scale": list(reversed(vol.spacing)),
             "translate": list(reversed(vol.origin)), "name": "labels"}
    with pytest.raises(OutputOverInputError):
        write_labels_nifti(str(Path(series) / "labels.nii.gz"), np.zeros(vol.spatial_shape, np.uint8), attrs)


def test_write_dicom_series_never_replaces_its_source_folder(tmp_path):
    series = tmp_path / "series"
    write_dicom_series(_image(), series)
    before = _digest(series)
    vol = read_volume(series)
    for target in (series, tmp_path, series / "sub"):
        with pytest.raises(OutputOverInputError):
            write_dicom_series(vol, target, force=True)
    assert _digest(series) == before
