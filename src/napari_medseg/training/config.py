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

    def __post_init__(self):
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
            steps=300, time_budget_s=120.0, lr=1e-3, patch_size=(96, 96, 16), batch_size=2, val_every=50
        )
    )
    holdout: int | str = "auto"
    holdout_slices: tuple[tuple[int, int], ...] | None = None  # explicit held-out slices (axis, index)
    cv_folds: int = 1
    cv_budget_fraction: float = 0.45
    tolerance: float = 0.0
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

    def __post_init__(self):
        if self.holdout != "auto" and (not isinstance(self.holdout, int) or self.holdout < 0):
            raise InputError(f"holdout must be 'auto' or a number of slices >= 0, got {self.holdout!r}")
        if not 0 <= self.cv_budget_fraction < 1:
            raise InputError(f"cv_budget_fraction must be in [0, 1), got {self.cv_budget_fraction}")
        if not 0 < self.max_class_shrink <= 1 or not self.max_class_growth > 0 or self.min_class_ml < 0:
            raise InputError(
                f"class check thresholds: max_class_shrink must be in (0, 1], max_class_growth > 0 and "
                f"min_class_ml >= 0 (got {self.max_class_shrink}, {self.max_class_growth}, {self.min_class_ml})"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
