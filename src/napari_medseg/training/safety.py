"""Whole-image safety check of a fine-tune, and the result in plain words.

Held-out corrected slices only show what the user corrected. A model that learnt "no liver" from slices
without liver scores well there and may have forgotten the liver everywhere else. `compare_classes` puts
the parent's and the new model's whole-image predictions side by side: per class, the predicted volume on
the whole image and *outside the corrected slices* (where the user's corrections say nothing, so the new
model should mostly agree with its parent). `class_verdict` flags a class that vanishes, shrinks or grows
drastically there (thresholds in `FinetuneConfig`); a flagged class blocks the automatic activation unless
the user allows it explicitly.
"""

from __future__ import annotations

import numpy as np

AXIS_LETTERS = {0: "z", 1: "y", 2: "x"}


def outside_mask(shape, slices) -> np.ndarray:
    """True on every voxel not on one of the ``(axis, index)`` slices."""
    out = np.ones(shape, dtype=bool)
    for axis, index in slices:
        sl = [slice(None)] * 3
        sl[int(axis)] = int(index)
        out[tuple(sl)] = False
    return out


def _counts(labels: np.ndarray, values) -> dict[int, int]:
    lab = np.asarray(labels)
    return {int(v): int(np.count_nonzero(lab == v)) for v in values}  # no int64 copy of a 37-Mvoxel volume


def _on_slices(labels: np.ndarray, values, slices) -> dict[int, int]:
    """Voxels of each value on the union of the ``(axis, index)`` slices (cheap when they share an axis)."""
    lab = np.asarray(labels)
    slices = sorted({(int(a), int(i)) for a, i in slices})
    if len({a for a, _ in slices}) > 1:  # slices along different axes intersect: count the union once
        return _counts(lab[~outside_mask(lab.shape, slices)], values)
    out = dict.fromkeys((int(v) for v in values), 0)
    for a, i in slices:
        plane = np.take(lab, i, axis=a)
        for v in out:
            out[v] += int(np.count_nonzero(plane == v))
    return out


#: the most a correction's own growth of a class on its slices scales the growth limit of the class check
MAX_CORRECTED_SCALE = 10.0


def compare_classes(parent: np.ndarray, new: np.ndarray, classes: dict[int, str], voxel_ml: float, slices,
                    config, image: str = "image", corrected: np.ndarray | None = None) -> dict[str, dict]:
    """Per-class predicted volumes of ``parent`` and ``new`` (label arrays on one grid), with a status.

    Returns ``{class name: {value, before_ml, after_ml, before_outside_ml, after_outside_ml, change, status,
    image}}``; ``change`` is the relative change outside the corrected ``slices``; ``status`` one of "ok",
    "vanished", "shrank", "grew", "appeared", "too small" (below ``config.min_class_ml`` in both).

    ``corrected`` (the user's labels, same grid): where the corrections themselves grew a class on their
    slices -- the parent found a quarter of the kidney the user painted -- the same growth elsewhere is what
    was asked for. The growth limit then scales by that factor (``corrected_scale``: the user's voxels of the
    class on the slices over the parent's, at most x10); growth beyond the scaled limit is still flagged. The
    shrink limit never scales: a class erased on the corrected slices is exactly how a model learns to forget
    it everywhere (issue 18).
    """
    values = [int(v) for v in classes if int(v) != 0]
    whole_b, whole_a = _counts(parent, values), _counts(new, values)
    on_b, on_a = _on_slices(parent, values, slices), _on_slices(new, values, slices)
    on_u = _on_slices(corrected, values, slices) if corrected is not None else None
    out_b = {v: whole_b[v] - on_b[v] for v in values}
    out_a = {v: whole_a[v] - on_a[v] for v in values}
    rows = {}
    for v in values:
        b, a = out_b[v] * voxel_ml, out_a[v] * voxel_ml
        change = None if b <= 0 else (a - b) / b
        scale = 1.0
        if on_u is not None and on_u[v] >= 1.1 * on_b[v]:  # the corrections grew it by 10 % or more
            scale = min(MAX_CORRECTED_SCALE, on_u[v] / max(on_b[v], 1))
        floor = float(config.min_class_ml)
        if b < floor:
            status = "appeared" if a >= 10 * floor and a > 0 else "too small"
        elif a <= 0.01 * b:
            status = "vanished"
        elif a < (1 - config.max_class_shrink) * b:
            status = "shrank"
        elif a > (1 + config.max_class_growth) * b * scale:
            status = "grew"
        else:
            status = "ok"
        rows[classes[v]] = {
            "value": v, "image": image,
            "before_ml": round(whole_b[v] * voxel_ml, 4), "after_ml": round(whole_a[v] * voxel_ml, 4),
            "before_outside_ml": round(b, 4), "after_outside_ml": round(a, 4),
            "change": None if change is None else round(change, 4), "status": status,
        }
        if scale != 1.0:
            rows[classes[v]]["corrected_scale"] = round(scale, 3)
    return rows


def agreement_outside(parent: np.ndarray, new: np.ndarray, classes: dict[int, str], slices) -> dict:
    """How far the new model's labels agree with the parent's *outside the corrected slices* (the one thing a
    single corrected slice lets us check away from it): per class the Dice between the two label maps
    there (1 = unchanged; absent when neither predicts the class there), and the share of voxels whose label
    is unchanged. Returns ``{"dice": {name: float}, "unchanged": float}``."""
    p, n = np.asarray(parent), np.asarray(new)
    out = outside_mask(p.shape, slices)
    both = {}
    for v in (int(v) for v in classes if int(v) != 0):
        pv, nv = (p == v) & out, (n == v) & out
        sp, sn = int(np.count_nonzero(pv)), int(np.count_nonzero(nv))
        if sp + sn:
            both[classes[v]] = round(2 * int(np.count_nonzero(pv & nv)) / (sp + sn), 4)
    total = int(np.count_nonzero(out))
    same = int(np.count_nonzero((p == n) & out))
    return {"dice": both, "unchanged": round(same / total, 6) if total else None}


def check_plan(n_slices: int, from_scratch: bool) -> str:
    """What the safety check of a fine-tune on ``n_slices`` corrected slices can and cannot measure (the
    widget shows it before the run, with the default ``holdout="auto"``)."""
    if from_scratch:
        if n_slices >= 4:
            return "a quarter of the corrected slices is held out to measure the new model"
        return (f"{n_slices} corrected slice(s): fewer than 4, so none is held out and nothing measures the new model "
                "on a slice it did not learn")
    if n_slices >= 4:
        return "a quarter of the corrected slices is held out to compare the current and the new model"
    if n_slices >= 2:
        return "a trial run holds one corrected slice out to compare the current and the new model"
    return ("1 corrected slice: none can be held out, so nothing can test the new model on a slice it did not "
            "learn. Checked instead: its fit on this slice and its agreement with the current model elsewhere; "
            "the new version is saved but not activated automatically. Correct a 2nd slice for a held-out check")


# ------------------------------------------------------------------------------ held-out Dice decision
def pool(results: list[dict | None]) -> dict | None:
    vals = [r for r in results if r and r.get("dice_mean") is not None]
    if not vals:
        return None
    fg = [r["dice_fg"] for r in vals if r.get("dice_fg") is not None]
    return {"dice_mean": float(np.mean([r["dice_mean"] for r in vals])), "dice_fg": float(np.mean(fg)) if fg else None,
            "folds": vals}


def score(m: dict | None) -> float | None:
    """The figure the activation decision compares: pooled foreground Dice, else the class mean."""
    if not m:
        return None
    return m.get("dice_fg") if m.get("dice_fg") is not None else m.get("dice_mean")


def decide(activate, check, parent, before, after, tol) -> tuple[bool, str]:
    if activate is True:
        return True, "activation requested"
    if activate is False:
        return False, "activation not requested"
    a = score(after)
    b = score(before)
    if parent is None:
        if check == "holdout" and a is not None and a < 0.5:
            return False, f"held-out Dice {a:.3f} < 0.5: the new model is not made active; activate it explicitly"
        return True, "new model trained from scratch" + (f" (held-out Dice {a:.3f})" if check == "holdout" and a is not None else "")
    if check == "none":
        return False, "only one corrected slice: no held-out check is possible, so the parent stays active; activate explicitly"
    if a is None or b is None:
        return False, "held-out Dice could not be measured; the parent stays active"
    if a + 1e-12 >= b - tol:
        return True, f"held-out Dice {b:.3f} -> {a:.3f} (not worse than parent {parent['spec']})"
    return False, (
        f"held-out Dice fell {b:.3f} -> {a:.3f}: worse than parent {parent['spec']}, which stays active "
        "(check the corrected slices, or activate the new version explicitly)"
    )


# ------------------------------------------------------------------------------ whole-image class check
FLAGGED = ("vanished", "shrank", "grew", "appeared")


def flagged(changes: dict[str, dict]) -> list[str]:
    return [name for name, row in changes.items() if row["status"] in FLAGGED]


def _pct(row) -> str:
    if row["change"] is None:
        return "new"
    return f"{row['change'] * 100:+.0f} %"


def class_verdict(changes: dict[str, dict], config, allow: bool, others: dict | None = None) -> tuple[bool, str]:
    """``(ok, reason)``: ok when no class is flagged (on this image, outside the corrected slices, nor on any
    other checked image ``others = {image name: changes}``), or when the user allowed class changes."""
    parts = []
    bad = flagged(changes)
    if bad:
        parts.append(", ".join(_row_text(n, changes[n]) for n in bad) + " outside the corrected slices")
    for image, rows in (others or {}).items():
        bad_o = flagged(rows)
        if bad_o:
            parts.append(", ".join(_row_text(n, rows[n]) for n in bad_o) + f" on {image}")
    if not parts:
        return True, ""
    what = "; ".join(parts)
    if allow:
        return True, f"class changes allowed by the user: {what}"
    return False, (
        f"{what}, where your corrections show nothing (limits: -{config.max_class_shrink * 100:.0f} % / "
        f"+{config.max_class_growth * 100:.0f} %): the model may have forgotten or overgrown a class; the parent stays "
        "active (tick 'allow class changes' / --allow-class-change, or activate the new version explicitly)"
    )


def _row_text(name: str, row: dict) -> str:
    why = f"; {_corrected(row)}" if row.get("corrected_scale") else ""
    return (f"{name} {row['status']} ({row['before_outside_ml']:.1f} -> {row['after_outside_ml']:.1f} mL, "
            f"{_pct(row)}{why})")


def _corrected(row: dict) -> str:
    """What the corrections did to the class on their slices (rows with a ``corrected_scale``)."""
    scale = row["corrected_scale"]
    times = f"x{MAX_CORRECTED_SCALE:.0f} or more" if scale >= MAX_CORRECTED_SCALE else f"x{scale:.2g}"
    return f"your corrections grew it {times} on their slices"


def slice_list(slices) -> str:
    """``[(0, 9), (0, 23)]`` -> ``"slices z 9, z 23"`` (array axes z, y, x)."""
    names = [f"{AXIS_LETTERS.get(int(a), a)} {int(i)}" for a, i in sorted(slices)]
    return ("slice " if len(names) == 1 else "slices ") + ", ".join(names) if names else "no slice"


def _dice(m) -> str:
    v = score(m)
    return "n/a" if v is None else f"{v:.3f}"


def _continued(result) -> bool:
    prov = getattr(getattr(result, "card", None), "provenance", None) or {}
    cfg = prov.get("finetune_config") or {}
    return bool(cfg.get("cv_continue")) and int(cfg.get("cv_folds", 1)) == 1


def _per_class(before, after) -> str:
    per = (after or {}).get("dice") or {}
    bper = (before or {}).get("dice") or {}
    names = list(dict.fromkeys([*bper, *per]))

    def f(d, n):
        return f"{d[n]:.2f}" if n in d else "absent"

    if names and before:
        return "; ".join(f"{n} {f(bper, n)} -> {f(per, n)}" for n in names)
    return "; ".join(f"{n} {d:.2f}" for n, d in per.items())


def _heldout_lines(before, after) -> list[str]:
    lines = [f"Agreement with your corrections on those slices (Dice, all classes pooled, 1 = identical): "
             f"before {_dice(before)}, after {_dice(after)}."]
    per = _per_class(before, after)
    if per:
        lines.append(("  per class (absent = neither predicted nor painted there): " if before else "  per class: ") + per)
    return lines


def _unchecked_lines(result) -> list[str]:
    """One corrected slice (or a new model from under 4): what was checked, and what could not be."""
    lines = ["No slice could be held out: NOT checked is how the new model does on slices you did not correct "
             "(its accuracy there is unknown; look at the re-segmentation, or correct one more slice so that a "
             "held-out check can run)."]
    before, after = result.metrics_before, result.metrics_after
    if after:
        lines.append("Checked: the fit on the corrected slice it trained on (Dice, all classes pooled; this shows it "
                     "learnt your correction, not that it generalises): "
                     + (f"current model {_dice(before)}, new model {_dice(after)}." if before else f"{_dice(after)}."))
        per = _per_class(before, after)
        if per:
            lines.append("  per class: " + per)
    agree = getattr(result, "agreement", None) or {}
    if agree.get("dice"):
        lines.append("Checked: agreement of the new model with the current one outside the corrected slice (Dice "
                     "per class, 1 = unchanged; where your correction says nothing, a large change is unverified): "
                     + "; ".join(f"{n} {d:.2f}" for n, d in agree["dice"].items())
                     + (f"; {agree['unchanged'] * 100:.1f} % of voxels unchanged." if agree.get("unchanged") is not None
                        else "."))
    return lines


def describe(result) -> str:
    """The result of a fine-tune in plain words: decision and why, held-out slices, per-class changes."""
    where = f"{result.name}@{result.version}" if result.version else str(result.model_path)
    lines = [f"New model {where}: {'ACTIVATED' if result.activated else 'NOT activated'}.", f"Why: {result.reason}."]
    held = slice_list(result.heldout_slices)
    if result.check == "holdout":
        lines.append(f"Held out (not trained on, used to compare the models): {held}.")
    elif result.check == "cv":
        lines.append(f"Checked by a trial run that held out {held}; the new model then trained on every corrected slice"
                     + (" (continuing from the trial run's weights)." if _continued(result) else "."))
    else:
        lines.extend(_unchecked_lines(result))
    before, after = result.metrics_before, result.metrics_after
    if result.check != "none" and after:
        lines.extend(_heldout_lines(before, after))
    changes = result.class_changes or {}
    if changes:
        lines.append("Predicted volume on the whole image, parent -> new (change outside the corrected slices):")
        for name, row in changes.items():
            mark = "" if row["status"] in ("ok", "too small") else f"  <- {row['status'].upper()}"
            if row.get("corrected_scale"):
                mark += f" ({_corrected(row)}: growth limit scaled)"
            lines.append(f"  {name}: {row['before_ml']:.1f} -> {row['after_ml']:.1f} mL ({_pct(row)}){mark}")
    for image, rows in (getattr(result, "other_changes", None) or {}).items():
        lines.append(f"Predicted volume on {image} (another image, at the model's resolution), parent -> new:")
        for name, row in rows.items():
            mark = "" if row["status"] in ("ok", "too small") else f"  <- {row['status'].upper()}"
            lines.append(f"  {name}: {row['before_ml']:.1f} -> {row['after_ml']:.1f} mL ({_pct(row)}){mark}")
    for note in getattr(result, "check_notes", None) or []:
        lines.append(f"Note: {note}.")
    t = result.timing or {}
    if t.get("job_s") is not None:
        budget = t.get("budget_s")
        lines.append(
            f"Time: {t['job_s']:.0f} s" + (f" of a {budget:.0f} s budget" if budget else "")
            + f" (training {t.get('train_s', 0):.0f} s, {t.get('steps', 0)} steps; whole-image segmentations "
            f"{t.get('segment_s', 0):.0f} s)" + (f"; {t['steps_per_min']:.0f} steps/min." if t.get("steps_per_min") else ".")
        )
        sel, steps = t.get("selected_step"), t.get("steps")
        if t.get("stopped_by") == "held-out" or (sel is not None and steps and sel != steps):
            lines.append(("Training stopped early: the held-out Dice fell at consecutive checks. " if t.get("stopped_by")
                          == "held-out" else "") + (f"The weights of step {sel} (the best held-out check) were kept."
                                                    if sel is not None and sel != steps else ""))
        if budget and t["job_s"] > 1.1 * budget:
            big = sorted((t.get("stages_s") or {}).items(), key=lambda kv: -kv[1])[:3]
            spent = f" (longest parts: {', '.join(f'{k} {v:.0f} s' for k, v in big)})" if big else ""
            lines.append(f"Over budget by {t['job_s'] - budget:.0f} s{spent}: training keeps at least 10 % of the "
                         "budget and one step, and the machine may have become slower than measured; give a larger "
                         "budget.")
    return "\n".join(lines)
