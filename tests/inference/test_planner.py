"""The memory planner decides CUDA batch size / stitching device from memory figures (testable on a CPU)."""

from __future__ import annotations

import pytest
import torch

from napari_medseg.errors import InputError
from napari_medseg.inference.planner import CPU_BATCH, GIB, plan_run, resolve_device, window_bytes
from napari_medseg.models import ModelCard

CARD = ModelCard(name="spleen", arch_args=dict(channels=[16, 32, 64, 128, 256]), roi_size=(96, 96, 96), sw_batch_size=4)


def test_plenty_of_gpu_memory_keeps_everything_on_the_gpu():
    p = plan_run(CARD, 20_000_000, device="cuda", mem_info=(40 * GIB, 80 * GIB))
    assert (p.device, p.stitch_device, p.sw_batch_size) == ("cuda", "cuda", 4)
    assert p.amp_dtype in (torch.float16, torch.bfloat16) and not p.notes


def test_short_gpu_memory_stitches_on_cpu_and_shrinks_the_batch():
    voxels = 300_000_000  # a huge model grid: its accumulator does not fit in 2 GiB
    p = plan_run(CARD, voxels, device="cuda", mem_info=(1 * GIB, 8 * GIB))
    assert p.device == "cuda" and p.stitch_device == "cpu"
    assert 1 <= p.sw_batch_size < 4
    assert any("blending the output on the CPU" in n for n in p.notes)


def test_no_room_for_one_window_runs_on_cpu():
    p = plan_run(CARD, 10_000_000, device="cuda", mem_info=(window_bytes(CARD, True) // 4, 4 * GIB))
    assert p.device == "cpu" and any("running on the CPU" in n for n in p.notes)


def test_cpu_plan_uses_channels_last_for_networks_only():
    p = plan_run(CARD, 1_000_000, device="cpu")
    assert p.channels_last is True
    assert p.sw_batch_size == CPU_BATCH  # the card's (GPU) batch size does not apply on a CPU ...
    assert plan_run(CARD, 1_000_000, device="cpu", sw_batch_size=3).sw_batch_size == 3  # ... an explicit one does
    p = plan_run(CARD, 1_000_000, device="cpu", is_module=False)
    assert p.channels_last is False and p.amp_dtype is None


def test_resolve_device():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")
