"""DICOM SEG and RTSTRUCT: recognising them, finding the image series they reference, placing them on its grid.

A *derived object* (DICOM Segmentation or RT Structure Set) is not an image: `read_volume` on one returns a
labels `Volume` (see :mod:`napari_medseg.io.seg` and :mod:`napari_medseg.io.rtstruct`). The grid it lands on,
in this order of preference:

1. ``reference=`` (a `Volume` read from DICOM, or a DICOM file/folder/zip holding the referenced series);
   a reference that is not the referenced series is an `InputError` naming the SeriesInstanceUID wanted;
2. ``candidates``: image volumes already open (the napari reader passes the viewer's image layers);
3. the referenced series found beside the object (same folder, or the same zip);
4. DICOM SEG only: the SEG's own frame geometry, with a warning (an RTSTRUCT has no grid of its own: an
   `InputError` naming the missing SeriesInstanceUID).

An object naming no series goes on the only candidate / the only series beside it, with a warning.

Overlaps (a voxel in several segments/ROIs) are resolved by one rule for both formats, with a warning that
names the pairs: **the smaller segment wins** (it is painted last), so structures nested in a bigger one
(an organ inside BODY, a GTV inside its PTV) stay visible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_medseg.classes import ClassTable
from napari_medseg.errors import GeometryError, InputError
from napari_medseg.volume import Geometry, Volume, geometry_volume

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"  # Label Map Segmentation Storage (DICOM 2024)
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
DERIVED_SOP_CLASSES = {SEG_STORAGE: "seg", LABELMAP_SEG_STORAGE: "seg", RTSTRUCT_STORAGE: "rtstruct"}


def header_kind(ds) -> str | None:
    """``"seg"``/``"rtstruct"`` from a header's SOP Class UID, or from its Modality when an anonymiser removed
    the SOP Class UID; ``None`` for anything else."""
    sop = str(ds.get("SOPClassUID", "") or "")
    if not sop:
        sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    if sop:
        return DERIVED_SOP_CLASSES.get(sop)
    return {"SEG": "seg", "RTSTRUCT": "rtstruct"}.get(str(ds.get("Modality", "") or "").upper())


def derived_kind(path) -> str | None:
    """``"seg"``, ``"rtstruct"`` or ``None`` for a single file or zip-member key (its SOP Class UID). Never raises."""
    try:
        from napari_medseg.io.dicom_scan import ZIP_SEP, open_key, read_header

        p = Path(path)
        if ZIP_SEP not in str(path) and (not p.is_file() or p.suffix.lower() == ".zip"):
            return None
        return header_kind(read_header(open_key(str(path)), specific_tags=["SOPClassUID", "Modality"]))
    except Exception:  # noqa: BLE001 - detection never raises
        return None


def read_derived(path, reference=None, candidates=(), kind: str | None = None) -> Volume:
    """Read a DICOM SEG or RTSTRUCT file as a labels `Volume` (see the module docstring for the grid)."""
    kind = kind or derived_kind(path)
    if kind == "seg":
        from napari_medseg.io.seg import read_seg

        return read_seg(path, reference=reference, candidates=candidates)
    if kind == "rtstruct":
        from napari_medseg.io.rtstruct import read_rtstruct

        return read_rtstruct(path, reference=reference, candidates=candidates)
    raise InputError(f"{path}: not a DICOM SEG or RTSTRUCT file")


def read_all_dicom(path, candidates=()) -> list[Volume]:
    """`read_dicom_all` plus one labels volume per SEG/RTSTRUCT object found at ``path`` (folder or zip)."""
    from napari_medseg.io.dicom import read_dicom_all
    from napari_medseg.io.dicom_scan import scan

    keys = scan(path).derived if Path(path).is_dir() or Path(path).suffix.lower() == ".zip" else []
    try:
        volumes = read_dicom_all(path)
    except InputError:
        if not keys:
            raise
        volumes = []
    labels, problems = [], []
    for key in keys:
        try:
            labels.append(read_derived(key, candidates=[*volumes, *candidates]))
        except InputError as e:
            problems.append(str(e))
    if not volumes and not labels:
        raise InputError(f"{path}: no image series, and none of its SEG/RTSTRUCT files could be read:\n  - "
                         + "\n  - ".join(problems))
    for vol in volumes[:1]:
        vol.warnings.extend(f"not loaded: {p}" for p in problems)
    return volumes + labels


def open_object(path):
    """A path or file object for pydicom/highdicom (zip members are read into memory)."""
    from napari_medseg.io.dicom_scan import open_key

    return open_key(str(path))


def derived_info(path, kind: str, reference=None):
    """`SeriesInfo` of a SEG/RTSTRUCT file: the labels grid it reads onto, its classes in the warnings' place."""
    from napari_medseg.io.series import SeriesInfo

    vol = read_derived(path, reference=reference, kind=kind)
    classes = ", ".join(f"{v}={n}" for v, n in vol.meta.get("classes", {}).items())
    return SeriesInfo.from_geometry(
        vol.geometry, uid=str(vol.meta.get("series_uid", "")), description=str(vol.meta.get("series_description", "")),
        number=vol.meta.get("series_number"), modality="SEG" if kind == "seg" else "RTSTRUCT",
        format="dicom-seg" if kind == "seg" else "rtstruct", shape=vol.shape,
        warnings=[f"classes: {classes}", *vol.warnings], files=[Path(path)],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- references
def blank_from_record(record: dict) -> Volume:
    """A geometry-only `Volume` from a record {shape, spacing, origin, direction, meta} (a layer's or a SEG's)."""
    return geometry_volume(Geometry.from_record(record), dict(record["meta"]))


def _series_uid(vol: Volume) -> str:
    return str(vol.meta.get("series_uid") or (vol.meta.get("dicom_reference") or {}).get("series_uid") or "")


def _beside(path: Path) -> Path:
    """Where to look for the referenced series: the file's folder (the zip itself for a zip member)."""
    from napari_medseg.io.dicom_scan import ZIP_SEP

    text = str(path)
    if ZIP_SEP in text:
        return Path(text.split(ZIP_SEP, 1)[0])
    return path.parent


def _series_in(location: Path, uid: str):
    """The series ``uid`` at ``location`` read by our DICOM reader (exact geometry and meta), or None; and the
    UIDs found there."""
    from napari_medseg.io.dicom import list_dicom_series, read_dicom

    try:
        infos = list_dicom_series(location)
    except InputError:
        return None, []
    uids = [i.uid for i in infos]
    if uid not in uids:
        return None, uids
    return read_dicom(location, series=uid), uids


def resolve_reference(path: Path, what: str, uid: str, reference=None, candidates=()) -> tuple[Volume | None, str]:
    """The reference image for a SEG/RTSTRUCT referencing series ``uid``: (Volume or None, how it was found)."""
    if reference is not None:
        if isinstance(reference, Volume):
            got = _series_uid(reference)
            if uid and got and got != uid:
                raise InputError(
                    f"{path}: this {what} references series {uid}, but the reference image given is series {got}; "
                    "give the series the file was made on"
                )
            return reference, "given"
        ref_path = Path(reference)
        if not ref_path.exists():
            raise InputError(f"{path}: the reference {ref_path} does not exist")
        found, uids = _series_in(ref_path, uid)
        if found is None:
            raise InputError(
                f"{path}: this {what} references series {uid}, which is not in {ref_path} (series there: "
                f"{', '.join(uids) or 'none'}); give the folder that holds that series"
            )
        return found, "given"
    for cand in candidates:
        if uid and _series_uid(cand) == uid:
            return cand, "open"
    if not uid:  # the object names no series (optional in RTSTRUCT): the only image series at hand, if one
        if len(candidates) == 1:
            return candidates[0], "only open series"
        return _only_series_beside(path)
    if _small_tree(_beside(path)):
        found, _ = _series_in(_beside(path), uid)
        if found is not None:
            return found, "beside"
    return None, "missing"


def guess_warning(how: str, ref: Volume | None, what: str) -> list[str]:
    """The warning for a reference chosen without a SeriesInstanceUID to match (empty list otherwise)."""
    if ref is None or not how.startswith("only"):
        return []
    return [f"the {what} names no referenced image series; it was placed on the {how} ({_series_uid(ref)}); "
            "check that this is the image it was drawn on"]


def _only_series_beside(path: Path) -> tuple[Volume | None, str]:
    from napari_medseg.io.dicom import list_dicom_series, read_dicom

    if not _small_tree(_beside(path)):
        return None, "missing"
    try:
        infos = [i for i in list_dicom_series(_beside(path)) if "#" not in i.uid]
    except InputError:
        return None, "missing"
    if len(infos) != 1:
        return None, "missing"
    return read_dicom(_beside(path), series=infos[0].uid), "only series beside"


#: the folder beside a SEG/RTSTRUCT is searched for its series only when it holds at most this many files
#: (a SEG saved in a home or download folder must not start a scan of everything under it)
BESIDE_MAX_FILES = 20000


def _small_tree(folder: Path) -> bool:
    import os

    if folder.is_file():  # a zip
        return True
    count = 0
    for _, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        count += len(files)
        if count > BESIDE_MAX_FILES:
            return False
    return True


# ---------------------------------------------------------------------------------------------- grids
def _hd_affine(vol: Volume) -> np.ndarray:
    """The (k, j, i) -> LPS affine of ``vol`` (highdicom's convention: slice, row, column)."""
    return vol.affine_lps()[:, [2, 1, 0, 3]]


def index_map(src_affine: np.ndarray, target: Volume, tol: float = 1e-2):
    """How source array indices (k, j, i) map onto ``target``'s: (perm, signs, offset) or None.

    Exact only: the source grid must be a sub-grid of the target (same spacing and axes up to order and sign,
    a whole-voxel offset, within ``tol`` voxel).
    """
    m = np.linalg.inv(_hd_affine(target)) @ np.asarray(src_affine, float)
    lin, t = m[:3, :3], m[:3, 3]
    perm = np.argmax(np.abs(lin), axis=1)
    p = np.zeros((3, 3))
    p[np.arange(3), perm] = np.sign(lin[np.arange(3), perm])
    if sorted(perm) != [0, 1, 2] or np.abs(lin - p).max() > 1e-3 or np.abs(t - np.round(t)).max() > tol:
        return None
    return perm, p[np.arange(3), perm].astype(int), np.round(t).astype(int)


def place(src: np.ndarray, mapping, shape) -> tuple[np.ndarray, int]:
    """Flat indices into ``shape`` of the non-zero voxels of ``src`` under ``mapping``; and how many fell outside."""
    perm, signs, offset = mapping
    idx = np.nonzero(src)
    tgt = [offset[a] + signs[a] * idx[perm[a]] for a in range(3)]
    inside = np.ones(len(idx[0]), bool)
    for a in range(3):
        inside &= (tgt[a] >= 0) & (tgt[a] < shape[a])
    flat = np.ravel_multi_index(tuple(t[inside] for t in tgt), shape)
    return flat, int((~inside).sum())


def paste(src: np.ndarray, mapping, shape, lut: np.ndarray) -> tuple[np.ndarray, int]:
    """``lut[src]`` placed on an array of ``shape`` under ``mapping`` by slicing (no voxel lists); and the
    number of non-zero source voxels that fell outside."""
    perm, signs, offset = mapping
    view = np.transpose(src, perm)  # view axis a = source axis perm[a]
    for a in range(3):
        if signs[a] < 0:
            view = np.flip(view, a)
    start = [int(offset[a]) if signs[a] > 0 else int(offset[a]) - (view.shape[a] - 1) for a in range(3)]
    lo = [max(0, -start[a]) for a in range(3)]
    hi = [min(view.shape[a], shape[a] - start[a]) for a in range(3)]
    out = np.zeros(shape, lut.dtype)
    if all(h > l for l, h in zip(lo, hi)):
        kept = view[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        out[tuple(slice(start[a] + lo[a], start[a] + hi[a]) for a in range(3))] = lut[kept]
        clipped = any(lo) or any(h < n for h, n in zip(hi, view.shape))
        outside = int(np.count_nonzero(src)) - int(np.count_nonzero(kept)) if clipped else 0
    else:
        outside = int(np.count_nonzero(src))
    return out, outside


def own_grid_volume(affine_khji: np.ndarray, shape, meta: dict) -> Volume:
    """A labels `Volume` on a (k, j, i) affine, with k made to run along row x column like our DICOM reader."""
    a = np.asarray(affine_khji, float)
    cols = a[:3, :3][:, [2, 1, 0]]  # i, j, k vectors
    origin = a[:3, 3].copy()
    spacing = np.linalg.norm(cols, axis=0)
    direction = cols / spacing
    flip = float(np.dot(np.cross(direction[:, 0], direction[:, 1]), direction[:, 2])) < 0
    if flip:
        origin = origin + cols[:, 2] * (shape[0] - 1)
        direction[:, 2] *= -1
    return geometry_volume(Geometry(tuple(shape), tuple(spacing), tuple(origin), direction), meta)


# ---------------------------------------------------------------------------------------------- painting
def paint(shape, segments, names: dict[int, str], where: str) -> tuple[np.ndarray, list[str]]:
    """A labels array from ``segments`` [(value, flat indices)], the smaller segment winning overlaps.

    Returns the array (uint8, or uint16 above 255) and warnings (overlaps, empty segments).
    """
    top = max([0, *(v for v, _ in segments)])
    labels = np.zeros(int(np.prod(shape)), np.uint8 if top <= 255 else np.uint16)
    warnings = []
    overlaps: dict[tuple[int, int], int] = {}
    for value, flat in sorted(segments, key=lambda s: -len(s[1])):
        if len(flat) == 0:
            warnings.append(f"{where}: {names.get(value, value)!r} is empty (no voxel on this grid)")
            continue
        under = labels[flat]
        hit = under[under != 0]
        if hit.size:
            for other, count in zip(*np.unique(hit, return_counts=True)):
                overlaps[(int(other), value)] = int(count)
        labels[flat] = value
    for (big, small), count in overlaps.items():
        warnings.append(
            f"{where}: {names.get(small, small)!r} overlaps {names.get(big, big)!r} in {count} voxel(s); a voxel "
            f"belongs to one class only, so they are labelled {names.get(small, small)!r} (the smaller one wins)"
        )
    return labels.reshape(shape), warnings


def check_target(reference: Volume, path: Path, what: str) -> None:
    if reference.is_4d:
        raise GeometryError(f"{path}: the reference image for this {what} is 4D; give a 3D series")


def labels_volume(target: Volume, labels, names, colors, meta, warnings, ref) -> Volume:
    """The labels `Volume` on ``target`` with class names/colours, and the reference's record for re-saving."""
    meta = ClassTable.from_any(names, colors).to_meta(dict(meta))
    meta["warnings"] = list(warnings)
    if ref is not None:
        meta["reference_series_uid"] = str(ref.meta.get("series_uid", ""))
        meta["reference"] = {  # the source image's geometry and DICOM references, so the labels can be re-saved
            **ref.geometry.to_record(), "meta": {k: v for k, v in ref.meta.items() if k != "warnings"},
        }  # fmt: skip
    return Volume.from_geometry(labels, target.geometry, meta)
