"""``medseg predict --format rtstruct`` and ``medseg convert`` / ``info`` on DICOM SEG and RTSTRUCT files."""

from __future__ import annotations

import json

import numpy as np

from napari_medseg.cli import main
from napari_medseg.io import read_volume
from tests.test_cli_predict import _image, tiny_model  # noqa: F401 - the fixture is used by name


def test_predict_to_rtstruct_and_seg_agree(tmp_path, tiny_model, capsys):  # noqa: F811
    from napari_medseg.io.dicom_write import write_dicom_series

    write_dicom_series(_image(3), tmp_path / "dcm", series_description="test")
    for fmt in ("rtstruct", "dicom-seg"):
        assert main(["predict", str(tmp_path / "dcm"), "-o", str(tmp_path / fmt), "--model", str(tiny_model),
                     "--format", fmt, "--quiet"]) == 0  # fmt: skip
    (rt,) = (tmp_path / "rtstruct").glob("*_seg.dcm")
    (seg,) = (tmp_path / "dicom-seg").glob("*_seg.dcm")
    a = read_volume(rt, reference=tmp_path / "dcm")
    b = read_volume(seg, reference=tmp_path / "dcm")
    assert a.meta["modality"] == "RTSTRUCT" and b.meta["modality"] == "SEG"
    assert a.same_grid(b, tol=0) and int(a.array.astype(bool).sum()) > 0
    np.testing.assert_array_equal(a.array, b.array)
    assert set(a.meta["classes"].values()) <= {"liver", "spleen"}
    # info on the SEG names its classes; convert takes it to NIfTI on the CT grid
    capsys.readouterr()
    assert main(["info", str(seg), "--reference", str(tmp_path / "dcm"), "--json"]) == 0
    (info,) = json.loads(capsys.readouterr().out)["series"]
    assert info["format"] == "dicom-seg" and info["shape"] == list(b.shape)
    assert main(["convert", str(seg), "-o", str(tmp_path / "seg.nii.gz"), "--reference", str(tmp_path / "dcm")]) == 0
    np.testing.assert_array_equal(read_volume(tmp_path / "seg.nii.gz").array, b.array)
    # SEG -> RTSTRUCT through convert (the reference comes with the SEG)
    assert main(["convert", str(seg), "-o", str(tmp_path / "rt2.dcm"), "--format", "rtstruct",
                 "--reference", str(tmp_path / "dcm")]) == 0  # fmt: skip
    np.testing.assert_array_equal(read_volume(tmp_path / "rt2.dcm", reference=tmp_path / "dcm").array, b.array)
