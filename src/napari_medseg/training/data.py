"""Training cases in model space and the 3D patch sampler (foreground- and correction-weighted).

A `Case` holds one volume resampled exactly as inference sees it (`to_model_grid` + `intensity` from
:mod:`napari_medseg.inference.preprocess`): image linear, labels and the ignore mask nearest. Tensors are
in the network's ``(i, j, k)`` axis order. Label values become channel indices through the card's class
list (sorted by value), so channel ``n`` is ``card.classes[n-1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from napari_medseg._messages import fmt
from napari_medseg.errors import GeometryError, InputError
from napari_medseg.models.card import ModelCard
from napari_medseg.volume import Volume


@dataclass
class Case:
    name: str
    image: torch.Tensor  # [C, i, j, k] float32, normalised
    target: torch.Tensor  # [i, j, k] int64 channel indices
    mask: torch.Tensor  # [i, j, k] float32, 1 where the loss applies
    thin_axis: int | None = None  # model axis normal to the corrected slices, when they share one
    # weak targets (training/sparse.py): [2 or 3, i, j, k] float32 -- channel 0 the relative weight of labels
    # interpolated between the labelled slices, channel 1 the parent's confident predictions (0/1); ``target``
    # then holds those labels off the mask; channel 2 (optional) the weight of distillation from the parent. None: the loss sees only ``mask``
    weak: torch.Tensor | None = None
    rehearsal: tuple = ()  # centres (i, j, k) of boxes far from the labelled slices with parent targets

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.target.shape)  # type: ignore[return-value]


def value_to_channel(card: ModelCard) -> dict[int, int]:
    """Label value -> output channel (0 = background)."""
    return {int(c.value): n for n, c in enumerate(sorted(card.classes, key=lambda c: c.value), start=1)}


def remap_labels(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Apply ``{source value: target value}``; values not listed become 0 (background)."""
    lut_size = max(int(labels.max(initial=0)), *mapping.keys(), 0) + 1
    lut = np.zeros(lut_size, dtype=np.int64)
    for src, dst in mapping.items():
        if src >= 0:
            lut[int(src)] = int(dst)
    if labels.min(initial=0) < 0:
        raise InputError(f"labels must be non-negative integers, found {labels.min()}")
    return lut[labels.astype(np.int64)]


def model_axis_of_array_axis(volume: Volume, card: ModelCard, array_axis: int) -> int:
    """Model axis (0=i, 1=j, 2=k after reorientation) along which ``array_axis`` of ``volume`` runs."""
    src = 2 - int(array_axis)  # array [k, j, i] -> ITK (i, j, k)
    if card.orientation is None:
        return src
    # Reorienting to a RAS-like code sends the source axis to the physical axis it mostly points along.
    return int(np.argmax(np.abs(volume.direction[:, src])))


def prepare_case(
    image: Volume,
    labels: Volume,
    card: ModelCard,
    mask: np.ndarray | None = None,
    label_map: dict[int, int] | None = None,
    name: str = "",
    pad_to: tuple[int, int, int] | None = None,
) -> Case:
    """Resample an (image, labels[, mask]) triple into model space for training.

    ``mask`` is an array on the labels' grid (``[k, j, i]``): 0 = ignored, >0 = used (fine-tuning passes
    slice ids 1..n and splits them later); None means every voxel counts.
    ``label_map`` maps source label values to card class values before training (others -> 0).
    ``pad_to`` pads the case (mask 0 in the padding) so every side is at least that big.
    """
    from napari_medseg.inference.preprocess import intensity, to_model_grid

    where = name or image.meta.get("source_path") or "image"
    try:  # labels in another axis order are transposed/flipped exactly; any other grid is a GeometryError
        if mask is not None and np.shape(mask) == labels.spatial_shape:
            mask = labels.with_array(np.asarray(mask)).on_grid_of(image, tol=1e-2).array
        labels = labels.on_grid_of(image, tol=1e-2)
    except GeometryError as e:
        raise GeometryError(f"{where}: {e}") from e
    lab = np.asarray(labels.array)
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(np.mod(lab, 1) == 0):
            raise InputError(f"labels for {where} are not integers (dtype {lab.dtype})")
    lab = lab.astype(np.int64)
    if label_map:
        lab = remap_labels(lab, label_map)
    v2c = value_to_channel(card)
    unknown = sorted(set(np.unique(lab).tolist()) - set(v2c) - {0})
    if unknown:
        raise InputError(
            f"labels for {where} contain values {unknown[:10]} that are not classes of model "
            f"'{card.name}' ({sorted(v2c)}); remap them (e.g. --map) or train a new model"
        )
    chan = remap_labels(lab, v2c).astype(np.int16)
    if mask is None:
        mask_arr = np.ones(lab.shape, dtype=np.uint8)
    else:
        mask_arr = np.asarray(mask).astype(np.int16)
        if mask_arr.shape != lab.shape:
            raise InputError(f"ignore mask shape {mask_arr.shape} differs from labels shape {lab.shape} for {where}")

    img_m = to_model_grid(image, card, interpolation="linear")
    lab_m = to_model_grid(labels.with_array(chan), card, interpolation="nearest")
    msk_m = to_model_grid(labels.with_array(mask_arr), card, interpolation="nearest")
    img = np.asarray(intensity(np.asarray(img_m.array, dtype=np.float32), card), dtype=np.float32)
    if img.ndim == 3:
        img = img[None]
    img_t = torch.from_numpy(np.ascontiguousarray(img.transpose(0, 3, 2, 1)))
    tgt_t = torch.from_numpy(np.ascontiguousarray(np.asarray(lab_m.array).transpose(2, 1, 0))).long()
    msk_t = torch.from_numpy(np.ascontiguousarray(np.asarray(msk_m.array).transpose(2, 1, 0))).float()
    if img_t.shape[0] != card.in_channels:
        raise InputError(f"{where} has {img_t.shape[0]} channel(s) but model '{card.name}' expects {card.in_channels}")
    if msk_t.sum() == 0:
        raise InputError(
            f"no labelled voxel of {where} survives resampling to the model grid (spacing {fmt(card.spacing)}); "
            "mark more slices or use a model with a finer spacing"
        )
    case = Case(where, img_t, tgt_t, msk_t)
    return pad_case(case, pad_to) if pad_to else case


def case_patch_size(patch_size, case: Case) -> tuple[int, int, int]:
    """``patch_size`` with its smallest side moved onto the case's slice normal (``thin_axis``)."""
    ps = [int(p) for p in patch_size]
    if case.thin_axis is not None:
        small = int(np.argmin(ps))
        ps[small], ps[case.thin_axis] = ps[case.thin_axis], ps[small]
    return tuple(ps)  # type: ignore[return-value]


def pad_case(case: Case, size) -> Case:
    """Pad at the end of each axis so every side is >= ``size`` (image edge-replicated, mask 0)."""
    pads = [max(0, int(s) - n) for s, n in zip(size, case.shape)]
    if not any(pads):
        return case
    fpad = [p for ax in reversed(pads) for p in (0, ax)]
    img = F.pad(case.image[None], fpad, mode="replicate")[0]
    tgt = F.pad(case.target, fpad, value=0)
    msk = F.pad(case.mask, fpad, value=0.0)
    weak = None if case.weak is None else F.pad(case.weak, fpad, value=0.0)
    return Case(case.name, img, tgt, msk, case.thin_axis, weak, case.rehearsal)


class PatchSampler:
    """Draws augmented 3D patches from a list of cases.

    A share ``fg_fraction`` of patches is centred on a masked foreground voxel of a class drawn uniformly
    (small organs get seen); the rest on any masked voxel (for sparse labels that is a corrected slice, so
    every patch contains one). Patches through corrected slices are thin along the slice normal when the
    case says so (``thin_axis``), which spends compute where the loss is. `sample` returns ``(image, target,
    weights)`` with ``weights [N, 3 or 4, *patch]``: the mask, then the case's weak-target weights
    (`training.sparse`; zeros without them); centres are always drawn on the mask.
    ``config.augment == "few_slice"`` augments with MONAI transforms (`training.augment`).
    """

    def __init__(self, cases: list[Case], config, n_classes: int):
        self.cfg = config
        self.cases = cases = [pad_case(c, self._patch_size(c)) for c in cases]
        self.n_classes = n_classes
        self.n_weak = max([2] + [c.weak.shape[0] for c in cases if c.weak is not None])
        self.rng = np.random.default_rng(config.seed)
        self.augment = None
        if getattr(config, "augment", "basic") == "few_slice":
            from napari_medseg.training.augment import FewSliceAugment

            self.augment = FewSliceAugment(config, seed=config.seed)
        self._index = []
        for case in cases:
            m = case.mask.numpy() > 0
            t = case.target.numpy()
            by_class = {c: np.flatnonzero((t == c) & m) for c in range(1, n_classes)}
            by_class = {c: v for c, v in by_class.items() if v.size}
            self._index.append((np.flatnonzero(m), by_class))

    def _patch_size(self, case: Case) -> tuple[int, int, int]:
        return case_patch_size(self.cfg.patch_size, case)

    def sample(self):
        cfg, rng = self.cfg, self.rng
        # all patches of a batch share one size (per-case thin axes may differ): use the first case drawn
        picks = rng.integers(len(self.cases), size=cfg.batch_size)
        size = self._patch_size(self.cases[picks[0]])
        imgs, tgts, msks = [], [], []
        for ci in picks:
            case = self.cases[ci]
            all_idx, by_class = self._index[ci]
            rehearse = bool(case.rehearsal) and rng.random() < getattr(cfg, "rehearsal_fraction", 0.0)
            if rehearse:  # a box far from the slices, where only the parent's predictions teach (no forgetting)
                center = case.rehearsal[rng.integers(len(case.rehearsal))]
            elif by_class and rng.random() < cfg.fg_fraction:
                cls = list(by_class)[rng.integers(len(by_class))]
                flat = by_class[cls][rng.integers(by_class[cls].size)]
            else:
                flat = all_idx[rng.integers(all_idx.size)]
            if not rehearse:
                center = np.unravel_index(flat, case.shape)
            zoom = 1.0 + rng.uniform(-cfg.scale_jitter, cfg.scale_jitter) if cfg.scale_jitter else 1.0
            crop = [int(min(n, max(1, round(p * zoom)))) for p, n in zip(size, case.shape)]
            # the chosen voxel lands anywhere in the patch (not always at its centre): networks see
            # labelled slices at every depth of a window, as sliding-window inference will show them
            offs = [cs // 2 for cs in crop] if rehearse else [rng.integers(0, cs) for cs in crop]
            lo = [int(np.clip(c - o, 0, n - cs)) for c, o, cs, n in zip(center, offs, crop, case.shape)]
            sl = tuple(slice(a, a + cs) for a, cs in zip(lo, crop))
            weak = case.weak[(slice(None), *sl)] if case.weak is not None else torch.zeros((self.n_weak, *crop))
            img, tgt, msk = case.image[(slice(None), *sl)], case.target[sl], torch.cat([case.mask[sl][None], weak])
            if tuple(crop) != tuple(size):
                img = F.interpolate(img[None], size=size, mode="trilinear", align_corners=False)[0]
                tgt = F.interpolate(tgt[None, None].float(), size=size, mode="nearest")[0, 0].long()
                msk = F.interpolate(msk[None], size=size, mode="nearest")[0]
            if self.augment is not None:
                img, tgt, msk = self.augment(img, tgt, msk, case.thin_axis)
            elif cfg.intensity_jitter:
                j = cfg.intensity_jitter
                img = img * (1 + rng.uniform(-j, j)) + rng.uniform(-j / 2, j / 2)
            for ax in cfg.flip_axes:
                if rng.random() < cfg.flip_prob:
                    img, tgt, msk = img.flip(ax + 1), tgt.flip(ax), msk.flip(ax + 1)
            imgs.append(img)
            tgts.append(tgt)
            msks.append(msk)
        return torch.stack(imgs), torch.stack(tgts), torch.stack(msks)
