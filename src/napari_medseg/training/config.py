"""Frozen configuration dataclasses shared by the Python API, the CLI and the fine-tune widget."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from napari_medseg.errors import InputError


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the one training loop (`train` and `finetune` both use it).

    ``patch_size`` is in model axis order ``(i, j, k)``; each side must be a multiple of the network's
    total stride (8 for three stride-2 levels). Training stops at ``steps`` or ``time_budget_s``, whichever
    comes first; the learning-rate schedule follows whichever is further along, so a time-limited run
    still finishes its warm-up and decay.
    """

    steps: int = 500
    time_budget_s: float | None = None
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 0.05
    schedule: str = "cosine"  # or "linear"
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (64, 64, 64)
    fg_fraction: float = 0.67  # share of patches centred on a (class-balanced) foreground voxel
    # augmentation; flips are off by default because they swap left/right organs (kidneys) and
    # move the liver to the wrong side; enable them for symmetric tasks.
    flip_axes: tuple[int, ...] = ()
    flip_prob: float = 0.5
    intensity_jitter: float = 0.1  # contrast x(1±j) and shift ±j/2 on normalised intensities
    scale_jitter: float = 0.1  # isotropic zoom 1±s
    ce_weight: float = 1.0
    dice_weight: float = 1.0
    val_every: int = 50
    seed: int = 0
    num_threads: int | None = None  # torch intra-op threads; None keeps torch's default
    freeze_encoder: bool = False
    # few-slice learning (training/sparse.py, augment.py; docs/training.md "Few slices"):
    # "basic" = the contrast/offset jitter above; "few_slice" = MONAI intensity, noise, in-plane rotation
    # and (with elastic_prob) elastic deformation, sized for a handful of slices
    augment: str = "basic"
    rotate_deg: float = 10.0  # in-plane rotation range (about the slice normal) for "few_slice"
    elastic_prob: float = 0.0  # share of patches deformed elastically ("few_slice"); slow on a CPU
    weak_weight: float = 0.0  # loss share of labels interpolated between labelled slices (0: off)
    weak_margin: float = 2.0  # voxels: interpolated labels this close to an interpolated boundary are ignored
    weak_max_gap: int = 24  # planes: no interpolation across a larger gap between labelled slices
    weak_extend: int = 0  # planes beyond the first/last labelled slice filled by copying it (eroded)
    parent_weight: float = 0.0  # fine-tune: loss share of the parent's confident predictions off the slices
    parent_confidence: float = 0.9  # softmax probability a parent prediction needs to be a target
    # fine-tune: this share of patches is drawn from rehearsal_boxes patch-sized boxes spread over the rest
    # of the image, whose only targets are the parent's confident predictions (what the slices do not show
    # is not forgotten)
    rehearsal_fraction: float = 0.0
    rehearsal_boxes: int = 8
    average_from: float | None = None  # average the weights over the run's last part (0.6: last 40 %)
    # fine-tune: loss share of distillation from the parent (training/sparse.py "distillation"): on every
    # training patch the frozen parent's softmax is a soft target for the voxels off the corrected slices,
    # weighted 0 within distill_near planes of a corrected slice rising to 1 at distill_far planes; with it the
    # rehearsal centres (rehearsal_fraction, rehearsal_boxes) spread over the whole image
    distill_weight: float = 0.0
    # held-out stopping rule (training/schedule.py; only with validation cases): keep the best validated
    # weights; stop after stop_patience validations in a row more than stop_drop below the best (0: never)
    keep_best: bool = False
    stop_patience: int = 0
    stop_drop: float = 0.02
    stop_after: float = 0.5  # validations before this share of the run (steps or time) neither stop nor select
    distill_near: int = 3
    distill_far: int = 16
    distill_mode: str = "soft"  # "soft": KL to the parent's softmax; "hard": cross-entropy to its labels
    # fine-tune without held-out slices (one corrected slice): the result is parent + blend x (trained -
    # parent), a weight-space interpolation (WiSE-FT) that keeps more of what the parent knew where the
    # slice says nothing; None or 1.0: the trained weights. With held-out slices the held-out rule selects.
    blend: float | None = None

    def __post_init__(self):
        if self.augment not in ("basic", "few_slice"):
            raise InputError(f"augment must be 'basic' or 'few_slice', got {self.augment!r}")
        if self.weak_weight < 0 or self.parent_weight < 0 or not 0 <= self.parent_confidence <= 1:
            raise InputError(
                f"weak_weight and parent_weight must be >= 0 and parent_confidence in [0, 1] (got "
                f"{self.weak_weight}, {self.parent_weight}, {self.parent_confidence})"
            )
        if not 0 <= self.rehearsal_fraction <= 1 or self.rehearsal_boxes < 0:
            raise InputError(f"rehearsal_fraction must be in [0, 1] and rehearsal_boxes >= 0, got "
                             f"{self.rehearsal_fraction}, {self.rehearsal_boxes}")
        if self.distill_weight < 0 or self.distill_near < 0 or self.distill_far <= self.distill_near:
            raise InputError(f"distill_weight must be >= 0 and 0 <= distill_near < distill_far (got "
                             f"{self.distill_weight}, {self.distill_near}, {self.distill_far})")
        if not 0 <= self.stop_after < 1:
            raise InputError(f"stop_after must be in [0, 1), got {self.stop_after}")
        if self.distill_mode not in ("soft", "hard"):
            raise InputError(f"distill_mode must be 'soft' or 'hard', got {self.distill_mode!r}")
        if self.blend is not None and not 0 < self.blend <= 1:
            raise InputError(f"blend must be in (0, 1] or None, got {self.blend}")
        if self.average_from is not None and not 0 <= self.average_from < 1:
            raise InputError(f"average_from must be in [0, 1) or None, got {self.average_from}")
        if self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise InputError(f"time budget must be positive, got {self.time_budget_s} s")
        if not self.lr > 0:
            raise InputError(f"learning rate must be positive, got {self.lr}")
        if len(self.patch_size) != 3 or min(self.patch_size) < 8:
            raise InputError(f"patch_size must be 3 sides >= 8 voxels, got {self.patch_size}")
        if self.schedule not in ("cosine", "linear"):
            raise InputError(f"schedule must be 'cosine' or 'linear', got {self.schedule!r}")
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning on corrected slices: the training loop settings plus the safety check.

    ``train`` defaults suit a few corrected slices on a CPU: thin patches through the slices, a two-minute
    budget. ``holdout``: number of corrected slices held out to compare the parent and the new model
    ("auto": a quarter of them when there are 4 or more; with 2-3 slices a check run holds out ``cv_folds``
    slice(s) with ``cv_budget_fraction`` of the budget, then the final model trains on all slices). One fold
    with 45 % measured far closer to the final model than two 20 % folds (correction loop: held-out
    foreground Dice 0.920 -> 0.918 vs 0.762 -> 0.722 for the same +0.06 liver gain on unseen slices). ``tolerance``: how much lower the held-out Dice may be and still count as
    "not worse".

    The whole-image class check (``class_check``) protects what the corrected slices do not show: the parent
    and the new model segment the whole image, and each class's predicted volume *outside the corrected
    slices* is compared. A class the parent found (at least ``min_class_ml``) that shrinks by more than
    ``max_class_shrink`` (0.5 = half) or vanishes, or that grows by more than ``max_class_growth`` (1.0 = doubles),
    or a class that appears (``10 * min_class_ml`` where the parent had none), blocks the automatic
    activation unless the user allows it (``finetune(..., allow_class_change=True)``, ``--allow-class-change``,
    the widget's checkbox). ``time_budget_s`` of ``train`` bounds the whole job: both whole-image
    segmentations, training with its validations, and saving.
    """

    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=300, time_budget_s=120.0, lr=1e-3, patch_size=(96, 96, 16), batch_size=2, val_every=30,
            augment="few_slice", weak_weight=0.5, parent_weight=0.0, average_from=0.6,
            # docs/training.md "Few slices": distillation from the parent on patches all over the image
            distill_weight=1.5, distill_mode="hard", distill_near=3, distill_far=12, rehearsal_fraction=0.5,
            rehearsal_boxes=32, keep_best=True, stop_patience=2,
        )
    )
    holdout: int | str = "auto"
    holdout_slices: tuple[tuple[int, int], ...] | None = None  # explicit held-out slices (axis, index)
    cv_folds: int = 1
    cv_budget_fraction: float = 0.45
    cv_continue: bool = True  # one fold: the final run continues from the trial run's weights
    tolerance: float = 0.0
    # a fine-tune with no held-out slice (one corrected slice): TrainConfig.blend of its run, the share of
    # the trained weights' change kept (WiSE-FT; docs/finetuning.md "Few slices"); None keeps it all. 0.7
    # measured: the worst organ off the slice -0.008 -> -0.005 (90 steps) and -0.006 -> -0.002 (170 steps),
    # for kidney gains 0.05 lower (still +0.26 to +0.41)
    unchecked_blend: float | None = 0.7
    class_check: bool = True
    max_class_shrink: float = 0.5
    max_class_growth: float = 1.0
    min_class_ml: float = 1.0
    # new model from scratch: a small U-Net at the image's own spacing (in-plane at least min_spacing)
    scratch_channels: tuple[int, ...] = (16, 32, 64, 128)
    scratch_strides: tuple[int, ...] = (2, 2, 2)
    scratch_res_units: int = 1
    scratch_lr: float = 3e-3
    min_spacing: float = 1.5
    # a new model keeps each class as its largest connected component at inference (organs); switch off
    # for multi-focal structures (lesions), where it would drop all but one
    scratch_keep_largest: bool = True
    # a new model starts from this model's weights where names and shapes match (training/transfer.py):
    # "default" (the shipped model; skipped with a note when its architecture or intensity differs),
    # "random", or a model name/path (an error when incompatible); scratch_transfer "encoder" or "all"
    # (every tensor but the output head)
    scratch_init: str = "default"
    scratch_transfer: str = "all"
    # with scratch_transfer "all": the output channels of classes the source model names alike (liver, ...)
    # are copied from its head too (training/transfer.copy_head); other classes start newly initialised
    scratch_head: bool = True

    def __post_init__(self):
        if self.scratch_transfer not in ("encoder", "all"):
            raise InputError(f"scratch_transfer must be 'encoder' or 'all', got {self.scratch_transfer!r}")
        if self.holdout != "auto" and (not isinstance(self.holdout, int) or self.holdout < 0):
            raise InputError(f"holdout must be 'auto' or a number of slices >= 0, got {self.holdout!r}")
        if self.unchecked_blend is not None and not 0 < self.unchecked_blend <= 1:
            raise InputError(f"unchecked_blend must be in (0, 1] or None, got {self.unchecked_blend}")
        if not 0 <= self.cv_budget_fraction < 1:
            raise InputError(f"cv_budget_fraction must be in [0, 1), got {self.cv_budget_fraction}")
        if not 0 < self.max_class_shrink <= 1 or not self.max_class_growth > 0 or self.min_class_ml < 0:
            raise InputError(
                f"class check thresholds: max_class_shrink must be in (0, 1], max_class_growth > 0 and "
                f"min_class_ml >= 0 (got {self.max_class_shrink}, {self.max_class_growth}, {self.min_class_ml})"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
