"""Dice + cross-entropy computed only on voxels the user vouched for (an nnU-Net style ignore mask)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_dice_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Loss of ``logits [N, C, ...]`` against ``target [N, ...]`` (channel indices) on ``mask [N, ...]``.

    Voxels where ``mask`` is 0 contribute nothing (neither to cross-entropy nor to Dice). The Dice term is
    a batch soft Dice over the classes present in the masked target (an absent class is not rewarded for
    being absent nor punished by a 0/0), so a sparse slice with only background still trains background.
    """
    mask = mask.to(logits.dtype)
    n_vox = mask.sum()
    if n_vox <= 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits, target, reduction="none")
    loss = ce_weight * (ce * mask).sum() / n_vox
    if dice_weight:
        probs = torch.softmax(logits, dim=1)
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        m = mask.unsqueeze(1)
        dims = (0, *range(2, logits.ndim))
        inter = (probs * onehot * m).sum(dims)
        tsum = (onehot * m).sum(dims)
        psum = (probs * m).sum(dims)
        present = tsum > 0
        dice = (2 * inter + eps) / (tsum + psum + eps)
        loss = loss + dice_weight * (1 - dice[present].mean())
    return loss


def sparse_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, config,
                teacher_probs: torch.Tensor | None = None) -> torch.Tensor:
    """`masked_dice_ce` on the strong labels plus, each normalised on its own, the weak targets' terms.

    ``weights [N, 3, ...]``: the mask of the labelled voxels, the relative weights of the labels interpolated
    between labelled slices and the parent's confident predictions (`data.PatchSampler.sample`). The weak
    terms enter with the shares ``config.weak_weight`` and ``config.parent_weight``: their pull stays the
    same whether a patch holds one labelled plane or three, and whatever the slice spacing. With a fourth
    channel (the distillation weight, `training.sparse`) and the parent's softmax ``teacher_probs`` on the same
    patch, `distill_loss` enters with the share ``config.distill_weight``.
    """
    loss = masked_dice_ce(logits, target, weights[:, 0], config.ce_weight, config.dice_weight)
    if teacher_probs is not None and weights.shape[1] > 3 and getattr(config, "distill_weight", 0) > 0:
        hard = getattr(config, "distill_mode", "soft") == "hard"
        loss = loss + config.distill_weight * distill_loss(logits, teacher_probs, weights[:, 3], hard)
    for ch, share in ((1, config.weak_weight), (2, config.parent_weight)):
        if share > 0 and bool(weights[:, ch].any()):
            loss = loss + share * masked_dice_ce(logits, target, weights[:, ch], config.ce_weight, config.dice_weight)
    return loss


def distill_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, weight: torch.Tensor,
                 hard: bool = False) -> torch.Tensor:
    """KL divergence of the network's softmax from the teacher's (``teacher_probs [N, C, ...]``), per voxel,
    averaged with ``weight [N, ...]`` (0 = not distilled). The parent's uncertain voxels count too, with
    their soft distribution: a fine-tune that turns the parent's 0.3-"spine" pelvic bone into spine is pulled
    back, which hard targets on confident voxels alone do not do. ``hard``: `masked_dice_ce` against the
    teacher's argmax instead, on every weighted voxel: it holds a voxel's *label* where the teacher's decision
    was close, and its per-class Dice term makes a class's stray voxels count (a few hundred pelvic-bone
    voxels turning "spine" are lost in a voxel-averaged KL over a 150 000-voxel patch)."""
    w = weight.to(logits.dtype)
    total = w.sum()
    if total <= 0:
        return logits.sum() * 0.0
    if hard:  # Dice + CE on the teacher's labels: a class's few hundred stray voxels weigh in its Dice term
        return masked_dice_ce(logits, teacher_probs.argmax(1), w)
    logq = torch.log_softmax(logits, dim=1)
    p = teacher_probs.to(logits.dtype)
    kl = (p * (torch.log(p.clamp_min(1e-8)) - logq)).sum(1)
    return (kl * w).sum() / total


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, n_classes: int) -> dict[int, float]:
    """Hard Dice per channel index ``1..n_classes-1`` on the masked voxels.

    Classes absent from both prediction and target in the mask are left out (no 0/0 and no free 1.0).
    """
    from napari_medseg.metrics import dice_per_class as dice

    return dice(pred, target, range(1, n_classes), mask)
