"""Helpers shared by the single-file readers (:mod:`napari_medseg.io.nifti`, :mod:`napari_medseg.io.itk`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_medseg._messages import one_line_error
from napari_medseg.errors import InputError
from napari_medseg.geometry import Geometry
from napari_medseg.io.series import SeriesInfo


def file_error(path: Path, what: str, e: BaseException | None = None) -> InputError:
    """One clear line; the library's own (often multi-line) error stays chained as ``__cause__``."""
    detail = f" ({one_line_error(e)})" if e is not None else ""
    return InputError(f"{path}: {what}{detail}")


def replace_non_finite(arr: np.ndarray, path: Path, warnings: list[str]) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.floating):
        return arr
    bad = ~np.isfinite(arr)
    n_bad = int(bad.sum())
    if not n_bad:
        return arr
    finite = arr[~bad]
    if finite.size == 0:
        raise InputError(f"{path}: every voxel is NaN or infinite; the file holds no usable image")
    lo, hi = float(finite.min()), float(finite.max())
    n_nan = int(np.isnan(arr).sum())
    arr = np.array(arr, copy=True) if not arr.flags.writeable else arr
    np.nan_to_num(arr, copy=False, nan=lo, posinf=hi, neginf=lo)
    warnings.append(
        f"{path.name}: {n_bad} non-finite voxels ({n_nan} NaN, {n_bad - n_nan} inf) were replaced: NaN and -inf "
        f"by the minimum finite value ({lo:g}), +inf by the maximum ({hi:g})."
    )
    return arr


def file_info(path: Path, fmt: str, geometry: Geometry, arr_shape, warnings, description: str = "",
              extra=None) -> SeriesInfo:
    """`SeriesInfo` of a single-file image from its header: ``geometry`` and the full array shape."""
    return SeriesInfo.from_geometry(
        geometry,
        uid=str(path),
        description=description or path.name,
        format=fmt,
        shape=tuple(int(s) for s in arr_shape),
        warnings=list(warnings),
        files=[path],
        extra=dict(extra or {}),
    )
