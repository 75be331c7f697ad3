"""Weak targets for sparse (few-slice) training: what lies between and around the labelled slices.

A corrected slice labels one plane; a 16-plane training patch through it is otherwise unlabelled, so the
loss sees 1/16 of it. `sparse_case` fills the rest with *weak* targets, each kind a loss term of its own
(normalised on its own voxels) with a lower share (`loss.sparse_loss`), so their pull on the network does not
grow with the number of unlabelled planes in a patch:

* **interpolated labels** between consecutive labelled planes (``TrainConfig.weak_weight``): per class, the
  zero level of the linear blend of the two planes' in-plane signed distances -- the correction tool's
  shape-based interpolation (`editing.slices.signed_distance`). A class present on only one of the two
  planes shrinks away towards the other. Voxels within ``weak_margin`` voxels of an interpolated boundary
  are left out (not confident), and the weight falls to half halfway between the planes. Optionally the end
  planes are copied ``weak_extend`` planes outwards, eroded by one voxel per plane.
* **the parent's confident predictions** (fine-tune only, ``TrainConfig.parent_weight``): where the parent
  model's softmax exceeds ``parent_confidence`` and no interpolated label applies, its label is a target.
  This keeps what the parent got right away from the corrected slices (a single corrected slice has nothing
  to interpolate, and without it a few steps on one slice move the model everywhere).

* **distillation from the parent** (fine-tune only, ``TrainConfig.distill_weight``): the frozen parent's
  softmax on each training patch is a soft target (`loss.distill_loss`, KL) for the voxels off the corrected
  slices, weighted by the distance from them (`distill_ramp`: 0 within ``distill_near`` planes, 1 from
  ``distill_far`` on), and a share of the patches (``rehearsal_fraction``) is centred anywhere in the image
  (``rehearsal_boxes`` centres spread along the slice normal). Unlike the confident hard targets above it also
  holds the parent's *uncertain* voxels where they were: a few steps on one slice otherwise turn them into
  whatever class the slice taught.

The strong labels (the corrected slices) keep weight 1 and still decide where patches are centred
(`data.PatchSampler`); the held-out slices are never a source of weak targets (they are not in the mask of
the training case).
"""

from __future__ import annotations

import numpy as np
import torch

from napari_medseg.training.data import Case

#: signed distance (voxels) given to a class absent from a labelled plane: it shrinks away towards that plane
ABSENT_SDF = 8.0


def labelled_planes(mask: np.ndarray, axis: int) -> list[int]:
    """Indices along ``axis`` of the planes that hold a labelled voxel."""
    other = tuple(a for a in range(mask.ndim) if a != axis)
    return [int(i) for i in np.flatnonzero((mask > 0).any(axis=other))]


def _plane_sdfs(plane: np.ndarray, classes) -> dict[int, np.ndarray]:
    from napari_medseg.editing.slices import signed_distance

    out = {}
    for c in classes:
        sd = signed_distance(plane == c, (1.0, 1.0))
        out[c] = np.clip(sd, -4 * ABSENT_SDF, ABSENT_SDF) if np.isfinite(sd).all() else np.full(plane.shape, ABSENT_SDF)
    return out


def _assign(sdfs: dict[int, np.ndarray], margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Label (most-inside class, else background) and confidence (distance to every boundary >= margin)."""
    classes = list(sdfs)
    stack = np.stack([sdfs[c] for c in classes])
    inside = stack < 0
    best = np.argmin(stack, axis=0)
    label = np.where(inside.any(axis=0), np.asarray(classes)[best], 0)
    confident = np.abs(stack).min(axis=0) >= margin
    return label.astype(np.int64), confident


def interpolate_planes(target: np.ndarray, mask: np.ndarray, axis: int, margin: float = 2.0, max_gap: int = 24,
                       extend: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Weak labels between (and ``extend`` planes beyond) the labelled planes of ``mask`` along ``axis``.

    Returns ``(labels, weight)`` on the same grid: ``weight`` is 0 where nothing is inferred, 1 next to a
    labelled plane falling to 0.5 halfway between two, 0.5 on extended planes; 0 on the labelled planes
    themselves (their strong labels apply) and on voxels closer than ``margin`` to an interpolated boundary.
    """
    tgt = np.moveaxis(np.asarray(target), axis, 0)
    msk = np.moveaxis(np.asarray(mask) > 0, axis, 0)
    keys = labelled_planes(msk, 0)
    labels = np.zeros(tgt.shape, dtype=np.int64)
    weight = np.zeros(tgt.shape, dtype=np.float32)
    if not keys:
        return np.moveaxis(labels, 0, axis), np.moveaxis(weight, 0, axis)
    classes = sorted(int(c) for c in np.unique(tgt[keys][msk[keys]]) if int(c) != 0)
    if not classes:  # only background was labelled: nothing to shape, no weak target
        return np.moveaxis(labels, 0, axis), np.moveaxis(weight, 0, axis)
    sdf = {k: _plane_sdfs(np.where(msk[k], tgt[k], 0), classes) for k in keys}
    for a, b in zip(keys[:-1], keys[1:]):
        if b - a < 2 or b - a > max_gap:
            continue
        for k in range(a + 1, b):
            t = (k - a) / (b - a)
            lab, conf = _assign({c: (1 - t) * sdf[a][c] + t * sdf[b][c] for c in classes}, margin)
            labels[k] = lab
            weight[k] = np.where(conf, 1.0 - min(t, 1 - t), 0.0)  # 1 near a key plane, 0.5 halfway
    n = tgt.shape[0]
    for end, step in ((keys[0], -1), (keys[-1], 1)):
        for d in range(1, int(extend) + 1):
            k = end + step * d
            if not 0 <= k < n or k in keys:
                break
            lab, conf = _assign(sdf[end], margin + d)
            labels[k] = lab
            weight[k] = np.where(conf, 0.5, 0.0)
    weight[keys] = 0.0
    return np.moveaxis(labels, 0, axis), np.moveaxis(weight, 0, axis)


def reach_box(mask: torch.Tensor, patch) -> tuple[slice, ...]:
    """The box patches centred on ``mask`` voxels can reach: the mask's bounding box grown by a patch."""
    nz = torch.nonzero(mask > 0)
    lo, hi = nz.min(0).values.tolist(), nz.max(0).values.tolist()
    return tuple(slice(max(0, a - int(p)), min(n, b + 1 + int(p))) for a, b, p, n in zip(lo, hi, patch, mask.shape))


def distill_ramp(mask: torch.Tensor, thin_axis: int, near: int, far: int) -> torch.Tensor:
    """Distillation weight per voxel: 0 within ``near`` planes (along ``thin_axis``) of a labelled plane,
    rising linearly to 1 at ``far`` planes and beyond, where the corrections say nothing."""
    planes = np.asarray(labelled_planes(mask.numpy(), thin_axis))
    n = mask.shape[thin_axis]
    d = np.abs(np.arange(n)[:, None] - planes[None]).min(axis=1) if planes.size else np.full(n, far)
    ramp = np.clip((d - near) / max(1e-9, far - near), 0.0, 1.0).astype(np.float32)
    shape = [1, 1, 1]
    shape[thin_axis] = n
    return torch.from_numpy(ramp.reshape(shape)).expand(*mask.shape).clone()


def sparse_case(case: Case, config, parent=None, patch=None) -> Case:
    """``case`` with weak targets: their labels in ``target`` off the mask, their weights in ``weak`` (see the
    module docstring; `loss.sparse_loss` weighs the kinds with ``weak_weight``, ``parent_weight`` and
    ``distill_weight``).

    ``parent``: the network before training (fine-tuning), whose confident predictions become targets when
    ``config.parent_weight`` > 0; with ``config.distill_weight`` > 0 a third weight channel holds where its
    softmax is distilled (`distill_ramp`, computed by the training loop on each patch) and the rehearsal
    centres spread over the whole image. Returns ``case`` itself when no weak target applies (fully labelled
    cases, weights 0, no slice normal).
    """
    ww, pw = float(config.weak_weight), float(config.parent_weight)
    distill = float(getattr(config, "distill_weight", 0.0)) > 0 and parent is not None
    if case.thin_axis is None or (ww <= 0 and (pw <= 0 or parent is None) and not distill):
        return case
    strong = case.mask > 0
    if bool(strong.all()):
        return case
    target = case.target.clone()
    weak = torch.zeros((3 if distill else 2, *case.shape), dtype=torch.float32)
    free = ~strong
    rehearsal: tuple = ()
    patch = patch or config.patch_size
    if pw > 0 and parent is not None:
        from napari_medseg.training.loop import predict_probs

        box = reach_box(case.mask, patch)
        probs = predict_probs(parent, case, patch, box)
        conf, lab = probs.max(0)
        take = torch.zeros_like(strong)
        take[box] = conf >= float(config.parent_confidence)
        take &= free
        region_lab = torch.zeros_like(target)
        region_lab[box] = lab
        target[take] = region_lab[take]
        weak[1][take] = 1.0
        if config.rehearsal_fraction > 0 and config.rehearsal_boxes > 0 and not distill:
            rehearsal = _rehearse(parent, case, config, patch, box, target, weak, free)
    if distill:
        weak[2] = distill_ramp(case.mask, case.thin_axis, config.distill_near, config.distill_far) * free
        if config.rehearsal_fraction > 0 and config.rehearsal_boxes > 0:  # anywhere: the parent teaches on the fly
            everywhere = (slice(0, 0),) * 3
            rehearsal = tuple(rehearsal_centres(case.shape, case.thin_axis, everywhere, patch,
                                                config.rehearsal_boxes, config.seed))
    if ww > 0:
        lab, w = interpolate_planes(case.target.numpy(), case.mask.numpy(), case.thin_axis, config.weak_margin,
                                    config.weak_max_gap, config.weak_extend)
        lab_t, w_t = torch.from_numpy(lab), torch.from_numpy(w)
        take = free & (w_t > 0)  # the user's interpolated labels override the parent's near the slices
        target[take] = lab_t[take]
        weak[0][take] = w_t[take]
        weak[1:][:, take] = 0.0
    return Case(case.name, case.image, target, case.mask, case.thin_axis, weak=weak, rehearsal=rehearsal)


def rehearsal_centres(shape, thin_axis: int, reach: tuple[slice, ...], patch, n: int, seed: int = 0) -> list[tuple]:
    """Up to ``n`` box centres spread along ``thin_axis`` over the planes outside ``reach`` (in-plane: random)."""
    rng = np.random.default_rng(seed)
    lo, hi = reach[thin_axis].start, reach[thin_axis].stop
    half = int(patch[thin_axis]) // 2
    planes = [k for k in range(half, max(half + 1, shape[thin_axis] - half)) if k < lo or k >= hi]
    if not planes or n <= 0:
        return []
    ks = sorted({planes[int(round(x))] for x in np.linspace(0, len(planes) - 1, min(n, len(planes)))})
    out = []
    for k in ks:
        c = [int(rng.integers(min(p // 2, s - 1), max(min(p // 2, s - 1), s - p // 2) + 1)) for p, s in zip(patch, shape)]
        c[thin_axis] = int(k)
        out.append(tuple(c))
    return out


def _rehearse(parent, case: Case, config, patch, reach, target, weak, free) -> tuple:
    """Parent targets in rehearsal boxes (in place on ``target``/``weak``); returns the boxes' centres."""
    from napari_medseg.training.loop import predict_probs

    centres = rehearsal_centres(case.shape, case.thin_axis, reach, patch, config.rehearsal_boxes, config.seed)
    kept = []
    for c in centres:
        box = tuple(slice(max(0, x - p // 2), min(s, x - p // 2 + p)) for x, p, s in zip(c, patch, case.shape))
        conf, lab = predict_probs(parent, case, patch, box).max(0)
        take = (conf >= float(config.parent_confidence)) & free[box]
        if bool(take.any()):
            target[box][take] = lab[take]
            weak[1][box][take] = 1.0
            kept.append(c)
    return tuple(kept)
