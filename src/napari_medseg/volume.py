"""`Volume`: a voxel array with its exact physical geometry.

Conventions (the same everywhere in napari-medseg):

* **Array order** is ``[k, j, i]`` (slice, row, column), as SimpleITK's ``GetArrayFromImage`` returns it.
  A 4D volume is ``[c, k, j, i]`` with the channel/time axis first.
* **Geometry is in ITK order** ``(i, j, k)`` and in **LPS** patient coordinates (DICOM's frame):
  ``spacing`` and ``origin`` are 3-tuples, ``direction`` is a 3×3 matrix whose *columns* are the unit
  direction cosines of the i, j and k axes (SimpleITK's ``GetDirection()`` is this matrix, row-major).
  The physical LPS position of voxel ``(i, j, k)`` is ``origin + direction @ (spacing * (i, j, k))``.
* NIfTI files are RAS: :func:`Volume.from_nifti` and :meth:`Volume.nifti_affine` convert explicitly by
  flipping the sign of the first two physical axes (``diag(-1, -1, 1)``); the NIfTI array order
  ``[i, j, k]`` is transposed to ``[k, j, i]``.
* **napari world coordinates** are physical LPS coordinates in reversed order ``(z, y, x)``, so a layer's
  data axes ``(k, j, i)`` map onto world axes ``(z, y, x)``; with an identity direction this is plain
  ``scale``/``translate`` and napari shows axial slices in the radiological convention (patient left on
  screen right, anterior up).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_medseg.errors import GeometryError, InputError
from napari_medseg.geometry import (  # noqa: F401 - re-exported: Geometry lives with Volume
    LPS_TO_RAS,
    Geometry,
    _as3,
    check_direction,
    nifti_frame,
    orientation_code,
)


@dataclass
class Volume:
    """Voxel array + geometry (LPS, ITK order) + metadata. See the module docstring for conventions."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    #: Free-form metadata. Well-known keys: ``modality``, ``series_uid``, ``series_description``,
    #: ``series_number``, ``source_path``, ``original_dtype``, ``rescale`` (slope, intercept),
    #: ``warnings`` (list of str shown to the user), ``classes`` ({value: name}) for label volumes,
    #: ``dicom_reference`` (for DICOM SEG: study/series/SOP instance UIDs in slice order),
    #: ``channel_names`` (4D), ``tilt_handling``.
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.array = np.asarray(self.array)
        if self.array.ndim not in (3, 4):
            raise InputError(
                f"a Volume needs a 3D [k, j, i] or 4D [c, k, j, i] array, got shape {self.array.shape}"
                + self._source_suffix()
            )
        self.spacing = _as3(self.spacing, "spacing")
        if min(self.spacing) <= 0:
            raise GeometryError(f"spacing must be positive, got {self.spacing}" + self._source_suffix())
        self.origin = _as3(self.origin, "origin")
        self.direction = check_direction(self.direction, str(self.meta.get("source_path", "")))
        self.meta = dict(self.meta)
        self.meta.setdefault("warnings", [])

    # ------------------------------------------------------------------ basic properties
    def _source_suffix(self) -> str:
        src = (self.meta or {}).get("source_path")
        return f" ({src})" if src else ""

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape, ``(k, j, i)`` or ``(c, k, j, i)``."""
        return tuple(self.array.shape)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """Shape of the spatial part, array order ``(k, j, i)``."""
        return tuple(self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along i, j, k (ITK order)."""
        return tuple(reversed(self.spatial_shape))  # type: ignore[return-value]

    @property
    def is_4d(self) -> bool:
        return self.array.ndim == 4

    @property
    def warnings(self) -> list[str]:
        return self.meta.setdefault("warnings", [])

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    # ------------------------------------------------------------------ geometry
    @property
    def geometry(self) -> Geometry:
        """The voxel grid of this volume without its voxels (spatial shape ``(k, j, i)``)."""
        return Geometry(self.spatial_shape, self.spacing, self.origin, self.direction)

    @classmethod
    def from_geometry(cls, array, geometry: Geometry, meta: dict | None = None) -> "Volume":
        """``array`` on ``geometry`` (its last three axes must match the geometry's shape)."""
        arr = np.asarray(array)
        if tuple(arr.shape[-3:]) != geometry.shape:
            raise GeometryError(f"array shape {arr.shape} does not match the grid shape {geometry.shape}")
        return cls(arr, geometry.spacing, geometry.origin, np.array(geometry.direction), dict(meta or {}))

    def affine_lps(self) -> np.ndarray:
        """4×4 matrix mapping ``(i, j, k, 1)`` to LPS millimetres."""
        return self.geometry.affine_lps()

    def nifti_affine(self) -> np.ndarray:
        """The NIfTI (RAS) affine of this volume when its array is written as ``array.T`` (``[i, j, k]``)."""
        return self.geometry.nifti_affine()

    def index_to_physical(self, ijk) -> np.ndarray:
        """LPS position(s) of continuous index ``(i, j, k)`` (shape (..., 3))."""
        return self.geometry.index_to_physical(ijk)

    def physical_to_index(self, xyz) -> np.ndarray:
        """Continuous ``(i, j, k)`` index of LPS position(s) (shape (..., 3))."""
        return self.geometry.physical_to_index(xyz)

    def same_grid(self, other, tol: float = 1e-4) -> bool:
        """True when ``other`` has the same spatial shape, spacing, origin and direction (within ``tol`` mm)."""
        return self.geometry.same_grid(other, tol)

    def grid_mapping(self, other: "Volume", tol: float = 1e-3) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]] | None:
        """How this grid maps onto ``other``'s when both are the same voxels up to a signed axis permutation.

        Returns ``(perm, flip)`` in ITK order: ``other``'s axis ``a`` runs along this volume's axis
        ``perm[a]``, reversed when ``flip[a]``; ``None`` when the grids are not the same voxel centres (every
        corner within ``tol`` mm). Identical grids give ``((0, 1, 2), (False, False, False))``.
        """
        m = np.linalg.inv(other.direction @ np.diag(other.spacing)) @ (self.direction @ np.diag(self.spacing))
        r = np.round(m)
        if not (np.abs(m - r).max() < 1e-3 and np.all(np.abs(r).sum(axis=0) == 1) and np.all(np.abs(r).sum(axis=1) == 1)):
            return None
        perm = tuple(int(np.argmax(np.abs(r[a]))) for a in range(3))
        flip = tuple(bool(r[a, perm[a]] < 0) for a in range(3))
        n_self, n_other = self.size_ijk, other.size_ijk
        if any(n_other[a] != n_self[perm[a]] for a in range(3)):
            return None
        ends = [(0, n - 1) for n in n_self]
        corners = np.array([[i, j, k] for i in ends[0] for j in ends[1] for k in ends[2]], float)
        mapped = np.empty_like(corners)
        for a in range(3):
            src = corners[:, perm[a]]
            mapped[:, a] = (n_self[perm[a]] - 1 - src) if flip[a] else src
        dist = np.linalg.norm(self.index_to_physical(corners) - other.index_to_physical(mapped), axis=1).max()
        return (perm, flip) if dist <= tol else None  # type: ignore[return-value]

    def on_grid_of(self, other: "Volume", tol: float = 1e-3, what: str = "labels", onto: str = "image") -> "Volume":
        """This volume on ``other``'s grid, exactly: the same voxels stored in ``other``'s axis order.

        Works when the two grids hold the same voxel centres up to a signed axis permutation (LAS labels on a
        RAS image, axes swapped): the array is transposed/flipped, never interpolated, and gets ``other``'s
        exact geometry. Any other difference raises `GeometryError` naming what differs.
        """
        mapping = self.grid_mapping(other, tol)
        if mapping is None:
            raise GeometryError(
                f"the {what} grid differs from the {onto} grid: {grid_difference(self, other)}"
                f"{self._source_suffix()}; resample the {what} onto the {onto} first"
            )
        perm, flip = mapping
        arr = self.array
        lead = arr.ndim - 3
        if perm != (0, 1, 2) or any(flip):
            ijk = np.moveaxis(arr, range(lead, arr.ndim), range(arr.ndim - 1, lead - 1, -1))  # [..., i, j, k]
            ijk = np.transpose(ijk, tuple(range(lead)) + tuple(lead + p for p in perm))
            ijk = np.flip(ijk, axis=tuple(lead + a for a in range(3) if flip[a])) if any(flip) else ijk
            arr = np.ascontiguousarray(np.moveaxis(ijk, range(lead, arr.ndim), range(arr.ndim - 1, lead - 1, -1)))
        out = Volume(arr, other.spacing, other.origin, other.direction.copy(), self.meta)
        if perm != (0, 1, 2) or any(flip):
            out.meta["reoriented_from"] = self.orientation_code()
        return out

    def orientation_code(self) -> str:
        """Three-letter code of the patient directions the i, j, k axes point *towards*, LPS style.

        An identity direction gives ``"LPS"``; a standard RAS NIfTI gives ``"RAS"``.
        """
        return orientation_code(self.direction)

    def is_axis_aligned(self, tol: float = 1e-6) -> bool:
        """True when direction is a signed permutation matrix (no obliquity)."""
        return self.geometry.is_axis_aligned(tol)

    # ------------------------------------------------------------------ NIfTI
    @classmethod
    def from_nifti(cls, array_ijk: np.ndarray, affine_ras: np.ndarray, meta: dict | None = None) -> "Volume":
        """Build a Volume from a NIfTI-ordered array ``[i, j, k(, t)]`` and its RAS affine.

        The affine may contain shear-free rotation/scaling only; a sheared affine raises `GeometryError`.
        """
        meta = dict(meta or {})
        spacing, origin, direction = nifti_frame(affine_ras, str(meta.get("source_path") or ""))
        arr = np.asarray(array_ijk)
        if arr.ndim == 3:
            data = arr.transpose(2, 1, 0)
        elif arr.ndim == 4:
            data = arr.transpose(3, 2, 1, 0)
        else:
            raise InputError(f"NIfTI array must be 3D or 4D, got shape {arr.shape}{_src(meta)}")
        # Keep memory layout C-contiguous for fast slicing in [k, j, i] order.
        data = np.ascontiguousarray(data)
        return cls(data, spacing, origin, direction, meta)

    def nifti_array(self) -> np.ndarray:
        """Array in NIfTI order ``[i, j, k(, t)]`` (a view)."""
        return self.array.transpose(2, 1, 0) if self.array.ndim == 3 else self.array.transpose(3, 2, 1, 0)

    # ------------------------------------------------------------------ napari
    def napari_kwargs(self) -> dict[str, Any]:
        """Layer keyword arguments placing this volume at its exact physical position in napari.

        World axes are LPS ``(z, y, x)``. With an identity direction this is ``scale`` (spacing) and
        ``translate`` (origin); otherwise ``scale`` is the spacing and ``affine`` carries the rotation
        and the origin. For 4D volumes the leading channel axis gets scale 1 and translate 0.
        """
        return self.geometry.napari_kwargs(leading=1 if self.is_4d else 0)

    @classmethod
    def from_napari(cls, data, scale=None, translate=None, affine=None, meta: dict | None = None) -> "Volume":
        """Inverse of :meth:`napari_kwargs` for 3D data (plain arrays get unit spacing, zero origin)."""
        data = np.asarray(data)
        meta = dict(meta or {})
        if data.ndim not in (3, 4):
            return cls(data, meta=meta)  # raises the InputError naming the shape
        try:
            g = Geometry.from_napari(data.shape, scale, translate, affine)
        except GeometryError as e:
            raise GeometryError(f"{e}{_src(meta)}") from e
        return cls.from_geometry(data, g, meta)

    # ------------------------------------------------------------------ helpers
    def with_array(self, array: np.ndarray, **meta_updates) -> "Volume":
        """A new Volume on the same grid with another array (metadata copied, then updated)."""
        meta = copy.deepcopy({k: v for k, v in self.meta.items() if k != "warnings"})
        meta["warnings"] = list(self.warnings)
        meta.update(meta_updates)
        return Volume(array, self.spacing, self.origin, self.direction.copy(), meta)

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, dtype={self.array.dtype}, spacing={tuple(round(s, 4) for s in self.spacing)}, "
            f"origin={tuple(round(o, 3) for o in self.origin)}, orientation={self.orientation_code()}"
            + (f", source={self.meta.get('source_path')!r}" if self.meta.get("source_path") else "")
            + ")"
        )


def geometry_volume(geometry, meta: dict | None = None) -> Volume:
    """A `Volume` on ``geometry`` (a `Geometry` or a record) whose array is a read-only broadcast of zeros:
    nothing is allocated. For code that needs a Volume's geometry and metadata only (references, writers)."""
    g = Geometry.of(geometry)
    return Volume.from_geometry(g.blank(), g, meta)


def _fmt3(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def grid_difference(a: "Volume", b: "Volume") -> str:
    """What differs between two grids, in plain words (shape, spacing, origin, orientation, direction)."""
    parts = []
    if sorted(a.size_ijk) != sorted(b.size_ijk):
        parts.append(f"shape (k, j, i) {a.spatial_shape} vs {b.spatial_shape}")
    if not np.allclose(sorted(a.spacing), sorted(b.spacing), atol=1e-4):
        parts.append(f"spacing (i, j, k) {_fmt3(a.spacing)} vs {_fmt3(b.spacing)} mm")
    if a.orientation_code() != b.orientation_code() or not np.allclose(np.abs(a.direction), np.abs(b.direction), atol=1e-4):
        if not np.allclose(np.sort(np.abs(a.direction), axis=None), np.sort(np.abs(b.direction), axis=None), atol=1e-4):
            parts.append(
                f"direction (not a flip or axis swap of each other: rotated by "
                f"{_angle(a.direction, b.direction):.3g} degrees)"
            )
        elif a.orientation_code() != b.orientation_code():
            parts.append(f"orientation {a.orientation_code()} vs {b.orientation_code()}")
    ca = a.index_to_physical(np.array(a.size_ijk, float) / 2 - 0.5)
    cb = b.index_to_physical(np.array(b.size_ijk, float) / 2 - 0.5)
    shift = float(np.linalg.norm(ca - cb))
    if shift > 1e-3:
        parts.append(f"position: the volume centres are {shift:.3g} mm apart (centre LPS mm {_fmt3(ca)} vs {_fmt3(cb)})")
    if not parts:
        parts.append(f"the voxel centres do not coincide (orientation {a.orientation_code()} vs {b.orientation_code()})")
    return "; ".join(parts)


def _angle(d1: np.ndarray, d2: np.ndarray) -> float:
    """Smallest rotation angle (degrees) taking the axis frame d1 onto d2 up to signed axis permutations."""
    best = 180.0
    import itertools

    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            p = d2[:, perm] * np.array(signs)
            r = p @ d1.T
            c = (np.trace(r) - 1) / 2
            best = min(best, float(np.degrees(np.arccos(np.clip(c, -1, 1)))))
    return best


def _src(meta: dict) -> str:
    return f" ({meta['source_path']})" if meta.get("source_path") else ""
