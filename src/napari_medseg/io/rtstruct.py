"""RT Structure Set (RTSTRUCT) both ways, with pydicom, scikit-image and shapely.

**Writing** (`write_rtstruct`, used by ``write_labels(..., format="rtstruct")``): one ROI per class present
(ROI Number = label value, ROI Name = class name, ROI Display Color = class colour), one CLOSED_PLANAR
contour per connected region boundary and per hole on every slice (``skimage.measure.find_contours`` at
0.5 on the zero-padded slice: the contour runs along the voxel edges, cutting corners diagonally), each
referencing the source image of its slice. Points on a straight line between their neighbours are dropped
(lossless). The object references the source DICOM series (study, series, frame of reference).

**Reading** (`read_rtstruct`): every CLOSED_PLANAR contour is put on the slice of the reference grid whose
plane it lies in (within 0.3 slice spacing; others are dropped with a warning) and rasterised: a voxel is
in when its centre is inside by the even-odd rule over all contours of the ROI on that slice (a contour
inside another is a hole; scanline fill) or on one of the contours (within 0.001 voxel). OPEN_PLANAR,
OPEN_NONPLANAR and POINT contours enclose nothing and are skipped with a warning; self-intersecting
contours (shapely) are filled by the even-odd rule with a warning. Label value = ROI Number when the ROI
numbers are small (at most 255, or at most the number of ROIs), else the ROI's position in the Structure
Set. Overlapping ROIs: the smaller one wins (:mod:`napari_medseg.io.derived`).
"""

from __future__ import annotations

import colorsys
import datetime as _dt
from pathlib import Path

import numpy as np

from napari_medseg.errors import GeometryError, InputError
from napari_medseg.io.derived import (
    check_target,
    guess_warning,
    labels_volume,
    open_object,
    paint,
    resolve_reference,
)
from napari_medseg.io.rtstruct_raster import Rasteriser, in_plane, slice_origins
from napari_medseg.volume import Volume

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_STUDY_COMPONENT = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (RTReferencedStudySequence)


# ---------------------------------------------------------------------------------------------- writing
def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours (N, 2) in (j, i) voxel coordinates around the True voxels of a 2D mask (and its holes)."""
    from skimage import measure

    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return []
    j0, i0 = rows[0], cols[0]
    padded = np.pad(mask[j0 : rows[-1] + 1, i0 : cols[-1] + 1].astype(np.uint8), 1)  # the bounding box only
    out = []
    for c in measure.find_contours(padded, 0.5):
        c = c - 1.0 + np.array([j0, i0])
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        c = _drop_collinear(c)
        if len(c) >= 3:
            out.append(c)
    return out


def _drop_collinear(c: np.ndarray) -> np.ndarray:
    """The closed polygon ``c`` without the points that lie on the straight line between their neighbours."""
    prev, nxt = np.roll(c, 1, axis=0), np.roll(c, -1, axis=0)
    d1, d2 = c - prev, nxt - c
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    keep = np.abs(cross) > 1e-9
    return c[keep] if keep.sum() >= 3 else c


def _image_refs(reference: Volume, path: Path):
    """Per slice k: (SOP Class UID, SOP Instance UID, frame number or None); and the first source header."""
    from napari_medseg.io.dicom_write import _match_reference_slices, _source_datasets

    datasets = _source_datasets(reference, path)
    order = _match_reference_slices(datasets, reference, path)
    nk = reference.spatial_shape[0]
    refs: list = [None] * nk
    if len(datasets) == 1 and nk > 1:
        frames = (reference.meta.get("dicom_reference") or {}).get("frame_numbers") or list(range(1, nk + 1))
        ds = datasets[0]
        refs = [(str(ds.SOPClassUID), str(ds.SOPInstanceUID), int(f)) for f in frames]
    else:
        for ds, k in zip(datasets, order):
            refs[k] = (str(ds.SOPClassUID), str(ds.SOPInstanceUID), None)
    return refs, datasets[0]


def _image_item(ref):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ref[0], ref[1]
    if ref[2] is not None:
        item.ReferencedFrameNumber = ref[2]
    return item


def _ds(v: float) -> str:
    return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 1e9 else f"{v:.6g}"


def _header(src, reference: Volume, refs, label: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    from napari_medseg import __version__

    now = _dt.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_STORAGE, generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription"):
        setattr(ds, kw, src.get(kw, "") or "")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID, ds.SeriesNumber = generate_uid(), 901
    ds.SeriesDescription = "napari-medseg structures"
    ds.OperatorsName = ""
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "napari-medseg", "napari-medseg", __version__
    ds.FrameOfReferenceUID = src.get("FrameOfReferenceUID", "") or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = label[:16]
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    series = Dataset()
    series.SeriesInstanceUID = str(src.SeriesInstanceUID)
    series.ContourImageSequence = Sequence([_image_item(r) for r in dict.fromkeys(refs)])
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = _STUDY_COMPONENT, str(src.StudyInstanceUID)
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = ds.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = Sequence(), Sequence(), Sequence()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _add_roi(ds, value: int, name: str, color, contours: list, frame_uid: str):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    roi = Dataset()
    roi.ROINumber, roi.ReferencedFrameOfReferenceUID = value, frame_uid
    roi.ROIName, roi.ROIGenerationAlgorithm = name[:64], "SEMIAUTOMATIC"
    ds.StructureSetROISequence.append(roi)
    rc = Dataset()
    rgb = color[:3] if color else colorsys.hsv_to_rgb((value * 0.618034) % 1.0, 0.75, 0.95)
    rc.ROIDisplayColor = [int(round(255 * float(c))) for c in rgb]
    rc.ReferencedROINumber = value
    items = []
    for ref, points in contours:
        item = Dataset()
        item.ContourImageSequence = Sequence([_image_item(ref)])
        item.ContourGeometricType = "CLOSED_PLANAR"
        item.NumberOfContourPoints = len(points)
        item.ContourData = [_ds(v) for v in points.reshape(-1)]
        items.append(item)
    rc.ContourSequence = Sequence(items)
    ds.ROIContourSequence.append(rc)
    obs = Dataset()
    obs.ObservationNumber, obs.ReferencedROINumber = value, value
    obs.RTROIInterpretedType, obs.ROIInterpreter = "ORGAN", ""
    ds.RTROIObservationsSequence.append(obs)


def write_rtstruct(labels: Volume, path, table: dict, reference: Volume | None, force: bool = False) -> Path:
    """Write ``labels`` (on the reference grid) as an RTSTRUCT referencing the reference's DICOM series.

    ``table`` is {value: (name, rgba or None)}; each value present becomes one ROI (ROI Number = value).
    """
    from napari_medseg._atomic import atomic_path

    path = Path(path)
    if reference is None or not (reference.meta.get("dicom_files") or reference.meta.get("dicom_reference")):
        raise InputError(
            f"cannot write RTSTRUCT {path}: it must reference the source DICOM series, but no reference image read "
            "from DICOM was given. Give the image series (reference= / --reference CT_DIR), or save as NIfTI"
        )
    arr = np.asarray(labels.array)
    values = [int(v) for v in np.unique(arr) if v != 0]
    if not values:
        raise InputError(f"cannot write RTSTRUCT {path}: the labels are empty (an RTSTRUCT needs at least one ROI)")
    refs, src = _image_refs(reference, path)
    ds = _header(src, reference, refs, "MEDSEG")
    origins = slice_origins(reference)
    row, col = in_plane(reference)
    for value in values:
        name, color = table.get(value, (f"label {value}", None))
        contours = []
        for k in np.unique(np.nonzero(arr == value)[0]):
            for c in slice_contours(arr[k] == value):
                xyz = origins[k] + np.outer(c[:, 1], row) + np.outer(c[:, 0], col)
                contours.append((refs[k], xyz))
        _add_roi(ds, value, name, color, contours, ds.FrameOfReferenceUID)
    with atomic_path(path, force=force) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


# ---------------------------------------------------------------------------------------------- reading
def _referenced_series(ds) -> str:
    for frame in ds.get("ReferencedFrameOfReferenceSequence") or []:
        for study in frame.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                if series.get("SeriesInstanceUID"):
                    return str(series.SeriesInstanceUID)
    return ""


def _roi_table(ds, path: Path) -> tuple[dict[int, int], dict[int, str], dict[int, tuple]]:
    """({ROI Number: label value}, {value: name}, {value: rgba})."""
    rois = [r for r in ds.get("StructureSetROISequence") or [] if r.get("ROINumber") is not None]
    if not rois:
        raise InputError(f"{path}: the RTSTRUCT lists no ROI (StructureSetROISequence is empty)")
    numbers = [int(r.ROINumber) for r in rois]
    small = len(set(numbers)) == len(numbers) and min(numbers) >= 1 and max(numbers) <= max(255, len(numbers))
    values = {n: (n if small else pos) for pos, n in enumerate(numbers, start=1)}
    names = {values[int(r.ROINumber)]: str(r.get("ROIName", "") or f"ROI {r.ROINumber}") for r in rois}
    colors = {}
    for rc in ds.get("ROIContourSequence") or []:
        n = rc.get("ReferencedROINumber")
        color = rc.get("ROIDisplayColor")
        if n is not None and int(n) in values and color is not None and len(color) == 3:
            try:
                colors[values[int(n)]] = tuple(min(max(float(c) / 255.0, 0.0), 1.0) for c in color) + (1.0,)
            except (TypeError, ValueError):
                pass
    return values, names, colors


def read_rtstruct(path, reference=None, candidates=()) -> Volume:
    """Read an RTSTRUCT file as a labels `Volume` on its referenced series' grid (see the module docstring)."""
    import pydicom

    path = Path(str(path))
    try:
        ds = pydicom.dcmread(open_object(path), force=True)  # files without the DICM preamble too
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise InputError(f"{path}: not a readable RTSTRUCT ({type(e).__name__}: {e}); re-export it") from e
    values, names, colors = _roi_table(ds, path)
    uid = _referenced_series(ds)
    ref, how = resolve_reference(path, "RTSTRUCT", uid, reference, candidates)
    if ref is None:
        raise InputError(
            f"{path}: this RTSTRUCT references image series {uid or '(none named)'}, which is not beside it and was "
            "not given; an RTSTRUCT has no grid of its own. Give that series (reference= / --reference CT_DIR, or "
            "open it in napari first)"
        )
    check_target(ref, path, "RTSTRUCT")
    if ref.meta.get("tilt_handling") == "resampled":
        raise GeometryError(f"{path}: the referenced series has gantry tilt; its slices are not a regular grid")
    raster = Rasteriser(ref)
    by_number = {int(rc.ReferencedROINumber): rc for rc in ds.get("ROIContourSequence") or []
                 if rc.get("ReferencedROINumber") is not None}  # fmt: skip
    segments = [(value, raster.roi((by_number.get(n) or {}).get("ContourSequence") or []))
                for n, value in values.items()]  # fmt: skip
    labels, paint_warnings = paint(ref.spatial_shape, segments, names, "RTSTRUCT")
    meta = {
        "modality": "RTSTRUCT",
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "series_description": str(ds.get("SeriesDescription", "") or ds.get("StructureSetLabel", "") or "RTSTRUCT"),
        "series_number": int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None,
        "source_path": str(path),
        "derived_from": {"kind": "rtstruct", "series_uid": uid, "grid": "reference", "found": how},
    }
    return labels_volume(ref, labels, names, colors, meta, guess_warning(how, ref, "RTSTRUCT") + raster.warnings() + paint_warnings, ref)
