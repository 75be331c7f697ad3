"""Inference: preprocessing, sliding-window prediction, inversion to the source grid, post-processing.

Quick start::

    from napari_medseg import read_volume, segment
    result = segment(read_volume("ct.nii.gz"))      # default model, GPU when available
    result.labels, result.stats_table()
"""

from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_medseg.inference' has no attribute {name!r}")
