"""The fine-tune job around training: its clock and budget, whole-image segmentations, job-level progress.

The time budget of a fine-tune bounds the whole job. `JobClock` measures the stages that must run *after*
training (the new model's whole-image segmentation, the check images, saving) when their parent-model twins run
before it, reserves that time (scaled by how much slower the machine has become since, judged from the training
steps themselves) and tells the training loop, before every step, how many seconds are left for it
(`JobClock.time_left_for_training`). Progress is reported in seconds of that budget (`job_progress`), with the
step and the measured steps per minute in the message. The segmentations the class check needs
(`segment_whole`) are the ones the user sees: the same `segment_steps` pipeline, post-processing included.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import torch

from napari_medseg.models.card import ModelCard
from napari_medseg.progress import Progress
from napari_medseg.training.loop import TrainProgress
from napari_medseg.volume import Volume

#: share of the budget training always gets (at least one step), even when the measured stages leave less
MIN_TRAIN_SHARE = 0.1
#: seconds set aside for what is not measured: comparing the classes, provenance, writing the package
SAVE_RESERVE_S = 1.0
#: the slow-down factor applied to the reserved stages is kept within these bounds (a machine that got faster
#: still reserves the measured time: finishing a little early is better than overrunning)
SLOWDOWN_RANGE = (1.0, 3.0)


class JobClock:
    """Seconds of a job with an optional budget, and the time reserved for the stages after training."""

    def __init__(self, budget_s: float | None, clock: Callable[[], float] = time.perf_counter):
        self.budget = budget_s
        self.clock = clock
        self.t0 = clock()
        self.stages: dict[str, float] = {}  # measured seconds of each stage that ran
        self.reserve: dict[str, float] = {}  # seconds the stages after training should take (at the start's speed)
        self._steps: list[float] = []  # seconds of training steps without a validation in them
        self._last: tuple[str, float] | None = None  # (stage, elapsed_s) of the last training progress
        self._train_start: float | None = None

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def timed(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + float(seconds)

    # ------------------------------------------------------------------ training steps: speed
    def observe(self, p) -> None:
        """Record a training step's duration from consecutive `TrainProgress` (validations excluded)."""
        if not isinstance(p, TrainProgress) or p.loss is None:
            self._last = None if not isinstance(p, TrainProgress) else self._last
            return
        last = self._last
        if last is not None and last[0] == p.stage and p.val_dice is None and p.elapsed_s > last[1]:
            self._steps.append(p.elapsed_s - last[1])
        self._last = (p.stage, p.elapsed_s)

    def steps_per_min(self, window: int = 10) -> float | None:
        recent = self._steps[-window:]
        return None if not recent else 60.0 / max(statistics.fmean(recent), 1e-9)

    def slowdown(self) -> float:
        """Recent step time / early step time: > 1 when the machine got busier since the stages were measured."""
        # at least 10 steps and a median over the last 8: a load spike over a few steps (another job starting)
        # must not triple the reserve and end a run after 9 of its steps, as it did under a fluctuating load
        if len(self._steps) < 10:
            return 1.0
        early = statistics.median(self._steps[:5])
        recent = statistics.median(self._steps[-8:])
        lo, hi = SLOWDOWN_RANGE
        return min(max(recent / max(early, 1e-9), lo), hi)

    # ------------------------------------------------------------------ the budget
    def reserved_s(self) -> float:
        """Seconds the stages after training will take, from their measured twins and the current speed."""
        return sum(self.reserve.values()) * self.slowdown() + SAVE_RESERVE_S

    def start_training(self) -> None:
        self._train_start = self.clock()

    def time_left_for_training(self) -> float:
        """Seconds training (steps and its final validation) may still use so the whole job fits its budget.

        Training gets at least `MIN_TRAIN_SHARE` of the budget in all (the rest of that share is returned when
        the measured stages leave less); infinite without a budget.
        """
        if self.budget is None:
            return float("inf")
        left = self.budget - self.elapsed() - self.reserved_s()
        if self._train_start is not None:
            floor = MIN_TRAIN_SHARE * self.budget - (self.clock() - self._train_start)
            left = max(left, floor)
        return left

    def training_budget(self) -> float | None:
        """The training loop's own time budget (its learning-rate schedule follows it), from the same rule."""
        if self.budget is None:
            return None
        return max(self.budget - self.elapsed() - self.reserved_s(), MIN_TRAIN_SHARE * self.budget, 1.0)

    def timing(self) -> dict:
        return {"job_s": round(self.elapsed(), 2), "budget_s": self.budget,
                "stages_s": {k: round(v, 2) for k, v in self.stages.items()},
                "reserved_s": {k: round(v, 2) for k, v in self.reserve.items()},
                "slowdown": round(self.slowdown(), 2), "steps_per_min": _round(self.steps_per_min())}


def _round(x):
    return None if x is None else round(x, 1)


def job_progress(steps, clock: JobClock):
    """Re-yield training progress as progress of the whole job: seconds of the budget, step and pace in words."""
    budget = clock.budget
    while True:
        try:
            p = next(steps)
        except StopIteration as stop:
            return stop.value
        if isinstance(p, TrainProgress):
            clock.observe(p)
            if p.loss is not None or p.val_dice is not None:
                msg = f"step {p.step} (at most {p.total})"
                rate = clock.steps_per_min()
                if rate is not None:
                    msg += f" · {rate:.0f} steps/min"
                if p.loss is not None:
                    msg += f", loss {p.loss:.3f}"
                if p.val_dice is not None:
                    msg += f", held-out Dice {p.val_dice:.3f}"
            else:
                msg = p.message
            if budget is not None:
                p = dataclasses.replace(p, done=min(int(clock.elapsed()), int(budget)), total=int(budget),
                                        message=msg, unit="s")
            else:
                p = dataclasses.replace(p, message=msg)
        yield p


def segment_whole(image: Volume, net, card: ModelCard, stage: str, clock: JobClock):
    """Whole-image segmentation with ``net`` as `segment` runs it (post-processing included).

    Both models of a job run the PyTorch reference (``calibrate=False``): a new version would otherwise be
    converted for its own weights (OpenVINO / ONNX Runtime: 18 s on the loaded 2-core CPU, on top of 8 s of
    network), a cost its parent's cached run does not show -- the parent's measured time then predicts the new
    model's, which is what the budget reserves."""
    from napari_medseg.inference import segment_steps
    from napari_medseg.models.package import LoadedModel

    total = clock.budget
    gen = segment_steps(image, model=LoadedModel(net, card, None), calibrate=False)
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if total is not None:
            yield TrainProgress(min(int(clock.elapsed()), int(total)), int(total), stage,
                                f"{p.stage} {p.done}/{p.total}" if p.total > 1 else p.stage, unit="s")
        else:
            yield dataclasses.replace(p, stage=stage) if isinstance(p, Progress) else p


def timed_segment(image: Volume, net, card: ModelCard, stage: str, clock: JobClock, key: str):
    """`segment_whole`, its seconds added to ``clock.stages[key]``; returns ``(result, seconds)``."""
    t = clock.clock()
    res = yield from segment_whole(image, net, card, stage, clock)
    s = clock.clock() - t
    clock.timed(key, s)
    return res, s


def estimate_segment_s(net, card: ModelCard, image: Volume) -> float:
    """Seconds a whole-image segmentation with ``net`` should take: one timed window x the window count."""
    from napari_medseg.inference.preprocess import model_grid
    from napari_medseg.inference.sliding import SlidingWindow

    roi = tuple(int(r) for r in card.roi_size)
    n = SlidingWindow(roi, card.overlap, 1).n_windows(tuple(model_grid(image, card).spatial_shape[::-1]))
    x = torch.zeros((1, card.in_channels, *roi))
    with torch.no_grad():
        t = time.perf_counter()
        net.eval()(x)
        one = time.perf_counter() - t
    return n * one * 1.3 + 1.0
