"""npe2 reader: DICOM files/folders/zips, NIfTI, NRRD/MHA as napari layers with exact geometry.

Each image series becomes one image layer (named by series number/description) placed with the
Volume's `napari_kwargs`; label volumes (integer data with a class table, or an integer file named like
``*label*``/``*seg*``/``*mask*``) open as Labels layers with class names and the file's colours.

A DICOM SEG or RTSTRUCT opens as a Labels layer on the grid of its image series: the image layer of that
series already open in the viewer, else the series beside the file (see :mod:`napari_medseg.io.derived`), so
it lies exactly on its image (same scale/translate/affine).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_medseg._napari.layers import image_layer_data, labels_layer_data, series_name
from napari_medseg.classes import ClassTable
from napari_medseg.volume import Volume

_LABEL_WORDS = ("label", "seg", "mask")


def _single_path(path):
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        return Path(path)
    except TypeError:
        return None


def get_reader(path):
    """Return `read_layers` when napari-medseg can read ``path``, else ``None``. Never raises."""
    try:
        p = _single_path(path)
        if p is None:
            return None
        from napari_medseg.io import detect_format

        return read_layers if detect_format(p) is not None else None
    except Exception:  # noqa: BLE001 - a reader hook must never raise
        return None


def _sidecar_classes(path: Path) -> ClassTable | None:
    """The class table of a ``classes.json`` beside a labels file (``{"1": "spleen"}``,
    ``{"1": {"name": "spleen", "color": [r, g, b(, a)]}}`` or ``[{"value", "name", "color"}]``), when valid."""
    side = path.parent / "classes.json"
    if not side.is_file() or side.stat().st_size > 1_000_000:
        return None
    try:
        return ClassTable.from_json(json.loads(side.read_text(encoding="utf-8"))) or None
    except (ValueError, KeyError, TypeError, OSError):
        return None


def is_label_volume(volume: Volume, path: Path | None = None) -> bool:
    """True for integer volumes with a class table, or integer label-like files (by name and range)."""
    arr = volume.array
    if arr.ndim != 3 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        return False
    if volume.meta.get("classes"):
        return True
    name = (path.name if path is not None else str(volume.meta.get("source_path", ""))).lower()
    if not any(w in name for w in _LABEL_WORDS):
        return False
    return int(arr.min(initial=0)) >= 0 and int(arr.max(initial=0)) < 65536


def layers_for_volumes(volumes: list[Volume], path: Path | None = None) -> list[tuple]:
    layers, used = [], set()
    for vol in volumes:
        name = series_name(vol, fallback=path.name if path else "image")
        base, n = name, 2
        while name in used:
            name, n = f"{base} ({n})", n + 1
        used.add(name)
        if is_label_volume(vol, path):
            table = ClassTable.from_meta(vol.meta)
            if not table and path is not None:
                table = _sidecar_classes(path) or table
            layers.append(labels_layer_data(vol, name, classes=table, source=vol.meta.get("reference")))
        else:
            layers.append(image_layer_data(vol, name))
    return layers


def _open_images() -> list[Volume]:
    """Geometry-only volumes of the DICOM image layers open in the current viewer (SEG/RTSTRUCT references)."""
    try:
        import napari

        from napari_medseg._napari.layers import META_KEY
        from napari_medseg.io.derived import blank_from_record

        viewer = napari.current_viewer()
        out = []
        for layer in list(viewer.layers) if viewer is not None else []:
            rec = (getattr(layer, "metadata", None) or {}).get(META_KEY)
            if isinstance(layer, napari.layers.Image) and rec and (rec.get("meta") or {}).get("dicom_reference"):
                out.append(blank_from_record(rec))
        return out
    except Exception:  # noqa: BLE001 - no viewer, or a foreign layer: read without candidates
        return []


def read_layers(path) -> list[tuple]:
    """Read every series at ``path``; errors become a napari notification and no layers."""
    p = _single_path(path)
    try:
        from napari_medseg.io import read_all

        volumes = read_all(p, candidates=_open_images())
        layers = layers_for_volumes(volumes, p)
    except Exception as e:  # noqa: BLE001 - shown to the user instead of crashing napari
        from napari.utils.notifications import show_error

        show_error(f"napari-medseg could not open {p}: {e}")
        return [(None,)]
    from napari.utils.notifications import show_warning

    for vol in volumes:
        for w in vol.meta.get("warnings") or []:
            show_warning(f"{series_name(vol)}: {w}")
    return layers
