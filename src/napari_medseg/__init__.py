"""napari-medseg: segment medical volumes in napari and from Python.

Quick start::

    import napari_medseg as ms
    vol = ms.read_volume("ct_folder/")          # DICOM folder/zip/file, NIfTI, NRRD, MHA
    result = ms.segment(vol)                    # default model, GPU when available
    ms.write_labels(result.labels, "ct_seg.nii.gz")
    liver = ms.prompt_segment(vol, positive=[(40, 120, 200)])  # one click (k, j, i) -> binary mask

Importing this package loads neither napari, Qt nor torch: public functions are imported lazily.
"""

from __future__ import annotations

from napari_medseg._lazy import lazy_getattr

__version__ = "0.1.0"

from napari_medseg.errors import (  # noqa: E402
    CancelledError,
    GeometryError,
    InputError,
    MedsegError,
    ModelError,
    SeriesSelectionError,
)
from napari_medseg.volume import Geometry, Volume  # noqa: E402

# public name -> module that defines it (imported on first access)
_LAZY = {
    "read_volume": "napari_medseg.io",
    "list_series": "napari_medseg.io",
    "write_labels": "napari_medseg.io",
    "write_volume": "napari_medseg.io",
    "make_phantom": "napari_medseg.sample",
    "segment": "napari_medseg.inference",
    "LabelResult": "napari_medseg.inference",
    "load_model": "napari_medseg.models",
    "train": "napari_medseg.training",
    "finetune": "napari_medseg.training",
    "prompt_segment": "napari_medseg.prompt",
    "load_prompt_model": "napari_medseg.prompt",
    "PromptError": "napari_medseg.prompt",
}

__all__ = [
    "__version__",
    "Volume",
    "Geometry",
    "MedsegError",
    "InputError",
    "GeometryError",
    "ModelError",
    "SeriesSelectionError",
    "CancelledError",
    *_LAZY,
]


__getattr__ = lazy_getattr(__name__, _LAZY)
