"""What the widgets read off napari layers (no Qt): class tables, the image a labels layer belongs to,
its session record, the model that produced it, the uncertainty layer."""

from __future__ import annotations

import numpy as np

from napari_medseg._napari.layers import META_KEY, SOURCE_KEY, volume_from_layer, volume_record


def is_kind(layer, kind: str) -> bool:
    return layer.__class__.__name__ == kind


def layers_of(viewer, kind: str) -> list:
    return [l for l in viewer.layers if is_kind(l, kind)]


def class_table(layer) -> dict[int, str]:
    """``{value: name}`` of a labels layer: metadata["classes"], else its features, else values present."""
    classes = (layer.metadata or {}).get("classes")
    if classes:
        return {int(k): str(v) for k, v in classes.items()}
    feats = getattr(layer, "features", None)
    if feats is not None and "class" in getattr(feats, "columns", ()) and "index" in feats.columns:
        return {int(i): str(c) for i, c in zip(feats["index"], feats["class"])}
    top = int(np.max(layer.data)) if np.size(layer.data) else 0
    return {0: "background", **{v: f"label {v}" for v in range(1, max(top, 1) + 1)}}


def image_record_for(layer, viewer=None) -> dict:
    """The geometry record of the image a labels layer belongs to (the session key is derived from it)."""
    md = layer.metadata or {}
    if md.get(SOURCE_KEY):
        return md[SOURCE_KEY]
    if viewer is not None:
        for other in viewer.layers:
            rec = (other.metadata or {}).get(META_KEY)
            if is_kind(other, "Image") and rec and list(rec["shape"])[-3:] == list(np.shape(layer.data))[-3:]:
                return rec
    if md.get(META_KEY):
        return md[META_KEY]
    vol, _ = volume_from_layer(layer)
    return volume_record(vol)


def image_layer_for(viewer, layer):
    """The 3D image layer a labels layer was made from (same source path), else the first 3D image."""
    images = [l for l in viewer.layers if is_kind(l, "Image") and not getattr(l, "rgb", False) and np.ndim(l.data) == 3]
    src = (layer.metadata or {}).get(SOURCE_KEY) if layer is not None else None
    if src:
        for im in images:
            rec = (im.metadata or {}).get(META_KEY)
            if rec and rec.get("meta", {}).get("source_path") == src.get("meta", {}).get("source_path"):
                return im
    return images[0] if images else None


def uncertainty_layer(viewer):
    for l in viewer.layers:
        md = l.metadata or {}
        if is_kind(l, "Image") and (md.get("medseg_kind") == "uncertainty" or "uncertainty" in l.name.lower()):
            return l
    return None


def producing_model(layer) -> str | None:
    """The model that produced a labels layer, as a spec for `load_model` (recorded by the pipeline in
    ``metadata["medseg_volume"]["meta"]["model"]``): its path when it still exists, else its name (the
    active version of that name); None when unknown (e.g. labels from a file)."""
    from pathlib import Path

    info = (((layer.metadata or {}).get(META_KEY) or {}).get("meta") or {}).get("model") or {}
    if not isinstance(info, dict):
        return None
    path = str(info.get("path") or "")
    if path and Path(path).exists():
        return path
    name = info.get("name")
    return str(name) if name else None


def image_grid_from_record(record: dict):
    """A geometry-only Volume of the image (for shape / `with_array` / `volume_record`); allocates nothing."""
    from napari_medseg._napari.layers import blank_volume

    return blank_volume(record)
