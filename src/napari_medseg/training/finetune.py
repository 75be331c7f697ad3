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

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from napari_medseg.errors import InputError
from napari_medseg.models.card import ModelCard
from napari_medseg.progress import run_steps
from napari_medseg.training import finetune_stages as stages
from napari_medseg.training.check_images import new_pass, parent_pass
from napari_medseg.training.config import FinetuneConfig
from napari_medseg.training.finetune_stages import slice_mask as _slice_mask, split_holdout, subcase as _subcase
from napari_medseg.training.job import JobClock, estimate_segment_s, timed_segment
from napari_medseg.training.preflight import finetune_preflight
from napari_medseg.training.safety import agreement_outside, class_verdict, compare_classes, decide
from napari_medseg.training.train import TrainResult, finish_card
from napari_medseg.volume import Volume

__all__ = ["FinetuneResult", "finetune", "finetune_steps", "parse_slices", "check_slices", "split_holdout",
           "_slice_mask", "_subcase"]

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
    timing: dict = field(default_factory=dict)  # job_s, budget_s, train_s, segment_s, steps, stages_s, reserved_s
    other_changes: dict = field(default_factory=dict)  # other checked image -> class name -> compare_classes row
    check_notes: list = field(default_factory=list)  # other images not checked, and why
    # one corrected slice: the new model's agreement with the parent outside it (safety.agreement_outside)
    agreement: dict = field(default_factory=dict)

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


def _validate(image, labels, slices, model, from_scratch, name, output, force, activate, check_images=()):
    """Refusals before any work: arguments, grid, name, outputs."""
    if activate not in ("auto", True, False):
        raise InputError(f"activate must be 'auto', True or False, got {activate!r}")
    if not isinstance(image, Volume) or not isinstance(labels, Volume):
        raise InputError("finetune needs an image Volume and a labels Volume (read files with read_volume)")
    labels = finetune_preflight(image, labels, model, from_scratch, name, output)  # grid, name, outputs: before work
    slices = check_slices(slices, labels.spatial_shape)
    for item in check_images:
        if not isinstance(item, (Volume, tuple)) and not Path(item).exists():
            raise InputError(f"check image {item} does not exist; give an image file or DICOM folder (--check-image)")
    if output is not None:
        from napari_medseg._atomic import check_overwrite

        check_overwrite(output, force)
    return labels, slices


def _decide_activation(activate, split, start, before, after, changes, others, config, allow) -> tuple[bool, str]:
    """Held-out Dice against the parent, then the class check (this image and the other checked images)."""
    activated, reason = decide(activate, split.check, start.parent, before, after, config.tolerance)
    if changes or others:
        ok, why = class_verdict(changes, config, allow or activate is True, others)
        if activate == "auto" and activated and not ok:
            activated, reason = False, why
        elif why:
            reason = f"{reason}; {why}"
    return activated, reason


def _provenance(start, image, slices, split, config, log, final_cfg, before, after, activated, reason, changes,
                others, allow) -> ModelCard:
    result_train = TrainResult(start.net, start.card, log, metrics={})
    result_train.metrics = {"check": split.check, "before": before, "after": after,
                            "heldout_slices": [list(s) for s in split.held]}
    mode = "scratch" if start.parent is None else ("finetune-frozen-encoder" if start.tcfg.freeze_encoder else "finetune")
    source = str(image.meta.get("source_path") or "")
    extra = {
        "mode": mode,
        "parent": start.parent,
        "init": start.init,
        "slices": {"train": [list(s) for s in split.train], "heldout": [list(s) for s in split.held],
                   "axis_order": "array (z, y, x)"},
        "source_image": source,
        "finetune_config": {k: v for k, v in config.to_dict().items() if k != "train"},
        "activation": {"activated": activated, "reason": reason},
        "class_check": {"changes": changes, "allowed": bool(allow), "image": source or "the fine-tuned image",
                        "other_images": others,
                        "thresholds": {k: getattr(config, k) for k in ("max_class_shrink", "max_class_growth", "min_class_ml")}},
    }
    card = start.card
    card.provenance = {}
    return finish_card(card, result_train, final_cfg, {"image": source, "corrected_slices": len(slices)}, extra)


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
    check_images=(),
    cancel=None,
    clock=time.perf_counter,
):
    """Step generator behind `finetune` (see there); yields `TrainProgress`, returns `FinetuneResult`.

    ``cancel`` (a predicate, e.g. the Stop button's flag) is checked once more after the last yield, just
    before the new version is renamed into place: a Stop pressed while the package was being written saves
    nothing. ``clock`` is the job's time source (tests inject one).
    """
    job = JobClock(config.train.time_budget_s, clock)
    check_images = list(check_images or ())
    labels, slices = _validate(image, labels, slices, model, from_scratch, name, output, force, activate, check_images)
    start = stages.start_model(image, labels, slices, model, from_scratch, classes, config, name)
    split = stages.split_slices(slices, config, start.parent is not None, labels.spatial_shape, check_slices)

    # ---- the parent segments the image and the other check images: references, and the measured cost of the
    # same passes by the new model after training (the budget bounds the whole job)
    check_classes = start.parent is not None and config.class_check
    parent_seg = None
    if check_classes:
        parent_seg, s = yield from timed_segment(image, start.parent_net, start.parent_card,
                                                 "check: the parent segments the image", job, "segment (parent)")
        job.reserve["segment (new model)"] = s
    elif resegment:
        job.reserve["segment (new model)"] = estimate_segment_s(start.net, start.card, image)
    others_set = yield from parent_pass(check_images, start, config, job)

    t = clock()
    cases = stages.build_cases(image, labels, slices, start.card, split)
    job.timed("prepare", clock() - t)
    log, before, after, split, final_cfg = yield from stages.train_all(start, cases, split, image, slices, config, job)
    held = split.held

    # ---- the new model segments the image (class check, re-segmentation) and the other check images
    new_seg, changes, agreement = None, {}, {}
    if check_classes or resegment:
        new_seg, _ = yield from timed_segment(image, start.net, start.card, "check: the new model segments the image",
                                              job, "segment (new model)")
    if check_classes:
        t = clock()
        classes_ = {v: n for v, n in start.card.class_names().items() if int(v) != 0}
        changes = compare_classes(parent_seg.labels.array, new_seg.labels.array, classes_,
                                  float(image.voxel_volume_mm3) / 1000.0, slices, config,
                                  image=str(image.meta.get("source_path") or "image"), corrected=labels.array)
        if split.check == "none":  # one corrected slice: agreement with the parent is what can be checked
            agreement = agreement_outside(parent_seg.labels.array, new_seg.labels.array, classes_, slices)
        job.timed("compare", clock() - t)
    others = yield from new_pass(others_set, start.net, start.card, config, job)

    allow = allow_class_change
    activated, reason = _decide_activation(activate, split, start, before, after, changes, others, config, allow)
    card = _provenance(start, image, slices, split, config, log, final_cfg, before, after, activated, reason, changes,
                       others, allow)

    # ---- save: staged in a hidden folder, renamed into place only after the last yield (and a last cancel check)
    t = clock()
    card, path, version, activated, reason = yield from stages.save_version(start, card, output, force, activated,
                                                                           reason, log, cancel)
    job.timed("save", clock() - t)
    timing = {**job.timing(), "train_s": round(job.stages.get("train", 0.0), 2), "steps": log.steps,
              "stopped_by": log.stopped_by, "selected_step": log.selected_step,
              "segment_s": round(sum(v for k, v in job.stages.items() if k.startswith(("segment", "check"))), 2)}
    return FinetuneResult(
        model_path=path, version=version, name=start.name, card=card, metrics_before=before,
        metrics_after=after, history=log.history, activated=activated, reason=reason,
        network=start.net, heldout_slices=list(held), check=split.check, class_changes=changes,
        segmentation=new_seg, timing=timing, other_changes=others, check_notes=list(others_set.notes),
        agreement=agreement,
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
    check_images=(),
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
    ``check_images``: other recent images (`Volume`, path, or ``(name, Volume)``) on which the class check
    also compares the parent and the new model (see `check_images`; at most three, within a quarter of the
    budget; ``result.other_changes``, skipped ones in ``result.check_notes``).
    A cancelled run (``cancel`` returning True) writes nothing.
    """
    return run_steps(
        finetune_steps(image, labels, slices, model, from_scratch, classes, config, name, activate, output, force,
                       allow_class_change, resegment, check_images, cancel),
        progress,
        cancel,
    )
