"""The fine-tune job around training: whole-image segmentations, their time estimate, job-level progress.

The time budget of a fine-tune bounds the whole job, so its progress is reported in seconds of that budget
(`job_progress`), and the segmentations the class check needs (`segment_whole`) are the ones the user sees:
the same `segment_steps` pipeline, post-processing included.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from napari_medseg.models.card import ModelCard
from napari_medseg.progress import Progress
from napari_medseg.training.loop import TrainProgress
from napari_medseg.volume import Volume


def job_progress(steps, t_job: float, budget):
    """Re-yield training progress as progress of the whole job: seconds of the budget, step in the message."""
    while True:
        try:
            p = next(steps)
        except StopIteration as stop:
            return stop.value
        if budget is not None and isinstance(p, TrainProgress):
            msg = f"step {p.step} (at most {p.total})" + (f", loss {p.loss:.3f}" if p.loss is not None else "")
            if p.val_dice is not None:
                msg += f", held-out Dice {p.val_dice:.3f}"
            p = dataclasses.replace(p, done=min(int(time.perf_counter() - t_job), int(budget)), total=int(budget),
                                    message=msg, unit="s")
        yield p


def segment_whole(image: Volume, net, card: ModelCard, stage: str, t_job: float, tcfg, budget=None):
    """Whole-image segmentation with ``net`` exactly as `segment` runs it (post-processing included)."""
    from napari_medseg.inference import segment_steps
    from napari_medseg.models.package import LoadedModel

    total = budget if budget is not None else tcfg.time_budget_s
    gen = segment_steps(image, model=LoadedModel(net, card, None))
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if total is not None:
            yield TrainProgress(min(int(time.perf_counter() - t_job), int(total)), int(total), stage,
                                f"{p.stage} {p.done}/{p.total}" if p.total > 1 else p.stage, unit="s")
        else:
            yield dataclasses.replace(p, stage=stage) if isinstance(p, Progress) else p


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
