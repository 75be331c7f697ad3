"""Compare two label volumes on the same grid (no Qt): per-class Dice and a difference map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_medseg.errors import GeometryError

ONLY_A, ONLY_B, DIFFERENT = 1, 2, 3
#: colours of the difference map: orange / blue (told apart with red-green colour blindness) and magenta
DIFF_COLORS = {ONLY_A: (1.0, 0.55, 0.0), ONLY_B: (0.15, 0.45, 1.0), DIFFERENT: (0.9, 0.1, 0.9)}


@dataclass
class Comparison:
    """Per-class rows ``{value: {"name", "voxels_a", "voxels_b", "dice"}}``, the difference map and its counts."""

    rows: dict[int, dict]
    only_a: int
    only_b: int
    different: int
    diff: np.ndarray  # the `difference_map`

    def table(self) -> list[dict]:
        return [{"value": v, **self.rows[v]} for v in sorted(self.rows)]


def difference_names(name_a: str, name_b: str) -> dict[int, str]:
    return {0: "same", ONLY_A: f"only in A ({name_a})", ONLY_B: f"only in B ({name_b})",
            DIFFERENT: "labelled in both, different class"}


def check_same_shape(a, b, name_a: str = "A", name_b: str = "B") -> None:
    if np.shape(a) != np.shape(b):
        raise GeometryError(f"'{name_a}' has shape {np.shape(a)} but '{name_b}' has {np.shape(b)}: "
                            "compare labels on the same grid (resample one onto the other first)")


def difference_map(a, b) -> np.ndarray:
    """uint8 map: `ONLY_A` where only A is labelled, `ONLY_B` where only B is, `DIFFERENT` where both are
    labelled with different classes, 0 where they agree."""
    a, b = np.asarray(a), np.asarray(b)
    check_same_shape(a, b)
    out = np.zeros(a.shape, np.uint8)
    fa, fb = a != 0, b != 0
    out[fa & ~fb] = ONLY_A
    out[fb & ~fa] = ONLY_B
    out[fa & fb & (a != b)] = DIFFERENT
    return out


def compare_labels(a, b, classes: dict[int, str] | None = None) -> Comparison:
    """Per-class Dice of A against B (NaN where a class is in neither) and voxel counts."""
    from napari_medseg.metrics import dice_per_class  # the one Dice of the package

    a, b = np.asarray(a), np.asarray(b)
    check_same_shape(a, b)
    ca = np.bincount(a.ravel().astype(np.int64, copy=False))
    cb = np.bincount(b.ravel().astype(np.int64, copy=False))
    values = sorted(({int(v) for v in np.nonzero(ca)[0]} | {int(v) for v in np.nonzero(cb)[0]}
                     | {int(v) for v in (classes or {})}) - {0})
    dice = dice_per_class(a, b, values, absent=float("nan"))
    names = classes or {}
    rows = {v: {"name": names.get(v, f"label {v}"), "voxels_a": int(ca[v]) if v < ca.size else 0,
                "voxels_b": int(cb[v]) if v < cb.size else 0, "dice": dice[v]} for v in values}
    diff = difference_map(a, b)
    counts = np.bincount(diff.ravel(), minlength=4)
    return Comparison(rows, int(counts[ONLY_A]), int(counts[ONLY_B]), int(counts[DIFFERENT]), diff)
