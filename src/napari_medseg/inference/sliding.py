"""Sliding-window prediction as a step generator (progress per batch of windows, cancellable between batches).

Any callable mapping ``[N, C, *roi]`` to ``[N, C_out, *roi]`` can be the predictor, so tiling, Gaussian
blending and padding are exactly checkable with ``lambda x: x`` or ``lambda x: 2 * x``: the blended result of
an identity predictor is the input (``sum(x * w) / sum(w)``). Windows are placed as in MONAI's
``sliding_window_inference`` (same scan interval, same Gaussian importance map), inputs smaller than the ROI
are padded symmetrically (zeros as MONAI, or edge values) and cropped back. Out-of-memory on a batch halves the batch size and retries it;
at batch size 1 on CUDA the remaining windows run on the CPU.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field

from napari_medseg.errors import InputError
from napari_medseg.progress import Progress


@dataclass
class SlidingWindow:
    roi_size: tuple[int, int, int] = (96, 96, 96)
    overlap: float = 0.25
    sw_batch_size: int = 4
    mode: str = "gaussian"  # or "constant"
    pad_mode: str = "constant"  # images smaller than the ROI: "constant" (zeros, MONAI) or "replicate" (edges)
    sigma_scale: float = 0.125
    device: str = "cpu"  # where the predictor runs
    stitch_device: str = "cpu"  # where the blended output accumulates
    amp_dtype: object = None  # torch.bfloat16 / torch.float16 / None
    channels_last: bool = False
    events: list[str] = field(default_factory=list)  # fallbacks taken (OOM, ...) for the result's warnings

    def __post_init__(self):
        if not 0 <= float(self.overlap) < 1:
            raise InputError(f"overlap must be in [0, 1), got {self.overlap!r}")
        if int(self.sw_batch_size) < 1:
            raise InputError(f"sw_batch_size must be >= 1, got {self.sw_batch_size!r}")
        if len(tuple(self.roi_size)) != 3 or min(int(r) for r in self.roi_size) < 1:
            raise InputError(f"roi_size must be 3 positive integers, got {self.roi_size!r}")
        if self.mode not in ("gaussian", "constant"):
            raise InputError(f"blend mode must be 'gaussian' or 'constant', got {self.mode!r}")
        if self.pad_mode not in ("constant", "replicate"):
            raise InputError(f"pad mode must be 'constant' or 'replicate', got {self.pad_mode!r}")

    # ------------------------------------------------------------------ geometry
    def window_starts(self, size: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        """Start corner of every window over a (padded) image of ``size`` (MONAI's placement)."""
        per_axis = []
        for n, r in zip(size, self.roi_size):
            r = min(int(r), n)
            step = r if r == n else max(1, int(r * (1 - float(self.overlap))))
            count = -(-(n - r) // step) + 1  # ceil
            per_axis.append(sorted({min(i * step, n - r) for i in range(count)}))
        return list(itertools.product(*per_axis))

    def n_windows(self, spatial: tuple[int, int, int]) -> int:
        return len(self.window_starts(tuple(max(n, int(r)) for n, r in zip(spatial, self.roi_size))))

    def steps(self, image, predictor, n_out: int | None = None):
        """Generator: yields `Progress` per batch, returns the blended output ``[C_out, *spatial]`` (float32)."""
        return sliding_window_steps(image, predictor, self, n_out)


def _importance(roi, mode: str, sigma_scale: float, device):
    from napari_medseg.inference.monai_parity import importance_map

    return importance_map(tuple(roi), mode=mode, sigma_scale=sigma_scale, device=device)


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


def sliding_window_steps(image, predictor, cfg: SlidingWindow, n_out: int | None = None):
    """See `SlidingWindow`. ``image``: tensor ``[C, i, j, k]`` (or ``[1, C, ...]``)."""
    import torch
    import torch.nn.functional as F

    if image.ndim == 5:
        if image.shape[0] != 1:
            raise InputError(f"sliding window takes one image at a time, got a batch of {image.shape[0]}")
        image = image[0]
    if image.ndim != 4:
        raise InputError(f"sliding window input must be [C, i, j, k], got shape {tuple(image.shape)}")
    spatial = tuple(int(s) for s in image.shape[1:])
    roi = tuple(int(r) for r in cfg.roi_size)
    # symmetric zero padding up to the ROI (MONAI's behaviour), cropped away at the end
    pad = []
    for n, r in zip(reversed(spatial), reversed(roi)):
        diff = max(r - n, 0)
        pad += [diff // 2, diff - diff // 2]
    if any(pad):
        if cfg.pad_mode == "replicate":
            image = F.pad(image[None], pad, mode="replicate")[0]
        else:
            image = F.pad(image, pad, mode="constant", value=0.0)
    padded = tuple(int(s) for s in image.shape[1:])
    starts = cfg.window_starts(padded)
    total = len(starts)
    weight = _importance(roi, cfg.mode, cfg.sigma_scale, cfg.stitch_device)
    out = None
    norm = torch.zeros((1, *padded), dtype=torch.float32, device=cfg.stitch_device)
    device, batch = cfg.device, int(cfg.sw_batch_size)
    yield Progress(0, total, "inference", f"{total} windows of {roi} on {device}")
    done = 0
    while done < total:
        chunk = starts[done:done + batch]
        try:
            pred = _predict(image, chunk, roi, predictor, device, cfg)
        except Exception as e:  # noqa: BLE001
            if not _is_oom(e):
                raise
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            if batch > 1:
                batch = max(1, batch // 2)
                cfg.events.append(f"out of memory on {device}: retrying with sw_batch_size={batch}")
                continue
            if device != "cpu":
                cfg.events.append(f"out of memory on {device} with one window: running the remaining windows on the CPU")
                device = "cpu"
                if isinstance(predictor, torch.nn.Module):
                    predictor.to("cpu")
                continue
            raise
        pred = pred.to(cfg.stitch_device, torch.float32)
        if pred.shape[2:] != roi:
            raise InputError(f"the predictor returned windows of {tuple(pred.shape[2:])}, expected {roi}")
        if out is None:
            out = torch.zeros((n_out or pred.shape[1], *padded), dtype=torch.float32, device=cfg.stitch_device)
        for b, (i, j, k) in enumerate(chunk):
            sl = (slice(None), slice(i, i + roi[0]), slice(j, j + roi[1]), slice(k, k + roi[2]))
            out[sl].add_(pred[b] * weight)
            norm[sl].add_(weight)
        done += len(chunk)
        yield Progress(done, total, "inference")
    out.div_(norm)
    if any(pad):
        lo = pad[::-1][1::2]  # before-pads in i, j, k order
        out = out[(slice(None), *(slice(l, l + n) for l, n in zip(lo, spatial)))]
    return out


def _predict(image, chunk, roi, predictor, device, cfg):
    import torch

    win = torch.stack([image[:, i:i + roi[0], j:j + roi[1], k:k + roi[2]] for i, j, k in chunk]).to(device)
    if cfg.channels_last:
        win = win.contiguous(memory_format=torch.channels_last_3d)
    amp = (torch.autocast(device_type=torch.device(device).type, dtype=cfg.amp_dtype)
           if cfg.amp_dtype is not None else contextlib.nullcontext())
    with torch.inference_mode(), amp:
        pred = predictor(win)
    if isinstance(pred, (list, tuple)):  # deep-supervision style outputs: the first is the prediction
        pred = pred[0]
    return pred.float()
