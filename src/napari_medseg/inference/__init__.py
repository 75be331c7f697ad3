"""Inference: preprocessing, sliding-window prediction, inversion to the source grid, post-processing.

Quick start::

    from napari_medseg import read_volume, segment
    result = segment(read_volume("ct.nii.gz"))      # default model, GPU when available
    result.labels, result.stats_table()
"""

from __future__ import annotations

from napari_medseg._lazy import lazy_getattr

_LAZY = {
    "segment": "napari_medseg.inference.pipeline",
    "segment_steps": "napari_medseg.inference.pipeline",
    "LabelResult": "napari_medseg.inference.result",
    "InferenceConfig": "napari_medseg.inference.config",
    "SlidingWindow": "napari_medseg.inference.sliding",
    "sliding_window_steps": "napari_medseg.inference.sliding",
    "to_model_grid": "napari_medseg.inference.preprocess",
    "model_input": "napari_medseg.inference.preprocess",
    "intensity": "napari_medseg.inference.preprocess",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
