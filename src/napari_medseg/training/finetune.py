"""Fine-tuning on corrected slices: learn from what the user vouched for, safely.

`finetune_steps` (a step generator the widget runs in a worker) and `finetune` (its blocking wrapper):

1. the corrected slices ``(array_axis, index)`` become an ignore mask: the loss sees only their voxels;
2. some corrected slices are held out (or, with 2-3 slices, a short cross-validation run per fold) and the
   parent's and the new model's Dice are measured on them;
3. the new model is saved as a new version ``<home>/models/<name>/vN`` (never over its parent) with parent,
   date, slices, hyper-parameters and metrics in its card, and made active only when it is not worse than
   its parent (or when ``activate=True``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from napari_medseg.errors import InputError
from napari_medseg.models.card import ModelCard
from napari_medseg.progress import run_steps
from napari_medseg.training.config import FinetuneConfig, TrainConfig
from napari_medseg.training.data import Case, model_axis_of_array_axis, prepare_case, value_to_channel
from napari_medseg.training.preflight import finetune_preflight
from napari_medseg.training.job import estimate_segment_s, job_progress, segment_whole
from napari_medseg.training.safety import decide as _decide, pool as _pool
from napari_medseg.training.loop import TrainProgress, evaluate_cases, training_steps
from napari_medseg.training.train import TrainResult, class_names, finish_card, unet_card
from napari_medseg.volume import Volume

AXIS_LETTERS = {0: "z", 1: "y", 2: "x"}


@dataclass
class FinetuneResult:
    model_path: Path | None
    version: str | None
    name: str
    card: ModelCard
    metrics_before: dict | None  # parent on the held-out slices (None from scratch)
    metrics_after: dict | None  # new model on the held-out slices
    history: list[dict] = field(default_factory=list)  # {"step", "loss", "val_dice", "time_s"}
    activated: bool = False
    reason: str = ""
    network: Any = None  # the trained torch module (eval mode), e.g. to re-segment at once
    heldout_slices: list[tuple[int, int]] = field(default_factory=list)
    check: str = "holdout"  # "holdout", "cv" or "none"
    class_changes: dict = field(default_factory=dict)  # class name -> volumes before/after (safety.compare_classes)
    segmentation: Any = None  # the new model's whole-image `LabelResult` (the re-segmentation), when computed
    timing: dict = field(default_factory=dict)  # job_s, budget_s, train_s, segment_s, steps

    def summary(self) -> str:
        """The result in plain words: decision and why, held-out slices, per-class changes, time."""
        from napari_medseg.training.safety import describe

        return describe(self)


def parse_slices(text: str) -> list[tuple[int, int]]:
    """``"z:12,x:40,1:7"`` -> ``[(0, 12), (2, 40), (1, 7)]`` (array axes: z->0, y->1, x->2)."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        ax, sep, idx = part.partition(":")
        ax = ax.strip().lower()
        axis = {"z": 0, "y": 1, "x": 2, "0": 0, "1": 1, "2": 2}.get(ax)
        if not sep or axis is None or not idx.strip().lstrip("-").isdigit():
            raise InputError(f"bad slice {part!r}: expected AXIS:INDEX with AXIS one of z, y, x (e.g. z:12,z:40)")
        out.append((axis, int(idx)))
    if not out:
        raise InputError(f"no slices in {text!r}: expected e.g. z:12,z:40")
    return out


def check_slices(slices: Iterable, shape) -> list[tuple[int, int]]:
    """Validate and de-duplicate ``(axis, index)`` pairs against an array shape ``(k, j, i)``."""
    out = []
    for s in slices:
        try:
            axis, index = int(s[0]), int(s[1])
        except (TypeError, ValueError, IndexError) as e:
            raise InputError(f"a corrected slice must be (axis, index), got {s!r}") from e
        if axis not in (0, 1, 2):
            raise InputError(f"slice axis must be 0 (z), 1 (y) or 2 (x), got {axis}")
        if not 0 <= index < shape[axis]:
            raise InputError(
                f"slice {AXIS_LETTERS[axis]}:{index} is outside the image ({shape[axis]} slices along {AXIS_LETTERS[axis]})"
            )
        if (axis, index) not in out:
            out.append((axis, index))
    if not out:
        raise InputError("no corrected slices given: mark at least one slice as corrected")
    return sorted(out)


def split_holdout(slices: list[tuple[int, int]], n_hold: int) -> tuple[list, list]:
    """Hold out ``n_hold`` slices spread over the sorted list (avoiding its ends when possible)."""
    n = len(slices)
    if n_hold <= 0:
        return list(slices), []
    pos = sorted({min(n - 1, int((i + 0.5) * n / n_hold)) for i in range(n_hold)})
    held = [slices[p] for p in pos]
    return [s for s in slices if s not in held], held


def _slice_mask(shape, slices) -> np.ndarray:
    """int16 mask: slice number (1-based, in ``slices`` order) on each slice, 0 elsewhere."""
    m = np.zeros(shape, dtype=np.int16)
    for n, (axis, index) in enumerate(slices, start=1):
        sl = [slice(None)] * 3
        sl[axis] = index
        m[tuple(sl)] = np.where(m[tuple(sl)] == 0, n, m[tuple(sl)])
    return m


def _subcase(case: Case, ids: list[int], thin_axis) -> Case:
    m = torch.zeros_like(case.mask)
    for i in ids:
        m[case.mask == i] = 1.0
    return Case(case.name, case.image, case.target, m, thin_axis)


def _file_sha256(path: Path, card: ModelCard) -> str:
    if card.weights_sha256:
        return card.weights_sha256
    p = Path(path)
    w = p / card.weights_file if p.is_dir() else p
    return hashlib.sha256(w.read_bytes()).hexdigest() if w.is_file() else ""


def _scratch_card(image: Volume, labels: Volume, slices, classes, config: FinetuneConfig, name: str) -> ModelCard:
    arr = np.asarray(labels.array)
    mask = _slice_mask(arr.shape, slices) > 0
    values = sorted(int(v) for v in np.unique(arr[mask]) if int(v) != 0)
    known = {int(k): str(v) for k, v in (labels.meta.get("classes") or {}).items()}
    if classes is None:
        if not values:
            raise InputError("the corrected slices hold no foreground label; paint the structure you want to learn")
        classes = {v: known.get(v, f"class_{v}") for v in values}
    else:
        classes = {int(k): str(v) for k, v in dict(classes).items() if int(k) != 0}
        extra = sorted(set(values) - set(classes))
        if extra:
            raise InputError(f"the corrected slices hold label values {extra} that are not in classes {sorted(classes)}")
    normals = {a for a, _ in slices}
    spacing = [0.0, 0.0, 0.0]
    d = np.abs(image.direction)
    for p in range(3):  # RAS model axis p runs along the source axis that mostly points along p
        s = int(np.argmax(d[p]))
        keep = (2 - s) in normals  # an axis normal to corrected slices keeps its native spacing
        spacing[p] = image.spacing[s] if keep else max(image.spacing[s], config.min_spacing)
    is_ct = str(image.meta.get("modality", "CT")).upper() == "CT" and float(np.min(image.array)) < -500
    inten = (
        {"type": "ct_window", "a_min": -175.0, "a_max": 250.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
        if is_ct
        else {"type": "zscore", "nonzero": False}
    )
    # inference windows shaped like the training patches (instance-norm statistics then match)
    roi = list(config.train.patch_size)
    if len(normals) == 1:
        a = next(iter(normals))
        thin = int(np.argmax(d[:, 2 - a]))
        small = int(np.argmin(roi))
        roi[small], roi[thin] = roi[thin], roi[small]
    card = unet_card(
        name, classes, spacing=tuple(spacing), channels=config.scratch_channels, strides=config.scratch_strides,
        num_res_units=config.scratch_res_units, roi_size=tuple(roi), intensity=inten,
        description=f"Trained from scratch on {len(slices)} corrected slice(s) of {image.meta.get('source_path') or 'an image'}",
    )
    if config.scratch_keep_largest:
        card.keep_largest = sorted(int(v) for v in classes)
    return card


def _budget(cfg: TrainConfig, fraction: float) -> TrainConfig:
    return dataclasses.replace(
        cfg,
        steps=max(1, int(round(cfg.steps * fraction))),
        time_budget_s=None if cfg.time_budget_s is None else cfg.time_budget_s * fraction,
        val_every=10**9,
    )


def finetune_steps(
    image: Volume,
    labels: Volume,
    slices,
    model="default",
    from_scratch: bool = False,
    classes: dict[int, str] | None = None,
    config: FinetuneConfig = FinetuneConfig(),
    name: str | None = None,
    activate: bool | str = "auto",
    output=None,
    force: bool = False,
    allow_class_change: bool = False,
    resegment: bool = False,
):
    """Step generator behind `finetune` (see there); yields `TrainProgress`, returns `FinetuneResult`."""
    from napari_medseg.models import load_model
    from napari_medseg.models.package import save_model_package
    from napari_medseg.models.registry import models_dir, resolve_model
    from napari_medseg.training import versions

    t_job = time.perf_counter()
    if activate not in ("auto", True, False):
        raise InputError(f"activate must be 'auto', True or False, got {activate!r}")
    if not isinstance(image, Volume) or not isinstance(labels, Volume):
        raise InputError("finetune needs an image Volume and a labels Volume (read files with read_volume)")
    labels = finetune_preflight(image, labels, model, from_scratch, name, output)  # grid, name, outputs: before work
    slices = check_slices(slices, labels.spatial_shape)
    if output is not None:
        from napari_medseg._atomic import check_overwrite

        check_overwrite(output, force)

    # ---- parent model or a new card
    parent = None
    if from_scratch:
        name = name or "custom"
        card = _scratch_card(image, labels, slices, classes, config, name)
        from napari_medseg.training.transfer import scratch_start  # issue 14: encoder transfer, no parent targets

        net, tcfg, transfer = scratch_start(card, config)
    else:
        path = resolve_model(model if model is not None else "default")
        loaded = load_model(path)  # our packages and MONAI bundles (whose preprocessing the card carries)
        spec = versions.version_spec(path)
        parent = {"spec": spec, "sha256": _file_sha256(path, loaded.card), "path": str(path)}
        if loaded.card.provenance.get("source") == "MONAI bundle":
            if loaded.card.activation != "softmax":
                raise InputError(f"{spec}: fine-tuning bundles with {loaded.card.activation} (overlapping-region) "
                                 "outputs is not supported; only softmax segmentation bundles can be fine-tuned")
            parent["bundle"] = {k: loaded.card.provenance.get(f"bundle_{k}") for k in ("name", "version", "sha256")}
        name = name or (spec.split("@")[0] if "@" in spec else loaded.card.name)
        card = copy.deepcopy(loaded.card)
        card.name = name
        net = loaded.network
        parent_net = copy.deepcopy(net).eval()
        tcfg = config.train
        present = {int(v) for v in np.unique(np.asarray(labels.array)[_slice_mask(labels.spatial_shape, slices) > 0])}
        unknown = sorted(present - set(value_to_channel(card)) - {0})
        if unknown:
            raise InputError(
                f"the corrected slices hold label values {unknown} that model {spec!r} does not know "
                f"({sorted(value_to_channel(card))}); train a new model with from_scratch=True (--from-scratch)"
            )

    # ---- which slices train and which check
    n = len(slices)
    if config.holdout_slices is not None:
        held = check_slices(config.holdout_slices, labels.spatial_shape)
        missing = [s for s in held if s not in slices]
        if missing:
            raise InputError(f"held-out slices {missing} are not among the corrected slices")
        train_sl, check = [s for s in slices if s not in held], "holdout"
    elif config.holdout == "auto":
        if n >= 4:
            train_sl, held = split_holdout(slices, max(1, round(n / 4)))
            check = "holdout"
        elif n >= 2 and parent is not None:
            train_sl, held, check = slices, [], "cv"
        else:
            train_sl, held, check = slices, [], "none"
    else:
        if config.holdout >= n:
            raise InputError(f"cannot hold out {config.holdout} of {n} corrected slices; at least one must train")
        train_sl, held = split_holdout(slices, int(config.holdout))
        check = "holdout" if held else "none"
    if not train_sl:
        raise InputError("every corrected slice is held out; nothing left to train on")

    # ---- the parent segments the whole image (the class check's reference); the budget bounds the whole job
    check_classes = parent is not None and config.class_check
    parent_seg, seg_s = None, 0.0
    if check_classes:
        t = time.perf_counter()
        parent_seg = yield from segment_whole(image, parent_net, loaded.card, "check: the parent segments the image", t_job, tcfg)
        seg_s = time.perf_counter() - t

    # ---- one model-space case, slice ids in its mask
    order = list(slices)
    case = prepare_case(image, labels, card, mask=_slice_mask(labels.spatial_shape, order), name=str(image.meta.get("source_path") or "image"))
    ids = {s: i for i, s in enumerate(order, start=1)}
    normals = {a for a, _ in train_sl}
    thin = model_axis_of_array_axis(image, card, next(iter(normals))) if len(normals) == 1 else None
    train_case = _subcase(case, [ids[s] for s in train_sl], thin)
    names = class_names(card)
    nc = card.out_channels
    roi = tcfg.patch_size
    budget = tcfg.time_budget_s
    if budget is not None:  # what is left once the new model's segmentation and saving are set aside
        after_s = (seg_s if check_classes else (estimate_segment_s(net, card, image) if resegment else 0.0)) * 1.1 + 1.0
        left = budget - (time.perf_counter() - t_job) - after_s
        tcfg = dataclasses.replace(tcfg, time_budget_s=max(left, 0.1 * budget, 1.0))
    t_train = time.perf_counter()

    metrics_before = metrics_after = None
    remaining = 1.0
    if check == "cv":
        folds = min(n, max(1, config.cv_folds))
        _, fold_slices = split_holdout(slices, folds)
        frac = config.cv_budget_fraction / folds
        befores, afters = [], []
        for f, hs in enumerate(fold_slices):
            tr = [s for s in slices if s != hs]
            fnet = copy.deepcopy(parent_net)
            tc = _subcase(case, [ids[s] for s in tr], thin)
            vc = _subcase(case, [ids[hs]], model_axis_of_array_axis(image, card, hs[0]))
            log = yield from job_progress(training_steps(fnet, [tc], dataclasses.replace(_budget(tcfg, frac), seed=tcfg.seed + f), nc, [vc], names, stage=f"trial run {f + 1}/{folds} (held-out check)"), t_job, budget)
            befores.append(log.initial_val)
            afters.append(log.final_val)
        metrics_before, metrics_after = _pool(befores), _pool(afters)
        held = list(fold_slices)
        remaining = 1.0 - config.cv_budget_fraction
    val_cases = [_subcase(case, [ids[s] for s in held], thin)] if check == "holdout" else []
    final_cfg = _budget(tcfg, remaining) if remaining < 1.0 else tcfg
    if val_cases:
        final_cfg = dataclasses.replace(final_cfg, val_every=tcfg.val_every)
    log = yield from job_progress(training_steps(net, [train_case], final_cfg, nc, val_cases, names, stage="fine-tune: training",
                                         initial_validation=parent is not None), t_job, budget)
    train_s = time.perf_counter() - t_train
    if check == "holdout":
        metrics_before = log.initial_val if parent is not None else None
        metrics_after = log.final_val
    elif check == "none":
        metrics_after = evaluate_cases(net, [train_case], nc, roi, names)
        metrics_after["on"] = "training slices (no held-out slice available)"
    net.eval()

    # ---- the new model segments the whole image: class check against the parent, and the re-segmentation
    new_seg, changes = None, {}
    if check_classes or resegment:
        t = time.perf_counter()
        new_seg = yield from segment_whole(image, net, card, "check: the new model segments the image", t_job, tcfg, budget)
        seg_s += time.perf_counter() - t
    if check_classes:
        from napari_medseg.training.safety import compare_classes

        classes_ = {v: n for v, n in card.class_names().items() if int(v) != 0}
        changes = compare_classes(parent_seg.labels.array, new_seg.labels.array, classes_,
                                  float(image.voxel_volume_mm3) / 1000.0, slices, config,
                                  image=str(image.meta.get("source_path") or "image"))

    # ---- activation decision
    activated, reason = _decide(activate, check, parent, metrics_before, metrics_after, config.tolerance)
    if changes:
        from napari_medseg.training.safety import class_verdict

        ok, why = class_verdict(changes, config, allow_class_change or activate is True)
        if activate == "auto" and activated and not ok:
            activated, reason = False, why
        elif why:
            reason = f"{reason}; {why}"
    result_train = TrainResult(net, card, log, metrics={})
    metrics = {"check": check, "before": metrics_before, "after": metrics_after, "heldout_slices": [list(s) for s in held]}
    result_train.metrics = metrics
    mode = "scratch" if from_scratch else ("finetune-frozen-encoder" if tcfg.freeze_encoder else "finetune")
    extra = {
        "mode": mode,
        "parent": parent,
        "init": transfer.to_dict() if from_scratch else None,
        "slices": {"train": [list(s) for s in train_sl], "heldout": [list(s) for s in held], "axis_order": "array (z, y, x)"},
        "source_image": str(image.meta.get("source_path") or ""),
        "finetune_config": {k: v for k, v in config.to_dict().items() if k != "train"},
        "activation": {"activated": activated, "reason": reason},
        "class_check": {"changes": changes, "allowed": bool(allow_class_change), "image": str(image.meta.get("source_path") or "the fine-tuned image"),
                        "thresholds": {k: getattr(config, k) for k in ("max_class_shrink", "max_class_growth", "min_class_ml")}},
    }
    card.provenance = {}
    card = finish_card(card, result_train, final_cfg, {"image": extra["source_image"], "corrected_slices": len(slices)}, extra)
    # last cancellation point: a Stop pressed during the final validation leaves no new version behind
    yield TrainProgress(log.steps, log.steps, "save", "saving the new model version", step=log.steps,
                        elapsed_s=log.elapsed_s)
    if output is not None:
        card = dataclasses.replace(card, version="1")
        path = save_model_package(net, card, output, force=force)
        version, activated = None, False
        reason = f"saved to {path} (outside the models home: nothing activated); " + reason
    else:
        version = versions.next_version(name)
        card = dataclasses.replace(card, version=version)
        path = save_model_package(net, card, models_dir() / name / version, force=False)
        if activated:
            versions.activate(name, version, reason="fine-tune: " + reason)
    timing = {"job_s": round(time.perf_counter() - t_job, 2), "budget_s": budget, "train_s": round(train_s, 2),
              "segment_s": round(seg_s, 2), "steps": log.steps}
    return FinetuneResult(
        model_path=path, version=version, name=name, card=card, metrics_before=metrics_before,
        metrics_after=metrics_after, history=log.history, activated=activated, reason=reason,
        network=net, heldout_slices=list(held), check=check, class_changes=changes, segmentation=new_seg,
        timing=timing,
    )


def finetune(
    image: Volume,
    labels: Volume,
    slices,
    model="default",
    from_scratch: bool = False,
    classes: dict[int, str] | None = None,
    config: FinetuneConfig = FinetuneConfig(),
    name: str | None = None,
    activate: bool | str = "auto",
    output=None,
    force: bool = False,
    progress=None,
    cancel=None,
    allow_class_change: bool = False,
    resegment: bool = False,
) -> FinetuneResult:
    """Fine-tune ``model`` (or train a new one with ``from_scratch``) on the corrected ``slices`` of ``labels``.

    ``slices``: ``(array_axis, index)`` pairs in `Volume.array` order (0 = z/k, 1 = y/j, 2 = x/i). Only
    those slices' voxels enter the loss. ``model``: a name, ``name@version`` or a package path (default:
    the active "default"). The result is saved as ``<home>/models/<name>/vN`` (``name`` defaults to the
    parent's; ``"custom"`` from scratch) or to ``output`` when given. ``activate="auto"`` activates the new
    version only when its Dice on held-out corrected slices is not below the parent's *and* no class the
    parent finds elsewhere in the image vanishes, shrinks or grows drastically (see `FinetuneConfig`; the
    result's ``class_changes``) — unless ``allow_class_change``. ``config.train.time_budget_s`` bounds the
    whole job (both whole-image segmentations, training, validation, saving). ``resegment`` also returns the
    new model's segmentation of the image when there is no parent to check (``result.segmentation``).
    A cancelled run (``cancel`` returning True) writes nothing.
    """
    return run_steps(
        finetune_steps(image, labels, slices, model, from_scratch, classes, config, name, activate, output, force,
                       allow_class_change, resegment),
        progress,
        cancel,
    )
