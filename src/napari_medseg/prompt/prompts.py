"""Click and box prompts: checked against the volume and normalised to integer ``(k, j, i)`` voxels."""

from __future__ import annotations

import math
from dataclasses import dataclass

from napari_medseg.prompt.errors import PromptError

Point = tuple[int, int, int]


@dataclass(frozen=True)
class Prompts:
    positive: tuple[Point, ...] = ()
    negative: tuple[Point, ...] = ()
    #: inclusive voxel box ``((k0, j0, i0), (k1, j1, i1))``; for a box drawn on one slice k0 == k1 == box_slice
    box: tuple[Point, Point] | None = None
    box_slice: int | None = None

    def all_points(self) -> list[Point]:
        pts = list(self.positive) + list(self.negative)
        if self.box is not None:
            pts += list(self.box)
        return pts

    def with_box_centre(self) -> tuple[Point, ...]:
        """Positive clicks, plus the centre of the box (a box is a positive click at its centre)."""
        if self.box is None:
            return self.positive
        (k0, j0, i0), (k1, j1, i1) = self.box
        return self.positive + (((k0 + k1) // 2, (j0 + j1) // 2, (i0 + i1) // 2),)


def _point(p, shape, what: str) -> Point:
    try:
        vals = [float(v) for v in p]
    except (TypeError, ValueError) as e:
        raise PromptError(f"{what} {p!r} is not three numbers (k, j, i)") from e
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise PromptError(f"{what} {p!r} must be three finite numbers (k, j, i), in voxels of the volume")
    q = tuple(int(round(v)) for v in vals)
    if any(c < 0 or c >= n for c, n in zip(q, shape)):
        raise PromptError(f"{what} {tuple(vals)} lies outside the volume (shape k, j, i = {tuple(shape)}); "
                          "click inside the image")
    return q  # type: ignore[return-value]


def _points(seq, shape, what: str) -> tuple[Point, ...]:
    if seq is None:
        return ()
    try:
        items = list(seq)
    except TypeError as e:
        raise PromptError(f"{what} clicks must be a list of (k, j, i) points, got {seq!r}") from e
    return tuple(_point(p, shape, f"{what} click #{n + 1}") for n, p in enumerate(items))


def _box(box, shape) -> tuple[tuple[Point, Point], int | None]:
    try:
        a, b = (box[0], box[1]) if len(box) == 2 else (None, None)
        if len(box) == 3 and not hasattr(box[0], "__len__"):  # (k, (j0, i0), (j1, i1)): a box on slice k
            k = box[0]
            (j0, i0), (j1, i1) = box[1], box[2]
            a, b = (k, j0, i0), (k, j1, i1)
        if a is None:
            raise ValueError
    except (TypeError, ValueError) as e:
        raise PromptError(f"box {box!r} must be (k, (j0, i0), (j1, i1)) on one slice or ((k0, j0, i0), (k1, j1, i1))") from e
    p, q = _point(a, shape, "box corner"), _point(b, shape, "box corner")
    lo = tuple(min(x, y) for x, y in zip(p, q))
    hi = tuple(max(x, y) for x, y in zip(p, q))
    single = len(box) == 3
    if hi[1] == lo[1] or hi[2] == lo[2]:
        raise PromptError(f"box {box!r} has no area on the slice (j0 == j1 or i0 == i1); drag a rectangle around the structure")
    return (lo, hi), (lo[0] if single or lo[0] == hi[0] else None)  # type: ignore[return-value]


def parse_prompts(shape, positive=None, negative=None, box=None, has_previous: bool = False) -> Prompts:
    """`Prompts` for a volume of spatial ``shape`` (k, j, i); `PromptError` for anything unusable."""
    shape = tuple(int(s) for s in shape)
    pos, neg = _points(positive, shape, "positive"), _points(negative, shape, "negative")
    bx, k = _box(box, shape) if box is not None else (None, None)
    if not pos and bx is None and not (has_previous and neg):
        raise PromptError("no prompt: give at least one positive click or a box"
                          + (" (or negative clicks to remove parts of the previous mask)" if not has_previous else ""))
    return Prompts(pos, neg, bx, k)
