"""npe2 sample-data contributions: the synthetic abdomen CT phantom with its ground-truth labels.

The DICOM variant writes the phantom as a DICOM series to a temporary folder and reads it back through
the real DICOM reader, so the demo exercises the same code path as a user's data. The folder is kept
(DICOM SEG export of labels made on it references its files).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from napari_medseg._napari.layers import image_layer_data, labels_layer_data
from napari_medseg.volume import Volume


def _phantom():
    from napari_medseg.sample import make_sample_phantom

    return make_sample_phantom(seed=0)


def _layers(image: Volume, labels: Volume, tag: str) -> list[tuple]:
    from napari_medseg.classes import class_colors, class_names

    classes = labels.meta.get("classes") or class_names()
    colors = {int(k): v for k, v in class_colors().items() if int(k) in {int(c) for c in classes}}
    img = image_layer_data(image, name=f"abdomen phantom ({tag})")
    lab = labels_layer_data(labels, name=f"abdomen phantom ({tag}) ground truth", classes=classes, colors=colors, source=image)
    return [img, lab]


def abdomen_phantom_nifti() -> list[tuple]:
    """The phantom as it would be read from NIfTI files (written to a temporary folder and read back)."""
    from napari_medseg.io import read_volume, write_labels, write_volume

    image, labels = _phantom()
    folder = Path(tempfile.mkdtemp(prefix="medseg-sample-nifti-"))
    write_volume(image, folder / "abdomen_ct.nii.gz")
    write_labels(labels, folder / "abdomen_labels.nii.gz", classes=labels.meta.get("classes"))
    image = read_volume(folder / "abdomen_ct.nii.gz")
    labels = read_volume(folder / "abdomen_labels.nii.gz")
    return _layers(image, labels, "NIfTI")


def abdomen_phantom_dicom() -> list[tuple]:
    """The phantom written as a CT DICOM series and read back with the real reader; labels on its grid."""
    from napari_medseg.io import read_volume
    from napari_medseg.io.dicom_write import write_dicom_series

    image, labels = _phantom()
    folder = Path(tempfile.mkdtemp(prefix="medseg-sample-dicom-")) / "abdomen_ct"
    write_dicom_series(image, folder, series_description="Abdomen CT phantom")
    dicom_image = read_volume(folder)
    labels_on_grid = dicom_image.with_array(labels.array, classes=labels.meta.get("classes"), modality="SEG")
    labels_on_grid.meta.pop("rescale", None)
    return _layers(dicom_image, labels_on_grid, "DICOM")
