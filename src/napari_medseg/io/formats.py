"""Single-file image formats: NIfTI (:mod:`napari_medseg.io.nifti`) and NRRD/NHDR/MHA/MHD
(:mod:`napari_medseg.io.itk`), with exact geometry.

This module keeps the names callers import (``read_nifti``, ``read_itk``, ``info_single_file``, the NIfTI
class-table constants) and dispatches by file name through the one suffix table
(:mod:`napari_medseg.io.suffixes`).
"""

from __future__ import annotations

from pathlib import Path

from napari_medseg.errors import InputError
from napari_medseg.io.itk import read_itk
from napari_medseg.io.nifti import CLASS_TABLE_KEY, NIFTI_ECODE_COMMENT, SFORM_QFORM_TOL_MM, read_nifti
from napari_medseg.io.series import SeriesInfo
from napari_medseg.io.suffixes import ITK_FORMATS, read_format

__all__ = ["read_nifti", "read_itk", "info_single_file", "CLASS_TABLE_KEY", "NIFTI_ECODE_COMMENT",
           "SFORM_QFORM_TOL_MM"]


def info_single_file(path) -> SeriesInfo:
    """`SeriesInfo` for a NIfTI or ITK-format file, from its header only (the voxels are not read)."""
    path = Path(path)
    fmt = read_format(path)
    if fmt == "nifti":
        from napari_medseg.io.nifti import nifti_info

        return nifti_info(path)
    if fmt in ITK_FORMATS:
        from napari_medseg.io.itk import itk_info

        return itk_info(path)
    raise InputError(f"{path}: not a NIfTI/NRRD/MHA file (expected .nii, .nii.gz, .nrrd, .nhdr, .mha or .mhd)")
