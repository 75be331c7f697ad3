"""NIfTI reading (nibabel) with exact geometry.

The affine is nibabel's ``img.affine`` (sform when its code is set, else qform, else the pixdim-only fallback),
converted from RAS to our LPS `Volume`; a warning is added when sform and qform are both set and place voxels
more than 1e-3 mm apart. 4D files become ``[c, k, j, i]`` volumes with ``meta["channel_names"]``. Integer data
stays integer (scl_slope/scl_inter are applied in an integer type when they are integral, else in float32);
NaN/inf voxels are replaced and counted in a warning. A header that declares more voxel data than the file can
possibly hold fails fast, before any allocation. The class table written by :mod:`napari_medseg.io.writers`
(JSON in a header extension) comes back as ``meta["classes"]`` and ``meta["class_colors"]``
(see :mod:`napari_medseg.classes`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_medseg._limits import MAX_DEFLATE_RATIO, check_allocation, human_bytes
from napari_medseg._messages import one_line_error
from napari_medseg.classes import ClassTable
from napari_medseg.errors import GeometryError, InputError
from napari_medseg.geometry import Geometry
from napari_medseg.io._single_file import file_error as _file_error
from napari_medseg.io._single_file import file_info as _info
from napari_medseg.io._single_file import replace_non_finite as _replace_non_finite
from napari_medseg.io.series import SeriesInfo
from napari_medseg.volume import Volume

#: sform and qform disagreeing by more than this (mm, at any corner voxel) is reported.
SFORM_QFORM_TOL_MM = 1e-3
#: JSON key identifying our class table in a NIfTI header extension (ecode 6, "comment").
CLASS_TABLE_KEY = "napari_medseg_classes"
NIFTI_ECODE_COMMENT = 6


def _load_nifti(path: Path):
    import nibabel as nib

    if not path.is_file():
        raise InputError(f"{path}: not a regular file" if path.exists() else f"{path}: no such file")
    fixes = _NibabelFixes()
    try:
        with fixes:
            img = nib.load(str(path))
    except Exception as e:  # noqa: BLE001 - nibabel raises many types for damaged files
        raise _file_error(
            path,
            "cannot read the NIfTI header; the file is truncated, not NIfTI, or its gzip stream is corrupt. "
            "Re-export or re-download it",
            e,
        ) from e
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI-1/NIfTI-2 image (nibabel read it as {type(img).__name__})")
    img.medseg_header_fixes = [f"{path.name}: the header was repaired on reading: {m}" for m in fixes.messages]
    return img


class _NibabelFixes:
    """Collect the header repairs nibabel logs while loading (e.g. negative pixdim made positive) as warnings,
    instead of letting them go to stderr unattributed."""

    def __init__(self):
        import logging

        self.messages: list[str] = []
        outer = self

        class _Handler(logging.Handler):
            def emit(self, record):
                outer.messages.append(record.getMessage())

        self._handler = _Handler()

    _lock = __import__("threading").Lock()  # the logger is global: one header load at a time swaps its handlers

    def __enter__(self):
        import nibabel as nib

        self._lock.acquire()
        self._logger = nib.imageglobals.logger
        self._saved = list(self._logger.handlers)
        self._logger.handlers = [self._handler]
        return self

    def __exit__(self, *exc):
        self._logger.handlers = self._saved
        self._lock.release()
        return False


def _nifti_shape(img, path: Path) -> tuple[int, ...]:
    """Spatial shape (i, j, k) plus at most one channel axis; trailing singleton axes are dropped."""
    shape = tuple(int(s) for s in img.shape)
    if any(s <= 0 for s in shape):
        raise InputError(f"{path}: the header declares an empty image (dims {shape}); the file is corrupt")
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 5 and shape[3] == 1:  # x, y, z, t=1, vector components
        shape = shape[:3] + shape[4:]
    if len(shape) > 4:
        raise InputError(
            f"{path}: {len(shape)}D NIfTI (dims {shape}) is not supported; napari-medseg reads 3D volumes and "
            "4D volumes with one channel/time axis. Split the file into 4D parts first"
        )
    return shape + (1,) * (3 - len(shape))


def _check_nifti_size(img, path: Path, shape) -> int:
    """Fail fast when the header declares more voxel bytes than the file can hold; returns needed bytes."""
    dtype = img.get_data_dtype()
    needed = int(np.prod(shape, dtype=object)) * int(dtype.itemsize)
    offset = int(img.dataobj.offset) if hasattr(img.dataobj, "offset") else 352
    file_size = path.stat().st_size
    gz = path.name.lower().endswith(".gz")
    limit = file_size * MAX_DEFLATE_RATIO if gz else file_size - offset
    if needed > limit:
        what = (
            f"declares {shape} voxels of {dtype} ({human_bytes(needed)}), more than a {file_size}-byte "
            + ("gzip file can hold" if gz else "file holds")
        )
        raise InputError(
            f"{path}: the NIfTI header {what}; the file is truncated or its header is corrupt. "
            "Re-export or re-download it"
        )
    voxels = needed // max(int(dtype.itemsize), 1)
    # the raw block plus one working copy (scaling to float32 / the [k, j, i] transpose)
    check_allocation(needed + voxels * max(int(dtype.itemsize), 4), f"the NIfTI image {shape} of {dtype}", path)
    return needed


def _nifti_affine(img, path: Path) -> np.ndarray:
    """nibabel's affine, with its errors for impossible quaternions/transforms turned into a `GeometryError`."""
    try:
        with np.errstate(all="ignore"):
            return np.asarray(img.affine, dtype=float)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as e:
        raise GeometryError(
            f"{path}: the NIfTI orientation header (qform quaternion / sform) is invalid ({one_line_error(e)}); "
            "the header is corrupt. Re-export the file"
        ) from e


def _nifti_geometry_warnings(img, path: Path, shape) -> list[str]:
    hdr = img.header
    warnings = []
    _nifti_affine(img, path)  # a corrupt quaternion is an error, not a warning
    try:
        with np.errstate(all="ignore"):
            sform, scode = hdr.get_sform(coded=True)
            qform, qcode = hdr.get_qform(coded=True)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError):  # the unused one is corrupt: nothing to compare
        return warnings
    if sform is not None and qform is not None and scode > 0 and qcode > 0:
        ends = [(0, n - 1) for n in shape[:3]]
        corners = np.array([[i, j, k, 1] for i in ends[0] for j in ends[1] for k in ends[2]], float)
        with np.errstate(all="ignore"):
            diff = np.abs(corners @ sform.T - corners @ qform.T)[:, :3]
            dist = float(np.linalg.norm(diff, axis=1).max())
        if not np.isfinite(dist) or dist > SFORM_QFORM_TOL_MM:
            warnings.append(
                f"{path.name}: sform and qform disagree (by up to {dist:.3g} mm at the volume corners); "
                "using the sform, as nibabel does. Check the orientation against the source scan."
            )
    elif (scode in (0, None)) and (qcode in (0, None)):
        warnings.append(
            f"{path.name}: neither sform nor qform is set; the orientation is unknown and voxel sizes from "
            "pixdim are used with an arbitrary position (nibabel's fallback)."
        )
    return warnings


def _read_class_table_nifti(img) -> ClassTable:
    """Our class table from the header extension (ecode 6 JSON under ``CLASS_TABLE_KEY``); empty if none."""
    for ext in img.header.extensions:
        if ext.get_code() != NIFTI_ECODE_COMMENT:
            continue
        try:
            doc = json.loads(ext.get_content().rstrip(b"\x00").decode("utf-8"))
        except (ValueError, UnicodeDecodeError, AttributeError):
            continue
        table = doc.get(CLASS_TABLE_KEY) if isinstance(doc, dict) else None
        if not isinstance(table, dict):
            continue
        entries = {}
        for key, entry in table.items():
            try:
                entries[int(key)] = entry
            except ValueError:
                continue
        try:
            return ClassTable.from_any(entries)
        except (TypeError, ValueError, KeyError):
            continue
    return ClassTable()


def _read_gz_voxels(img, path: Path) -> np.ndarray:
    """Decompress the voxel block once, reading to the end of the stream so every member's CRC is verified.

    (nibabel stops reading at the end of the voxel data, so a corrupt block would go unnoticed.) The buffer is
    ``np.empty``: its pages become resident only as real data arrives, so a truncated or hostile stream never
    costs the declared size up front.
    """
    from napari_medseg.io.payload import iter_gzip

    dtype = img.get_data_dtype()
    nbytes = int(np.prod(img.shape, dtype=np.int64)) * dtype.itemsize
    skip = int(img.dataobj.offset)
    buf = np.empty(nbytes, dtype=np.uint8)
    n = pos = 0
    with open(path, "rb") as f:
        for chunk in iter_gzip(f, 16 << 20):
            lo, hi = pos, pos + len(chunk)
            pos = hi
            a, b = max(lo, skip), min(hi, skip + nbytes)
            if a < b:
                buf[a - skip : b - skip] = np.frombuffer(chunk, np.uint8, b - a, a - lo)
                n += b - a
    if n != nbytes:
        raise InputError(
            f"{path}: truncated: the header declares {nbytes} bytes of voxel data but the stream holds {n}; "
            "re-export or re-download it"
        )
    return buf.view(dtype).reshape(img.shape, order="F")


def _apply_scaling(raw: np.ndarray, slope, inter) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Apply scl_slope/scl_inter the way nibabel does, keeping integer types when the result is integral."""
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    if slope == 1.0 and inter == 0.0:
        return raw, None
    if np.issubdtype(raw.dtype, np.integer) and slope.is_integer() and inter.is_integer() and raw.size:
        lo, hi = int(raw.min()), int(raw.max())
        ends = [lo * int(slope) + int(inter), hi * int(slope) + int(inter)]
        for dt in (np.int16, np.int32, np.int64):
            info = np.iinfo(dt)
            if info.min <= min(ends) and max(ends) <= info.max:
                out = raw.astype(dt)
                out *= dt(int(slope))
                out += dt(int(inter))
                return out, (slope, inter)
    out = raw.astype(np.float32)
    out *= np.float32(slope)
    out += np.float32(inter)
    return out, (slope, inter)


def read_nifti(path) -> Volume:
    """Read a .nii/.nii.gz file into a `Volume` (LPS), see the module docstring for the rules."""
    path = Path(path)
    img = _load_nifti(path)
    shape = _nifti_shape(img, path)
    _check_nifti_size(img, path, shape)
    warnings = list(getattr(img, "medseg_header_fixes", [])) + _nifti_geometry_warnings(img, path, shape)
    try:
        if path.name.lower().endswith(".gz"):
            raw = _read_gz_voxels(img, path)
        else:
            raw = np.asanyarray(img.dataobj.get_unscaled())
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - zlib.error, EOFError, OSError, ValueError ...
        raise _file_error(
            path, "cannot read the voxel data; the file is truncated or its gzip stream is corrupt. Re-export it", e
        ) from e
    raw = raw.reshape(shape)
    if raw.dtype.fields:  # RGB24 / RGBA32: one channel per field
        if len(shape) == 4:
            raise InputError(f"{path}: 4D colour NIfTI is not supported; split it into 3D files")
        raw = np.stack([raw[name] for name in raw.dtype.names], axis=-1)
        shape = raw.shape
    if np.iscomplexobj(raw):
        raise InputError(f"{path}: complex-valued NIfTI is not supported; save magnitude (or phase) as a real image")
    if not raw.dtype.isnative:
        raw = raw.astype(raw.dtype.newbyteorder("="))
    original_dtype = str(raw.dtype)
    arr, rescale = _apply_scaling(raw, img.dataobj.slope, img.dataobj.inter)
    arr = _replace_non_finite(arr, path, warnings)
    hdr = img.header
    sform_code = int(hdr["sform_code"])
    qform_code = int(hdr["qform_code"])
    meta = {
        "source_path": str(path),
        "format": "nifti",
        "original_dtype": original_dtype,
        "nifti_xform_codes": (sform_code, qform_code),
        "warnings": warnings,
    }
    if rescale is not None:
        meta["rescale"] = rescale
    descrip = hdr["descrip"].tobytes().rstrip(b"\x00").decode("latin-1").strip()
    if descrip:
        meta["description"] = descrip
    table = _read_class_table_nifti(img)
    if table:
        table.to_meta(meta)
    if len(shape) == 4:
        meta["channel_names"] = [f"volume {n}" for n in range(shape[3])]
    vol = Volume.from_nifti(arr, _nifti_affine(img, path), meta)
    for w in warnings:
        if w not in vol.warnings:
            vol.warnings.append(w)
    return vol


def nifti_info(path: Path) -> SeriesInfo:
    img = _load_nifti(path)
    shape = _nifti_shape(img, path)
    _check_nifti_size(img, path, shape)
    warnings = list(getattr(img, "medseg_header_fixes", [])) + _nifti_geometry_warnings(img, path, shape)
    arr_shape = tuple(reversed(shape[:3]))
    geo = Geometry.from_nifti(_nifti_affine(img, path), arr_shape, str(path))
    if len(shape) == 4:
        arr_shape = (shape[3],) + arr_shape
    names = _read_class_table_nifti(img).names()
    descrip = img.header["descrip"].tobytes().rstrip(b"\x00").decode("latin-1").strip()
    extra = {"dtype": str(img.get_data_dtype())}
    if names:
        extra["classes"] = names
    return _info(path, "nifti", geo, arr_shape, warnings, description=descrip, extra=extra)


