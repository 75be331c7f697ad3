"""Reading and writing volumes with exact geometry.

Public API (all paths may be ``str`` or ``Path``):

* :func:`detect_format` — ``"dicom"``, ``"nifti"``, ``"itk"`` (NRRD/MHA/MHD) or ``None``; never raises.
* :func:`list_series` — every image series at a path (a DICOM folder/zip/file may hold several).
* :func:`read_volume` — one `Volume`; with several DICOM series ``series=`` (UID, number or description)
  is required, otherwise `SeriesSelectionError` lists them.
* :func:`read_all` — one `Volume` per series (what the napari reader shows as layers).
* :func:`write_labels` / :func:`write_volume` — atomic writes, format chosen by extension
  (``.nii``/``.nii.gz``, ``.nrrd``, ``.mha``; ``.dcm`` writes a DICOM SEG for labels).
"""

from __future__ import annotations

from pathlib import Path

from napari_medseg.io.series import SeriesInfo

from napari_medseg.io.suffixes import ITK_SUFFIXES, NIFTI_SUFFIXES, read_format  # noqa: F401 - public names

__all__ = ["SeriesInfo", "detect_format", "list_series", "read_volume", "read_all", "write_labels", "write_volume"]


def _lower_name(path: Path) -> str:
    return path.name.lower()


def detect_format(path) -> str | None:
    """Which reader handles ``path``; ``None`` for anything else. Cheap, and never raises."""
    try:
        p = Path(path)
        name = _lower_name(p)
        if p.is_dir():
            from napari_medseg.io.dicom import folder_has_dicom

            return "dicom" if folder_has_dicom(p) else None
        if not p.is_file():
            return None
        fmt = read_format(p)
        if fmt is not None:
            return "nifti" if fmt == "nifti" else "itk"
        if name.endswith(".zip"):
            return "dicom"  # a damaged archive gets its own error from the DICOM reader
        from napari_medseg.io.dicom import is_dicom_file

        return "dicom" if is_dicom_file(p) else None
    except Exception:  # noqa: BLE001 - detection must never raise
        return None


def _require_format(path) -> str:
    from napari_medseg.errors import InputError

    from napari_medseg.io.dicom_source import regular_file_problem

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder" + (" (a broken symbolic link)" if p.is_symlink() else ""))
    problem = regular_file_problem(str(p))
    if problem == "denied":
        raise InputError(f"{p}: permission denied; make it readable (chmod +r) and try again")
    if problem == "special" and not p.is_dir():
        raise InputError(
            f"{p}: not a regular file (a named pipe, socket or device); napari-medseg reads files and folders only"
        )
    fmt = detect_format(p)
    if fmt is None and p.is_file() and (p.suffix.lower() in (".dcm", ".dicom", ".ima") or not p.suffix):
        size = p.stat().st_size
        if size < 132:
            raise InputError(f"{p}: the file is {size} bytes long, too short for a DICOM file (empty or truncated)")
        if p.suffix:
            raise InputError(
                f"{p}: not a DICOM file (no 'DICM' marker at byte 128 and no DICOM header); the file is damaged "
                "or not DICOM — copy or export it again"
            )
    if fmt is None:
        raise InputError(
            f"{p}: not a format napari-medseg reads (DICOM file/folder/zip, .nii/.nii.gz, .nrrd/.nhdr, .mha/.mhd)"
            + (" — the folder contains no DICOM files" if p.is_dir() else "")
        )
    return fmt


def list_series(path, reference=None) -> list[SeriesInfo]:
    fmt = _require_format(path)
    derived = _derived(path, fmt)
    if derived:
        from napari_medseg.io.derived import derived_info

        return [derived_info(path, derived, reference)]
    if fmt == "dicom":
        from napari_medseg.io.dicom import list_dicom_series

        return list_dicom_series(path)
    from napari_medseg.io.formats import info_single_file

    return [info_single_file(path)]


def read_volume(path, series=None, reference=None):
    """One `Volume` from ``path``. A DICOM SEG or RTSTRUCT file gives labels on its referenced series' grid
    (``reference``: that series as a `Volume` or a DICOM path; see :mod:`napari_medseg.io.derived`)."""
    fmt = _require_format(path)
    derived = _derived(path, fmt)
    if derived:
        from napari_medseg.io.derived import read_derived

        return read_derived(path, reference=reference, kind=derived)
    if fmt == "dicom":
        from napari_medseg.io.dicom import read_dicom

        return read_dicom(path, series=series)
    if fmt == "nifti":
        from napari_medseg.io.formats import read_nifti

        return read_nifti(path)
    from napari_medseg.io.formats import read_itk

    return read_itk(path)


def read_all(path, candidates=()):
    """Every volume at ``path``; DICOM SEG/RTSTRUCT objects in a DICOM folder/zip come as labels volumes too
    (on their image series found there, or on ``candidates``, e.g. the images already open in napari)."""
    fmt = _require_format(path)
    derived = _derived(path, fmt)
    if derived:
        from napari_medseg.io.derived import read_derived

        return [read_derived(path, candidates=candidates, kind=derived)]
    if fmt == "dicom":
        from napari_medseg.io.derived import read_all_dicom

        return read_all_dicom(path, candidates)
    return [read_volume(path)]


def _derived(path, fmt) -> str | None:
    """``"seg"``/``"rtstruct"`` for a DICOM SEG/RTSTRUCT file (the one SEG/RTSTRUCT dispatch point), else None."""
    if fmt != "dicom":
        return None
    from napari_medseg.io.derived import derived_kind

    return derived_kind(path)


def write_labels(labels, path, classes=None, reference=None, force: bool = False, format: str | None = None) -> Path:
    from napari_medseg.io.writers import write_labels as _write

    return _write(labels, path, classes=classes, reference=reference, force=force, format=format)


def write_volume(volume, path, force: bool = False) -> Path:
    from napari_medseg.io.writers import write_volume as _write

    return _write(volume, path, force=force)
