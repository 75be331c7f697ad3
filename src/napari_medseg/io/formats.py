"""NIfTI (nibabel) and NRRD/NHDR/MHA/MHD (SimpleITK) readers with exact geometry.

* NIfTI: the affine is nibabel's ``img.affine`` (sform when its code is set, else qform, else the
  pixdim-only fallback), converted from RAS to our LPS `Volume`; a warning is added when sform and qform are
  both set and place voxels more than 1e-3 mm apart. 4D files become ``[c, k, j, i]`` volumes with
  ``meta["channel_names"]``. Integer data stays integer (scl_slope/scl_inter are applied in an integer type
  when they are integral, else in float32); NaN/inf voxels are replaced and counted in a warning.
* ITK formats: SimpleITK's geometry is already LPS; multi-component pixels become the channel axis.
* A header that declares more voxel data than the file can possibly hold fails fast, before any allocation.
* Class names written by :mod:`napari_medseg.io.writers` (NIfTI header extension / Slicer-style
  ``SegmentN_*`` keys) come back as ``meta["classes"]`` ({value: name}) and ``meta["class_colors"]``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from napari_medseg._limits import MAX_DEFLATE_RATIO, check_allocation, human_bytes
from napari_medseg._messages import one_line_error
from napari_medseg.errors import GeometryError, InputError
from napari_medseg.io.series import SeriesInfo
from napari_medseg.volume import Volume

#: sform and qform disagreeing by more than this (mm, at any corner voxel) is reported.
SFORM_QFORM_TOL_MM = 1e-3
#: JSON key identifying our class table in a NIfTI header extension (ecode 6, "comment").
CLASS_TABLE_KEY = "napari_medseg_classes"
NIFTI_ECODE_COMMENT = 6


def _file_error(path: Path, what: str, e: BaseException | None = None) -> InputError:
    """One clear line; the library's own (often multi-line) error stays chained as ``__cause__``."""
    detail = f" ({one_line_error(e)})" if e is not None else ""
    return InputError(f"{path}: {what}{detail}")


# ============================================================================================== NIfTI
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


def _read_class_table_nifti(img) -> tuple[dict[int, str], dict[int, tuple]]:
    names: dict[int, str] = {}
    colors: dict[int, tuple] = {}
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
        for key, entry in table.items():
            try:
                value = int(key)
            except ValueError:
                continue
            if isinstance(entry, dict):
                names[value] = str(entry.get("name", value))
                if entry.get("color") is not None:
                    colors[value] = tuple(float(c) for c in entry["color"])
            else:
                names[value] = str(entry)
    return names, colors


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


def _replace_non_finite(arr: np.ndarray, path: Path, warnings: list[str]) -> np.ndarray:
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
    names, colors = _read_class_table_nifti(img)
    if names:
        meta["classes"] = names
        if colors:
            meta["class_colors"] = colors
    if len(shape) == 4:
        meta["channel_names"] = [f"volume {n}" for n in range(shape[3])]
    vol = Volume.from_nifti(arr, _nifti_affine(img, path), meta)
    for w in warnings:
        if w not in vol.warnings:
            vol.warnings.append(w)
    return vol


def _nifti_info(path: Path) -> SeriesInfo:
    img = _load_nifti(path)
    shape = _nifti_shape(img, path)
    _check_nifti_size(img, path, shape)
    warnings = list(getattr(img, "medseg_header_fixes", [])) + _nifti_geometry_warnings(img, path, shape)
    geo = Volume.from_nifti(np.zeros((1, 1, 1), np.uint8), _nifti_affine(img, path), {"source_path": str(path)})
    arr_shape = tuple(reversed(shape[:3]))
    if len(shape) == 4:
        arr_shape = (shape[3],) + arr_shape
    names, _ = _read_class_table_nifti(img)
    descrip = img.header["descrip"].tobytes().rstrip(b"\x00").decode("latin-1").strip()
    extra = {"dtype": str(img.get_data_dtype())}
    if names:
        extra["classes"] = names
    return _info(path, "nifti", geo, arr_shape, warnings, description=descrip, extra=extra)


# ============================================================================================== ITK
_ITK_DATAFILE = re.compile(rb"^(?:data file|datafile|ElementDataFile)\s*[:=]\s*(.+?)\s*$", re.I | re.M)


def _itk_data_bytes_available(path: Path) -> tuple[int, bool]:
    """(bytes that can hold voxel data, compressed?) for an ITK-format file and its detached data file."""
    with open(path, "rb") as f:
        head = f.read(65536)
    compressed = bool(
        re.search(rb"^encoding\s*:\s*(gz|gzip|bz2|bzip2)\s*$", head, re.I | re.M)
        or re.search(rb"^CompressedData\s*=\s*True\s*$", head, re.I | re.M)
    )
    total = path.stat().st_size
    m = _ITK_DATAFILE.search(head)
    if m:
        ref = m.group(1).decode("latin-1").strip()
        if ref.upper() not in ("LOCAL", "LIST") and not ref.upper().startswith("LIST"):
            target = (path.parent / ref).resolve()
            folder = path.parent.resolve()
            if target != folder and folder not in target.parents:
                raise InputError(
                    f"{path}: its data file {ref!r} lies outside the header's folder; napari-medseg reads detached "
                    "data only from the header's own folder (move the data file beside the header)"
                )
            if target.is_file():
                total += target.stat().st_size
                compressed = compressed or target.suffix.lower() in (".gz", ".zraw", ".bz2")
            elif target.exists():
                raise InputError(f"{path}: its data file {ref!r} is not a regular file (a device, pipe or folder)")
            else:
                raise InputError(f"{path}: its data file {ref!r} does not exist next to it; copy both files together")
    return total, compressed


def _itk_reader(path: Path):
    import SimpleITK as sitk

    if not path.is_file():
        raise InputError(f"{path}: not a regular file" if path.exists() else f"{path}: no such file")
    from napari_medseg.io.payload import check_itk_header

    check_itk_header(path)  # ITK's MetaIO hangs or crashes on some hostile headers
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise _file_error(path, "SimpleITK cannot read this header; the file is corrupt or not NRRD/MHA/MHD", e) from e
    return reader


def _itk_geometry(reader, path: Path):
    dim = reader.GetDimension()
    size = list(reader.GetSize())
    spacing = list(reader.GetSpacing())
    origin = list(reader.GetOrigin())
    direction = np.asarray(reader.GetDirection(), float).reshape(dim, dim)
    if dim == 2:
        size, spacing, origin = size + [1], spacing + [1.0], origin + [0.0]
        d3 = np.eye(3)
        d3[:2, :2] = direction
        direction = d3
    elif dim == 4:
        size, spacing, origin, direction = size, spacing[:3], origin[:3], direction[:3, :3]
    elif dim != 3:
        raise InputError(f"{path}: {dim}D images are not supported (napari-medseg reads 2D, 3D and 4D)")
    if any(int(s) < 1 or int(s) >= 2**31 for s in size):
        raise InputError(f"{path}: the header declares an empty or impossible image size {tuple(int(s) for s in size)}; "
                         "the file is corrupt. Re-export it")
    return size, spacing, origin, direction


def _check_itk_size(reader, path: Path, size) -> int:
    ncomp = int(reader.GetNumberOfComponents())
    import SimpleITK as sitk

    probe = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID())  # one voxel of the file's pixel type
    itemsize = sitk.GetArrayViewFromImage(probe).dtype.itemsize
    needed = int(np.prod(size, dtype=object)) * ncomp * itemsize
    avail, compressed = _itk_data_bytes_available(path)
    limit = avail * MAX_DEFLATE_RATIO if compressed else avail
    if needed > limit:
        raise InputError(
            f"{path}: the header declares {tuple(size)} voxels x {ncomp} component(s) ({human_bytes(needed)}), more than the "
            f"{avail}-byte file can hold; the file is truncated or its header is corrupt. Re-export it"
        )
    check_allocation(2 * needed, f"the image {tuple(size)} x {ncomp} component(s)", path)  # ITK buffer + numpy copy
    return needed


def _itk_classes(reader_or_image) -> tuple[dict[int, str], dict[int, tuple]]:
    """Slicer ``SegmentN_Name`` / ``SegmentN_LabelValue`` / ``SegmentN_Color`` metadata, if present."""
    keys = set(reader_or_image.GetMetaDataKeys())
    names: dict[int, str] = {}
    colors: dict[int, tuple] = {}
    n = 0
    while f"Segment{n}_Name" in keys:
        value_key = f"Segment{n}_LabelValue"
        try:
            value = int(reader_or_image.GetMetaData(value_key)) if value_key in keys else n + 1
        except ValueError:
            value = n + 1
        names[value] = reader_or_image.GetMetaData(f"Segment{n}_Name")
        if f"Segment{n}_Color" in keys:
            try:
                colors[value] = tuple(float(c) for c in reader_or_image.GetMetaData(f"Segment{n}_Color").split())
            except ValueError:
                pass
        n += 1
    return names, colors


def _itk_format(path: Path) -> str:
    name = path.name.lower()
    return "nrrd" if name.endswith((".nrrd", ".nhdr")) else "mha"


def read_itk(path) -> Volume:
    """Read NRRD/NHDR/MHA/MHD with SimpleITK (geometry already LPS) into a `Volume`."""
    import SimpleITK as sitk

    path = Path(path)
    reader = _itk_reader(path)
    size, spacing, origin, direction = _itk_geometry(reader, path)
    Volume(np.zeros((1, 1, 1), np.uint8), spacing, origin, direction, {"source_path": str(path)})  # geometry first
    needed = _check_itk_size(reader, path, size)
    from napari_medseg.io.payload import verify_itk_payload

    verify_itk_payload(path, needed)  # CRC/length of compressed payloads, length of raw ones (ITK checks neither)
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise _file_error(path, "cannot read the voxel data; the file is truncated or corrupt. Re-export it", e) from e
    arr = sitk.GetArrayFromImage(image)
    ncomp = image.GetNumberOfComponentsPerPixel()
    dim = image.GetDimension()
    if ncomp > 1:
        if dim == 4:
            raise InputError(f"{path}: 4D images with vector pixels are not supported")
        arr = np.moveaxis(arr, -1, 0)  # [k, j, i, c] -> [c, k, j, i]
    if dim == 2:
        arr = arr[None] if ncomp == 1 else arr[:, None]
    warnings: list[str] = []
    arr = _replace_non_finite(arr, path, warnings)
    meta = {
        "source_path": str(path),
        "format": _itk_format(path),
        "original_dtype": str(arr.dtype),
        "warnings": warnings,
    }
    if arr.ndim == 4:
        meta["channel_names"] = [f"{'component' if ncomp > 1 else 'volume'} {n}" for n in range(arr.shape[0])]
    names, colors = _itk_classes(reader)
    if names:
        meta["classes"] = names
        if colors:
            meta["class_colors"] = colors
    return Volume(arr, spacing, origin, direction, meta)  # GeometryError messages name source_path


def _itk_info(path: Path) -> SeriesInfo:
    reader = _itk_reader(path)
    size, spacing, origin, direction = _itk_geometry(reader, path)
    _check_itk_size(reader, path, size)
    geo = Volume(np.zeros((1, 1, 1), np.uint8), spacing, origin, direction, {"source_path": str(path)})
    arr_shape = tuple(reversed(size[:3]))
    ncomp = int(reader.GetNumberOfComponents())
    if ncomp > 1:
        arr_shape = (ncomp,) + arr_shape
    elif len(size) == 4:
        arr_shape = (size[3],) + arr_shape
    names, _ = _itk_classes(reader)
    extra = {"pixel_type": reader.GetPixelIDTypeAsString() if hasattr(reader, "GetPixelIDTypeAsString") else ""}
    if names:
        extra["classes"] = names
    return _info(path, _itk_format(path), geo, arr_shape, [], extra=extra)


# ============================================================================================== info
def _info(path: Path, fmt: str, geo: Volume, arr_shape, warnings, description: str = "", extra=None) -> SeriesInfo:
    return SeriesInfo(
        uid=str(path),
        description=description or path.name,
        number=None,
        modality="",
        format=fmt,
        shape=tuple(int(s) for s in arr_shape),
        spacing=geo.spacing,
        origin=geo.origin,
        direction=tuple(float(v) for v in geo.direction.reshape(-1)),
        orientation=geo.orientation_code(),
        warnings=list(warnings),
        files=[path],
        extra=dict(extra or {}),
    )


def info_single_file(path) -> SeriesInfo:
    """`SeriesInfo` for a NIfTI or ITK-format file, from its header only (the voxels are not read)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _nifti_info(path)
    if name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")):
        return _itk_info(path)
    raise InputError(f"{path}: not a NIfTI/NRRD/MHA file (expected .nii, .nii.gz, .nrrd, .nhdr, .mha or .mhd)")
