"""DICOM reader: series discovery and volume reading with exact geometry.

Public API (used by :mod:`napari_medseg.io`): :func:`is_dicom_file`, :func:`folder_has_dicom`,
:func:`list_dicom_series`, :func:`read_dicom`, :func:`read_dicom_all`, :func:`source_datasets`.

Geometry follows :mod:`napari_medseg.volume`: array ``[k, j, i]``, spacing/origin/direction in ITK order,
LPS. Slices are sorted along the slice normal; see :mod:`napari_medseg.io.dicom_geometry` for how
localizers, missing slices, non-uniform spacing and gantry tilt are handled.

Pixel values: RescaleSlope/Intercept are applied. When every slope and intercept is integral and the result
fits, the volume is ``int16`` (else ``int32``); otherwise ``float32``. ``meta["original_dtype"]`` is the
stored dtype and ``meta["rescale"]`` the ``(slope, intercept)`` pair (``None`` when it varies by slice; the
per-slice values are then in ``meta["rescale_per_slice"]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from napari_medseg.errors import InputError, SeriesSelectionError
from napari_medseg.io.dicom_geometry import group
from napari_medseg.io.dicom_pixels import read_pixels, resample_tilt
from napari_medseg.io.dicom_scan import (
    Source,
    folder_has_dicom,
    is_dicom_file,
    open_key,
    read_header,
    scan,
)
from napari_medseg.io.series import SeriesInfo
from napari_medseg.volume import Volume

__all__ = [
    "is_dicom_file",
    "folder_has_dicom",
    "list_dicom_series",
    "read_dicom",
    "read_dicom_all",
    "source_datasets",
]

# ---------------------------------------------------------------------------------------------- listing
def list_dicom_series(path) -> list[SeriesInfo]:
    """One `SeriesInfo` per image series under ``path`` (a DICOM file, a folder searched recursively, a zip).

    Raises `InputError` when no DICOM image is found. Each entry's ``warnings`` say which files were
    skipped and why, and what was detected (missing slices, non-uniform spacing, gantry tilt, localizers).
    """
    path = Path(path)
    result = scan(path)
    series = group(result)
    if not series:
        raise InputError(_nothing_found(path, result))
    return series


def _nothing_found(path: Path, result) -> str:
    """Why no image series was found: the specific reason when one kind of problem explains it all."""
    if result.derived and len(result.derived) == sum(len(v) for v in result.skipped.values()):
        first = result.derived[0]
        more = f" (like {len(result.derived) - 1} other file(s) here)" if len(result.derived) > 1 else ""
        return (f"{first}: {result.reasons.get(first) or 'a DICOM SEG/RTSTRUCT object'}{more}; no DICOM image series "
                f"found at {path}. SEG/RTSTRUCT files are labels: read the file itself, with its image series beside "
                "it or given as the reference")
    if result.no_pixels and len(result.no_pixels) == sum(len(v) for v in result.skipped.values()):
        n = len(result.no_pixels)
        return (
            f"{result.no_pixels[0]}: the file has an image header but no pixel data"
            + (f" (like {n - 1} other file(s) here)" if n > 1 else "")
            + "; it is a header-only or incomplete export — re-export the series with its images"
        )
    buckets = [b for b, keys in result.skipped.items() if keys]
    if len(buckets) == 1 and (buckets[0] not in ("unreadable", "non_image") or result.n_files == 1):
        keys = result.skipped[buckets[0]]
        reason = result.reasons.get(keys[0])
        if reason:
            more = f" (like {len(keys) - 1} other file(s) here)" if len(keys) > 1 else ""
            return f"{keys[0]}: {reason}{more}; no DICOM image series found at {path}"
    what = result.summary()
    return (
        f"{path}: no DICOM image series found ({result.n_files} file(s) scanned"
        + (": " + "; ".join(what) if what else "")
        + "). Point at the folder, file or zip that holds the image slices"
    )


def _series_table(series: list[SeriesInfo]) -> str:
    return "\n".join(
        f"  - uid={s.uid} number={s.number} description={s.description!r} modality={s.modality} "
        f"shape={tuple(s.shape)}"
        for s in series
    )


def select_series(series: list[SeriesInfo], choice, path) -> SeriesInfo:
    """Pick the series matching ``choice`` (UID, series number or description); never a silent pick."""
    if choice is None:
        if len(series) == 1:
            return series[0]
        raise SeriesSelectionError(
            f"{path} holds {len(series)} image series; choose one with series=<uid | number | description> "
            f"(CLI: --series):\n{_series_table(series)}",
            series,
        )
    text = str(choice).strip()
    matches = [s for s in series if s.uid == text]
    if not matches and text.lstrip("-").isdigit():
        matches = [s for s in series if s.number is not None and s.number == int(text)]
    if not matches:
        matches = [s for s in series if s.description.strip().lower() == text.lower()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        # several stacks share a number/description: the main stacks (uid without '#') win if unique
        main = [s for s in matches if "#" not in s.uid]
        if len(main) == 1:
            return main[0]
        raise SeriesSelectionError(
            f"{path}: series={choice!r} matches {len(matches)} series; use the SeriesInstanceUID instead:\n"
            f"{_series_table(matches)}",
            matches,
        )
    raise SeriesSelectionError(
        f"{path}: no series matches {choice!r}; the series found are:\n{_series_table(series)}", series
    )


# ---------------------------------------------------------------------------------------------- reading
def _volume(info: SeriesInfo, source: Source, path: Path) -> Volume:
    data, pix_meta = read_pixels(info, source)
    warnings = list(info.warnings)
    meta = {
        "modality": info.modality,
        "series_uid": info.extra["series_uid"],
        "series_description": info.description,
        "series_number": info.number,
        "study_uid": info.extra["study_uid"],
        "source_path": str(path),
        **pix_meta,
        "warnings": warnings,
        "dicom_files": [str(f) for f in info.files],
        "slice_positions": info.extra["slice_positions"].tolist(),
        "dicom_reference": {
            "study_uid": info.extra["study_uid"],
            "series_uid": info.extra["series_uid"],
            "sop_instance_uids": [f.sop_uid for f in info.extra["frames"]],
            "frame_numbers": [None if f.frame is None else f.frame + 1 for f in info.extra["frames"]],
        },
        "tilt_handling": "none",
    }
    if info.extra["tilt_shift"] is not None:
        data = resample_tilt(data, info.extra["tilt_shift"])
        meta["tilt_handling"] = "resampled"
        meta["tilt_degrees"] = info.extra["tilt_deg"]
    return Volume(data, info.spacing, info.origin, np.asarray(info.direction).reshape(3, 3), meta)


def read_dicom(path, series=None) -> Volume:
    """Read one DICOM series from a file, a folder (recursive) or a zip as a `Volume`.

    ``series`` is a SeriesInstanceUID, a series number or a series description; it is required when the
    path holds several series (`SeriesSelectionError` lists them otherwise). A single-slice series is read
    as a one-slice volume (k spacing from SpacingBetweenSlices, else SliceThickness, else 1 mm, with a
    warning); an enhanced multi-frame file is read from its per-frame functional groups.
    """
    path = Path(path)
    infos = list_dicom_series(path)
    info = select_series(infos, series, path)
    with Source(path) as source:
        return _volume(info, source, path)


def read_dicom_all(path) -> list[Volume]:
    """Every readable series under ``path``, one `Volume` each.

    Single-slice series (dose reports, screenshots, a lone slice) are skipped with a warning when the path
    also holds volumes; alone, they are read.
    """
    path = Path(path)
    infos = list_dicom_series(path)
    volumes, skipped = [], []
    if any(i.shape[0] > 1 for i in infos):
        single = [i for i in infos if i.shape[0] == 1]
        infos = [i for i in infos if i.shape[0] > 1]
        skipped = [
            (i, InputError(f"{i.files[0]}: a single slice beside the volumes (read it with series='{i.uid}')"))
            for i in single
        ]
    with Source(path) as source:
        for info in infos:
            try:
                volumes.append(_volume(info, source, path))
            except InputError as e:
                if len(infos) == 1:
                    raise
                skipped.append((info, e))
    if not volumes:
        raise InputError(
            f"{path}: none of the {len(infos)} series could be read:\n" + "\n".join(f"  - {e}" for _, e in skipped)
        ) from skipped[0][1]
    for v in volumes:
        for info, e in skipped:
            v.warnings.append(f"series {info.label} was not loaded: {e}")
    return volumes


def source_datasets(volume: Volume) -> list[pydicom.Dataset]:
    """Headers (no pixel data) of the volume's source DICOM instances, in k order (one per file).

    For an enhanced multi-frame source this is the one multi-frame dataset. Raises `InputError` when the
    volume was not read from DICOM or its files are gone.
    """
    files = volume.meta.get("dicom_files")
    if not files:
        raise InputError(
            "this volume was not read from DICOM (no meta['dicom_files']); a DICOM SEG needs the source "
            "DICOM series — read the image with napari-medseg's DICOM reader"
        )
    out = []
    for key in files:
        try:
            out.append(read_header(open_key(key), stop_before_pixels=True))
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{key}: cannot read the source DICOM file ({e}); was it moved or deleted?") from e
    return out
