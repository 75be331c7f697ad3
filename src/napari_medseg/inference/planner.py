"""Choose the device, batch size, stitching device and precision *before* the run (not by crashing).

The planner only needs memory figures, so the CUDA decisions are testable on a CPU machine by passing
``mem_info=(free_bytes, total_bytes)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from napari_medseg.errors import InputError

GIB = 1024**3
#: fraction of free device memory the plan may use
SAFETY = 0.75


@dataclass
class Plan:
    device: str
    stitch_device: str
    sw_batch_size: int
    amp_dtype: object  # torch dtype or None
    channels_last: bool
    notes: list[str] = field(default_factory=list)
    runtime: str = "torch"  # or "openvino" / "onnxruntime" (chosen by the measuring planner, inference/calibrate.py)
    precision: str | None = None  # set by the measuring planner when the runtime, not autocast, holds the precision
    threads: int | None = None
    info: dict = field(default_factory=dict)  # the measuring planner's table, timings and cache state
    torch_threads: int | None = None  # torch's threads for this run (fewer on a busy machine); None: leave them
    threads_note: str | None = None  # why this run uses fewer threads than planned

    def describe(self) -> str:
        amp = self.precision or (str(self.amp_dtype).replace("torch.", "") if self.amp_dtype is not None else "float32")
        text = (f"runtime={self.runtime}, device={self.device}, stitching on {self.stitch_device}, "
                f"sw_batch_size={self.sw_batch_size}, precision={amp}, channels_last_3d={self.channels_last}")
        if self.threads:
            text += f", threads={self.threads}"
        if self.threads_note:
            text += f" ({self.threads_note})"
        if self.info.get("ms_per_window") is not None:
            how = "cached plan" if self.info.get("cached") else f"calibrated in {self.info.get('calibration_s', 0):.1f} s"
            if self.info.get("switched"):
                how += f"; {self.info['switched']}"
            text += f"; {self.info['ms_per_window']:.0f} ms/window measured ({how})"
        return text


def resolve_device(device: str | None = "auto") -> str:
    import torch

    d = (device or "auto").lower()
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available here; use --device cpu or auto")
        return d
    if d in ("cpu", "mps"):
        return d
    raise InputError(f"unknown device {device!r}; use auto, cpu or cuda")


def cpu_bf16_supported() -> bool:
    """oneDNN has bf16 kernels on this CPU and the user's ``ONEDNN_MAX_CPU_ISA`` (if any) does not rule them out."""
    import torch

    from napari_medseg.inference.calibrate import isa_allows

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and isa_allows("bfloat16")
    except Exception:  # noqa: BLE001
        return False


def window_bytes(card, amp: bool) -> int:
    """Rough peak activation memory of one ROI window through the network (inference mode)."""
    roi = int(np.prod(card.roi_size))
    chans = card.arch_args.get("channels") or card.arch_args.get("features") or [card.arch_args.get("feature_size", 32)]
    c0 = int(chans[0]) if isinstance(chans, (list, tuple)) else int(chans)
    per_elem = 2 if amp else 4
    # ~ a dozen full-resolution feature maps alive at once (skips, residual branches, decoder)
    return int(roi * max(c0, 8) * 12 * per_elem + roi * (card.in_channels + card.out_channels) * 4 * 2)


def stitch_bytes(model_voxels: int, card) -> int:
    """Output accumulator + weight map + input on the model grid (float32)."""
    return int(model_voxels * (card.out_channels + 1 + card.in_channels) * 4)


def host_available_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * GIB


def plan_run(card, model_voxels: int, device: str = "auto", sw_batch_size: int | None = None,
             mem_info: tuple[int, int] | None = None, amp: bool | None = None, is_module: bool = True) -> Plan:
    """A `Plan` for ``model_voxels`` voxels on the model grid. ``mem_info`` overrides the CUDA figures."""
    import torch

    dev = resolve_device(device) if mem_info is None else ("cuda" if device in ("auto", None) else device)
    notes: list[str] = []
    if dev.startswith("cuda"):
        want = int(sw_batch_size or card.sw_batch_size or 4)
        if mem_info is None:
            free, total = torch.cuda.mem_get_info(torch.device(dev))
        else:
            free, total = mem_info
        use_amp = is_module if amp is None else amp
        amp_dtype = None
        if use_amp:
            bf16 = mem_info is None and torch.cuda.is_bf16_supported()
            amp_dtype = torch.bfloat16 if bf16 else torch.float16
        budget = free * SAFETY
        per_win = window_bytes(card, use_amp)
        stitch = stitch_bytes(model_voxels, card)
        stitch_dev = dev
        if stitch + per_win > budget:
            stitch_dev = "cpu"
            notes.append(f"GPU memory is short ({free / GIB:.1f} GiB free): blending the output on the CPU")
            stitch = 0
        fit = int((budget - stitch) // per_win)
        if fit < 1:
            notes.append(f"one window needs ~{per_win / GIB:.1f} GiB but only {free / GIB:.1f} GiB is free: running on the CPU")
            return _cpu_plan(card, model_voxels, sw_batch_size, amp, is_module, notes)
        batch = max(1, min(want, fit))
        if batch < want:
            notes.append(f"sw_batch_size {want} -> {batch} to fit {free / GIB:.1f} GiB of free GPU memory")
        return Plan(dev, stitch_dev, batch, amp_dtype, channels_last=False, notes=notes)
    return _cpu_plan(card, model_voxels, sw_batch_size, amp, is_module, notes)


#: windows per batch on a CPU unless the caller asks for a number: one 96^3 window already keeps every core
#: busy, and bigger batches only push the activations out of the caches (spleen UNet, bf16 + channels-last,
#: chest CT, 72 windows on 2 cores: 3.6 s at 1, 3.8 s at 2, 4.0-4.2 s at 4 and 8, 5.5 s at 16). The card's
#: ``sw_batch_size`` (MONAI bundles say 4) is a GPU setting and does not apply here.
CPU_BATCH = 1


def cpu_window_bytes(card, amp: bool) -> int:
    """Peak memory per window on the CPU in inference mode (intermediates are freed as they go):
    measured ~21 MB/window for the spleen UNet in bf16 at 96^3; this estimate is ~2x that."""
    roi = int(np.prod(card.roi_size))
    chans = card.arch_args.get("channels") or card.arch_args.get("features") or [card.arch_args.get("feature_size", 32)]
    c0 = int(chans[0]) if isinstance(chans, (list, tuple)) else int(chans)
    return int(roi * max(c0, 8) * (2 if amp else 4) * 1.5 + roi * (card.in_channels + card.out_channels) * 4)


def _cpu_plan(card, model_voxels, sw_batch_size, amp, is_module, notes) -> Plan:
    import torch

    # an explicit request wins; networks otherwise run CPU_BATCH windows; plain callables keep the card's
    want = int(sw_batch_size) if sw_batch_size else CPU_BATCH if is_module else int(card.sw_batch_size or 4)

    use_amp = (is_module and cpu_bf16_supported()) if amp is None else amp
    avail = host_available_bytes()
    per_win = cpu_window_bytes(card, use_amp)
    fit = int((avail * SAFETY - stitch_bytes(model_voxels, card)) // max(per_win, 1))
    batch = max(1, min(want, fit))
    if batch < want:
        notes.append(f"sw_batch_size {want} -> {batch} to fit {avail / GIB:.1f} GiB of available memory")
    return Plan("cpu", "cpu", batch, torch.bfloat16 if use_amp else None, channels_last=bool(is_module), notes=notes)
