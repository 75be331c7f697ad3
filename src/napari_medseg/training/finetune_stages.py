"""The named stages of a fine-tune (`finetune_steps` runs them in order).

validate -> start_model (parent or new card) -> split_slices -> parent checks (job.py) -> build_cases ->
cross_validate -> train_final -> new-model checks (job.py) -> decide -> provenance -> stage_package -> commit.

Nothing before `commit` writes into the models home or the output: the package is staged in a hidden folder
beside its target and only renamed into place (and activated) by `commit`, after the job's last yield.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medseg.errors import InputError
from napari_medseg.models.card import ModelCard
from napari_medseg.training.config import FinetuneConfig, TrainConfig
from napari_medseg.training.data import Case, model_axis_of_array_axis, prepare_case, value_to_channel
from napari_medseg.training.loop import evaluate_cases, training_steps
from napari_medseg.training.safety import pool
from napari_medseg.training.train import class_names, unet_card
from napari_medseg.volume import Volume


# ------------------------------------------------------------------------------------------ helpers
def split_holdout(slices: list[tuple[int, int]], n_hold: int) -> tuple[list, list]:
    """Hold out ``n_hold`` slices spread over the sorted list (avoiding its ends when possible)."""
    n = len(slices)
    if n_hold <= 0:
        return list(slices), []
    pos = sorted({min(n - 1, int((i + 0.5) * n / n_hold)) for i in range(n_hold)})
    held = [slices[p] for p in pos]
    return [s for s in slices if s not in held], held


def slice_mask(shape, slices) -> np.ndarray:
    """int16 mask: slice number (1-based, in ``slices`` order) on each slice, 0 elsewhere."""
    m = np.zeros(shape, dtype=np.int16)
    for n, (axis, index) in enumerate(slices, start=1):
        sl = [slice(None)] * 3
        sl[axis] = index
        m[tuple(sl)] = np.where(m[tuple(sl)] == 0, n, m[tuple(sl)])
    return m


def subcase(case: Case, ids: list[int], thin_axis) -> Case:
    m = torch.zeros_like(case.mask)
    for i in ids:
        m[case.mask == i] = 1.0
    return Case(case.name, case.image, case.target, m, thin_axis)


def budget_share(cfg: TrainConfig, fraction: float) -> TrainConfig:
    return dataclasses.replace(
        cfg,
        steps=max(1, int(round(cfg.steps * fraction))),
        time_budget_s=None if cfg.time_budget_s is None else cfg.time_budget_s * fraction,
        val_every=10**9,
    )


def _file_sha256(path: Path, card: ModelCard) -> str:
    if card.weights_sha256:
        return card.weights_sha256
    p = Path(path)
    w = p / card.weights_file if p.is_dir() else p
    return hashlib.sha256(w.read_bytes()).hexdigest() if w.is_file() else ""


# ------------------------------------------------------------------------------------------ start
@dataclass
class Start:
    """What the job trains: the network, its card and name, the parent (None from scratch) and its copy."""

    card: ModelCard
    net: Any
    name: str
    tcfg: TrainConfig
    parent: dict | None = None  # {"spec", "sha256", "path"[, "bundle"]}
    parent_net: Any = None
    parent_card: ModelCard | None = None
    init: dict | None = None  # from scratch: where the new network's weights started (training/transfer.py)


def scratch_card(image: Volume, labels: Volume, slices, classes, config: FinetuneConfig, name: str) -> ModelCard:
    arr = np.asarray(labels.array)
    mask = slice_mask(arr.shape, slices) > 0
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


def start_model(image, labels, slices, model, from_scratch, classes, config: FinetuneConfig, name) -> Start:
    """The parent model (loaded, checked against the corrected labels, copied for comparisons) or a new card."""
    from napari_medseg.models import load_model
    from napari_medseg.models.registry import resolve_model
    from napari_medseg.training import versions

    if from_scratch:
        from napari_medseg.training.transfer import scratch_start  # the default model's weights, not random ones

        name = name or "custom"
        card = scratch_card(image, labels, slices, classes, config, name)
        net, tcfg, transfer = scratch_start(card, config)
        return Start(card, net, name, tcfg, init=transfer.to_dict())
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
    present = {int(v) for v in np.unique(np.asarray(labels.array)[slice_mask(labels.spatial_shape, slices) > 0])}
    unknown = sorted(present - set(value_to_channel(card)) - {0})
    if unknown:
        raise InputError(
            f"the corrected slices hold label values {unknown} that model {spec!r} does not know "
            f"({sorted(value_to_channel(card))}); train a new model with from_scratch=True (--from-scratch)"
        )
    return Start(card, loaded.network, name, config.train, parent, copy.deepcopy(loaded.network).eval(), loaded.card)


# ------------------------------------------------------------------------------------------ split
@dataclass
class Split:
    train: list
    held: list
    check: str  # "holdout", "cv" or "none"


def split_slices(slices, config: FinetuneConfig, has_parent: bool, shape, check_slices) -> Split:
    """Which corrected slices train and which compare the models (held out, or a cross-validation run)."""
    n = len(slices)
    if config.holdout_slices is not None:
        held = check_slices(config.holdout_slices, shape)
        missing = [s for s in held if s not in slices]
        if missing:
            raise InputError(f"held-out slices {missing} are not among the corrected slices")
        split = Split([s for s in slices if s not in held], held, "holdout")
    elif config.holdout == "auto":
        if n >= 4:
            split = Split(*split_holdout(slices, max(1, round(n / 4))), "holdout")
        elif n >= 2 and has_parent:
            split = Split(list(slices), [], "cv")
        else:
            split = Split(list(slices), [], "none")
    else:
        if config.holdout >= n:
            raise InputError(f"cannot hold out {config.holdout} of {n} corrected slices; at least one must train")
        train, held = split_holdout(slices, int(config.holdout))
        split = Split(train, held, "holdout" if held else "none")
    if not split.train:
        raise InputError("every corrected slice is held out; nothing left to train on")
    return split


# ------------------------------------------------------------------------------------------ cases
@dataclass
class Cases:
    case: Case  # the whole model-space case, slice ids 1..n in its mask
    ids: dict  # (axis, index) -> id
    thin: int | None  # model axis normal to the training slices, when they share one
    train: Case

    def of(self, slices, thin="same") -> Case:
        return subcase(self.case, [self.ids[s] for s in slices], self.thin if thin == "same" else thin)


def build_cases(image: Volume, labels: Volume, slices, card: ModelCard, split: Split) -> Cases:
    order = list(slices)
    case = prepare_case(image, labels, card, mask=slice_mask(labels.spatial_shape, order),
                        name=str(image.meta.get("source_path") or "image"))
    ids = {s: i for i, s in enumerate(order, start=1)}
    normals = {a for a, _ in split.train}
    thin = model_axis_of_array_axis(image, card, next(iter(normals))) if len(normals) == 1 else None
    return Cases(case, ids, thin, subcase(case, [ids[s] for s in split.train], thin))


# ------------------------------------------------------------------------------------------ training
def cross_validate(start: Start, cases: Cases, image, slices, tcfg: TrainConfig, config: FinetuneConfig, run):
    """Short trial runs from the parent, each holding out one slice; returns ``(before, after, held)``.

    With one fold and ``config.cv_continue`` the final run starts from the trial run's weights (and still
    learns from the parent as its teacher), so the job's budget trains one model instead of two.

    ``run(steps)`` drives a training generator as a stage of the job (progress, time accounting)."""
    folds = min(len(slices), max(1, config.cv_folds))
    _, fold_slices = split_holdout(slices, folds)
    frac = config.cv_budget_fraction / folds
    nc, names = start.card.out_channels, class_names(start.card)
    befores, afters = [], []
    for f, hs in enumerate(fold_slices):
        tc = cases.of([s for s in slices if s != hs])
        vc = cases.of([hs], thin=model_axis_of_array_axis(image, start.card, hs[0]))
        fold_cfg = dataclasses.replace(budget_share(tcfg, frac), seed=tcfg.seed + f)
        trial = copy.deepcopy(start.parent_net)
        log = yield from run(training_steps(trial, [tc], fold_cfg, nc, [vc], names,
                                            stage=f"trial run {f + 1}/{folds} (held-out check)"))
        befores.append(log.initial_val)
        afters.append(log.final_val)
        if config.cv_continue and folds == 1:  # the final run goes on from here: the trial's steps are not lost
            start.net.load_state_dict(trial.state_dict())
    return pool(befores), pool(afters), list(fold_slices)


def plan_threads(net, tcfg: TrainConfig) -> TrainConfig:
    """Threads and batch from the measuring training planner, fixed in the config so every run of the job
    (trial runs, the final one) uses them without planning again."""
    from napari_medseg.inference.calibrate import calibration_enabled
    from napari_medseg.inference.train_plan import apply_training_plan

    planned = apply_training_plan(net, tcfg)
    if tcfg.num_threads or not calibration_enabled():
        return planned
    return dataclasses.replace(planned, num_threads=torch.get_num_threads())


def final_config(tcfg: TrainConfig, config: FinetuneConfig, split: Split) -> TrainConfig:
    cfg = budget_share(tcfg, 1.0 - config.cv_budget_fraction) if split.check == "cv" else tcfg
    return dataclasses.replace(cfg, val_every=tcfg.val_every) if split.check == "holdout" else cfg


def train_final(start: Start, cases: Cases, split: Split, cfg: TrainConfig, run, time_left=None):
    """The model the job keeps: trained on the training slices, validated on the held-out ones."""
    val = [cases.of(split.held)] if split.check == "holdout" else []
    nc, names = start.card.out_channels, class_names(start.card)
    kw = {"time_left": time_left} if time_left is not None else {}
    log = yield from run(training_steps(start.net, [cases.train], cfg, nc, val, names, stage="fine-tune: training",
                                        initial_validation=start.parent is not None, parent=start.parent_net, **kw))
    after = log.final_val
    if split.check == "none":
        after = evaluate_cases(start.net, [cases.train], nc, cfg.patch_size, names)
        after["on"] = "training slices (no held-out slice available)"
        if start.parent_net is not None:  # the parent's fit on the same slice: did the correction get learnt?
            log.initial_val = evaluate_cases(start.parent_net, [cases.train], nc, cfg.patch_size, names)
            log.initial_val["on"] = after["on"]
    start.net.eval()
    return log, after


def train_all(start: Start, cases: Cases, split: Split, image, slices, config: FinetuneConfig, job):
    """Step generator: plan threads, the trial runs (cross-validation) and the final run, inside the job's budget.

    Returns ``(log, before, after, split, final_cfg)``. Torch's thread count is restored afterwards, so the new
    model's segmentation runs like its parent's did (and the caller's process keeps its setting)."""
    from napari_medseg.training.job import job_progress

    threads = torch.get_num_threads()
    try:
        t = job.clock()
        tcfg = plan_threads(start.net, start.tcfg)  # a measured stage (first run on a CPU), not hidden in training
        job.timed("plan", job.clock() - t)
        if job.budget is not None:
            tcfg = dataclasses.replace(tcfg, time_budget_s=job.training_budget())
        job.start_training()
        t = job.clock()

        def run(steps):
            return job_progress(steps, job)

        before = after = None
        if split.check == "cv":
            before, after, held = yield from cross_validate(start, cases, image, slices, tcfg, config, run)
            split = dataclasses.replace(split, held=held)
        final_cfg = final_config(tcfg, config, split)
        if split.check == "none" and start.parent is not None and config.unchecked_blend is not None:
            final_cfg = dataclasses.replace(final_cfg, blend=config.unchecked_blend)  # nothing held out to select
        time_left = job.time_left_for_training if job.budget is not None else None
        log, final_after = yield from train_final(start, cases, split, final_cfg, run, time_left)
        if split.check in ("holdout", "none"):
            before = log.initial_val if start.parent is not None else None
        if split.check != "cv":
            after = final_after
        job.timed("train", job.clock() - t)
    finally:
        torch.set_num_threads(threads)
    return log, before, after, split, final_cfg


# ------------------------------------------------------------------------------------------ saving
@dataclass
class Staged:
    """A package written in a hidden folder beside ``target``; `commit` renames it into place."""

    folder: Path  # the hidden staging folder
    package: Path  # the package inside it
    target: Path
    force: bool = False
    committed: bool = field(default=False)

    def discard(self) -> None:
        if not self.committed:
            shutil.rmtree(self.folder, ignore_errors=True)


def stage_package(net, card: ModelCard, target: Path, force: bool = False) -> Staged:
    from napari_medseg._atomic import check_overwrite, temp_dir_beside
    from napari_medseg.models.package import save_model_package

    target = Path(target)
    check_overwrite(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = temp_dir_beside(target, f".{target.name}.staged.")
    try:
        package = save_model_package(net, card, folder / target.name)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Staged(folder, package, target, force)


def commit(staged: Staged) -> Path:
    """Rename the staged package onto its target (an existing one only with ``force``); returns the target."""
    from napari_medseg._atomic import check_overwrite

    target = check_overwrite(staged.target, staged.force)
    old = None
    if target.exists():  # force: swap the old package out, then remove it
        old = staged.folder / ".old"
        os.replace(target, old)
    os.replace(staged.package, target)
    staged.committed = True
    shutil.rmtree(staged.folder, ignore_errors=True)
    return target


def save_version(start: Start, card: ModelCard, output, force, activated: bool, reason: str, log, cancel):
    """Step generator: stage the package, yield the job's last progress, check ``cancel`` once more, rename the
    package into place and activate it (when decided); returns ``(card, path, version, activated, reason)``."""
    from napari_medseg.errors import CancelledError
    from napari_medseg.models.registry import models_dir
    from napari_medseg.training import versions
    from napari_medseg.training.loop import TrainProgress

    if output is not None:
        card = dataclasses.replace(card, version="1")
        target, version = Path(output), None
    else:
        version = versions.next_version(start.name)
        card = dataclasses.replace(card, version=version)
        target = models_dir() / start.name / version
    staged = stage_package(start.net, card, target, force=force if output is not None else False)
    try:
        # the last cancellation point: a Stop pressed until here (or while the package was written) saves nothing
        yield TrainProgress(log.steps, log.steps, "save", "saving the new model version", step=log.steps,
                            elapsed_s=log.elapsed_s)
        if cancel is not None and cancel():
            raise CancelledError("cancelled by the user; nothing was saved")
        path = commit(staged)
    finally:
        staged.discard()
    if output is not None:
        activated = False
        reason = f"saved to {path} (outside the models home: nothing activated); " + reason
    elif activated:
        versions.activate(start.name, version, reason="fine-tune: " + reason)
    return card, path, version, activated, reason
