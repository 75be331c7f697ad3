"""npe2 single-layer writers: labels -> NIfTI / DICOM SEG, image -> NIfTI, always with exact geometry.

Geometry comes from ``metadata["medseg_volume"]`` (set by our reader and widgets), else from the layer's
scale/translate/affine. Files are written atomically by `napari_medseg.io`. napari's own save dialog has
already asked about overwriting, so an existing *output* is replaced; a layer's *source* file never is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_medseg._napari.layers import META_KEY, SOURCE_KEY, volume_from_parts
from napari_medseg.errors import InputError
from napari_medseg.volume import Volume


def _volume(data, attributes: dict[str, Any]) -> Volume:
    vol, _ = volume_from_parts(
        data,
        attributes.get("metadata") or {},
        attributes.get("scale"),
        attributes.get("translate"),
        attributes.get("affine"),
    )
    return vol


def _classes(attributes: dict[str, Any], vol: Volume) -> dict[int, str] | None:
    meta = attributes.get("metadata") or {}
    classes = meta.get("classes") or vol.meta.get("classes")
    if not classes:
        features = attributes.get("features")
        try:
            if features is not None and "class" in features and "index" in features:
                classes = dict(zip((int(v) for v in features["index"]), (str(c) for c in features["class"])))
        except (TypeError, ValueError):
            classes = None
    if not classes:
        return None
    return {int(k): str(v) for k, v in classes.items()}


def _refuse_source(path: Path, *records) -> None:
    """The shared rule (`napari_medseg._guard`): never over or into the layer's source file/folder."""
    from napari_medseg._guard import check_outputs

    check_outputs(path, [r for r in records if r])


def _reference(attributes: dict[str, Any]) -> Volume | None:
    """The source image (metadata only, no voxels) a DICOM SEG must reference."""
    meta = attributes.get("metadata") or {}
    from napari_medseg.io.derived import blank_from_record

    for rec in (meta.get(SOURCE_KEY), meta.get(META_KEY), (meta.get(META_KEY) or {}).get("meta", {}).get("reference")):
        if rec and (rec.get("meta") or {}).get("dicom_reference"):
            return blank_from_record(rec)  # no voxels in memory: geometry only
    return None


def _labels_volume(data, attributes) -> Volume:
    data = np.asarray(data)
    if data.ndim != 3:
        raise InputError(f"labels layer '{attributes.get('name', '')}' is {data.ndim}D; only 3D labels can be saved")
    return _volume(data, attributes)


def write_labels_nifti(path: str, data: Any, attributes: dict) -> list[str]:
    from napari_medseg.io import write_labels

    vol = _labels_volume(data, attributes)
    meta = attributes.get("metadata") or {}
    _refuse_source(Path(path), meta.get(META_KEY), meta.get(SOURCE_KEY))
    out = write_labels(vol, path, classes=_classes(attributes, vol), force=True)
    return [str(out)]


def write_labels_dicom_seg(path: str, data: Any, attributes: dict, format: str | None = None) -> list[str]:
    from napari_medseg.io import write_labels

    vol = _labels_volume(data, attributes)
    reference = _reference(attributes)
    what = "RTSTRUCT" if format == "rtstruct" else "DICOM SEG"
    if reference is None:
        raise InputError(
            f"cannot save '{attributes.get('name', 'labels')}' as {what} to {path}: the layer does not know "
            "its source DICOM series. Segment an image opened from DICOM (the Segment widget records the source), "
            "or save as NIfTI (.nii.gz) instead."
        )
    meta = attributes.get("metadata") or {}
    _refuse_source(Path(path), meta.get(META_KEY), meta.get(SOURCE_KEY))
    out = write_labels(vol, path, classes=_classes(attributes, vol), reference=reference, force=True, format=format)
    return [str(out)]


def write_labels_rtstruct(path: str, data: Any, attributes: dict) -> list[str]:
    """Labels -> RTSTRUCT (one ROI per class) referencing the layer's source DICOM series."""
    return write_labels_dicom_seg(path, data, attributes, format="rtstruct")


def write_image_nifti(path: str, data: Any, attributes: dict) -> list[str]:
    from napari_medseg.io import write_volume

    if attributes.get("rgb"):
        raise InputError(f"cannot save RGB layer '{attributes.get('name', '')}' as a medical NIfTI volume")
    arr = np.asarray(data)
    if arr.ndim not in (3, 4):
        raise InputError(f"image layer '{attributes.get('name', '')}' is {arr.ndim}D; NIfTI volumes need 3D or 4D data")
    meta = attributes.get("metadata") or {}
    _refuse_source(Path(path), meta.get(META_KEY))
    record = meta.get(META_KEY)
    if arr.ndim == 4:
        if record is None:
            raise InputError("a 4D image without napari-medseg geometry cannot be saved as NIfTI; save one channel")
        from napari_medseg._napari.layers import volume_from_record

        vol = volume_from_record(arr, record)
    else:
        vol = _volume(arr, attributes)
    out = write_volume(vol, path, force=True)
    return [str(out)]
