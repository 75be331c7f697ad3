"""Training and fine-tuning (no Qt): one training loop shared by `train` and `finetune`.

Quick start::

    from napari_medseg.training import finetune
    res = finetune(image, labels, slices=[(0, 12), (0, 40), (0, 61)])   # (array axis, index)
    print(res.summary())
"""

from __future__ import annotations

from napari_medseg._lazy import lazy_getattr

_LAZY = {
    "TrainConfig": "napari_medseg.training.config",
    "FinetuneConfig": "napari_medseg.training.config",
    "TrainProgress": "napari_medseg.training.loop",
    "training_steps": "napari_medseg.training.loop",
    "train": "napari_medseg.training.train",
    "train_steps": "napari_medseg.training.train",
    "TrainResult": "napari_medseg.training.train",
    "unet_card": "napari_medseg.training.train",
    "finetune": "napari_medseg.training.finetune",
    "finetune_steps": "napari_medseg.training.finetune",
    "FinetuneResult": "napari_medseg.training.finetune",
    "parse_slices": "napari_medseg.training.finetune",
    "history": "napari_medseg.training.versions",
    "activate": "napari_medseg.training.versions",
    "active_version": "napari_medseg.training.versions",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
