"""`SeriesInfo`: what ``list_series`` reports about one image series found at a path."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medseg.geometry import Geometry


@dataclass
class SeriesInfo:
    uid: str  # SeriesInstanceUID for DICOM; the file path for single-file formats
    description: str = ""
    number: int | None = None
    modality: str = ""
    format: str = ""  # "dicom", "nifti", "nrrd", "mha", ...
    shape: tuple[int, ...] = ()  # array order (k, j, i) or (c, k, j, i)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # (i, j, k) mm
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)  # LPS mm
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)  # LPS, row-major 3x3 (SimpleITK order)
    orientation: str = ""  # e.g. "LPS"
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list, repr=False)  # DICOM: files of this series, any order
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_geometry(cls, geometry: Geometry, **fields) -> "SeriesInfo":
        """A SeriesInfo whose spacing, origin, direction and orientation are ``geometry``'s (``shape``
        defaults to its spatial shape; pass the full array shape for 4D)."""
        fields.setdefault("shape", geometry.shape)
        return cls(
            spacing=geometry.spacing,
            origin=geometry.origin,
            direction=tuple(float(v) for v in geometry.direction.reshape(-1)),
            orientation=geometry.orientation_code(),
            **fields,
        )

    @property
    def geometry(self) -> Geometry:
        """The series' voxel grid (spatial shape ``(k, j, i)``)."""
        return Geometry(tuple(self.shape)[-3:], self.spacing, self.origin, np.asarray(self.direction, float).reshape(3, 3))

    @property
    def label(self) -> str:
        """Human-readable name: series number and description, or the UID."""
        parts = [f"#{self.number}" if self.number is not None else "", self.description]
        name = " ".join(p for p in parts if p).strip()
        return name or self.uid

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("files")
        d.pop("extra")
        d["shape"] = list(self.shape)
        d["spacing"] = list(self.spacing)
        d["origin"] = list(self.origin)
        d["direction"] = list(self.direction)
        d["n_files"] = len(self.files)
        return d
