"""Grouping DICOM frames into volumes and computing their exact geometry.

Rules (documented behaviour, also in ``read_dicom``'s docstring):

* Frames are grouped by SeriesInstanceUID and, within a series, by compatible geometry (orientation, matrix
  size, pixel spacing; each enhanced multi-frame file is its own stack). The largest group is the series'
  volume. A different-geometry group of one image (a localizer/scout) is dropped with a warning; a group of
  two or more images is reported as its own series with uid ``"<SeriesInstanceUID>#<n>"``.
* Slices are sorted by their position along the slice normal ``n = row × col`` (never by file name or
  InstanceNumber). The k axis is ``n``; the origin is the position of the first slice.
* Spacing along k is the mean step, (last - first) / (n - 1), as SimpleITK's series reader computes it.
  Missing slices (a gap that is a multiple of the regular step) and non-uniform spacing are reported in
  warnings; the slices are kept in order (no gap filling), so positions away from the regular grid are off
  by the reported deviation (first and last slices are exact); the exact per-slice positions are kept in
  ``meta["slice_positions"]``.
* Gantry tilt (slice positions drifting in-plane, so the stack is sheared): the volume is resampled onto a
  regular orthogonal grid (each slice shifted in-plane by linear interpolation); ``meta["tilt_handling"]``
  says ``"resampled"``.
* Two or more frames at the same position: the first (lowest InstanceNumber) is kept, with a warning.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from napari_medseg.errors import GeometryError
from napari_medseg.geometry import orientation_code
from napari_medseg.io.dicom_scan import BUCKETS, Frame, ScanResult
from napari_medseg.io.series import SeriesInfo

_STEP_TOL = 0.01  # mm: slice steps closer than this to the median count as uniform
_TILT_TOL = 0.01  # mm: in-plane drift of the last slice above this is gantry tilt
_DUP_TOL = 1e-3  # mm: positions closer than this are the same slice


class Frames:
    """The sorted frames of a series (a read-only sequence that ``dataclasses.asdict`` does not deep-copy)."""

    __slots__ = ("_items",)

    def __init__(self, items):
        self._items = tuple(items)

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def __getitem__(self, i):
        return self._items[i]

    def __deepcopy__(self, memo):
        return self

    def __repr__(self):
        return f"Frames({len(self._items)})"


def _orientation_key(f: Frame) -> tuple:
    return (
        tuple(np.round(np.concatenate([f.row, f.col]), 3)),
        f.rows,
        f.columns,
        tuple(np.round(f.pixel_spacing, 4)),
        f.key if f.n_frames > 1 else "",
    )


def _axes(frames: list[Frame]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f0 = frames[0]
    row = np.asarray(f0.row, float)
    col = np.asarray(f0.col, float)
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6 or abs(float(row @ col)) / (nr * nc) > 1e-3:
        raise GeometryError(
            f"{f0.key}: ImageOrientationPatient {np.r_[row, col].tolist()} is not two orthogonal unit vectors; "
            "the header is corrupt — re-export the series from the scanner or PACS"
        )
    row, col = row / nr, col / nc
    if abs(float(row @ col)) > 1e-5:  # slightly non-orthogonal from rounding: Gram-Schmidt
        col = col - (col @ row) * row
        col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    return row, col, normal


def _describe(info: SeriesInfo) -> str:
    return info.label if info.label != info.uid else info.uid


def build_series(frames: list[Frame], uid: str, warnings: list[str]) -> SeriesInfo:
    """SeriesInfo (with the sorted frames and geometry details in ``extra``) for one compatible stack."""
    row, col, normal = _axes(frames)
    depth = np.array([float(np.asarray(f.position) @ normal) for f in frames])
    order = np.lexsort((np.array([f.instance_number for f in frames]), depth))
    frames = [frames[i] for i in order]
    depth = depth[order]
    warnings = list(warnings)
    # duplicates (same position): keep the first
    keep = np.ones(len(frames), bool)
    keep[1:] = np.diff(depth) > _DUP_TOL
    if len(frames) > 1 and keep.sum() == 1:
        where = "frames of this file" if frames[0].n_frames > 1 else f"images of series {uid}"
        raise GeometryError(
            f"{frames[0].key}: all {len(frames)} {where} lie at one slice position "
            f"(ImagePositionPatient {[round(float(v), 4) for v in frames[0].position]} along the slice normal); "
            "they are several acquisitions, phases or echoes of one slice, not a 3D volume — export the "
            "volume itself, or read one image at a time"
        )
    if not keep.all():
        n_dup = int((~keep).sum())
        warnings.append(
            f"{n_dup} image(s) share a slice position with another image of the series (several acquisitions, "
            "echoes or phases in one series?); kept the one with the lowest InstanceNumber at each position"
        )
        frames = [f for f, k in zip(frames, keep) if k]
        depth = depth[keep]
    f0 = frames[0]
    n = len(frames)
    positions = np.array([np.asarray(f.position, float) for f in frames])
    extra: dict = {"frames": Frames(frames), "slice_positions": positions, "tilt_deg": 0.0, "tilt_shift": None}
    spacing_k = 1.0
    assumed = Counter(a for f in {id(f.info): f for f in frames}.values() for a in f.info.get("assumed", ()))
    n_files_total = len({f.key for f in frames})
    for text, count in assumed.items():
        warnings.append(f"{count} of {n_files_total} file(s): {text}")
    if n == 1:
        between, thickness = f0.slice_spacing
        spacing_k = between or thickness or 1.0
        source = "SpacingBetweenSlices" if between else "SliceThickness" if thickness else None
        warnings.append(
            "a single slice: the k spacing is "
            + (f"{spacing_k:.6g} mm from {source}" if source else "1 mm (no SpacingBetweenSlices or SliceThickness)")
            + "; a 3D model cannot segment it"
        )
    if n >= 2:
        steps = np.diff(depth)
        # mean step, first to last slice (as SimpleITK/ITK): the end slices are exact, errors are spread
        spacing_k = float((depth[-1] - depth[0]) / (n - 1))
        nominal = float(np.median(steps))
        deviation = float(np.abs(depth - depth[0] - spacing_k * np.arange(n)).max())
        if np.abs(steps - nominal).max() > _STEP_TOL:
            ratio = steps / nominal
            gaps = np.round(ratio).astype(int)
            missing_at = np.where((gaps >= 2) & (np.abs(ratio - gaps) * nominal <= _STEP_TOL))[0]
            consequence = (
                f"the volume keeps the {n} slices in order at the mean spacing {spacing_k:.4g} mm (first to last "
                f"slice, as SimpleITK does), so slice positions are off by up to {deviation:.4g} mm; the exact "
                "positions are in meta['slice_positions']"
            )
            if len(missing_at):
                n_missing = int((gaps[missing_at] - 1).sum())
                where = ", ".join(f"between k={i} and k={i + 1}" for i in missing_at[:5])
                warnings.append(
                    f"{n_missing} slice(s) missing ({where}; regular step {nominal:.4g} mm): {consequence}. "
                    "Re-export the complete series for exact geometry"
                )
            else:
                warnings.append(
                    f"non-uniform slice spacing (steps from {steps.min():.4g} to {steps.max():.4g} mm): {consequence}"
                )
            extra["nonuniform_deviation_mm"] = deviation
        # gantry tilt: in-plane drift of the slice positions relative to the first
        rel = positions - positions[0]
        inplane = rel - np.outer(rel @ normal, normal)
        drift = float(np.linalg.norm(inplane[-1]))
        if drift > _TILT_TOL and n >= 2:
            along = float(rel[-1] @ normal)
            tilt = float(np.degrees(np.arctan2(drift, along)))
            extra["tilt_deg"] = tilt
            extra["tilt_shift"] = np.stack(
                [inplane @ row / f0.pixel_spacing[1], inplane @ col / f0.pixel_spacing[0]], axis=1
            )  # (n, 2): in-plane offset of each slice in (i, j) pixels
            warnings.append(
                f"gantry tilt of {tilt:.2f} degrees (slices drift {drift:.3g} mm in-plane over the stack); "
                "resampled onto a regular orthogonal grid by shifting each slice in-plane (linear interpolation)"
            )
        if spacing_k <= 0:
            raise GeometryError(f"{f0.key}: slices of series {uid} do not advance along the slice normal")
    direction = np.stack([row, col, normal], axis=1)
    if not (np.all(np.isfinite(direction)) and np.all(np.isfinite(positions)) and np.isfinite(spacing_k)):
        raise GeometryError(f"{f0.key}: series {uid} has non-finite geometry; the headers are corrupt")
    info = f0.info
    n_files = len({f.key for f in frames})
    return SeriesInfo(
        uid=uid,
        description=info["series_description"],
        number=info["series_number"],
        modality=info["modality"],
        format="dicom",
        shape=(n, f0.rows, f0.columns),
        spacing=(float(f0.pixel_spacing[1]), float(f0.pixel_spacing[0]), spacing_k),
        origin=tuple(float(v) for v in positions[0]),
        direction=tuple(float(v) for v in direction.reshape(-1)),
        orientation=orientation_code(direction),
        warnings=warnings,
        files=[Path(k) for k in dict.fromkeys(f.key for f in frames)],  # zip members: "archive.zip::name"
        extra={**extra, "n_files": n_files, "series_uid": frames[0].series_uid, "study_uid": info["study_uid"]},
    )


def skipped_warnings(scan: ScanResult) -> list[str]:
    """One warning per kind of skipped file, with a count, an example and why."""
    out = [f"skipped {line}" for line in scan.summary(exclude=("localizer", "seg", "rtstruct", "non_image"))]
    if scan.localizers:
        out.append(f"dropped {len(scan.localizers)} localizer/scout image(s) (ImageType LOCALIZER)")
    for bucket in ("seg", "rtstruct"):
        if scan.of(bucket):
            out.append(f"not read as images: {len(scan.of(bucket))} {BUCKETS[bucket]} (e.g. {scan.of(bucket)[0]})")
    return out


def group(scan: ScanResult) -> list[SeriesInfo]:
    """Split the scanned frames into series (see the module docstring for the rules)."""
    common = skipped_warnings(scan)
    by_uid: dict[str, list[Frame]] = defaultdict(list)
    for f in scan.frames:
        by_uid[f.series_uid].append(f)
    out: list[SeriesInfo] = []
    errors: list[GeometryError] = []
    for uid, frames in by_uid.items():
        try:
            out.extend(_group_one(uid, frames, common))
        except GeometryError as e:  # one corrupt series must not hide the others
            errors.append(e)
    if errors and not out:
        raise errors[0]
    for info in out:
        info.warnings.extend(f"a series was skipped: {e}" for e in errors)
    out.sort(key=lambda s: (s.number if s.number is not None else 10**9, s.uid))
    return out


def _split_acquisitions(frames: list[Frame]) -> list[list[Frame]]:
    """Split a stack whose slice positions repeat into acquisitions (AcquisitionNumber, TemporalPosition-
    Identifier, EchoNumbers) when that makes each part free of repeats; otherwise keep it whole."""
    if len(frames) < 4 or frames[0].n_frames > 1:
        return [frames]
    positions = {tuple(np.round(np.asarray(f.position, float), 2)) for f in frames}
    if len(positions) == len(frames):
        return [frames]
    parts: dict[tuple, list[Frame]] = defaultdict(list)
    for f in frames:
        parts[f.info.get("acquisition", ())].append(f)
    if len(parts) < 2:
        return [frames]
    for part in parts.values():
        if len({tuple(np.round(np.asarray(f.position, float), 2)) for f in part}) != len(part):
            return [frames]
    return [parts[k] for k in sorted(parts)]


def _group_one(uid: str, frames: list[Frame], common: list[str]) -> list[SeriesInfo]:
    out: list[SeriesInfo] = []
    groups: dict[tuple, list[Frame]] = defaultdict(list)
    for f in frames:
        groups[_orientation_key(f)].append(f)
    ordered = sorted((g for group in groups.values() for g in _split_acquisitions(group)), key=len, reverse=True)
    warnings = list(common)
    singles = [g for g in ordered[1:] if len(g) == 1]
    if singles:
        warnings.append(
            f"dropped {len(singles)} image(s) whose orientation or size differs from the rest of the series "
            f"(localizer/scout, e.g. {singles[0][0].key})"
        )
    main = build_series(ordered[0], uid, warnings)
    out.append(main)
    others = [g for g in ordered[1:] if len(g) > 1]
    for n, g in enumerate(others, start=2):
        sub = build_series(g, f"{uid}#{n}", list(common))
        sub.description = (sub.description + f" (stack {n})").strip()
        sub.warnings.append(
            f"series {uid} holds several stacks (another orientation/size, or repeated acquisitions/phases/echoes "
            f"at the same positions); this is stack {n} "
            f"({len(g)} images), read it with series='{uid}#{n}'"
        )
        main.warnings.append(
            f"series also holds another stack of {len(g)} images (other orientation/size or another "
            f"acquisition/phase/echo), listed as '{uid}#{n}'"
        )
        out.append(sub)
    return out
