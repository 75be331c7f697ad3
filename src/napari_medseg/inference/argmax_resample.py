"""Labels (and an uncertainty map) on the source grid from model-grid probabilities, without interpolating
every class channel at every source voxel.

The labels the pipeline returns are the argmax of the *linearly interpolated* probabilities (what MONAI's
``Invertd`` + argmax computes). Interpolating all ``C`` channels onto a full-size CT is the costliest stage of a
run (``C`` × 37 M voxels for a 512² × 141 CT). It is mostly wasted: linear interpolation is a convex
combination of the 8 corners of the model-grid cell a voxel falls in, so where one class is the argmax at all
8 corners it is the argmax of the interpolated vector too (``p_c >= p_d`` at every corner implies it for any
non-negative weights). Only voxels in cells whose corners disagree (near a boundary between classes) need the
full interpolation. That is exact: same labels, a fraction of the work.

The uncertainty map ``1 - max_c p_c`` is handled the same way: in a uniform cell, the max channel is the same
at every corner, so ``max_c interp(p)_c = interp(max_c p)``, one channel interpolated; boundary voxels get
the exact value from their full interpolation.

Applies when the model grid and the source grid are related by a per-axis scale and shift (possibly with an
axis permutation): always the case for the pipeline, whose model grid keeps the source's direction. Other
maps fall back to `resample` with an argmax reduction.
"""

from __future__ import annotations

import numpy as np

from napari_medseg.inference.resample import SLAB_VOXELS, Grid, _axis_aligned, index_map, resample


def _cells(pos, n: int):
    """Lower cell corner and weight of the upper corner for continuous positions (border padding)."""
    import torch

    if n == 1:
        return torch.zeros_like(pos, dtype=torch.long), torch.zeros_like(pos, dtype=torch.float32)
    p = pos.clamp(0, n - 1)
    i0 = torch.floor(p).clamp(max=n - 2)
    return i0.long(), (p - i0).to(torch.float32)


def _uniform_cells(a):
    """``U[k, j, i]`` = the label shared by the 8 corners of cell (k, j, i), or -1 where they differ."""
    import torch

    same = torch.ones_like(a, dtype=torch.bool)
    e = a
    for dim in range(3):
        if e.shape[dim] > 1:
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[dim], hi[dim] = slice(None, -1), slice(1, None)
            same = same[tuple(lo)] & same[tuple(hi)] & (e[tuple(lo)] == e[tuple(hi)])
            e = e[tuple(lo)]
    return torch.where(same, e, torch.full_like(e, -1))


def argmax_resample(probs, src, dst, uncertainty: bool = False, device=None):
    """Argmax over channels of ``probs`` (``[C, k, j, i]`` on grid ``src``, torch or numpy, non-negative)
    linearly interpolated onto grid ``dst`` (border padding). Returns ``(labels, unc)``: ``labels`` int16
    channel indices ``[k, j, i]``, ``unc`` float32 ``1 - max probability`` (probabilities normalised to sum
    1) or None.
    """
    import torch

    is_torch = isinstance(probs, torch.Tensor)
    m = index_map(src, dst)
    axes = _axis_aligned(m)
    if axes is None:  # rotation between the grids: interpolate all channels, reduce slab by slab
        def reduce(r):
            s = r.sum(0, keepdim=True).clamp(min=1e-8)
            mx, idx = (r / s).max(0, keepdim=True)
            return torch.cat([idx.to(r.dtype), 1.0 - mx]) if uncertainty else idx.to(torch.int16)

        out = resample(probs, src, dst, mode="linear", device=device, reduce=reduce)
        if uncertainty:
            return out[0].astype(np.int16), out[1].astype(np.float32)
        return out[0], None

    dev = torch.device(device or "cpu")
    p = probs if is_torch else torch.from_numpy(np.ascontiguousarray(probs))
    p = p.to(dev, torch.float32)
    # source tensor dims [C, K, J, I] in destination axis order: dest k comes from source ijk axis axes[2], ...
    p = p.permute(0, 3 - axes[2], 3 - axes[1], 3 - axes[0]).contiguous()
    c, nk, nj, ni = p.shape
    n_src = (nk, nj, ni)
    dst_shape = tuple(int(s) for s in dst.spatial_shape)
    cells, weights = [], []
    for d, ijk in zip(range(3), (2, 1, 0)):  # dest k, j, i = ijk axes 2, 1, 0
        r = torch.arange(dst_shape[d], device=dev, dtype=torch.float64)
        pos = m[axes[ijk], ijk] * r + m[axes[ijk], 3]
        i0, w = _cells(pos, n_src[d])
        cells.append(i0)
        weights.append(w)
    top = p.max(0)
    u = _uniform_cells(top.indices.to(torch.int16))
    unc_full = None
    if uncertainty:
        s = p.sum(0).clamp(min=1e-8)
        src_perm = Grid((nk, nj, ni), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        dst_perm = _ScaledGrid(dst_shape, m, axes)
        unc_full = 1.0 - resample((top.values / s)[None], src_perm, dst_perm, mode="linear", device=dev)[0]
    labels = np.empty(dst_shape, dtype=np.int16)
    flat = p.reshape(c, -1)
    step = max(1, SLAB_VOXELS // max(1, dst_shape[1] * dst_shape[2]))
    ck, cj, ci = cells
    wk, wj, wi = weights
    dense = _DenseSlabs(p, m, axes, dst_shape, dev)
    for k0 in range(0, dst_shape[0], step):
        k1 = min(dst_shape[0], k0 + step)
        lab = u.index_select(0, ck[k0:k1]).index_select(1, cj).index_select(2, ci)
        todo = (lab < 0).view(-1).nonzero().view(-1)
        if todo.numel() > DENSE_FRACTION * lab.numel():  # mostly boundaries (noisy output): interpolate it all
            lab, mx = dense.slab(k0, k1)
            if unc_full is not None:
                unc_full[k0:k1] = (1.0 - mx).cpu().numpy()
        elif todo.numel():
            plane = dst_shape[1] * dst_shape[2]
            kk, rem = todo // plane + k0, todo % plane
            jj, ii = rem // dst_shape[2], rem % dst_shape[2]
            bk, bj, bi = ck[kk], cj[jj], ci[ii]
            fk, fj, fi = wk[kk], wj[jj], wi[ii]
            acc = torch.zeros((c, todo.numel()), dtype=torch.float32, device=dev)
            for dk, gk in ((0, 1 - fk), (1, fk)):
                for dj, gj in ((0, 1 - fj), (1, fj)):
                    for di, gi in ((0, 1 - fi), (1, fi)):
                        idx = ((bk + min(dk, nk - 1)) * nj + (bj + min(dj, nj - 1))) * ni + (bi + min(di, ni - 1))
                        acc += flat.index_select(1, idx) * (gk * gj * gi)
            acc /= acc.sum(0, keepdim=True).clamp(min=1e-8)
            mx, am = acc.max(0)
            lab.view(-1)[todo] = am.to(torch.int16)
            if unc_full is not None:
                unc_full.reshape(-1)[(todo + k0 * plane).cpu().numpy()] = (1.0 - mx).cpu().numpy()
        labels[k0:k1] = lab.cpu().numpy()
    return labels, (unc_full.astype(np.float32, copy=False) if unc_full is not None else None)


#: above this share of boundary voxels in a slab, interpolating every channel densely is cheaper than
#: gathering 8 corners per voxel (measured: the sparse path costs about 4x a dense voxel per boundary voxel)
DENSE_FRACTION = 0.25


class _DenseSlabs:
    """The full interpolation of one slab of destination planes (all channels), for slabs that are mostly
    boundary; returns ``(argmax, max of the normalised probabilities)``."""

    def __init__(self, p, m, axes, dst_shape, dev):
        self.p, self.dev = p, dev
        self.src = Grid(tuple(p.shape[1:]), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        self.dst = _ScaledGrid(dst_shape, m, axes)

    def slab(self, k0: int, k1: int):
        import torch

        def reduce(r):
            mx, idx = (r / r.sum(0, keepdim=True).clamp(min=1e-8)).max(0, keepdim=True)
            return torch.cat([idx.to(r.dtype), mx])

        out = resample(self.p, self.src, self.dst.rows(k0, k1), mode="linear", device=self.dev, reduce=reduce)
        return torch.from_numpy(out[0].astype(np.int16)), torch.from_numpy(out[1])


class _ScaledGrid:
    """The destination grid expressed in the permuted source's index frame (for `resample` of one channel)."""

    def __init__(self, shape, m, axes):
        self.spatial_shape = shape
        a = np.eye(4)  # dest (i, j, k) index -> permuted-source (i', j', k') index: per-axis scale + shift
        for d in range(3):
            a[d, d] = m[axes[d], d]
            a[d, 3] = m[axes[d], 3]
        self._a = a

    def affine_lps(self):
        return self._a

    def rows(self, k0: int, k1: int) -> "_ScaledGrid":
        """Destination planes ``k0:k1`` only."""
        sub = _ScaledGrid.__new__(_ScaledGrid)
        sub.spatial_shape = (k1 - k0, *self.spatial_shape[1:])
        sub._a = self._a.copy()
        sub._a[2, 3] += sub._a[2, 2] * k0
        return sub
