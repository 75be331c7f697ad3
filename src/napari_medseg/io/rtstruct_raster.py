"""Rasterising RTSTRUCT contours onto a reference grid (see :mod:`napari_medseg.io.rtstruct` for the rules)."""

from __future__ import annotations

import numpy as np

from napari_medseg.volume import Volume

_ON_EDGE = 1e-3  # voxel
_PLANE_TOL = 0.3  # of the slice spacing


def slice_origins(vol: Volume) -> np.ndarray:
    """(nk, 3) LPS position of voxel (0, 0, k) per slice: the exact source positions when known."""
    nk = vol.spatial_shape[0]
    exact = vol.meta.get("slice_positions")
    if exact is not None and np.shape(exact) == (nk, 3) and vol.meta.get("tilt_handling") != "resampled":
        return np.asarray(exact, float)
    return vol.index_to_physical(np.stack([np.zeros(nk), np.zeros(nk), np.arange(nk)], axis=1))


def in_plane(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Row (i) and column (j) step vectors in mm."""
    return vol.direction[:, 0] * vol.spacing[0], vol.direction[:, 1] * vol.spacing[1]


def _contour_data(item) -> np.ndarray:
    """ContourData as floats, parsed from the raw bytes when pydicom has not converted them (much faster)."""
    from pydicom.dataelem import RawDataElement

    try:
        elem = item.get_item(0x30060050)
        if elem is None:
            return np.zeros(0)
        if isinstance(elem, RawDataElement):
            text = bytes(elem.value or b"").decode("ascii", "replace").strip(" \x00")
            return np.asarray([float(v) for v in text.split("\\")], float) if text else np.zeros(0)
        return np.asarray([float(v) for v in (elem.value or [])], float)
    except (TypeError, ValueError, AttributeError):
        return np.zeros(0)


class Rasteriser:
    """Puts contours (LPS points) on the slices of ``ref`` and fills them (see the module docstring)."""

    def __init__(self, ref: Volume):
        self.ref = ref
        self.nk, self.nj, self.ni = ref.spatial_shape
        self.origins = slice_origins(ref)
        self.normal = ref.direction[:, 2]
        self.depths = self.origins @ self.normal
        self.row, self.col = in_plane(ref)
        self.spacing_k = ref.spacing[2]
        self.counts = {"off_plane": 0, "outside": 0, "clipped": 0, "open": 0, "point": 0, "bad": 0,
                       "self_intersecting": 0, "nonplanar": 0}  # fmt: skip

    def slice_polygon(self, points: np.ndarray):
        """(k, polygon (N, 2) in (j, i)) for one contour, or None (counted) when it fits no slice."""
        depth = points @ self.normal
        if np.ptp(depth) > _PLANE_TOL * self.spacing_k:
            self.counts["nonplanar"] += 1
        d = float(np.mean(depth))
        k = int(np.argmin(np.abs(self.depths - d)))
        if abs(self.depths[k] - d) > _PLANE_TOL * self.spacing_k:
            self.counts["outside" if d < self.depths.min() or d > self.depths.max() else "off_plane"] += 1
            return None
        rel = points - self.origins[k]
        i = rel @ self.row / (self.ref.spacing[0] ** 2)
        j = rel @ self.col / (self.ref.spacing[1] ** 2)
        lo, hi_i, hi_j = -0.5 - _ON_EDGE, self.ni - 0.5 + _ON_EDGE, self.nj - 0.5 + _ON_EDGE
        if i.min() < lo or j.min() < lo or i.max() > hi_i or j.max() > hi_j:
            self.counts["clipped"] += 1
        return k, np.stack([j, i], axis=1)

    def fill(self, polys: list[np.ndarray]) -> np.ndarray:
        """Flat (j * ni + i) indices of the voxel centres inside ``polys`` (even-odd rule) or on one of them."""
        js, xs = [], []
        for p in polys:  # scanline crossings, half-open in y so every row crosses an even number of edges
            a, b = p, np.roll(p, -1, axis=0)
            lo, hi = np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0])
            start = np.ceil(lo).astype(np.int64)
            n = np.ceil(hi).astype(np.int64) - start
            edge = np.repeat(np.arange(len(p)), np.maximum(n, 0))
            row = start[edge] + np.arange(edge.size) - np.repeat(np.cumsum(np.maximum(n, 0)) - np.maximum(n, 0),
                                                                  np.maximum(n, 0))  # fmt: skip
            t = (row - a[edge, 0]) / (b[edge, 0] - a[edge, 0])
            js.append(row)
            xs.append(a[edge, 1] + t * (b[edge, 1] - a[edge, 1]))
        j, x = np.concatenate(js), np.concatenate(xs)
        order = np.lexsort((x, j))
        j, x = j[order], x[order]
        row, first = j[0::2], np.maximum(np.ceil(x[0::2] - _ON_EDGE), 0).astype(np.int64)
        last = np.minimum(np.floor(x[1::2] + _ON_EDGE), self.ni - 1).astype(np.int64)
        ok = (row >= 0) & (row < self.nj) & (last >= first)
        row, first, count = row[ok], first[ok], (last - first + 1)[ok]
        inside = np.repeat(row * self.ni + first, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count,
                                                                                               count)  # fmt: skip
        mask = np.zeros(self.nj * self.ni, bool)
        mask[inside] = True
        for p in polys:
            mask[self._edges(p)] = True
        return np.flatnonzero(mask)

    def _edges(self, poly: np.ndarray) -> np.ndarray:
        """Flat indices of the voxel centres lying on the edges of ``poly`` (within _ON_EDGE voxel)."""
        a, b = poly, np.roll(poly, -1, axis=0)
        n = np.maximum(np.ceil(np.abs(b - a).max(axis=1) * 2).astype(int), 1)
        seg = np.repeat(np.arange(len(a)), n + 1)
        t = np.arange(seg.size) - np.repeat(np.cumsum(n + 1) - (n + 1), n + 1)
        ab = b[seg] - a[seg]
        pts = np.rint(a[seg] + ab * (t / n[seg])[:, None])
        u = np.clip(((pts - a[seg]) * ab).sum(axis=1) / np.maximum((ab**2).sum(axis=1), 1e-12), 0, 1)
        dist = np.linalg.norm(a[seg] + ab * u[:, None] - pts, axis=1)
        ok = (dist <= _ON_EDGE) & (pts[:, 0] >= 0) & (pts[:, 0] < self.nj) & (pts[:, 1] >= 0) & (pts[:, 1] < self.ni)
        edge = pts[ok].astype(np.int64)
        return edge[:, 0] * self.ni + edge[:, 1]

    def roi(self, contours) -> np.ndarray:
        """Flat indices into the volume of one ROI's voxels (even-odd within each slice)."""
        import shapely

        per_slice: dict[int, list] = {}
        polys = []
        for item in contours:
            kind = str(item.get("ContourGeometricType", "CLOSED_PLANAR") or "CLOSED_PLANAR").upper()
            if kind == "POINT":
                self.counts["point"] += 1
                continue
            if kind != "CLOSED_PLANAR":
                self.counts["open"] += 1
                continue
            pts = _contour_data(item)
            if pts.size < 9 or pts.size % 3 or not np.all(np.isfinite(pts)):
                self.counts["bad"] += 1
                continue
            placed = self.slice_polygon(pts.reshape(-1, 3))
            if placed is None:
                continue
            k, poly = placed
            polys.append(poly)
            per_slice.setdefault(k, []).append(poly)
        if polys:
            simple = shapely.is_simple(np.array([shapely.linearrings(p[:, ::-1]) for p in polys], dtype=object))
            self.counts["self_intersecting"] += int((~np.asarray(simple, bool)).sum())
        plane = self.nj * self.ni
        parts = [self.fill(slice_polys) + k * plane for k, slice_polys in sorted(per_slice.items())]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def warnings(self) -> list[str]:
        c, out = self.counts, []
        text = {
            "outside": "lie above or below the image and were dropped",
            "off_plane": f"lie between slices (more than {_PLANE_TOL:g} slice spacing from any slice) and were "
                         "dropped; the RTSTRUCT was probably drawn on another series",
            "clipped": "reach outside the image in-plane and were clipped to it",
            "open": "are open (OPEN_PLANAR/OPEN_NONPLANAR) and enclose no area; they were skipped",
            "point": "are POINT markers and enclose no area; they were skipped",
            "bad": "have malformed ContourData (fewer than 3 points, not x/y/z triplets, or NaN) and were skipped",
            "self_intersecting": "intersect themselves; they were filled by the even-odd rule",
            "nonplanar": "are not planar (their points span more than 0.3 slice spacing); each was put on the "
                         "slice nearest its mean",
        }  # fmt: skip
        for key, what in text.items():
            if c[key]:
                out.append(f"RTSTRUCT: {c[key]} contour(s) {what}")
        return out
