"""Writing DICOM: a `Volume` as a single-frame image series, and labels as a DICOM SEG (highdicom).

:func:`write_dicom_series` writes one CT (or MR) Image Storage file per slice with exact geometry:
``ImagePositionPatient`` of voxel (0, 0, k) for each slice, ``ImageOrientationPatient`` = the i and j
direction columns, ``PixelSpacing`` = (row spacing, column spacing) = (spacing_j, spacing_i),
``SliceThickness``/``SpacingBetweenSlices`` = spacing_k, and int16 stored values with
``RescaleSlope``/``RescaleIntercept`` (1/0 when the values are whole numbers in the int16 range). The
series goes to a temporary folder beside the target, which is then renamed into place.

DICOM readers order slices along ``row x column``; a left-handed volume (det(direction) < 0) is therefore
written with its k axis reversed so that it reads back as the same physical image (with k flipped).

:func:`write_dicom_seg` is used by :func:`napari_medseg.io.writers.write_labels` for ``.dcm`` outputs.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from napari_medseg.errors import GeometryError, InputError, OutputExistsError
from napari_medseg.volume import Volume

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_SOP_CLASSES = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}


def _ds_str(value: float) -> str:
    """A DICOM decimal string (<= 16 characters) as precise as fits."""
    for digits in range(15, 5, -1):
        s = f"{value:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{value:.6g}"


def _stored_values(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(int16 stored values, slope, intercept) reproducing ``array`` (exactly when it is integral in range)."""
    arr = np.asarray(array)
    if arr.size == 0:
        raise InputError("cannot write an empty volume as DICOM")
    if not np.all(np.isfinite(arr)) if np.issubdtype(arr.dtype, np.floating) else False:
        raise InputError("cannot write a volume with NaN/inf voxels as DICOM; replace them first")
    lo, hi = float(arr.min()), float(arr.max())
    integral = np.issubdtype(arr.dtype, np.integer) or bool(np.all(arr == np.round(arr)))
    if integral and lo >= -32768 and hi <= 32767:
        return arr.astype(np.int16), 1.0, 0.0
    slope = (hi - lo) / 65534.0 if hi > lo else 1.0
    slope = float(_ds_str(slope))
    intercept = float(_ds_str(lo + 32767.0 * slope))
    stored = np.clip(np.rint((arr.astype(np.float64) - intercept) / slope), -32768, 32767).astype(np.int16)
    return stored, slope, intercept


def _base_dataset(volume: Volume, modality: str, uids: dict, series_description: str, patient_name: str,
                  patient_id: str, series_number: int):
    from pydicom.dataset import Dataset

    now = _dt.datetime.now()
    ds = Dataset()
    ds.SOPClassUID = _SOP_CLASSES[modality]
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame_of_reference"]
    ds.Modality = modality
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = str(volume.meta.get("study_description", ""))[:64]
    ds.SeriesDescription = series_description[:64]
    ds.SeriesNumber = int(series_number)
    ds.AcquisitionNumber = 1
    ds.Manufacturer = "napari-medseg"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    nk, nj, ni = volume.spatial_shape
    ds.Rows, ds.Columns = nj, ni
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    si, sj, sk = volume.spacing
    ds.PixelSpacing = [_ds_str(sj), _ds_str(si)]  # (row spacing, column spacing)
    ds.SliceThickness = _ds_str(sk)
    ds.SpacingBetweenSlices = _ds_str(sk)
    d = volume.direction
    ds.ImageOrientationPatient = [_ds_str(v) for v in list(d[:, 0]) + list(d[:, 1])]
    if modality == "CT":
        ds.KVP = ""
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
    else:  # MR Image Storage type 1/2 attributes
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "RM", "NONE", ""
        ds.MRAcquisitionType = "3D"
        ds.EchoTime = ds.RepetitionTime = ""
        ds.EchoTrainLength = ""
        ds.MagneticFieldStrength = ""
    return ds


def _replace_folder(tmp: Path, folder: Path, force: bool) -> None:
    """Move the finished ``tmp`` folder to ``folder``; with ``force`` an earlier series there is replaced."""
    if folder.exists() and any(folder.iterdir()):
        if not force:
            raise OutputExistsError(
                f"{folder} already exists and is not empty; refusing to overwrite it (force=True / --force)"
            )
        others = [p for p in folder.iterdir() if not (p.is_file() and p.suffix.lower() == ".dcm")]
        if others:
            raise OutputExistsError(
                f"{folder} holds files other than .dcm slices ({others[0].name}, ...); it is not a series this "
                "function wrote, so it is left alone. Choose another folder"
            )
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
        os.replace(folder, old / folder.name)
        try:
            os.replace(tmp, folder)
        except BaseException:
            os.replace(old / folder.name, folder)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    if folder.exists():
        folder.rmdir()  # empty
    os.replace(tmp, folder)


def write_dicom_series(
    volume: Volume,
    folder,
    *,
    series_description: str = "napari-medseg",
    patient_name: str = "Anonymous^",
    patient_id: str = "MEDSEG0001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    modality: str = "CT",
    force: bool = False,
) -> list[Path]:
    """Write a 3D `Volume` as a DICOM series (one file per slice, k order); returns the files in k order."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    folder = Path(folder)
    modality = modality.upper()
    if modality not in _SOP_CLASSES:
        raise InputError(f"cannot write {folder}: modality {modality!r} is not supported (use 'CT' or 'MR')")
    if not isinstance(volume, Volume) or volume.is_4d:
        raise InputError(f"cannot write {folder}: write_dicom_series needs a 3D Volume")
    from napari_medseg._guard import check_outputs

    check_outputs(folder, [volume], replaces_folder=True)  # never over, into or around the volume's source
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{folder} exists and is a file; choose a folder name")
    if folder.exists() and any(folder.iterdir()) and not force:
        raise OutputExistsError(
            f"{folder} already exists and is not empty; refusing to overwrite it (force=True / --force)"
        )
    if np.linalg.det(volume.direction) < 0:  # readers sort along row x col: store k reversed
        nk = volume.spatial_shape[0]
        flipped_dir = volume.direction.copy()
        flipped_dir[:, 2] *= -1
        volume = Volume(volume.array[::-1], volume.spacing, volume.index_to_physical((0, 0, nk - 1)), flipped_dir,
                        volume.meta)
    stored, slope, intercept = _stored_values(volume.array)
    uids = {
        "study": study_uid or volume.meta.get("study_uid") or generate_uid(),
        "series": series_uid or generate_uid(),
        "frame_of_reference": frame_of_reference_uid or generate_uid(),
    }
    base = _base_dataset(volume, modality, uids, series_description, patient_name, patient_id, series_number)
    base.RescaleIntercept = _ds_str(intercept)
    base.RescaleSlope = _ds_str(slope)
    normal = volume.direction[:, 2]
    folder.parent.mkdir(parents=True, exist_ok=True)
    from napari_medseg._atomic import temp_dir_beside

    tmp = temp_dir_beside(folder, f".{folder.name}.")
    try:
        names = []
        for k in range(stored.shape[0]):
            ds = base.copy()
            sop_uid = generate_uid()
            ds.SOPInstanceUID = sop_uid
            ds.InstanceNumber = k + 1
            pos = volume.index_to_physical((0, 0, k))
            ds.ImagePositionPatient = [_ds_str(v) for v in pos]
            ds.SliceLocation = _ds_str(float(pos @ normal))
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.file_meta = meta
            name = f"IM{k + 1:05d}.dcm"
            ds.save_as(tmp / name, enforce_file_format=True)
            names.append(name)
        _replace_folder(tmp, folder, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [folder / n for n in names]


# ================================================================================================ DICOM SEG
_ORGAN_CODES = {  # name -> (SCT code, meaning)
    "liver": ("10200004", "Liver"),
    "spleen": ("78961009", "Spleen"),
    "kidney_right": ("9846003", "Right kidney"),
    "kidney_left": ("18639004", "Left kidney"),
    "kidney": ("64033007", "Kidney"),
    "spine": ("421060004", "Spinal column"),
    "pancreas": ("15776009", "Pancreas"),
    "stomach": ("69695003", "Stomach"),
    "aorta": ("15825003", "Aorta"),
}
_TUMOUR_WORDS = ("tumour", "tumor", "lesion", "nodule", "metast", "cancer", "neoplasm")


def _segment_codes(name: str):
    from highdicom.sr.coding import CodedConcept

    low = name.lower()
    if any(w in low for w in _TUMOUR_WORDS):
        return (CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
                CodedConcept("108369006", "SCT", "Neoplasm"))
    if low in _ORGAN_CODES:
        value, meaning = _ORGAN_CODES[low]
        return CodedConcept("91723000", "SCT", "Anatomical Structure"), CodedConcept(value, "SCT", meaning)
    return CodedConcept("85756007", "SCT", "Tissue"), CodedConcept("85756007", "SCT", "Tissue")


def _source_datasets(reference: Volume, path: Path) -> list:
    """Headers of the reference's source images (io.dicom's `source_datasets`), naming the SEG on failure."""
    from napari_medseg.io.dicom import source_datasets

    try:
        return list(source_datasets(reference))
    except InputError as e:
        raise InputError(f"cannot write DICOM SEG {path}: {e}") from e


def _match_reference_slices(datasets, reference: Volume, path: Path) -> list[int]:
    """For each source dataset/frame, the labels slice ``k`` it shows; `GeometryError` if they do not coincide.

    Single-frame sources are matched by ``ImagePositionPatient`` (so their order does not matter); an
    enhanced multi-frame source uses the reader's frame order (``meta["dicom_reference"]["frame_numbers"]``).
    """
    nk, nj, ni = reference.spatial_shape
    if reference.meta.get("tilt_handling") == "resampled":
        raise GeometryError(
            f"cannot write DICOM SEG {path}: the source series has gantry tilt and was resampled to a regular grid "
            "when read, so the labels' slices are not the source images; save the labels as NIfTI instead"
        )
    if len(datasets) == 1 and int(getattr(datasets[0], "NumberOfFrames", 1) or 1) == nk and nk > 1:
        frames = (reference.meta.get("dicom_reference") or {}).get("frame_numbers") or list(range(1, nk + 1))
        order = [0] * nk
        for k, frame in enumerate(frames):
            order[int(frame) - 1] = k
        return order
    if len(datasets) != nk:
        raise GeometryError(
            f"cannot write DICOM SEG {path}: the reference volume has {nk} slices but its source series has "
            f"{len(datasets)} images; save the labels as NIfTI instead"
        )
    order = []
    for ds in datasets:
        try:
            pos = np.asarray([float(v) for v in ds.ImagePositionPatient])
            shape_ok = (int(ds.Rows), int(ds.Columns)) == (nj, ni)
        except (AttributeError, TypeError, ValueError) as e:
            raise GeometryError(f"cannot write DICOM SEG {path}: source image without position/size ({e})") from e
        i, j, k = reference.physical_to_index(pos)
        kk = int(round(k))
        if not shape_ok or abs(i) > 1e-3 or abs(j) > 1e-3 or abs(k - kk) > 1e-3 or not 0 <= kk < nk:
            raise GeometryError(
                f"cannot write DICOM SEG {path}: source image {getattr(ds, 'SOPInstanceUID', '?')} does not coincide "
                "with a slice of the labels grid; save the labels as NIfTI instead"
            )
        order.append(kk)
    if sorted(order) != list(range(nk)):
        raise GeometryError(f"cannot write DICOM SEG {path}: several source images fall on the same slice")
    return order


def write_dicom_seg(labels: Volume, path, table: dict, reference: Volume | None, force: bool = False,
                    algorithm_type: str = "SEMIAUTOMATIC") -> Path:
    """Write ``labels`` (uint8/uint16 on the reference grid) as a BINARY DICOM SEG referencing the source.

    ``table`` is {value: (name, rgba or None)}; each value present in the labels becomes one segment
    (segment numbers 1..n in value order; the segment label is the class name).
    """
    import highdicom as hd
    from highdicom.sr.coding import CodedConcept
    from pydicom.uid import generate_uid

    from napari_medseg import __version__
    from napari_medseg._atomic import atomic_path

    path = Path(path)
    if reference is None or not (reference.meta.get("dicom_files") or reference.meta.get("dicom_reference")):
        raise InputError(
            f"cannot write DICOM SEG {path}: it must reference the source DICOM series, but the reference image "
            "was not read from DICOM. Segment an image opened from a DICOM series, or save the labels as NIfTI"
        )
    datasets = _source_datasets(reference, path)
    order = _match_reference_slices(datasets, reference, path)
    arr = np.asarray(labels.array)
    values = [int(v) for v in np.unique(arr) if v != 0]
    if not values:
        raise InputError(f"cannot write DICOM SEG {path}: the labels are empty (a SEG needs at least one segment)")
    seg_map = np.zeros(int(arr.max()) + 1, dtype=np.uint16)
    descriptions = []
    algorithm = None
    if algorithm_type != "MANUAL":
        algorithm = hd.AlgorithmIdentificationSequence(
            name="napari-medseg", family=CodedConcept("123110", "DCM", "Artificial Intelligence"), version=__version__
        )
    for n, value in enumerate(values, start=1):
        seg_map[value] = n
        name, color = table.get(value, (f"label {value}", None))
        category, prop = _segment_codes(name)
        extra = {}
        if color:
            extra["display_color"] = hd.color.CIELabColor.from_rgb(*(int(round(255 * c)) for c in color[:3]))
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=n,
                segment_label=name[:64],
                segmented_property_category=category,
                segmented_property_type=prop,
                algorithm_type=algorithm_type,
                algorithm_identification=algorithm,
                tracking_id=f"label {value}",
                tracking_uid=generate_uid(),
                **extra,
            )
        )
    seg_array = seg_map[arr[order]]  # frame n of the SEG <-> source image/frame n
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets, pixel_array=seg_array, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=900,
            sop_instance_uid=generate_uid(), instance_number=1, manufacturer="napari-medseg",
            manufacturer_model_name="napari-medseg", software_versions=__version__, device_serial_number="0",
            series_description="napari-medseg labels", content_label="SEGMENTATION",
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise InputError(f"cannot write DICOM SEG {path}: highdicom rejected the source series or labels ({e})") from e
    with atomic_path(path, force=force) as tmp:
        seg.save_as(tmp)
    return path
