"""Patch augmentation sized for a few labelled slices, built from MONAI's dictionary transforms.

A handful of slices shows the network one contrast, one noise level and one pose of each organ; the
transforms below vary exactly those (``TrainConfig.augment = "few_slice"``):

* intensity: ``RandScaleIntensityd`` (x(1±j)), ``RandShiftIntensityd`` (±j/2), ``RandAdjustContrastd``
  (gamma 0.8-1.25), ``RandGaussianNoised`` (std up to 0.03 of the normalised range, ~13 HU for the CT window),
  ``RandGaussianSmoothd`` (a softer kernel);
* geometry: ``RandAffined`` -- a small rotation about the slice normal only (``rotate_deg``; tilting a thin
  patch would pull padding into it; the sampler already zooms by ±``scale_jitter``) -- and, with ``elastic_prob``,
  ``Rand3DElasticd``. Labels and loss weights follow with nearest-neighbour sampling and zero padding, so a
  voxel rotated in from outside the patch carries no loss.

Every transform draws from one `numpy.random.RandomState` seeded from ``TrainConfig.seed``, so a run is
reproducible.
"""

from __future__ import annotations

import math

import numpy as np
import torch

KEYS = ("image", "target", "weight")


class FewSliceAugment:
    """Callable ``(image [C, *S], target [*S], weights [W, *S], thin_axis) -> augmented (image, target, weights)``."""

    def __init__(self, config, seed: int | None = None):
        from monai.transforms import (
            Compose,
            RandAdjustContrastd,
            RandGaussianNoised,
            RandGaussianSmoothd,
            RandScaleIntensityd,
            RandShiftIntensityd,
        )

        j = float(config.intensity_jitter)
        self.cfg = config
        self.intensity = Compose([
            RandScaleIntensityd(keys="image", factors=j, prob=0.8),
            RandShiftIntensityd(keys="image", offsets=j / 2, prob=0.8),
            RandAdjustContrastd(keys="image", gamma=(0.8, 1.25), prob=0.3),
            RandGaussianNoised(keys="image", std=0.03, prob=0.3),
            RandGaussianSmoothd(keys="image", sigma_x=(0.3, 0.8), sigma_y=(0.3, 0.8), sigma_z=(0.3, 0.8), prob=0.15),
        ])
        self.rng = np.random.RandomState(config.seed if seed is None else seed)
        self.intensity.set_random_state(state=self.rng)
        self._spatial: dict = {}

    def _spatial_for(self, thin_axis: int | None):
        """One RandAffined (+ Rand3DElasticd) per slice normal: rotation only about that axis."""
        if thin_axis in self._spatial:
            return self._spatial[thin_axis]
        from monai.transforms import Compose, Rand3DElasticd, RandAffined

        cfg = self.cfg
        rad = math.radians(float(cfg.rotate_deg))
        rot = [0.0, 0.0, 0.0]
        for ax in ([thin_axis] if thin_axis is not None else [0, 1, 2]):
            rot[ax] = rad if thin_axis is not None else rad / 3
        modes = ("bilinear", "nearest", "nearest")
        pads = ("border", "zeros", "zeros")
        ts = []
        if rad > 0:
            ts.append(RandAffined(keys=KEYS, prob=0.5, rotate_range=rot, mode=modes, padding_mode=pads))
        if cfg.elastic_prob > 0:
            ts.append(Rand3DElasticd(keys=KEYS, sigma_range=(5, 7), magnitude_range=(20, 60), prob=cfg.elastic_prob,
                                     mode=modes, padding_mode=pads))
        comp = Compose(ts) if ts else None
        if comp is not None:
            comp.set_random_state(state=self.rng)
        self._spatial[thin_axis] = comp
        return comp

    def __call__(self, image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, thin_axis: int | None = None):
        d = {"image": image, "target": target[None].float(), "weight": weight}
        spatial = self._spatial_for(thin_axis)
        if spatial is not None:
            d = spatial(d)
        d = self.intensity(d)
        img = torch.as_tensor(d["image"]).float()
        tgt = torch.as_tensor(d["target"])[0].round().long()
        w = torch.as_tensor(d["weight"]).float()
        return img.as_subclass(torch.Tensor), tgt.as_subclass(torch.Tensor), w.as_subclass(torch.Tensor)
