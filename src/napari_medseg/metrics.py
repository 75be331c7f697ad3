"""Label metrics shared by training (validation Dice), the CLI demo and benchmarks: one Dice implementation."""

from __future__ import annotations


def dice_per_class(pred, target, values, mask=None, absent: float | None = None) -> dict[int, float]:
    """Hard Dice ``2|P∩T| / (|P| + |T|)`` per label value in ``values`` (0, the background, is skipped).

    ``pred``/``target``: label arrays of one shape, numpy or torch; ``mask`` (same shape, optional) limits the
    voxels counted. A class absent from both prediction and target gets ``absent``, or is left out when
    ``absent`` is None (no 0/0 and no free 1.0).
    """
    if mask is not None:
        mask = mask.bool() if hasattr(mask, "bool") else mask.astype(bool)
        pred, target = pred[mask], target[mask]
    out: dict[int, float] = {}
    for v in values:
        v = int(v)
        if v == 0:
            continue
        p, t = pred == v, target == v
        denom = int(p.sum()) + int(t.sum())
        if denom:
            out[v] = 2.0 * float((p & t).sum()) / denom
        elif absent is not None:
            out[v] = absent
    return out
