"""Adapters between `Volume` and napari layers (data tuples, metadata, colormaps, class features).

A layer made from a Volume carries ``layer.metadata["medseg_volume"]``: the geometry and metadata of
the Volume without its array (see `volume_record`). Writers and widgets rebuild the exact Volume with
`volume_from_layer`; layers without it (plain arrays) fall back to their scale/translate/affine.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from napari_medseg.classes import ClassTable, meta_colors
from napari_medseg.errors import InputError
from napari_medseg.volume import Geometry, Volume, geometry_volume

META_KEY = "medseg_volume"
#: metadata key on labels layers: the record of the source image (DICOM SEG needs its references)
SOURCE_KEY = "medseg_source"
CT_WINDOW = (-160.0, 240.0)


# ---------------------------------------------------------------------------- metadata records
def volume_record(volume: Volume) -> dict[str, Any]:
    """Geometry + metadata of ``volume`` without the voxels (plain lists; JSON-friendly except meta).

    The geometry keys are `Geometry.to_record`'s, except that ``shape`` is the full array shape (a 4D
    volume keeps its channel axis); `Geometry.from_record` reads both.
    """
    return {
        **volume.geometry.to_record(),
        "shape": list(volume.shape),
        "dtype": str(volume.array.dtype),
        "meta": copy.deepcopy(volume.meta),
    }


def volume_from_record(array, record: dict[str, Any]) -> Volume:
    """Rebuild a Volume from an array and a `volume_record` (raises InputError if the shape differs)."""
    array = np.asarray(array)
    shape = tuple(record.get("shape", array.shape))
    if tuple(array.shape[-3:]) != tuple(shape[-3:]):
        raise InputError(
            f"layer data shape {array.shape} does not match its recorded volume shape {shape}; "
            "the layer was resized or resampled. Re-open the source image or save it as a plain image."
        )
    geometry = Geometry.from_record({**record, "shape": array.shape}, "the layer's napari-medseg record")
    return Volume.from_geometry(array, geometry, copy.deepcopy(record.get("meta", {})))


def blank_volume(record: dict[str, Any]) -> Volume:
    """A geometry-only `Volume` of a `volume_record`: its array is a read-only broadcast of zeros, nothing is
    allocated (instead of ``volume_from_record(np.zeros(shape), record)``)."""
    return geometry_volume(Geometry.from_record(record), copy.deepcopy(record.get("meta", {})))


def geometry_of_layer(layer) -> Geometry:
    """The `Geometry` of a napari layer without touching its voxels: its ``medseg_volume`` record when that
    matches the data's shape, else its scale/translate/affine (voxel units for plain arrays)."""
    shape = tuple(int(s) for s in np.shape(layer.data))
    record = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    if record is not None and shape[-3:] == tuple(record.get("shape", ()))[-3:]:
        return Geometry.from_record(record, f"layer '{getattr(layer, 'name', '')}'")
    if len(shape) != 3:
        raise InputError(f"need a 3D layer to rebuild its geometry, got shape {shape}")
    return Geometry.from_napari(shape, layer.scale, layer.translate, layer.affine)


def _has_layer_geometry(scale, translate, affine) -> bool:
    scale = np.ones(1) if scale is None else np.asarray(scale, dtype=float)
    translate = np.zeros(1) if translate is None else np.asarray(translate, dtype=float)
    aff = None if affine is None else np.asarray(getattr(affine, "affine_matrix", affine), dtype=float)
    plain_aff = aff is None or np.allclose(aff, np.eye(aff.shape[0]))
    return not (np.allclose(scale, 1.0) and np.allclose(translate, 0.0) and plain_aff)


def volume_from_parts(data, metadata=None, scale=None, translate=None, affine=None) -> tuple[Volume, bool]:
    """A Volume for layer ``data``; the bool says whether it has real (medical or layer) geometry.

    Order of precedence: ``metadata["medseg_volume"]`` (exact), then the layer's scale/translate/affine,
    then voxel units (spacing 1 mm, origin 0) for plain arrays.
    """
    data = np.asarray(data)
    metadata = metadata or {}
    record = metadata.get(META_KEY)
    if record is not None and tuple(np.shape(data)[-3:]) == tuple(record.get("shape", ())[-3:]):
        return volume_from_record(data, record), True
    if data.ndim != 3:
        raise InputError(f"need a 3D layer to rebuild its geometry, got shape {data.shape}")
    aff = None if affine is None else np.asarray(getattr(affine, "affine_matrix", affine), dtype=float)
    meta = copy.deepcopy(record.get("meta", {})) if record else {}
    vol = Volume.from_napari(data, scale=scale, translate=translate, affine=aff, meta=meta)
    return vol, _has_layer_geometry(scale, translate, aff)


def volume_from_layer(layer) -> tuple[Volume, bool]:
    """Volume of a napari layer (see `volume_from_parts`)."""
    return volume_from_parts(layer.data, layer.metadata, layer.scale, layer.translate, layer.affine)


def check_volume_layer(layer) -> None:
    """Raise InputError unless ``layer`` is a 3D single-channel image we can segment."""
    name = getattr(layer, "name", "layer")
    if getattr(layer, "rgb", False):
        raise InputError(f"'{name}' is an RGB image; segmentation needs a grey-level 3D volume (CT/MR)")
    ndim = np.ndim(layer.data) if not hasattr(layer.data, "ndim") else layer.data.ndim
    if ndim == 2:
        raise InputError(f"'{name}' is a 2D image; segmentation needs a 3D volume (open the whole series)")
    if ndim != 3:
        raise InputError(
            f"'{name}' has {ndim} dimensions {tuple(layer.data.shape)}; choose a 3D volume "
            "(for 4D data, save one channel/time point as its own volume first)"
        )


# ---------------------------------------------------------------------------- layer data tuples
def _display_limits(volume: Volume) -> tuple[float, float]:
    arr = volume.array
    modality = str(volume.meta.get("modality", "")).upper()
    flat = arr.reshape(-1)
    sample = flat[:: max(1, flat.size // 200_000)].astype(np.float32)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if modality == "CT" or (lo < -500 and hi > 0):
        return CT_WINDOW
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def series_name(volume: Volume, fallback: str = "image") -> str:
    meta = volume.meta
    number = meta.get("series_number")
    desc = str(meta.get("series_description") or "").strip()
    parts = [f"#{number}" if number not in (None, "") else "", desc]
    name = " ".join(p for p in parts if p).strip()
    if name:
        return name
    src = meta.get("source_path")
    if src:
        from pathlib import Path

        from napari_medseg.io.suffixes import strip_suffix

        return strip_suffix(Path(str(src)).name)
    return fallback


def image_layer_data(volume: Volume, name: str | None = None) -> tuple:
    """``(data, kwargs, "image")`` placing ``volume`` at its exact physical position."""
    kwargs = dict(volume.napari_kwargs())
    kwargs.update(
        name=name or series_name(volume),
        metadata={META_KEY: volume_record(volume)},
        contrast_limits=_display_limits(volume),
        colormap="gray",
    )
    return (volume.array, kwargs, "image")


def label_colormap(colors: dict[int, Any] | None, max_value: int = 0):
    """A napari DirectLabelColormap from ``{value: rgba}``; other values get napari's cyclic palette."""
    from napari.utils.colormaps import DirectLabelColormap, label_colormap as cyclic

    colors = {int(v): tuple(float(c) for c in rgba) for v, rgba in (colors or {}).items()}
    top = max([int(max_value), 31, *colors])
    palette = cyclic(top + 1)
    color_dict: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for value in range(1, top + 1):
        rgba = colors.get(value)
        if rgba is None:
            rgba = tuple(float(c) for c in palette.map(value))
        color_dict[value] = rgba if len(rgba) == 4 else (*rgba, 1.0)
    return DirectLabelColormap(color_dict=color_dict, background_value=0)


def class_features(classes: dict[int, str] | None, max_value: int = 0):
    """A features table with an ``index`` column (label value) and a ``class`` column (name)."""
    import pandas as pd

    classes = {int(k): str(v) for k, v in (classes or {}).items()}
    classes.setdefault(0, "background")
    top = max([int(max_value), *classes])
    index = list(range(top + 1))
    return pd.DataFrame({"index": index, "class": [classes.get(v, f"label {v}") for v in index]})


def labels_layer_data(
    labels: Volume,
    name: str,
    classes: dict[int, str] | None = None,
    colors: dict[int, Any] | None = None,
    source: Volume | dict | None = None,
) -> tuple:
    """``(data, kwargs, "labels")`` for a labels Volume with class names (hover) and colours.

    ``classes`` (any `ClassTable` form; default: the labels' metadata) and ``colors`` ({value: rgba}, which
    win) give the table; classes still without a colour take the metadata's (``class_colors`` or the older
    ``colors``), then the default table's. ``source`` (the image Volume or its record) is kept in metadata
    for DICOM SEG references.
    """
    given = classes or labels.meta.get("classes") or {}
    table = ClassTable.from_any(given).with_colors(colors).fill_colors(meta_colors(labels.meta)).with_default_colors()
    background = {0: str(v) for k, v in dict(given).items() if int(k) == 0} if isinstance(given, dict) else {}
    classes = {**background, **table.names()}  # a background name given is kept
    colors = table.colors()
    meta = table.to_meta(dict(labels.meta))
    meta["classes"] = classes
    vol = Volume.from_geometry(labels.array, labels.geometry, meta)
    metadata: dict[str, Any] = {META_KEY: volume_record(vol), "classes": classes}
    if source is not None:
        metadata[SOURCE_KEY] = source if isinstance(source, dict) else volume_record(source)
    data = labels.array
    if not np.issubdtype(data.dtype, np.integer):
        data = np.rint(data).astype(np.int32)
    max_value = int(data.max()) if data.size else 0
    kwargs = dict(labels.napari_kwargs())
    kwargs.update(name=name, metadata=metadata, features=class_features(classes, max_value), opacity=0.5)
    if colors:
        kwargs["colormap"] = label_colormap(colors, max_value)
    return (data, kwargs, "labels")


def unique_layer_name(viewer, base: str) -> str:
    """``base``, or ``base (2)``, ``base (3)``, … — never the name of an existing layer."""
    names = {layer.name for layer in viewer.layers}
    if base not in names:
        return base
    n = 2
    while f"{base} ({n})" in names:
        n += 1
    return f"{base} ({n})"
