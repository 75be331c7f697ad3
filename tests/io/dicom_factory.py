"""Generate synthetic DICOM series with known geometry and voxel values (test helper, also used by benchmarks).

`write_series` writes one CT series (one file per slice) and returns a `Written` record with the expected
voxel array (rescaled values, ``[k, j, i]``) and the exact geometry (ITK order, LPS). Options cover the cases
the reader must handle: oblique orientation, shuffled files with misleading names and InstanceNumbers,
anisotropic pixels, compressed transfer syntaxes, gantry tilt, missing slices. `write_enhanced` writes an
enhanced multi-frame CT file; `write_junk` adds non-DICOM and truncated files; `zip_folder` zips a folder.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

#: Transfer syntaxes `write_series(..., syntax=...)` can produce.
SYNTAXES = {
    "implicit": ImplicitVRLittleEndian,
    "explicit": ExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpegls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
    "jpeg_lossless": JPEGLosslessSV1,  # encoded with SimpleITK/GDCM
    "jpeg_baseline": JPEGBaseline8Bit,  # 8-bit, lossy, encoded with Pillow
}


@dataclass
class Written:
    files: list[Path]  # in k order
    expected: np.ndarray  # rescaled voxel values [k, j, i] (for lossy syntaxes: the values before encoding)
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray  # columns = i, j, k unit vectors
    series_uid: str
    study_uid: str
    positions: np.ndarray = field(default=None)  # (k, 3) ImagePositionPatient as written


def rotation(axis: str, degrees: float) -> np.ndarray:
    """Rotation matrix about the x, y or z axis."""
    t = np.radians(degrees)
    c, s = np.cos(t), np.sin(t)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def phantom(shape, seed: int = 0, lo: int = 0, hi: int = 2000) -> np.ndarray:
    """Stored values: a smooth structured pattern (distinct per slice, asymmetric) plus noise."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    smooth = (np.sin(i / 3.0 + k) + np.cos(j / 5.0 - k / 2.0) + 2) / 4  # 0..1
    vals = lo + (hi - lo) * (0.8 * smooth + 0.2 * rng.random(shape))
    return np.clip(np.round(vals), lo, hi).astype(np.int32)


_FOR: dict[str, str] = {}


def _for_uid(study_uid: str) -> str:
    """One FrameOfReferenceUID per study."""
    return _FOR.setdefault(study_uid, generate_uid())


def _base_dataset(study_uid, series_uid, series_number, description, modality, sop_class=CTImageStorage) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.ImplementationClassUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.PatientName = "Phantom^Synthetic"
    ds.PatientID = "SYN001"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = _for_uid(study_uid)
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.Modality = modality
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.SeriesDate = "20260101"
    ds.SeriesTime = "120000"
    ds.ContentDate = "20260101"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.Manufacturer = "napari-medseg tests"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def _set_pixels(ds: Dataset, plane: np.ndarray, syntax: str) -> None:
    """Store one 2D plane of stored values with the requested transfer syntax."""
    uid = SYNTAXES[syntax]
    if syntax == "jpeg_baseline":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(plane.astype(np.uint8), mode="L").save(buf, format="JPEG", quality=95)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = pydicom.encaps.encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid
        ds.LossyImageCompression = "01"
        return
    if syntax == "jpeg_lossless":
        import SimpleITK as sitk

        with _tempfile(".dcm") as path:
            writer = sitk.ImageFileWriter()
            writer.SetUseCompression(True)
            writer.SetCompressor("JPEG")
            writer.SetFileName(str(path))
            writer.Execute(sitk.GetImageFromArray(plane.astype(np.int16)))
            enc = pydicom.dcmread(path)
        assert enc.file_meta.TransferSyntaxUID == JPEGLosslessSV1, enc.file_meta.TransferSyntaxUID
        for kw in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
            setattr(ds, kw, getattr(enc, kw))
        ds.PixelData = enc.PixelData
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid
        return
    signed = plane.min() < 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if signed else 0
    arr = plane.astype(np.int16 if signed else np.uint16)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if syntax != "implicit" else ImplicitVRLittleEndian
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW"
    if syntax in ("rle", "jpegls", "jpeg2000"):
        ds.compress(uid, arr)


class _tempfile:
    def __init__(self, suffix):
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / f"x{suffix}"

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        self.dir.cleanup()


def write_series(
    folder,
    shape=(6, 40, 36),
    spacing=(0.7, 0.7, 2.5),
    origin=(-120.0, -80.0, 30.0),
    direction=None,
    rescale=(1.0, -1024.0),
    syntax: str = "explicit",
    series_number: int = 1,
    description: str = "synthetic CT",
    modality: str = "CT",
    series_uid: str | None = None,
    study_uid: str | None = None,
    shuffle: bool = False,
    tilt_degrees: float = 0.0,
    drop_slices: tuple[int, ...] = (),
    stored: np.ndarray | None = None,
    seed: int = 0,
    prefix: str = "IM",
) -> Written:
    """Write a CT series into ``folder``; see the module docstring. Shapes are array order ``(k, j, i)``.

    ``shuffle`` writes files in random order with random names and InstanceNumbers that contradict the true
    slice order. ``tilt_degrees`` shears the stack along j (each slice shifted by ``k*sk*tan(tilt)`` along the
    column direction) and records GantryDetectorTilt. ``drop_slices`` leaves those k indices out.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    direction = np.eye(3) if direction is None else np.asarray(direction, float)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    slope, intercept = rescale
    if stored is None:
        hi = 250 if syntax == "jpeg_baseline" else 2000
        stored = phantom(shape, seed=seed, hi=hi)
    rng = np.random.default_rng(seed + 1000)
    nk = shape[0]
    keep = [k for k in range(nk) if k not in set(drop_slices)]
    row, col, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    positions = np.array(
        [np.asarray(origin) + normal * spacing[2] * k + col * spacing[2] * k * np.tan(np.radians(tilt_degrees))
         for k in range(nk)]
    )  # fmt: skip
    order = list(keep)
    names = [f"{prefix}{n:04d}.dcm" for n in range(len(keep))]
    numbers = list(range(1, len(keep) + 1))
    if shuffle:
        rng.shuffle(order)
        names = [f"{prefix}_{rng.integers(10**8):08d}.dcm" for _ in keep]
        numbers = list(rng.permutation(len(keep)) + 1)
    files_by_k = {}
    for n, k in enumerate(order):
        ds = _base_dataset(study_uid, series_uid, series_number, description, modality)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = int(numbers[n])
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.r_[row, col]]
        ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]
        ds.SliceThickness = f"{spacing[2]:.6g}"
        ds.Rows, ds.Columns = shape[1], shape[2]
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.6g}", f"{intercept:.6g}"
        ds.RescaleType = "HU"
        if tilt_degrees:
            ds.GantryDetectorTilt = f"{tilt_degrees:.4g}"
        _set_pixels(ds, stored[k], syntax)
        path = folder / names[n]
        ds.save_as(path, enforce_file_format=True)
        files_by_k[k] = path
    expected = stored[keep].astype(np.float64) * slope + intercept
    return Written(
        files=[files_by_k[k] for k in keep],
        expected=expected,
        spacing=tuple(spacing),
        origin=tuple(float(v) for v in positions[keep[0]]),
        direction=direction,
        series_uid=series_uid,
        study_uid=study_uid,
        positions=positions[keep],
    )


def write_localizer(folder, written: Written, name: str = "scout.dcm") -> Path:
    """A single sagittal scout image in the same series as ``written`` (different orientation and size)."""
    ds = _base_dataset(written.study_uid, written.series_uid, 1, "synthetic CT", "CT")
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]  # not flagged LOCALIZER: caught by its geometry
    ds.ImagePositionPatient = ["0", "-100", "100"]
    ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
    ds.PixelSpacing = ["1", "1"]
    ds.Rows, ds.Columns = 20, 24
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    _set_pixels(ds, phantom((1, 20, 24))[0], "explicit")
    path = Path(folder) / name
    ds.save_as(path, enforce_file_format=True)
    return path


def write_enhanced(
    path,
    shape=(5, 40, 36),
    spacing=(0.8, 0.6, 2.0),
    origin=(-50.0, 20.0, -10.0),
    direction=None,
    rescale=(2.0, -1000.0),
    shuffle_frames: bool = True,
    seed: int = 3,
) -> Written:
    """An Enhanced CT Image Storage file: per-frame PlanePositionSequence, shared orientation/measures/rescale.

    With ``shuffle_frames`` the frames are stored out of spatial order.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    direction = np.eye(3) if direction is None else np.asarray(direction, float)
    stored = phantom(shape, seed=seed, hi=1500)
    study_uid, series_uid = generate_uid(), generate_uid()
    ds = _base_dataset(study_uid, series_uid, 7, "enhanced CT", "CT", sop_class=EnhancedCTImageStorage)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.Rows, ds.Columns = shape[1], shape[2]
    ds.NumberOfFrames = shape[0]
    row, col, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    positions = np.array([np.asarray(origin) + normal * spacing[2] * k for k in range(shape[0])])
    order = np.random.default_rng(seed).permutation(shape[0]) if shuffle_frames else np.arange(shape[0])
    shared = Dataset()
    ori = Dataset()
    ori.ImageOrientationPatient = [f"{v:.8f}" for v in np.r_[row, col]]
    meas = Dataset()
    meas.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]
    meas.SliceThickness = f"{spacing[2]:.6g}"
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = f"{rescale[0]:.6g}", f"{rescale[1]:.6g}", "HU"
    shared.PlaneOrientationSequence = Sequence([ori])
    shared.PixelMeasuresSequence = Sequence([meas])
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for n, k in enumerate(order):
        fg = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        fc = Dataset()
        fc.InStackPositionNumber = int(k) + 1
        fc.DimensionIndexValues = [1, int(k) + 1]
        fg.PlanePositionSequence = Sequence([pos])
        fg.FrameContentSequence = Sequence([fc])
        per_frame.append(fg)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = stored[order].astype(np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)
    return Written(
        files=[path],
        expected=stored.astype(np.float64) * rescale[0] + rescale[1],
        spacing=tuple(spacing),
        origin=tuple(positions[0]),
        direction=direction,
        series_uid=series_uid,
        study_uid=study_uid,
        positions=positions,
    )


def write_junk(folder) -> list[Path]:
    """Files a real export folder may hold next to the images: text, random bytes, a truncated DICOM."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = [folder / "README.txt", folder / "random.bin", folder / "empty.dcm"]
    out[0].write_text("exported by a PACS\n")
    out[1].write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    out[2].write_bytes(b"")
    return out


def truncate(path, keep_fraction: float = 0.5) -> Path:
    """Cut a file to a fraction of its size (as an interrupted copy would)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


def zip_folder(folder, zip_path) -> Path:
    """Zip every file under ``folder`` (in a sub-folder of the archive, as PACS exports do)."""
    folder, zip_path = Path(folder), Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, arcname=f"export/{f.relative_to(folder)}")
    return zip_path
