"""The one training loop (used by `train` and `finetune`), written as a step generator.

``training_steps`` yields a `TrainProgress` after every optimiser step (and after each validation) and
returns a `TrainLog`. A caller cancels it by closing the generator (``run_steps`` does this when its cancel
predicate fires, the napari worker does it on quit); the network is left with the weights of the last
finished step and nothing is written to disk here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from napari_medseg.errors import ModelError
from napari_medseg.progress import Progress
from napari_medseg.training.config import TrainConfig
from napari_medseg.training.data import Case, PatchSampler, case_patch_size
from napari_medseg.training.loss import sparse_loss


@dataclass(frozen=True)
class TrainProgress(Progress):
    """Progress of a training run with the figures a live plot needs."""

    step: int = 0
    loss: float | None = None
    val_dice: float | None = None
    elapsed_s: float = 0.0


@dataclass
class TrainLog:
    history: list[dict] = field(default_factory=list)  # {"step", "loss", "val_dice", "time_s"}
    steps: int = 0
    elapsed_s: float = 0.0
    stopped_by: str = "steps"  # or "time"
    initial_val: dict | None = None  # evaluate_cases() result before the first step
    final_val: dict | None = None  # evaluate_cases() result of the final weights
    selected_step: int | None = None  # the step whose weights were kept (held-out stopping rule, schedule.py)
    blend: float | None = None  # the weight blend with the start weights applied at the end (TrainConfig.blend)

    @property
    def val_curve(self) -> list[tuple[int, float, float]]:
        """(step, seconds, mean validation Dice) points."""
        return [(h["step"], h["time_s"], h["val_dice"]) for h in self.history if h.get("val_dice") is not None]


def lr_factor(frac: float, warmup: float, schedule: str) -> float:
    """Warm-up then cosine/linear decay, as a multiple of the base learning rate (floor 2%)."""
    frac = min(max(frac, 0.0), 1.0)
    if warmup > 0 and frac < warmup:
        return max(frac / warmup, 0.02)
    t = (frac - warmup) / max(1e-9, 1 - warmup)
    f = 0.5 * (1 + math.cos(math.pi * t)) if schedule == "cosine" else 1 - t
    return max(f, 0.02)


def _logits_in_box(net, case: Case, roi_size, box, sw_batch_size: int = 2, overlap: float = 0.25) -> torch.Tensor:
    """Logits ``[C, *box]`` of ``net`` on ``case.image[box]`` with the inference engine's own tiler (Gaussian
    blending, edge padding), so training-time predictions see windows as `segment` does."""
    from napari_medseg.inference.sliding import SlidingWindow
    from napari_medseg.progress import run_steps

    img = case.image[(slice(None), *box)]
    device = str(next(net.parameters()).device)
    tiler = SlidingWindow(tuple(roi_size), overlap, sw_batch_size, pad_mode="replicate", device=device)
    return run_steps(tiler.steps(img, net))


def _eval_mode(fn):
    def wrapper(net, *a, **k):
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                return fn(net, *a, **k)
        finally:
            net.train(was_training)

    wrapper.__doc__, wrapper.__name__ = fn.__doc__, fn.__name__
    return wrapper


@_eval_mode
def predict_case(net, case: Case, roi_size, sw_batch_size: int = 2, overlap: float = 0.25, bbox_only: bool = True):
    """Argmax prediction on ``case`` (model space). With ``bbox_only`` only the mask's bounding box (plus
    half a window of context) is predicted and the rest of the returned volume is 0."""
    roi_size = case_patch_size(roi_size, case)
    sl = tuple(slice(0, n) for n in case.shape)
    if bbox_only:
        nz = torch.nonzero(case.mask > 0)
        lo, hi = nz.min(0).values.tolist(), nz.max(0).values.tolist()
        # (r - 1) // 2 of context on each side: a single slice then fits one window along a thin axis
        # (15 <= 16, not 17 > 16), which halves the windows -- and the cost -- of a held-out validation
        sl = tuple(
            slice(max(0, a - (r - 1) // 2), min(n, b + 1 + (r - 1) // 2))
            for a, b, r, n in zip(lo, hi, roi_size, case.shape)
        )
    pred = torch.zeros(case.shape, dtype=torch.long)
    pred[sl] = _logits_in_box(net, case, roi_size, sl, sw_batch_size, overlap).argmax(0)
    return pred


@_eval_mode
def predict_probs(net, case: Case, roi_size, box) -> torch.Tensor:
    """Softmax probabilities ``[C, *box]`` of ``net`` on the ``box`` (a tuple of slices) of ``case``."""
    return torch.softmax(_logits_in_box(net, case, case_patch_size(roi_size, case), box), dim=0)


def evaluate_cases(net, cases: list[Case], n_classes: int, roi_size, class_names: dict[int, str] | None = None) -> dict:
    """Dice per class over all masked voxels of ``cases`` (pooled), and their mean.

    Returns ``{"dice_mean": float | None, "dice_fg": float | None, "dice": {name: float}, "voxels": int}``;
    a class counts in the mean when it is in the target or the prediction on the masked voxels.
    """
    inter = np.zeros(n_classes)
    psum = np.zeros(n_classes)
    tsum = np.zeros(n_classes)
    voxels = 0
    for case in cases:
        pred = predict_case(net, case, roi_size)
        m = case.mask > 0
        p, t = pred[m], case.target[m]
        voxels += int(m.sum())
        for c in range(1, n_classes):
            pc, tc = p == c, t == c
            inter[c] += float((pc & tc).sum())
            psum[c] += float(pc.sum())
            tsum[c] += float(tc.sum())
    names = class_names or {}
    dice = {
        names.get(c, str(c)): float(2 * inter[c] / (psum[c] + tsum[c]))
        for c in range(1, n_classes)
        if psum[c] + tsum[c] > 0
    }
    fg = psum[1:].sum() + tsum[1:].sum()
    return {
        "dice_mean": float(np.mean(list(dice.values()))) if dice else None,
        # foreground Dice pooled over classes (voxel-weighted): stable on a single slice, where a class mean
        # swings with a few stray voxels of a small class; the activation decision uses it
        "dice_fg": float(2 * inter[1:].sum() / fg) if fg > 0 else None,
        "dice": dice,
        "voxels": voxels,
    }


def freeze_encoder(net) -> int:
    """Freeze the down-path of a MONAI `UNet` (its ``model.(1.submodule.)*0`` blocks and the bottom).

    Returns the number of frozen parameter tensors; raises `ModelError` for other architectures.
    """
    frozen = 0
    for name, p in net.named_parameters():
        if not name.startswith("model."):
            raise ModelError(f"freezing the encoder is implemented for MONAI UNet only (parameter {name!r})")
        rest = name[len("model.") :]
        while rest.startswith("1.submodule."):
            rest = rest[len("1.submodule.") :]
        if rest.startswith(("0.", "conv.", "residual.")):
            p.requires_grad_(False)
            frozen += 1
    return frozen


class WeightAverage:
    """Equal-weight average of the trainable weights over the run's last part (stochastic weight averaging).

    ``start``: the fraction of the run (steps or time budget, whichever is further along) from which every
    step's weights enter the average; None switches it off. `apply` writes the average into the network
    (once; later calls do nothing). Instance-norm networks need no statistics update afterwards.
    """

    def __init__(self, net, start: float | None):
        self.net, self.start, self.n, self.avg, self.applied = net, start, 0, None, False

    def update(self, frac: float) -> None:
        if self.start is None or frac < self.start or self.applied:
            return
        params = {k: p.detach() for k, p in self.net.named_parameters() if p.requires_grad}
        if self.avg is None:
            self.avg = {k: p.clone().float() for k, p in params.items()}
        else:
            for k, p in params.items():
                self.avg[k].mul_(self.n / (self.n + 1)).add_(p.float(), alpha=1 / (self.n + 1))
        self.n += 1

    def apply(self) -> None:
        if self.avg is None or self.applied or self.n < 2:
            return
        with torch.no_grad():
            for k, p in self.net.named_parameters():
                if k in self.avg:
                    p.copy_(self.avg[k].to(p.dtype))
        self.applied = True


def blend_weights(net, start: dict, alpha: float) -> None:
    """``start + alpha * (net - start)`` for each of ``net``'s parameters named in ``start``, in place."""
    with torch.no_grad():
        for k, p in net.named_parameters():
            if k in start:
                p.copy_(start[k].to(p.dtype) + alpha * (p - start[k].to(p.dtype)))


def training_steps(
    net: torch.nn.Module,
    cases: list[Case],
    config: TrainConfig,
    n_classes: int,
    val_cases: list[Case] | None = None,
    class_names: dict[int, str] | None = None,
    stage: str = "train",
    initial_validation: bool = True,
    time_left=None,
    parent=None,
):
    """Train ``net`` in place on ``cases``; yields `TrainProgress`, returns `TrainLog`.

    ``initial_validation=False`` skips validating the untrained weights (nothing to compare with, e.g. a
    new model from scratch). ``time_left()`` (optional) gives the seconds the caller still allows for
    training, re-read before every step (a fine-tune job reserves time for what follows training).
    ``parent``: the model whose predictions are weak targets and the distillation teacher (default: a frozen
    copy of ``net`` as it is before the first step -- the parent of a fine-tune).
    """
    from napari_medseg.inference.train_plan import apply_training_plan

    config = apply_training_plan(net, config)  # threads (and a memory-capped batch) from the measuring planner
    torch.manual_seed(config.seed)
    if config.freeze_encoder:
        freeze_encoder(net)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ModelError("no trainable parameters left (is the whole network frozen?)")
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    t0 = time.perf_counter()  # preparing the weak targets counts against the budget
    teacher = None
    if config.parent_weight > 0 or config.distill_weight > 0:
        import copy

        # the untrained weights: the parent of a fine-tune (frozen: it teaches, it does not learn)
        teacher = (parent if parent is not None else copy.deepcopy(net)).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    if config.weak_weight > 0 or teacher is not None:  # weak targets around the labelled slices
        from napari_medseg.training.sparse import sparse_case

        cases = [sparse_case(c, config, teacher, case_patch_size(config.patch_size, c)) for c in cases]
    distill = teacher is not None and config.distill_weight > 0
    sampler = PatchSampler(cases, config, n_classes)
    averager = WeightAverage(net, config.average_from)
    val_cases = list(val_cases or [])
    blend = config.blend if config.blend is not None and config.blend < 1 and not val_cases else None
    start_weights = {k: p.detach().clone() for k, p in net.named_parameters() if p.requires_grad} if blend else None
    roi = config.patch_size
    log = TrainLog()
    budget = config.time_budget_s
    step, losses, step_cost = 0, [], 0.0
    val_cost = [0.0]  # seconds of the last validation: the final one must fit in the budget too

    def out_of_time(elapsed: float) -> bool:  # the next step and the final validation would not fit
        need = step_cost + val_cost[0]
        return (budget is not None and elapsed + need >= budget) or (time_left is not None and time_left() < need)

    def validate():
        tv = time.perf_counter()
        res = evaluate_cases(net, val_cases, n_classes, roi, class_names)
        val_cost[0] = time.perf_counter() - tv
        return res

    from napari_medseg.training.schedule import BestCheckpoint

    best = BestCheckpoint(bool(val_cases) and config.keep_best, config.stop_patience, config.stop_drop,
                          config.stop_after)
    if val_cases and initial_validation:
        res = log.initial_val = validate()
        log.history.append({"step": 0, "loss": None, "val_dice": res["dice_mean"], "time_s": 0.0})
        yield TrainProgress(0, config.steps, stage, "validation", step=0, val_dice=res["dice_mean"])
    net.train()
    while step < config.steps:
        elapsed = time.perf_counter() - t0
        # stop when the next step and the final validation would not fit (after at least one step)
        if step > 0 and out_of_time(elapsed):
            log.stopped_by = "time"
            break
        frac = max(step / config.steps, elapsed / budget if budget else 0.0)
        for g in opt.param_groups:
            g["lr"] = config.lr * lr_factor(frac, config.warmup_frac, config.schedule)
        t_step = time.perf_counter()
        img, tgt, msk = sampler.sample()
        logits = net(img)
        teach = None
        if distill and msk.shape[1] > 3 and bool(msk[:, 3].any()):
            with torch.no_grad():
                teach = torch.softmax(teacher(img), dim=1)
        loss = sparse_loss(logits, tgt, msk, config, teach)
        if not torch.isfinite(loss):
            raise ModelError(
                f"training diverged (loss {loss.item()}) at step {step + 1}; lower the learning rate (now {config.lr})"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        averager.update(frac)
        step += 1
        losses.append(float(loss.detach()))
        step_cost = time.perf_counter() - t_step
        elapsed = time.perf_counter() - t0
        val = None
        last = step >= config.steps or out_of_time(elapsed)
        if last:
            averager.apply()  # the averaged weights are the result: the final validation measures them
        if val_cases and (step % config.val_every == 0 or last):
            res = validate()
            val = res["dice_mean"]
            run_frac = max(step / config.steps, elapsed / budget if budget else 0.0)
            best.update(step, res, net, 1.0 if last else run_frac)
            if last:
                log.final_val = res
            elif best.should_stop:  # the held-out slices stopped supporting further steps
                log.stopped_by = "held-out"
                averager.apply()
                log.final_val = validate() if averager.applied else res
                best.update(step, log.final_val, net, run_frac)
                last = True
            elapsed = time.perf_counter() - t0
        log.history.append({"step": step, "loss": losses[-1], "val_dice": val, "time_s": round(elapsed, 3)})
        if last and log.stopped_by == "held-out":
            yield TrainProgress(config.steps, config.steps, stage, f"step {step}: stopped (held-out Dice fell)",
                                step=step, loss=losses[-1], val_dice=val, elapsed_s=elapsed)
            break
        done = step if budget is None else max(step, min(config.steps, int(config.steps * elapsed / budget)))
        yield TrainProgress(
            min(done, config.steps), config.steps, stage, f"step {step} loss {losses[-1]:.4f}",
            step=step, loss=losses[-1], val_dice=val, elapsed_s=elapsed,
        )
    averager.apply()
    if start_weights is not None and step > 0:
        blend_weights(net, start_weights, blend)
        log.blend = blend
    net.eval()
    log.steps = step
    log.elapsed_s = time.perf_counter() - t0
    if val_cases and log.final_val is None:
        log.final_val = validate()
    if val_cases:
        log.final_val, log.selected_step = best.restore(net, log.final_val, step)
    return log
