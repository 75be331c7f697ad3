"""Class-agnostic training of the promptable model with simulated click sequences (DeepGrow/DeepEdit style).

Each step takes a random structure of a random training case, a crop around it, and simulates a user with
MONAI's DeepGrow transforms: `AddInitialSeedPointd` puts the first click inside the object (deep inside,
drawn with probability ``exp(distance) - 1``), then for ``0..max_clicks`` rounds the network predicts,
`FindDiscrepancyRegionsd` finds the false negatives/positives and `AddRandomGuidanced` adds a click in the
larger error region. The last round's input (image, clicks, previous prediction) is trained against the
structure with a Dice + cross-entropy loss. A share of the samples start from a damaged copy of the true mask
as ``previous`` with one corrective click (refine mode). The loop is a generator that yields progress and
checkpoints, so a script can stop it any time.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from napari_medseg.prompt.encode import from_network, input_array, to_network


@dataclass
class TrainCase:
    """One training volume on the model grid: intensity-transformed image, integer labels, usable targets."""

    name: str
    image: np.ndarray  # float32 [k, j, i]
    labels: np.ndarray  # integer [k, j, i]
    targets: list[int]
    coords: dict = field(default_factory=dict, repr=False)  # label value -> voxel indices (filled lazily)
    #: grid spacing / model spacing: a coarser copy (scale > 1) shows large structures as inference does when
    #: they do not fit the fixed crop at the model spacing (their voxel counts are weighted back by scale³)
    scale: float = 1.0

    def voxels(self, value: int) -> np.ndarray:
        if value not in self.coords:
            self.coords[value] = np.argwhere(self.labels == value)
        return self.coords[value]


@dataclass(frozen=True)
class TrainSettings:
    crop: int = 64  # the fixed inference crop side (PromptSettings.min_side == max_side)
    batch: int = 2
    max_clicks: int = 3  # corrective rounds simulated before the trained round: 0..max_clicks
    refine_prob: float = 0.25
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seconds: float = 1800.0
    max_steps: int = 10**9
    sigma: float = 3.0
    seed: int = 0
    checkpoint_every: int = 50
    #: targets are drawn with probability proportional to voxels ** size_power (0: uniform over structures;
    #: 0.5 gives the few large organs a fair share next to the many small bones and vessels)
    size_power: float = 0.0
    bf16: bool = False  # bfloat16 autocast on the CPU (about 2x faster where AVX-512 BF16 exists)


def _crop(arr, centre, size, fill):
    lo = [int(c) - size // 2 for c in centre]
    out = np.full((size,) * 3, fill, dtype=arr.dtype)
    src = tuple(slice(max(0, l), min(n, l + size)) for l, n in zip(lo, arr.shape))
    dst = tuple(slice(s.start - l, s.stop - l) for s, l in zip(src, lo))
    out[dst] = arr[src]
    return out


def sample_crop(case: TrainCase, value: int, rng: np.random.Generator, size: int):
    """(image, binary mask) crops of ``size``³ around a random voxel of structure ``value``, augmented."""
    vox = case.voxels(value)
    centre = vox[rng.integers(len(vox))] + rng.integers(-size // 4, size // 4 + 1, 3)
    img = _crop(case.image, centre, size, float(case.image.min()))
    lab = _crop(case.labels == value, centre, size, False)
    perm = tuple(rng.permutation(3))
    img, lab = img.transpose(perm), lab.transpose(perm)
    for ax in range(3):
        if rng.random() < 0.5:
            img, lab = np.flip(img, ax), np.flip(lab, ax)
    img = img * np.float32(1 + rng.uniform(-0.1, 0.1)) + np.float32(rng.uniform(-0.05, 0.05))
    return np.ascontiguousarray(img, np.float32), np.ascontiguousarray(lab)


def _damaged(lab: np.ndarray, rng) -> np.ndarray:
    """A plausible wrong mask: the truth dilated, eroded or shifted by 1-3 voxels."""
    from scipy import ndimage

    r = int(rng.integers(1, 4))
    kind = rng.integers(3)
    if kind == 0:
        return ndimage.binary_dilation(lab, iterations=r)
    if kind == 1:
        return ndimage.binary_erosion(lab, iterations=r)
    return np.roll(lab, r * int(rng.choice([-1, 1])), axis=int(rng.integers(3)))


class ClickSimulator:
    """MONAI's DeepGrow click transforms, seeded."""

    def __init__(self, seed: int):
        from monai.apps.deepgrow.transforms import AddInitialSeedPointd, AddRandomGuidanced, FindDiscrepancyRegionsd

        self.seed_point = AddInitialSeedPointd(label="label", guidance="guidance")
        self.seed_point.set_random_state(seed)
        self.discrepancy = FindDiscrepancyRegionsd(label="label", pred="pred", discrepancy="discrepancy")
        self.add_click = AddRandomGuidanced(guidance="guidance", discrepancy="discrepancy", probability="probability")
        self.add_click.set_random_state(seed + 1)

    def first(self, lab: np.ndarray) -> str:
        return self.seed_point({"label": lab[None].astype(np.float32)})["guidance"]

    def correct(self, guidance: str, lab: np.ndarray, pred: np.ndarray) -> str:
        d = self.discrepancy({"label": lab[None].astype(np.float32), "pred": pred[None].astype(np.float32)})
        d["guidance"], d["probability"] = guidance, 1.0
        return self.add_click(d)["guidance"]


def _autocast(st: TrainSettings):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(st.bf16))


def simulate_batch(net, imgs, labs, sim: ClickSimulator, rng, st: TrainSettings):
    """Network input ``[N, 4, i, j, k]`` after a simulated click sequence (the network runs without gradients)."""
    import torch

    prev, guides = [], []
    for lab in labs:
        if rng.random() < st.refine_prob:
            p = _damaged(lab, rng)
            guides.append(sim.correct(json.dumps([[], []]), lab, p))
            prev.append(p)
        else:
            guides.append(sim.first(lab))
            prev.append(None)
    for _ in range(int(rng.integers(0, st.max_clicks + 1))):
        x = to_network([input_array(i, g, p, st.sigma) for i, g, p in zip(imgs, guides, prev)])
        was = net.training
        net.eval()
        with torch.no_grad(), _autocast(st):
            probs = from_network(net(x))
        net.train(was)
        prev = [pr > 0.5 for pr in probs]
        guides = [sim.correct(g, lab, p) for g, lab, p in zip(guides, labs, prev)]
    return to_network([input_array(i, g, p, st.sigma) for i, g, p in zip(imgs, guides, prev)])


def train_steps(net, cases: list[TrainCase], st: TrainSettings, start_step: int = 0, start_seconds: float = 0.0,
                optimizer_state=None):
    """Generator: train ``net`` in place; yields a progress dict after each step (``checkpoint`` True every
    ``checkpoint_every`` steps and at the end). Stops at ``st.seconds`` of training or ``st.max_steps``."""
    import torch
    from monai.losses import DiceCELoss

    pairs = [(c, v) for c in cases for v in c.targets]
    if not pairs:
        raise ValueError("no training targets")
    weights = np.asarray([(float(len(c.voxels(v))) * c.scale ** 3) ** st.size_power for c, v in pairs])
    weights /= weights.sum()
    rng = np.random.default_rng(st.seed + 7919 * start_step)
    sim = ClickSimulator(st.seed + start_step)
    opt = torch.optim.AdamW(net.parameters(), lr=st.lr, weight_decay=st.weight_decay)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    loss_fn = DiceCELoss(sigmoid=True, squared_pred=True)
    step, t0, loss_avg = start_step, time.perf_counter() - start_seconds, None
    net.train()
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= st.seconds or step >= st.max_steps:
            break
        frac = min(1.0, max(elapsed / st.seconds, step / st.max_steps))
        for g in opt.param_groups:
            g["lr"] = st.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac))) * min(1.0, (step + 1) / 20)
        picks = [pairs[i] for i in rng.choice(len(pairs), size=st.batch, p=weights)]
        crops = [sample_crop(c, v, rng, st.crop) for c, v in picks]
        imgs, labs = [c[0] for c in crops], [c[1] for c in crops]
        x = simulate_batch(net, imgs, labs, sim, rng, st)
        y = torch.from_numpy(np.stack(labs).astype(np.float32))[:, None].permute(0, 1, 4, 3, 2)
        with _autocast(st):
            out = net(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss = float(loss.detach())
        loss_avg = loss if loss_avg is None else 0.95 * loss_avg + 0.05 * float(loss)
        done = time.perf_counter() - t0 >= st.seconds or step >= st.max_steps
        yield {"step": step, "loss": loss, "loss_avg": loss_avg, "seconds": time.perf_counter() - t0,
               "targets": [f"{c.name}:{v}" for c, v in picks], "optimizer": opt,
               "checkpoint": done or step % st.checkpoint_every == 0}
