"""The Segment widget's work in its worker thread: the core pipeline, then the layer data (no Qt here).

Checks (channels, classes) and statistics are the core's (`inference.pipeline`, `inference.result`); this
only turns the `LabelResult` into napari layer data off the GUI thread, so the GUI thread only adds layers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from napari_medseg._napari.layers import labels_layer_data, volume_record
from napari_medseg.classes import ClassTable
from napari_medseg.progress import Progress


@dataclass
class SegmentOutcome:
    result: Any
    classes: dict[int, str]
    stats: list[dict]
    layer_data: tuple  # (data, kwargs, "labels"); the name is set when the layer is added
    uncertainty_data: tuple | None = None  # (data, kwargs, "image") of the uncertainty map, when asked for
    #: the napari layer objects of ``layer_data`` / ``uncertainty_data``, built in the worker (see `build_layer`)
    labels_layer: Any = None
    uncertainty_layer: Any = None


def segment_job(volume, model_spec, config):
    """Step generator run in the worker: load the model, segment with ``config`` (an `InferenceConfig`),
    build the layer data; returns a `SegmentOutcome`."""
    yield Progress(0, 0, "loading model")
    from napari_medseg.inference import segment_steps
    from napari_medseg.models import load_model

    model = load_model(model_spec)
    result = yield from segment_steps(volume, model=model, config=config)
    labels = result.labels
    classes = {int(k): str(v) for k, v in (result.classes or labels.meta.get("classes") or {}).items()}
    t = time.perf_counter()
    colors = result.colors or ClassTable.from_meta(labels.meta).colors()
    layer_data = labels_layer_data(labels, "labels", classes=classes, colors=colors, source=volume_record(volume))
    unc = uncertainty_layer_data(result.uncertainty) if result.uncertainty is not None else None
    layers = (build_layer(layer_data), build_layer(unc) if unc is not None else None)
    result.timings["layer_data"] = time.perf_counter() - t
    return SegmentOutcome(result, classes, result.stats_table(), layer_data, unc, *layers)


def build_layer(layer_data: tuple):
    """The napari layer (model object only: no Qt, no vispy) of a ``(data, kwargs, kind)`` tuple.

    Built here, in the worker, it takes nothing from the GUI thread: a layer's model computes its
    thumbnail, colormap lookup and features index when it is made (10–30 ms on the chest CT). The widget
    only names and adds it. napari layers are plain Python objects until a viewer adds them; the one
    shared state they touch when made, pint's unit registry, is built by the image layer already shown.
    """
    from napari.layers import Image, Labels

    data, kwargs, kind = layer_data
    return {"labels": Labels, "image": Image}[kind](data, **kwargs)


def uncertainty_layer_data(unc) -> tuple:
    """``(data, kwargs, "image")`` of an uncertainty `Volume` at its own exact geometry (the model grid's
    voxels, placed over the image by scale/translate/affine)."""
    import numpy as np

    from napari_medseg._napari.layers import META_KEY

    kwargs = dict(unc.napari_kwargs())
    kwargs.update(colormap="magma", opacity=0.6, blending="additive", contrast_limits=(0.0, 1.0),
                  interpolation2d="linear", interpolation3d="linear",
                  metadata={"medseg_kind": "uncertainty", META_KEY: volume_record(unc)})
    return (np.asarray(unc.array, dtype=np.float32), kwargs, "image")


def stage_profile(timings: dict, wall: float | None = None) -> str:
    """``in 4.2 s (read 0.0 · preprocess 1.5 · inference 1.0 · …)``: where a run's time went, stage by stage."""
    parts = [f"{k} {v:.1f}" for k, v in timings.items() if isinstance(v, (int, float)) and v >= 0.05]
    total = wall if wall is not None else sum(v for v in timings.values() if isinstance(v, (int, float)))
    return f"in {total:.1f} s" + (f" ({' · '.join(parts)} s)" if parts else "")
