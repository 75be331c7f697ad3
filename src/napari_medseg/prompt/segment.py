"""`prompt_segment`: a binary mask of the structure the clicks (or a box) point at, on the volume's own grid.

1. The prompts are checked against the volume (`parse_prompts`).
2. A crop of the image's own axes at the model spacing is placed around the prompts and the previous mask
   (`plan_crop`); the source voxels under it are low-pass filtered when the crop is coarser, resampled onto
   it (separable linear) and windowed like the training data.
3. The network sees ``[image, positive, negative, previous]``; when the mask reaches a crop face that lies
   inside the volume, the crop grows towards it and the network runs again (AutoZoom, ``grow_steps`` times).
4. The probabilities go back onto exactly the source voxels under the crop (linear, threshold 0.5); outside
   the crop the previous mask is kept. Components that hold no positive click and do not overlap the previous
   mask are dropped; when refining, only removals that reach a click are kept
   (`_click_local_removals`); a box bounds the new mask (see `_box_region`).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from napari_medseg.prompt.crop import Crop, grow, plan_crop, touching_faces
from napari_medseg.prompt.deepedit import DeepEditModel, deepedit_mask
from napari_medseg.prompt.encode import from_network, guidance_json, input_array, to_network
from napari_medseg.prompt.errors import PromptError
from napari_medseg.prompt.model import check_prompt_card, load_prompt_model
from napari_medseg.prompt.prompts import Prompts, parse_prompts
from napari_medseg.volume import Volume

#: a slice box also bounds the other slices, by its own size times this margin on every side
BOX_MARGIN = 0.25


def _previous_array(previous, volume: Volume) -> np.ndarray | None:
    if previous is None:
        return None
    arr = previous.array if isinstance(previous, Volume) else np.asarray(previous)
    if isinstance(previous, Volume) and not previous.same_grid(volume):
        raise PromptError(f"the previous mask {previous.spatial_shape} is not on the image grid {volume.spatial_shape}; "
                          "give the mask being refined on the image's own grid")
    if arr.shape != volume.spatial_shape:
        raise PromptError(f"the previous mask has shape {arr.shape} but the image has {volume.spatial_shape} (k, j, i)")
    m = arr > 0
    return m if m.any() else None


def _mask_box(mask: np.ndarray):
    """``(lo, hi)`` of the mask's voxels: from its profiles along each axis, narrowing the array as it goes
    (a fraction of `np.argwhere`'s cost for a lung-sized mask of a full-resolution CT)."""
    lo, hi, view = [0, 0, 0], [0, 0, 0], mask
    for a in range(3):
        nz = np.flatnonzero(view.any(axis=tuple(b for b in range(3) if b != a)))
        lo[a], hi[a] = int(nz[0]), int(nz[-1]) + 1
        view = view[tuple(slice(lo[b], hi[b]) if b == a else slice(None) for b in range(3))]
    return np.asarray(lo), np.asarray(hi)


def _crop_image(volume: Volume, crop: Crop, card):
    """``(image on the crop grid [k, j, i] after the card's window, source box lo, hi, crop Grid, padded source
    sub-box slices)``: only the source voxels under the crop (plus the interpolation margin) are read."""
    from napari_medseg.inference.preprocess import antialias_sigma, intensity
    from napari_medseg.inference.resample import resample, resample_filtered

    g = crop.grid(volume)
    lo, hi = crop.source_box(volume)
    pad = [2 if sp < csp else 1 for sp, csp in zip(volume.spacing[::-1], crop.spacing[::-1])]
    plo = [max(0, l - p) for l, p in zip(lo, pad)]
    phi = [min(n, h + p) for h, p, n in zip(hi, pad, volume.spatial_shape)]
    box = tuple(slice(a, b) for a, b in zip(plo, phi))
    sub_vol = _sub_volume(volume, np.asarray(volume.array[box]), plo)
    if card.antialias:  # = preprocess.antialias, then resample: filtered and resampled axis by axis
        img = resample_filtered(sub_vol.array, sub_vol, g, antialias_sigma(sub_vol, g), padding="border")
    else:
        img = resample(np.asarray(sub_vol.array, np.float32), sub_vol, g, mode="linear", padding="border")
    return intensity(img, card), lo, hi, g, box


def _sub_volume(volume: Volume, sub: np.ndarray, lo) -> Volume:
    return Volume(sub, volume.spacing, tuple(volume.index_to_physical(np.asarray(lo[::-1], float))), volume.direction)


def _to_crop(mask: np.ndarray | None, volume: Volume, g, box) -> np.ndarray | None:
    """The previous mask on the crop grid, resampled from the source sub-box under the crop only."""
    from napari_medseg.inference.resample import resample

    if mask is None:
        return None
    sub = _sub_volume(volume, mask[box].astype(np.float32), [s.start for s in box])
    return resample(sub.array, sub, g, mode="nearest", padding="zeros") > 0.5  # nearest: 2x cheaper than linear


def _crop_points(points, volume: Volume, g) -> list[list[int]]:
    """Prompt points in crop voxels (k, j, i); points outside the crop are left out."""
    if not points:
        return []
    phys = volume.index_to_physical(np.asarray([p[::-1] for p in points], float))
    a = np.linalg.inv(g.affine_lps())
    ijk = phys @ a[:3, :3].T + a[:3, 3]
    kji = np.rint(ijk[:, ::-1]).astype(int)
    inside = np.all((kji >= 0) & (kji < np.asarray(g.spatial_shape)), axis=1)
    return kji[inside].tolist()


def _predict(net, image, pos, neg, prev, sigma, bf16: bool) -> np.ndarray:
    import torch

    x = to_network([input_array(image, guidance_json(pos, neg), prev, sigma)])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return from_network(net(x))[0]


@contextmanager
def _click_threads():
    """torch's intra-op threads for one click: fewer when other processes keep cores busy (the inference
    planner's `calibrate.run_threads`; ``MEDSEG_THREADS=N`` fixes the count, ``MEDSEG_CALIBRATE=0`` keeps torch's
    setting), restored afterwards. On 2 shared cores a 2-thread click spins waiting for its descheduled thread."""
    import torch

    from napari_medseg.inference.calibrate import calibration_enabled, cpu_threads, run_threads

    before = torch.get_num_threads()
    n = run_threads(min(cpu_threads(), before))[0] if calibration_enabled(None) else before
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def _back_to_source(probs, g, volume: Volume, lo, hi) -> np.ndarray:
    from napari_medseg.inference.resample import Grid, resample

    shape = tuple(h - l for l, h in zip(lo, hi))
    origin = volume.index_to_physical(np.asarray(lo[::-1], float))
    dst = Grid(shape, volume.spacing, tuple(origin), volume.direction)
    return resample(probs, g, dst, mode="linear", padding="border")


def _keep_prompted(sub: np.ndarray, prev_sub, pos_local) -> np.ndarray:
    """Components with a positive click, overlapping the previous mask, or reaching the sub-box border."""
    from scipy import ndimage

    lab, n = ndimage.label(sub)
    if n <= 1:
        return sub
    keep = np.zeros(n + 1, bool)
    for p in pos_local:
        keep[lab[p]] = True
    if prev_sub is not None:
        keep[lab[prev_sub]] = True  # (a scatter: np.unique would sort a lung's million labels)
    for a in range(3):
        keep[np.unique(lab.take(0, axis=a))] = True
        keep[np.unique(lab.take(-1, axis=a))] = True
    keep[0] = False
    return keep[lab]


def _click_local_removals(sub: np.ndarray, prev_sub: np.ndarray, clicks_local) -> np.ndarray:
    """``sub``, except that parts of ``prev_sub`` it drops stay unless the dropped region reaches a click.

    A click says "this is wrong here": a removal is the connected region the network took away around it.
    Removals that reach no click (the network shrinking the object elsewhere) are undone, so a corrective
    click does not undo what earlier clicks got right. Additions are kept (they hold a positive click or
    touch the previous mask, see `_keep_prompted`): a large organ grows with each positive click.
    """
    from scipy import ndimage

    removed = prev_sub & ~sub
    if not removed.any():
        return sub
    lo, hi = _mask_box(removed)  # label only the box of the removed voxels
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    lab, n = ndimage.label(removed[box])
    keep = np.zeros(n + 1, bool)
    for p in clicks_local:
        sl = tuple(slice(max(0, c - 1 - a), max(0, c + 2 - a)) for c, a in zip(p, lo))
        keep[np.unique(lab[sl])] = True
    keep[0] = False
    out = sub.copy()
    out[box] |= removed[box] & ~keep[lab]
    return out


def _box_region(shape, prompts: Prompts) -> np.ndarray:
    """Where a box lets the mask be: a 3D box exactly; a slice box exactly on its slice, with a margin elsewhere."""
    (k0, j0, i0), (k1, j1, i1) = prompts.box
    keep = np.zeros(shape, bool)
    if prompts.box_slice is None:
        keep[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1] = True
        return keep
    dj, di = int(np.ceil((j1 - j0 + 1) * BOX_MARGIN)), int(np.ceil((i1 - i0 + 1) * BOX_MARGIN))
    keep[:, max(0, j0 - dj):j1 + 1 + dj, max(0, i0 - di):i1 + 1 + di] = True
    k = prompts.box_slice
    keep[k] = False
    keep[k, j0:j1 + 1, i0:i1 + 1] = True
    return keep


def prompt_segment(volume: Volume, positive=None, negative=None, box=None, previous=None, model=None,
                   bf16: bool | None = None) -> Volume:
    """Binary mask (uint8 0/1 `Volume` on ``volume``'s grid) of the structure the prompts point at.

    ``positive`` / ``negative``: clicks ``(k, j, i)`` in voxels of ``volume``; ``box``: ``(k, (j0, i0), (j1, i1))``
    on slice k, or ``((k0, j0, i0), (k1, j1, i1))``; ``previous``: the mask being refined (array or `Volume` on
    the same grid; kept outside the crop). ``model``: None for the shipped prompt model, a package path, a MONAI
    DeepEdit bundle (folder or zip) or a loaded prompt model. ``bf16``: bfloat16 autocast (default: where the CPU supports it).
    Bad prompts raise `PromptError`; a model that is not promptable `PromptModelError`.
    """
    t0 = time.perf_counter()
    if not isinstance(volume, Volume):
        raise PromptError(f"prompt_segment needs a Volume (napari_medseg.read_volume), got {type(volume).__name__}")
    if volume.is_4d:
        raise PromptError(f"the image is 4D {volume.shape}; pick one channel (Volume.with_array(volume.array[c]))")
    prev = _previous_array(previous, volume)
    prompts = parse_prompts(volume.spatial_shape, positive, negative, box, has_previous=prev is not None)
    loaded = load_prompt_model(model)
    if bf16 is None:
        from napari_medseg.inference.planner import cpu_bf16_supported

        bf16 = cpu_bf16_supported()
    pos_all = list(prompts.with_box_centre())
    if isinstance(loaded, DeepEditModel):  # a MONAI DeepEdit bundle: the whole image, resized (see deepedit.py)
        sub = deepedit_mask(volume, pos_all, list(prompts.negative), loaded, bf16)
        lo, hi = (0, 0, 0), tuple(volume.spatial_shape)
        info = {"crop_shape": [int(v) for v in loaded.spatial_size[::-1]], "runs": 1, "backend": "MONAI DeepEdit bundle"}
        return _result(volume, sub, lo, hi, prev, prompts, pos_all, info, loaded.card.name, t0)
    settings = check_prompt_card(loaded.card, str(loaded.path))
    crop = plan_crop(volume, prompts.all_points() + pos_all, loaded.card.spacing, settings,
                     _mask_box(prev) if prev is not None else None, anchor=pos_all[0] if pos_all else None)
    runs = 0
    with _click_threads() as threads:
        while True:
            image, lo, hi, g, sub_box = _crop_image(volume, crop, loaded.card)
            probs = _predict(loaded.network, image, _crop_points(pos_all, volume, g),
                             _crop_points(list(prompts.negative), volume, g), _to_crop(prev, volume, g, sub_box),
                             settings.sigma, bf16)
            runs += 1
            bigger = grow(crop, volume, touching_faces(probs, settings.threshold), settings) if runs <= settings.grow_steps else None
            if bigger is None:
                break
            crop = bigger
    sub = _back_to_source(probs, g, volume, lo, hi) >= settings.threshold
    info = {"crop_shape": [int(s) for s in crop.shape], "crop_spacing": [round(float(s), 3) for s in crop.spacing],
            "runs": runs, "threads": threads}
    return _result(volume, sub, lo, hi, prev, prompts, pos_all, info, loaded.card.name, t0)


def _result(volume: Volume, sub, lo, hi, prev, prompts: Prompts, pos_all, info: dict, model_name: str, t0: float) -> Volume:
    """The common clean-up of a prediction ``sub`` on the source box ``lo:hi`` and the result `Volume`."""
    box_sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    prev_sub = prev[box_sl] if prev is not None else None
    local = [tuple(p - l for p, l in zip(q, lo)) for q in pos_all if all(l <= c < h for c, l, h in zip(q, lo, hi))]
    sub = _keep_prompted(sub, prev_sub, local)
    if prev_sub is not None:
        clicks = pos_all + list(prompts.negative)
        sub = _click_local_removals(sub, prev_sub, [tuple(c - l for c, l in zip(q, lo)) for q in clicks
                                                   if all(l <= c < h for c, l, h in zip(q, lo, hi))])
    mask = prev.copy() if prev is not None else np.zeros(volume.spatial_shape, bool)
    mask[box_sl] = sub
    if prompts.box is not None:  # the box bounds the new mask; a previous mask outside it is kept
        keep = _box_region(mask.shape, prompts)
        mask &= keep
        if prev is not None:
            mask |= prev & ~keep
    info.update({"source_box": [[int(v) for v in lo], [int(v) for v in hi]],
            "seconds": round(time.perf_counter() - t0, 3), "model": model_name,
            "positive": [list(p) for p in prompts.positive], "negative": [list(p) for p in prompts.negative]})
    return Volume(mask.astype(np.uint8), volume.spacing, volume.origin, volume.direction.copy(),
                  {"classes": {0: "background", 1: "object"}, "modality": "SEG", "prompt": info})
