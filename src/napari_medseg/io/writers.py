"""Writing labels and images with exact geometry; the format follows the file extension.

* ``.nii``/``.nii.gz``: sform **and** qform set to the volume's affine (codes kept from the source NIfTI,
  else scanner = 1), mm units; labels get the smallest of uint8/uint16 that holds the largest value, intent
  ``NIFTI_INTENT_LABEL`` and our class table (``{value: {"name", "color"}}``) as JSON in a header
  extension (ecode 6), which :func:`napari_medseg.io.formats.read_nifti` turns back into ``meta["classes"]``.
* ``.nrrd``/``.mha`` (SimpleITK, gzip-compressed): class names as 3D Slicer's ``.seg.nrrd`` ``SegmentN_*``
  keys, so Slicer shows segment names and colours.
* ``.dcm`` (labels only): a DICOM SEG (highdicom, BINARY, one segment per class present) referencing the
  source DICOM series given as ``reference``; with ``format="rtstruct"`` an RT Structure Set instead
  (:mod:`napari_medseg.io.rtstruct`: one ROI per class, closed planar contours per slice).

Every write is atomic and refuses to replace an existing file unless ``force=True``; it never writes over or
into a source file or folder that the volumes know (``meta["source_path"]``, DICOM files), even with
``force`` (`OutputOverInputError`, see :mod:`napari_medseg._guard`). Labels on the reference's grid up to a
signed axis permutation are reoriented onto it exactly; any other grid raises `GeometryError`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_medseg._atomic import atomic_path, check_overwrite
from napari_medseg._guard import check_outputs
from napari_medseg.errors import GeometryError, InputError
from napari_medseg.io.nifti import CLASS_TABLE_KEY, NIFTI_ECODE_COMMENT
from napari_medseg.io.suffixes import DETACHED_SUFFIXES, write_kind
from napari_medseg.volume import Volume

NIFTI_INTENT_LABEL = 1002
XFORM_SCANNER = 1


#: ``format=`` values of `write_labels` -> writer kind (None: by extension)
FORMATS = {"nifti": "nifti", "nrrd": "itk", "mha": "itk", "seg": "dicom", "dicom-seg": "dicom", "rtstruct": "rtstruct"}


def _kind(path: Path, format: str | None = None) -> str:
    if format is not None:
        kind = FORMATS.get(str(format).lower())
        if kind is None:
            raise InputError(f"cannot write {path}: unknown format {format!r}; use one of {', '.join(FORMATS)}")
        if kind in ("dicom", "rtstruct") and not path.name.lower().endswith(".dcm"):
            raise InputError(f"cannot write {path}: a {format} file is DICOM; name it *.dcm")
        if kind == "rtstruct":
            return kind
    kind = write_kind(path)
    if kind is not None:
        return kind
    if path.name.lower().endswith(DETACHED_SUFFIXES):
        raise InputError(
            f"{path}: detached-header formats are not written (two files cannot be written atomically); "
            "use .nrrd or .mha"
        )
    raise InputError(f"{path}: unknown output format; use .nii.gz, .nii, .nrrd, .mha (or .dcm for DICOM SEG labels)")


# ---------------------------------------------------------------------------------------------- class tables
def _class_table(classes, labels: Volume) -> dict[int, tuple[str, tuple | None]]:
    """{value: (name, rgba or None)} from ``classes`` (any `ClassTable` form) or the labels' metadata; classes
    without a colour take the metadata's, then the default table's (same value and name)."""
    from napari_medseg.classes import ClassTable, meta_colors

    table = ClassTable.from_meta(labels.meta) if classes is None else ClassTable.from_any(classes)
    return table.fill_colors(meta_colors(labels.meta)).with_default_colors().pairs()


def _label_array(labels: Volume, path: Path) -> np.ndarray:
    arr = np.asarray(labels.array)
    if arr.ndim != 3:
        raise InputError(f"cannot write {path}: labels must be a 3D [k, j, i] volume, got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(f"cannot write {path}: labels must hold whole numbers, got non-integer {arr.dtype} values")
    lo = int(arr.min()) if arr.size else 0
    hi = int(arr.max()) if arr.size else 0
    if lo < 0:
        raise InputError(f"cannot write {path}: labels must be >= 0, found {lo}")
    if hi <= np.iinfo(np.uint8).max:
        return arr.astype(np.uint8, copy=False)
    if hi <= np.iinfo(np.uint16).max:
        return arr.astype(np.uint16, copy=False)
    raise InputError(f"cannot write {path}: label value {hi} exceeds 65535; relabel to fewer classes")


def _on_reference_grid(labels: Volume, reference: Volume | None, path: Path) -> Volume:
    if reference is None:
        return labels
    try:  # exact reference geometry; labels in another axis order are transposed/flipped onto it (no interpolation)
        return labels.on_grid_of(reference, tol=1e-3, onto="reference image")
    except GeometryError as e:
        raise GeometryError(f"cannot write {path}: {e}") from e


# ---------------------------------------------------------------------------------------------- NIfTI
def _nifti_image(vol: Volume, array: np.ndarray, description: str = ""):
    import nibabel as nib

    affine = vol.nifti_affine()
    arr = array.transpose(2, 1, 0) if array.ndim == 3 else array.transpose(3, 2, 1, 0)
    img = nib.Nifti1Image(np.asarray(arr), affine)
    codes = vol.meta.get("nifti_xform_codes") or (XFORM_SCANNER, XFORM_SCANNER)
    scode = int(codes[0]) if int(codes[0]) > 0 else XFORM_SCANNER
    qcode = int(codes[1]) if int(codes[1]) > 0 else scode
    img.header.set_sform(affine, code=scode)
    img.header.set_qform(affine, code=qcode)
    img.header.set_xyzt_units("mm", "sec")
    if description:
        img.header["descrip"] = description.encode("latin-1", "replace")[:79]
    return img


def _save_nifti(img, path: Path, force: bool) -> Path:
    import nibabel as nib

    with atomic_path(path, force=force) as tmp:
        nib.save(img, str(tmp))
    return path


def _write_labels_nifti(vol: Volume, arr: np.ndarray, table, path: Path, force: bool) -> Path:
    from nibabel.nifti1 import Nifti1Extension

    img = _nifti_image(vol, arr, "napari-medseg labels")
    img.header.set_intent(NIFTI_INTENT_LABEL, name="labels")
    img.header["cal_min"] = 0
    img.header["cal_max"] = float(arr.max()) if arr.size else 0.0
    if table:
        doc = {CLASS_TABLE_KEY: {str(v): {"name": n, "color": list(c) if c else None} for v, (n, c) in table.items()}}
        content = json.dumps(doc).encode("utf-8")
        content += b"\x00" * (-(len(content) + 8) % 16)  # NIfTI extensions are padded to 16 bytes
        img.header.extensions.append(Nifti1Extension(NIFTI_ECODE_COMMENT, content))
    return _save_nifti(img, path, force)


# ---------------------------------------------------------------------------------------------- SimpleITK
def _sitk_image(vol: Volume, array: np.ndarray):
    import SimpleITK as sitk

    if array.ndim == 4:
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, 0, -1)), isVector=True)
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(vol.spacing)
    image.SetOrigin(vol.origin)
    image.SetDirection(tuple(float(v) for v in vol.direction.reshape(-1)))
    return image


def _save_sitk(image, path: Path, force: bool) -> Path:
    import SimpleITK as sitk

    with atomic_path(path, force=force) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), True)
        except RuntimeError as e:
            from napari_medseg._messages import one_line_error

            raise InputError(f"cannot write {path}: SimpleITK failed ({one_line_error(e)})") from e
    return path


def _write_labels_itk(vol: Volume, arr: np.ndarray, table, path: Path, force: bool) -> Path:
    image = _sitk_image(vol, arr)
    if table:
        # 3D Slicer .seg.nrrd conventions: one segment per label value, all in layer 0.
        image.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
        image.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
        nk, nj, ni = arr.shape
        for n, (value, (name, color)) in enumerate(sorted(table.items())):
            image.SetMetaData(f"Segment{n}_ID", f"Segment_{value}")
            image.SetMetaData(f"Segment{n}_Name", name)
            image.SetMetaData(f"Segment{n}_NameAutoGenerated", "0")
            image.SetMetaData(f"Segment{n}_LabelValue", str(value))
            image.SetMetaData(f"Segment{n}_Layer", "0")
            image.SetMetaData(f"Segment{n}_Extent", f"0 {ni - 1} 0 {nj - 1} 0 {nk - 1}")
            if color:
                image.SetMetaData(f"Segment{n}_Color", " ".join(f"{c:g}" for c in color[:3]))
                image.SetMetaData(f"Segment{n}_ColorAutoGenerated", "0")
    return _save_sitk(image, path, force)


# ---------------------------------------------------------------------------------------------- public
def write_labels(labels: Volume, path, classes=None, reference: Volume | None = None, force: bool = False,
                 format: str | None = None) -> Path:
    """Write a 3D labels `Volume` to ``path`` (format by extension), atomically; returns the path.

    ``labels`` may also be a plain ``[k, j, i]`` array when ``reference`` is given (it is then on its grid).
    ``classes``: {value: name} or {value: (name, rgba)}; defaults to ``labels.meta["classes"]``.
    ``reference``: the source image; the labels must be on its grid (else `GeometryError`), and for
    ``.dcm`` (DICOM SEG) it must have been read from DICOM.
    ``format``: ``None`` (by extension), ``"nifti"``, ``"nrrd"``, ``"mha"``, ``"seg"`` or ``"rtstruct"``.
    """
    path = Path(path)
    kind = _kind(path, format)
    check_outputs(path, [labels, reference])  # never over or into the source, even with force
    check_overwrite(path, force)
    if not isinstance(labels, Volume):
        if reference is None or not hasattr(labels, "shape"):
            raise InputError(
                f"cannot write {path}: write_labels needs a Volume (array + geometry), or an array together with "
                f"the reference image whose grid it is on; got {type(labels).__name__}"
            )
        labels = np.asarray(labels)
        if labels.shape != reference.spatial_shape:
            raise GeometryError(
                f"cannot write {path}: labels array shape {labels.shape} differs from the reference image's "
                f"{reference.spatial_shape}"
            )
        labels = Volume(labels, reference.spacing, reference.origin, reference.direction.copy())
    vol = _on_reference_grid(labels, reference, path)
    arr = _label_array(vol, path)
    table = _class_table(classes, labels)
    if kind == "nifti":
        return _write_labels_nifti(vol, arr, table, path, force)
    if kind == "itk":
        return _write_labels_itk(vol, arr, table, path, force)
    if kind == "rtstruct":
        from napari_medseg.io.rtstruct import write_rtstruct

        return write_rtstruct(vol.with_array(arr), path, table, reference, force=force)
    from napari_medseg.io.dicom_write import write_dicom_seg

    return write_dicom_seg(vol.with_array(arr), path, table, reference, force=force)


def write_volume(volume: Volume, path, force: bool = False) -> Path:
    """Write an image `Volume` (3D, or 4D with the channel axis first) to ``path``, keeping its dtype."""
    path = Path(path)
    kind = _kind(path)
    check_outputs(path, [volume])  # never over or into the source, even with force
    check_overwrite(path, force)
    if not isinstance(volume, Volume):
        raise InputError(f"cannot write {path}: write_volume needs a Volume, got {type(volume).__name__}")
    if kind == "dicom":
        raise InputError(
            f"cannot write {path}: an image is written to DICOM as a series folder; use "
            "napari_medseg.io.dicom_write.write_dicom_series(volume, folder)"
        )
    arr = np.asarray(volume.array)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)  # voxel values never need float64 precision; halves the file
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if kind == "nifti":
        img = _nifti_image(volume, arr, str(volume.meta.get("series_description", ""))[:79])
        return _save_nifti(img, path, force)
    return _save_sitk(_sitk_image(volume, arr), path, force)
