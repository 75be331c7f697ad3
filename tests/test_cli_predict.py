"""``medseg predict`` / ``medseg demo``: batch over files and DICOM folders, report, stats, failures, atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_medseg.cli import main
from napari_medseg.io import read_volume, write_volume
from napari_medseg.models import ClassInfo, ModelCard, build_network, save_model_package
from napari_medseg.volume import Volume


@pytest.fixture
def tiny_model(tmp_path):
    card = ModelCard(name="tiny", arch_args=dict(spatial_dims=3, channels=(4, 8), strides=(2,), num_res_units=1),
                     classes=[ClassInfo(1, "liver"), ClassInfo(2, "spleen")], roi_size=(16, 16, 16), spacing=(2.0, 2.0, 2.0))
    torch.manual_seed(0)
    return save_model_package(build_network(card), card, tmp_path / "tiny_model")


def _image(seed=0, shape=(12, 20, 18)):
    rng = np.random.default_rng(seed)
    return Volume((rng.normal(size=shape) * 100).astype(np.int16), (1.5, 1.5, 2.5), (3.0, -7.0, 11.0))


def test_predict_folder_of_cases_with_a_failure(tmp_path, tiny_model, capsys):
    cases = tmp_path / "cases"
    write_volume(_image(0), cases / "a.nii.gz")
    write_volume(_image(1), cases / "b.nrrd")
    (cases / "broken.nii.gz").write_bytes(b"not a nifti at all")
    out = tmp_path / "out"
    rc = main(["predict", str(cases), "-o", str(out), "--model", str(tiny_model), "--stats", str(tmp_path / "s.csv"),
               "--device", "cpu", "--quiet"])
    assert rc == 1  # one case failed, the others were still segmented
    for name, seed in (("a", 0), ("b", 1)):
        lab = read_volume(out / f"{name}_seg.nii.gz")
        assert lab.same_grid(_image(seed)) and lab.array.dtype == np.uint8
    assert not (out / "broken_seg.nii.gz").exists()
    report = json.loads((out / "medseg_predict_report.json").read_text())
    status = {c["input"].rsplit("/", 1)[-1]: c["status"] for c in report["cases"]}
    assert status == {"a.nii.gz": "ok", "b.nrrd": "ok", "broken.nii.gz": "failed"}
    assert report["versions"]["torch"] == torch.__version__ and report["versions"]["device"] == "cpu"
    ok = [c for c in report["cases"] if c["status"] == "ok"][0]
    assert {"read", "preprocess", "inference", "invert", "write"} <= set(ok["timings"])
    csv_lines = (tmp_path / "s.csv").read_text().splitlines()
    assert csv_lines[0] == "case,value,name,voxels,volume_ml,mean_intensity,std_intensity" and len(csv_lines) == 5
    assert "broken.nii.gz" in capsys.readouterr().err


def test_predict_single_file_refuses_overwrite_and_leaves_no_partial_file(tmp_path, tiny_model, monkeypatch):
    src = write_volume(_image(), tmp_path / "ct.nii.gz")
    target = tmp_path / "seg.nii.gz"
    assert main(["predict", str(src), "-o", str(target), "--model", str(tiny_model), "--quiet"]) == 0
    assert (tmp_path / "seg_report.json").is_file()
    before = target.read_bytes()
    assert main(["predict", str(src), "-o", str(target), "--model", str(tiny_model), "--quiet"]) == 2
    assert target.read_bytes() == before

    import napari_medseg.inference as inf
    from napari_medseg.errors import CancelledError

    def cancelled(*a, **k):
        raise CancelledError("cancelled by the user; nothing was written")

    monkeypatch.setattr(inf, "segment", cancelled)
    target2 = tmp_path / "seg2.nii.gz"
    assert main(["predict", str(src), "-o", str(target2), "--model", str(tiny_model), "--quiet"]) == 1
    assert not target2.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_predict_dicom_folder_to_dicom_seg(tmp_path, tiny_model):
    from napari_medseg.io.dicom_write import write_dicom_series

    vol = _image(3)
    write_dicom_series(vol, tmp_path / "dcm", series_description="test", patient_name="Test^Cli", patient_id="T1")
    out = tmp_path / "out"
    rc = main(["predict", str(tmp_path / "dcm"), "-o", str(out), "--model", str(tiny_model), "--format", "dicom-seg",
               "--quiet"])
    assert rc == 0
    (seg,) = out.glob("*_seg.dcm")
    import pydicom

    ds = pydicom.dcmread(seg)
    assert ds.Modality == "SEG"


def test_unknown_model_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    src = write_volume(_image(), tmp_path / "ct.nii.gz")
    assert main(["predict", str(src), "-o", str(tmp_path / "o"), "--model", "nosuchmodel"]) == 2
    assert "unknown model 'nosuchmodel'" in capsys.readouterr().err


def test_demo_with_a_given_model(tmp_path, tiny_model, capsys):
    rc = main(["demo", "-o", str(tmp_path / "demo"), "--model", str(tiny_model), "--device", "cpu", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Dice" in out and "liver" in out
    assert (tmp_path / "demo" / "abdomen_seg.nii.gz").is_file()
