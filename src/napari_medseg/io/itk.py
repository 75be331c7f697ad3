"""NRRD/NHDR/MHA/MHD reading (SimpleITK) with exact geometry.

SimpleITK's geometry is already LPS; multi-component pixels become the channel axis. A header that declares
more voxel data than the file (and its detached data file) can hold fails fast, before any allocation.
Class names and colours in 3D Slicer's ``SegmentN_*`` keys (written by :mod:`napari_medseg.io.writers`) come
back as ``meta["classes"]`` and ``meta["class_colors"]``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from napari_medseg._limits import MAX_DEFLATE_RATIO, check_allocation, human_bytes
from napari_medseg.classes import ClassTable
from napari_medseg.errors import InputError
from napari_medseg.geometry import Geometry
from napari_medseg.io._single_file import file_error as _file_error
from napari_medseg.io._single_file import file_info as _info
from napari_medseg.io._single_file import replace_non_finite as _replace_non_finite
from napari_medseg.io.series import SeriesInfo
from napari_medseg.io.suffixes import read_format
from napari_medseg.volume import Volume


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


def _itk_classes(reader_or_image) -> ClassTable:
    """Slicer ``SegmentN_Name`` / ``SegmentN_LabelValue`` / ``SegmentN_Color`` metadata, if present."""
    keys = set(reader_or_image.GetMetaDataKeys())
    entries: dict[int, tuple] = {}
    n = 0
    while f"Segment{n}_Name" in keys:
        value_key = f"Segment{n}_LabelValue"
        try:
            value = int(reader_or_image.GetMetaData(value_key)) if value_key in keys else n + 1
        except ValueError:
            value = n + 1
        color = None
        if f"Segment{n}_Color" in keys:
            try:
                color = tuple(float(c) for c in reader_or_image.GetMetaData(f"Segment{n}_Color").split())
            except ValueError:
                pass
        entries[value] = {"name": reader_or_image.GetMetaData(f"Segment{n}_Name"), "color": color}
        n += 1
    return ClassTable.from_any(entries)


def _itk_format(path: Path) -> str:
    return "nrrd" if read_format(path) == "nrrd" else "mha"


def read_itk(path) -> Volume:
    """Read NRRD/NHDR/MHA/MHD with SimpleITK (geometry already LPS) into a `Volume`."""
    import SimpleITK as sitk

    path = Path(path)
    reader = _itk_reader(path)
    size, spacing, origin, direction = _itk_geometry(reader, path)
    geometry = Geometry(tuple(reversed(size[:3])), spacing, origin, direction, str(path))  # geometry first
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
    table = _itk_classes(reader)
    if table:
        table.to_meta(meta)
    return Volume.from_geometry(arr, geometry, meta)


def itk_info(path: Path) -> SeriesInfo:
    reader = _itk_reader(path)
    size, spacing, origin, direction = _itk_geometry(reader, path)
    _check_itk_size(reader, path, size)
    geo = Geometry(tuple(reversed(size[:3])), spacing, origin, direction, str(path))
    arr_shape = tuple(reversed(size[:3]))
    ncomp = int(reader.GetNumberOfComponents())
    if ncomp > 1:
        arr_shape = (ncomp,) + arr_shape
    elif len(size) == 4:
        arr_shape = (size[3],) + arr_shape
    names = _itk_classes(reader).names()
    extra = {"pixel_type": reader.GetPixelIDTypeAsString() if hasattr(reader, "GetPixelIDTypeAsString") else ""}
    if names:
        extra["classes"] = names
    return _info(path, _itk_format(path), geo, arr_shape, [], extra=extra)


