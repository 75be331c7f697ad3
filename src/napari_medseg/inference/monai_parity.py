"""Three small MONAI functions, restated so that a run needs no ``import monai`` (about 2 s: its ``__init__`` loads
every submodule) when its network runs in a converted runtime.

Each follows MONAI 1.x line by line (``monai.data.utils.zoom_affine`` with ``diagonal=False``,
``compute_shape_offset`` with ``scale_extent=False``, ``compute_importance_map``), including the float-noise-
dependent corner test of oblique grids, so the model grid and the blending weights stay exactly MONAI's.
``tests/inference/test_monai_parity.py`` checks them against the installed MONAI on random and oblique grids;
if a future MONAI changes its choice, that test fails rather than the results drifting silently.
"""

from __future__ import annotations

import numpy as np

#: MONAI's ``AFFINE_TOL`` (monai/data/utils.py)
AFFINE_TOL = 1e-3


def zoom_affine(affine, scale) -> np.ndarray:
    """An affine (no translation) with ``affine``'s rotation and the column norms ``scale`` (0 or less: kept)."""
    affine = np.array(affine, dtype=float, copy=True)
    d = len(affine) - 1
    norm = np.sqrt(np.sum(affine[:d, :d] * affine[:d, :d], axis=0))
    s = np.array(scale, dtype=float, copy=True)
    if len(s) < d:
        s = np.append(s, norm[len(s):])
    s = s[:d]
    s = np.where(s > 0, s, norm)  # MONAI's fall_back_tuple: non-positive components from the affine
    s[s == 0] = 1.0
    rzs = affine[:-1, :-1]
    zs = np.linalg.cholesky(rzs.T @ rzs).T
    rotation = rzs @ np.linalg.inv(zs)
    out = np.eye(len(affine))
    out[:-1, :-1] = rotation @ np.diag(np.sign(np.diag(zs)) * np.abs(s))
    return out


def compute_shape_offset(spatial_shape, in_affine, out_affine) -> tuple[np.ndarray, np.ndarray]:
    """Output shape and offset of ``out_affine``'s grid covering ``spatial_shape`` voxels of ``in_affine``'s."""
    shape = np.array(tuple(spatial_shape), copy=True, dtype=float)
    in_a, out_a = np.asarray(in_affine, dtype=float), np.asarray(out_affine, dtype=float)
    coords = [(0.0, dim - 1.0) for dim in shape]
    corners = np.asarray(np.meshgrid(*coords, indexing="ij")).reshape((len(shape), -1))
    corners = np.concatenate((corners, np.ones_like(corners[:1])))
    try:
        corners_out = np.linalg.solve(out_a, in_a) @ corners
    except np.linalg.LinAlgError as e:
        raise ValueError(f"Affine {out_a} is not invertible") from e
    corners = in_a @ corners
    all_dist = corners_out[:-1].copy()
    corners_out = corners_out[:-1] / corners_out[-1]
    out_shape = np.round(np.ptp(corners_out, axis=1) + 1.0)
    offset = None
    for i in range(corners.shape[1]):
        min_corner = np.min(all_dist - all_dist[:, i:i + 1], 1)
        if np.allclose(min_corner, 0.0, rtol=AFFINE_TOL):
            offset = corners[:-1, i]
            break
    if offset is None:
        offset = in_a[:-1, :-1] @ (shape / 2.0) + in_a[:-1, -1] - out_a[:-1, :-1] @ (out_shape / 2.0)
    return out_shape.astype(int, copy=False), offset


def importance_map(patch_size, mode: str = "constant", sigma_scale=0.125, device="cpu"):
    """Blending weights of a window (float32 tensor of ``patch_size``): constant or gaussian, floored at 1e-3."""
    import torch

    device = torch.device(device)
    mode = str(getattr(mode, "value", mode)).lower()
    if mode == "constant":
        imp = torch.ones(tuple(patch_size), device=device, dtype=torch.float)
    elif mode == "gaussian":
        scales = [float(sigma_scale)] * len(patch_size) if np.isscalar(sigma_scale) else list(sigma_scale)
        sigmas = [p * s for p, s in zip(patch_size, scales)]
        imp = None
        for i, p in enumerate(patch_size):
            x = torch.arange(start=-(p - 1) / 2.0, end=(p - 1) / 2.0 + 1, dtype=torch.float, device=device)
            x = torch.exp(x**2 / (-2 * sigmas[i] ** 2))
            imp = imp.unsqueeze(-1) * x[(None,) * i] if i > 0 else x
    else:
        raise ValueError(f"Unsupported blending mode: {mode!r} (constant or gaussian)")
    floor = max(torch.min(imp).item(), 1e-3)
    return torch.clamp_(imp.to(torch.float), min=floor).to(torch.float32)
