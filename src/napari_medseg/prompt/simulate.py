"""A simulated user for benchmarks and tests: the first click deep inside the object, then one click at the
centre of the largest error region (a missed part gets a positive click, a leak a negative one)."""

from __future__ import annotations

import time

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def _deepest(region: np.ndarray) -> tuple[int, int, int]:
    """The voxel of ``region`` farthest from its border (Euclidean distance, on its bounding box)."""
    from scipy import ndimage

    idx = np.argwhere(region)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    sub = np.pad(region[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], 1)
    dist = ndimage.distance_transform_edt(sub)
    p = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return tuple(int(c) - 1 + int(l) for c, l in zip(p, lo))  # type: ignore[return-value]


def _largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n == 0:
        return mask, 0
    sizes = np.bincount(lab.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    return lab == best, int(sizes[best - 1])


def first_click(truth: np.ndarray) -> tuple[int, int, int]:
    return _deepest(_largest_component(np.asarray(truth) > 0)[0])


def next_click(truth: np.ndarray, pred: np.ndarray) -> tuple[tuple[int, int, int], bool] | None:
    """``(point, positive)`` at the largest error region, or None when there is no error."""
    truth, pred = np.asarray(truth) > 0, np.asarray(pred) > 0
    fn, n_fn = _largest_component(truth & ~pred)
    fp, n_fp = _largest_component(pred & ~truth)
    if n_fn == 0 and n_fp == 0:
        return None
    return (_deepest(fn), True) if n_fn >= n_fp else (_deepest(fp), False)


def _cpu() -> float:
    """CPU seconds of this process so far (all threads)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def click_session(volume, truth: np.ndarray, clicks: int = 5, model=None, **kwargs) -> list[dict]:
    """Run ``clicks`` simulated clicks; per click: Dice, seconds, the click and whether it was positive."""
    from napari_medseg.prompt.segment import prompt_segment

    pos, neg, prev, out = [first_click(truth)], [], None, []
    kind = True
    for n in range(clicks):
        if n:
            nxt = next_click(truth, prev.array)
            if nxt is None:
                break
            (pos if nxt[1] else neg).append(nxt[0])
            kind = nxt[1]
        t, c = time.perf_counter(), _cpu()
        prev = prompt_segment(volume, positive=pos, negative=neg, previous=prev, model=model, **kwargs)
        sec = time.perf_counter() - t
        m, tr = prev.array > 0, np.asarray(truth) > 0
        out.append({"click": n + 1, "dice": dice(m, tr), "seconds": sec,
                    "false_negative": int((tr & ~m).sum()), "false_positive": int((m & ~tr).sum()),
                    "cpu_seconds": _cpu() - c,
                    "positive": kind, "point": (pos if kind else neg)[-1], "crop": prev.meta["prompt"]["crop_shape"],
                    "runs": prev.meta["prompt"]["runs"], "threads": prev.meta["prompt"].get("threads")})
    return out
