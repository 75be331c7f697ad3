"""The npe2 manifest is valid and every python_name it names exists."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import napari_medseg

MANIFEST = Path(napari_medseg.__file__).parent / "napari.yaml"


def test_manifest_validates():
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)
    assert pm.name == "napari-medseg"
    assert {w.command for w in pm.contributions.writers} >= {
        "napari-medseg.write_labels_nifti",
        "napari-medseg.write_labels_dicom_seg",
        "napari-medseg.write_image_nifti",
    }
    assert [s.key for s in pm.contributions.sample_data] == ["abdomen_phantom_nifti", "abdomen_phantom_dicom"]


def test_manifest_is_the_installed_entry_point():
    from npe2 import PluginManifest

    pm = PluginManifest._from_package_or_name("napari-medseg")
    assert pm.name == "napari-medseg"
    assert pm.package_metadata is not None and pm.package_metadata.name == "napari-medseg"


@pytest.mark.parametrize(
    "python_name",
    [c.python_name for c in __import__("npe2").PluginManifest.from_file(MANIFEST).contributions.commands],
)
def test_python_names_resolve(python_name):
    module, _, attr = python_name.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_npe2_validate_cli():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-medseg"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in (proc.stdout + proc.stderr).lower()


def test_reader_claims_medical_files_but_not_ordinary_images():
    from npe2 import PluginManifest

    reader = PluginManifest.from_file(MANIFEST).contributions.readers[0]
    import fnmatch

    def claims(name):
        return any(fnmatch.fnmatchcase(name, pat) for pat in reader.filename_patterns)

    for name in ("ct.nii.gz", "ct.nii", "seg.nrrd", "img.mha", "IM0001.dcm", "study.zip", "CT.IMA"):
        assert claims(name), name
    for name in ("photo.png", "cells.tif", "table.csv"):
        assert not claims(name), name  # no "choose a reader" dialog for files we do not read
    assert reader.accepts_directories
