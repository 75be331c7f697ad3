"""`Geometry`: a voxel grid without voxels (shape, spacing, origin, direction), with the same conventions as
`napari_medseg.volume.Volume` (array order ``[k, j, i]``; geometry in ITK order ``(i, j, k)``, LPS). Import it
from either module: ``from napari_medseg.volume import Geometry``.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np

from napari_medseg.errors import GeometryError

#: RAS <-> LPS: negate the first two physical axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

_ORTHO_TOL = 1e-4


def _as3(values, name: str) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.shape != (3,):
        raise GeometryError(f"{name} must have 3 values (i, j, k order), got {arr.tolist()}")
    if not np.all(np.isfinite(arr)):
        raise GeometryError(f"{name} has non-finite values: {arr.tolist()}")
    return tuple(float(v) for v in arr)  # type: ignore[return-value]


def check_direction(direction, source: str = "") -> np.ndarray:
    """Return ``direction`` as a float 3×3 array, raising `GeometryError` unless it is orthonormal."""
    d = np.asarray(direction, dtype=float)
    if d.size == 9:
        d = d.reshape(3, 3)
    where = f" in {source}" if source else ""
    if d.shape != (3, 3) or not np.all(np.isfinite(d)):
        raise GeometryError(f"direction cosines{where} must be a finite 3x3 matrix, got {d.tolist()}")
    err = np.abs(d.T @ d - np.eye(3)).max()
    if err > _ORTHO_TOL:
        raise GeometryError(
            f"direction cosines{where} are not orthonormal (max |DᵀD - I| = {err:.3g}); "
            "the file's orientation header is corrupt or sheared. Fix the header (e.g. re-export it) "
            "or resample the image with a tool that handles shear."
        )
    return d


def _shape3(shape, source: str = "") -> tuple[int, int, int]:
    where = f" in {source}" if source else ""
    try:
        vals = [int(v) for v in shape]
        ok = len(vals) == 3 and all(float(v) == int(v) for v in shape)
    except (TypeError, ValueError):
        ok, vals = False, []
    if not ok or min(vals) < 1:
        raise GeometryError(f"shape{where} must be 3 positive integers (k, j, i order), got {shape!r}")
    return tuple(vals)  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Geometry:
    """A voxel grid without voxels: ``shape`` (array order ``k, j, i``), ``spacing`` and ``origin`` (ITK
    ``i, j, k`` order, mm, LPS) and the 3×3 ``direction`` (columns: unit axes i, j, k). Frozen and validated:
    positive integer shape, positive finite spacing, finite origin, orthonormal direction (`GeometryError`).

    ``==`` is exact on shape and within 1e-6 on the floats; :meth:`same_grid` takes a tolerance.
    :meth:`to_record`/:meth:`from_record` give the plain-dict form stored in napari layer metadata
    (``{"shape", "spacing", "origin", "direction"}``, the keys of ``medseg_volume``).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    #: where the geometry comes from (a file), named in validation errors only; not stored
    source: InitVar[str] = ""

    def __post_init__(self, source: str = ""):
        object.__setattr__(self, "shape", _shape3(self.shape, source))
        spacing = _as3(self.spacing, "spacing")
        if min(spacing) <= 0:
            raise GeometryError(f"spacing must be positive, got {spacing}" + (f" ({source})" if source else ""))
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", _as3(self.origin, "origin"))
        d = np.array(check_direction(self.direction, source), dtype=float)
        d.setflags(write=False)
        object.__setattr__(self, "direction", d)

    # ---------------------------------------------------------------- construction
    @classmethod
    def of(cls, obj) -> "Geometry":
        """The geometry of a `Volume`, a `Geometry`, a `SeriesInfo` or anything with ``spatial_shape``
        (or ``shape``), ``spacing``, ``origin`` and ``direction``; a dict goes to :meth:`from_record`."""
        if isinstance(obj, Geometry):
            return obj
        if isinstance(obj, dict):
            return cls.from_record(obj)
        geometry = getattr(obj, "geometry", None)
        if isinstance(geometry, Geometry):
            return geometry
        shape = getattr(obj, "spatial_shape", None)
        if shape is None:
            shape = tuple(obj.shape)[-3:]
        return cls(tuple(shape), tuple(obj.spacing), tuple(obj.origin), np.asarray(obj.direction, float).reshape(3, 3))

    @classmethod
    def from_record(cls, record: dict, source: str = "") -> "Geometry":
        """From ``{"shape", "spacing", "origin", "direction"}`` (a layer's ``medseg_volume`` record, a session's
        ``image`` entry, old or new): ``shape`` may carry a leading channel axis, ``direction`` may be 3×3 or
        9 values row-major. Missing or malformed keys raise `GeometryError` naming ``source``."""
        where = f" in {source}" if source else ""
        if not isinstance(record, dict):
            raise GeometryError(f"geometry record{where} must be a dict, got {type(record).__name__}")
        missing = [k for k in ("shape", "spacing", "origin", "direction") if k not in record]
        if missing:
            raise GeometryError(f"geometry record{where} lacks {', '.join(missing)}")
        try:
            shape = tuple(record["shape"])[-3:]
        except TypeError as e:
            raise GeometryError(f"geometry record{where}: shape {record['shape']!r} is not a sequence") from e
        return cls(_shape3(shape, source), record["spacing"], record["origin"], np.asarray(record["direction"], float), source)

    @classmethod
    def from_napari(cls, shape, scale=None, translate=None, affine=None) -> "Geometry":
        """Inverse of :meth:`napari_kwargs`: the grid of layer data of ``shape`` (the last three axes) placed
        with napari's ``scale``/``translate``/``affine`` (plain layers get unit spacing, zero origin)."""
        nd = len(shape)
        scale = np.ones(nd) if scale is None else np.asarray(scale, dtype=float)
        translate = np.zeros(nd) if translate is None else np.asarray(translate, dtype=float)
        aff = np.eye(nd + 1) if affine is None else np.asarray(getattr(affine, "affine_matrix", affine), dtype=float)
        s3, t3, a3 = scale[-3:], translate[-3:], aff[-4:, -4:]
        rev = np.eye(3)[::-1]
        lin = a3[:3, :3]  # world(zyx) = lin @ (t3 + s3 * idx) + a3[:3, 3]
        sp_zyx = np.linalg.norm(lin @ np.diag(s3), axis=0)
        with np.errstate(all="ignore"):
            dir_zyx = (lin @ np.diag(s3)) / sp_zyx
        origin_zyx = lin @ t3 + a3[:3, 3]
        direction = rev @ dir_zyx @ rev
        return cls(tuple(shape)[-3:], tuple(sp_zyx[::-1]), tuple(origin_zyx[::-1]), direction)

    @classmethod
    def from_nifti(cls, affine_ras, shape, source: str = "") -> "Geometry":
        """The grid of a NIfTI file: its RAS affine and the array shape in our order ``(k, j, i)``."""
        spacing, origin, direction = nifti_frame(affine_ras, source)
        return cls(tuple(shape)[-3:], spacing, origin, direction, source)

    def to_record(self) -> dict[str, Any]:
        """Plain JSON-friendly lists: ``{"shape": [k, j, i], "spacing": [...], "origin": [...], "direction": 3×3}``."""
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": self.direction.tolist(),
        }

    def replace(self, **changes) -> "Geometry":
        """A copy with some fields changed (validated again)."""
        fields = {"shape": self.shape, "spacing": self.spacing, "origin": self.origin, "direction": self.direction}
        fields.update(changes)
        return Geometry(**fields)

    # ---------------------------------------------------------------- properties
    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """The same as ``shape`` (array order ``k, j, i``): the name `Volume` and resampling use."""
        return self.shape

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along i, j, k (ITK order)."""
        return tuple(reversed(self.shape))  # type: ignore[return-value]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    # ---------------------------------------------------------------- comparisons
    def same_grid(self, other, tol: float = 1e-4) -> bool:
        """True when ``other`` (a Geometry, a Volume, a record...) has the same shape, and spacing, origin and
        direction within ``tol`` (mm / cosine)."""
        other = Geometry.of(other)
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, Geometry):
            return NotImplemented
        return self.same_grid(other, tol=1e-6)

    __hash__ = None  # type: ignore[assignment] - equality has a tolerance

    # ---------------------------------------------------------------- transforms
    def affine_lps(self) -> np.ndarray:
        """4×4 matrix mapping ``(i, j, k, 1)`` to LPS millimetres."""
        a = np.eye(4)
        a[:3, :3] = self.direction @ np.diag(self.spacing)
        a[:3, 3] = self.origin
        return a

    def nifti_affine(self) -> np.ndarray:
        """The NIfTI (RAS) affine of this grid for an array written as ``[i, j, k]``."""
        a = self.affine_lps()
        a[:3, :] = LPS_TO_RAS @ a[:3, :]
        return a

    def index_to_physical(self, ijk) -> np.ndarray:
        """LPS position(s) of continuous index ``(i, j, k)`` (shape (..., 3))."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction @ np.diag(self.spacing)).T + np.asarray(self.origin)

    def physical_to_index(self, xyz) -> np.ndarray:
        """Continuous ``(i, j, k)`` index of LPS position(s) (shape (..., 3))."""
        xyz = np.asarray(xyz, dtype=float) - np.asarray(self.origin)
        m = np.linalg.inv(self.direction @ np.diag(self.spacing))
        return xyz @ m.T

    def orientation_code(self) -> str:
        """Three-letter code of the patient directions the i, j, k axes point *towards*, LPS style."""
        return orientation_code(self.direction)

    def is_axis_aligned(self, tol: float = 1e-6) -> bool:
        """True when direction is a signed permutation matrix (no obliquity)."""
        d = np.abs(self.direction)
        return bool(np.all((d < tol) | (np.abs(d - 1) < tol)))

    def napari_kwargs(self, leading: int = 0) -> dict[str, Any]:
        """Layer keyword arguments placing this grid at its physical position in napari (world axes LPS
        ``(z, y, x)``); ``leading`` channel axes get scale 1 and translate 0. See `Volume.napari_kwargs`."""
        scale = list(reversed(self.spacing))
        if np.allclose(self.direction, np.eye(3), atol=1e-9):
            kwargs: dict[str, Any] = {"scale": scale, "translate": list(reversed(self.origin))}
        else:
            rev = np.eye(3)[::-1]  # reverses (x, y, z) <-> (z, y, x)
            aff = np.eye(4)
            aff[:3, :3] = rev @ self.direction @ rev
            aff[:3, 3] = list(reversed(self.origin))
            kwargs = {"scale": scale, "translate": [0.0, 0.0, 0.0], "affine": aff}
        if leading:
            kwargs["scale"] = [1.0] * leading + kwargs["scale"]
            kwargs["translate"] = [0.0] * leading + list(kwargs["translate"])
            if "affine" in kwargs:
                a = np.eye(4 + leading)
                a[leading:, leading:] = kwargs["affine"]
                kwargs["affine"] = a
        return kwargs

    def blank(self, dtype=np.uint8) -> np.ndarray:
        """A read-only all-zero array of this shape that allocates nothing (a broadcast view)."""
        return np.broadcast_to(np.zeros((), dtype), self.shape)

    def __repr__(self) -> str:
        return (
            f"Geometry(shape={self.shape}, spacing={tuple(round(s, 4) for s in self.spacing)}, "
            f"origin={tuple(round(o, 3) for o in self.origin)}, orientation={self.orientation_code()})"
        )


def nifti_frame(affine_ras, source: str = "") -> tuple[tuple, tuple, np.ndarray]:
    """``(spacing, origin, direction)`` (LPS, ITK order) of a NIfTI RAS affine; `GeometryError` for a
    non-finite affine or a zero-length axis (shear is caught when the direction is checked)."""
    where = f" ({source})" if source else ""
    aff = np.asarray(affine_ras, dtype=float)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise GeometryError(f"NIfTI affine must be a finite 4x4 matrix{where}")
    lps = aff.copy()
    lps[:3, :] = LPS_TO_RAS @ aff[:3, :]
    m = lps[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    if np.any(spacing <= 0):
        raise GeometryError(f"NIfTI affine has a zero-length axis{where}: {aff.tolist()}")
    return tuple(float(v) for v in spacing), tuple(float(v) for v in lps[:3, 3]), m / spacing


def orientation_code(direction) -> str:
    """Three-letter code of the patient directions the columns (i, j, k axes) of ``direction`` point towards,
    LPS style: identity gives ``"LPS"``, a standard RAS NIfTI ``"RAS"``."""
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    code = ""
    for col in np.asarray(direction, dtype=float).reshape(3, 3).T:
        ax = int(np.argmax(np.abs(col)))
        code += letters[ax][0] if col[ax] > 0 else letters[ax][1]
    return code
