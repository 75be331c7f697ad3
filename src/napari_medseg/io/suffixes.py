"""The one table of file-name endings: which format a file is by its suffix, for reading, writing and naming.

Lower-case endings, longest first (``.nii.gz`` before ``.nii``). DICOM is recognised by content, not by name
(see :func:`napari_medseg.io.detect_format`); ``.dcm``/``.zip`` appear here only for writing and for names.
"""

from __future__ import annotations

from pathlib import Path

#: ending -> format of the files napari-medseg reads by name: "nifti", "nrrd" or "mha" (NRRD/MetaImage: ITK)
READ_SUFFIXES: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
}
#: formats read with SimpleITK
ITK_FORMATS = ("nrrd", "mha")
#: ending -> writer kind: "nifti", "itk" (SimpleITK) or "dicom" (DICOM SEG for labels)
WRITE_SUFFIXES: dict[str, str] = {".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "itk", ".mha": "itk", ".dcm": "dicom"}
#: detached-header formats: read, never written (two files cannot be written atomically)
DETACHED_SUFFIXES = (".nhdr", ".mhd")
#: endings removed from a file name to name its case/layer
NAME_SUFFIXES = (*READ_SUFFIXES, ".zip", ".dcm")

NIFTI_SUFFIXES = tuple(s for s, f in READ_SUFFIXES.items() if f == "nifti")
ITK_SUFFIXES = tuple(s for s, f in READ_SUFFIXES.items() if f in ITK_FORMATS)
NRRD_SUFFIXES = tuple(s for s, f in READ_SUFFIXES.items() if f == "nrrd")


def _name(path) -> str:
    return Path(str(path)).name.lower()


def _match(name: str, table) -> str | None:
    for suffix in sorted(table, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def read_format(path) -> str | None:
    """``"nifti"``, ``"nrrd"`` or ``"mha"`` by the file name, else ``None``."""
    suffix = _match(_name(path), READ_SUFFIXES)
    return READ_SUFFIXES[suffix] if suffix else None


def write_kind(path) -> str | None:
    """``"nifti"``, ``"itk"`` or ``"dicom"`` by the file name, else ``None`` (detached headers included)."""
    suffix = _match(_name(path), WRITE_SUFFIXES)
    return WRITE_SUFFIXES[suffix] if suffix else None


def is_nrrd(path) -> bool:
    return read_format(path) == "nrrd"


def strip_suffix(name: str) -> str:
    """``name`` without its known medical-image ending (``ct.nii.gz`` -> ``ct``); unchanged otherwise, and
    never empty (``.nii.gz`` stays as it is)."""
    suffix = _match(str(name).lower(), NAME_SUFFIXES)
    if suffix is None:
        return name
    return name[: -len(suffix)] or name
