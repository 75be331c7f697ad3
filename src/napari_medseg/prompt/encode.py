"""Network input of the promptable model: image + clicks encoded with MONAI's DeepGrow transform.

The channels are ``[image, positive, negative, previous]`` on the model crop (array order ``[k, j, i]``):

* ``image``: the CT window of the model card (`napari_medseg.inference.preprocess.intensity`);
* ``positive``/``negative``: the clicks as Gaussian blobs, exactly as
  `monai.apps.deepgrow.transforms.AddGuidanceSignald` makes them (one channel per click kind, MONAI's erf
  Gaussian kernel with zero padding, min-max scaled to 0..1). `guidance_signal` calls MONAI's transform;
  `fast_signal` computes the same numbers by placing the separable kernel around each click instead of
  convolving the whole crop (0.5 s -> a few ms for a 64³ crop on this CPU); tests check that the two agree.
* ``previous``: the mask being refined (0 for a new object), thresholded at 0.5.

The network sees ``[N, C, i, j, k]`` (the model-card convention, the transpose of ``[k, j, i]``).
"""

from __future__ import annotations

import json

import numpy as np

CHANNELS = ["image", "positive", "negative", "previous"]


def guidance_json(positive, negative) -> str:
    """DeepGrow guidance ``[[pos...], [neg...]]`` (points ``[k, j, i]``; a missing kind holds one ``[-1, -1, -1]``)."""
    pos = [[int(round(v)) for v in p] for p in positive] or [[-1, -1, -1]]
    neg = [[int(round(v)) for v in p] for p in negative] or [[-1, -1, -1]]
    n = max(len(pos), len(neg))
    pos += [[-1, -1, -1]] * (n - len(pos))
    neg += [[-1, -1, -1]] * (n - len(neg))
    return json.dumps([pos, neg])


def guidance_signal(image: np.ndarray, guidance, sigma: float) -> np.ndarray:
    """``[1 + 2, k, j, i]`` float32: the image channel followed by MONAI's positive and negative guidance signal."""
    from monai.apps.deepgrow.transforms import AddGuidanceSignald

    t = AddGuidanceSignald(image="image", guidance="guidance", sigma=sigma, number_intensity_ch=1)
    return t({"image": np.asarray(image, np.float32)[None], "guidance": guidance})["image"].astype(np.float32, copy=False)


def _kernel(sigma: float) -> np.ndarray:
    from monai.networks.layers.convutils import gaussian_1d

    return gaussian_1d(float(sigma), truncated=4.0, approx="erf").numpy().astype(np.float64)


def fast_signal(shape, points, sigma: float) -> np.ndarray:
    """One guidance channel (``[k, j, i]`` float32) for ``points``, equal to `AddGuidanceSignald`'s."""
    sig = np.zeros(tuple(shape), np.float64)
    pts = {tuple(max(0, min(int(v), n - 1)) for v, n in zip(p[-3:], shape)) for p in points if not np.any(np.asarray(p) < 0)}
    if not pts:
        return sig.astype(np.float32)
    kern = _kernel(sigma)
    r = (len(kern) - 1) // 2
    for p in pts:
        lo = [max(0, c - r) for c in p]
        hi = [min(n, c + r + 1) for c, n in zip(p, shape)]
        ks = [kern[l - c + r:h - c + r] for l, h, c in zip(lo, hi, p)]
        sig[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += ks[0][:, None, None] * ks[1][None, :, None] * ks[2][None, None, :]
    mn, mx = sig.min(), sig.max()
    return ((sig - mn) / (mx - mn) if mx > mn else sig).astype(np.float32)


def input_array(image: np.ndarray, guidance, previous: np.ndarray | None, sigma: float) -> np.ndarray:
    """``[4, k, j, i]`` float32 network input for one crop (``image`` already intensity-transformed)."""
    g = json.loads(guidance) if isinstance(guidance, str) else guidance
    image = np.asarray(image, np.float32)
    x = np.stack([image, fast_signal(image.shape, g[0], sigma), fast_signal(image.shape, g[1], sigma)])
    prev = np.zeros(image.shape, np.float32) if previous is None else (np.asarray(previous) > 0.5).astype(np.float32)
    return np.concatenate([x, prev[None]], axis=0)


def to_network(arrays):
    """Stack ``[C, k, j, i]`` arrays into the network's ``[N, C, i, j, k]`` float32 tensor."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(np.stack(list(arrays)))).float()
    return x.permute(0, 1, 4, 3, 2).contiguous()


def from_network(logits) -> np.ndarray:
    """Network output ``[N, 1, i, j, k]`` logits -> ``[N, k, j, i]`` probabilities (numpy float32)."""
    import torch

    return torch.sigmoid(logits.float())[:, 0].permute(0, 3, 2, 1).contiguous().numpy()
