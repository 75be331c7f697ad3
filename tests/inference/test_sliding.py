"""Sliding-window tiling, blending, padding, progress and out-of-memory fallback, checked exactly."""

from __future__ import annotations

import pytest
import torch

from napari_medseg.errors import CancelledError, InputError
from napari_medseg.inference import sliding
from napari_medseg.inference.sliding import SlidingWindow
from napari_medseg.progress import run_steps


@pytest.fixture
def image():
    torch.manual_seed(0)
    return torch.rand(2, 41, 29, 35)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.8])
@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_identity_and_linear_predictors_are_exact(image, overlap, mode):
    cfg = SlidingWindow((16, 16, 16), overlap, 3, mode)
    out = run_steps(cfg.steps(image, lambda x: x))
    # exact up to float32 rounding of the weighted sums
    torch.testing.assert_close(out, image, rtol=1e-5, atol=1e-5)
    out2 = run_steps(cfg.steps(image, lambda x: torch.cat([2 * x, x - 1], 1)))
    torch.testing.assert_close(out2, torch.cat([2 * image, image - 1]), rtol=1e-5, atol=1e-5)


def test_matches_monai_sliding_window_inference(image):
    from monai.inferers import sliding_window_inference

    def f(x):  # non-linear, so window placement and weights must agree exactly
        return torch.cat([x * x, torch.sin(3 * x)], 1)

    for overlap, mode in [(0.5, "gaussian"), (0.25, "constant")]:
        ref = sliding_window_inference(image[None], (16, 12, 20), 4, f, overlap=overlap, mode=mode)[0]
        ours = run_steps(SlidingWindow((16, 12, 20), overlap, 4, mode).steps(image, f))
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_volume_smaller_than_roi_is_padded_not_crashed():
    small = torch.rand(1, 5, 12, 3)
    seen = []
    out = run_steps(SlidingWindow((16, 16, 16)).steps(small, lambda x: seen.append(tuple(x.shape)) or x * 3))
    assert seen == [(1, 1, 16, 16, 16)]
    torch.testing.assert_close(out, small * 3)


def test_replicate_padding_for_small_volumes():
    small = torch.rand(1, 5, 12, 3)
    seen = []
    out = run_steps(SlidingWindow((16, 16, 16), pad_mode="replicate").steps(small, lambda x: seen.append(x) or x))
    torch.testing.assert_close(out, small)
    win = seen[0][0, 0]  # padded symmetrically with the edge values
    assert torch.equal(win[0, 2:14, 6], small[0, 0, :, 0]) and torch.equal(win[15, 2:14, 6], small[0, 4, :, 0])


def test_progress_per_batch_and_cancellation(image):
    cfg = SlidingWindow((16, 16, 16), 0.5, 2)
    events = []
    run_steps(cfg.steps(image, lambda x: x), progress=events.append)
    total = cfg.n_windows(tuple(image.shape[1:]))
    assert [e.done for e in events] == list(range(0, total + 1, 2)) + ([total] if total % 2 else [])
    assert all(e.total == total for e in events)
    calls = []
    with pytest.raises(CancelledError):
        run_steps(cfg.steps(image, lambda x: calls.append(1) or x), cancel=lambda: len(calls) >= 2)
    assert len(calls) == 2  # stopped between batches


def test_out_of_memory_halves_the_batch(image):
    sizes = []

    def picky(x):
        sizes.append(x.shape[0])
        if x.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x

    cfg = SlidingWindow((16, 16, 16), 0.25, 4)
    out = run_steps(cfg.steps(image, picky))
    torch.testing.assert_close(out, image, rtol=1e-6, atol=1e-6)
    assert sizes[:3] == [4, 2, 1] and set(sizes[3:]) == {1}
    assert any("sw_batch_size=2" in e for e in cfg.events) and any("sw_batch_size=1" in e for e in cfg.events)


def test_out_of_memory_on_gpu_with_one_window_falls_back_to_cpu(image, monkeypatch):
    real = sliding._predict

    def fake_predict(img, chunk, roi, predictor, device, cfg):
        if device == "cuda":
            raise RuntimeError("CUDA error: out of memory")
        return real(img, chunk, roi, predictor, device, cfg)

    monkeypatch.setattr(sliding, "_predict", fake_predict)
    cfg = SlidingWindow((16, 16, 16), 0.25, 1, device="cuda")
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    out = run_steps(cfg.steps(image, lambda x: x + 1))
    torch.testing.assert_close(out, image + 1, rtol=1e-6, atol=1e-6)
    assert any("on the CPU" in e for e in cfg.events)


def test_other_errors_propagate_and_bad_settings_are_quoted(image):
    def broken(x):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_steps(SlidingWindow((16, 16, 16)).steps(image, broken))
    with pytest.raises(InputError, match="1.5"):
        SlidingWindow(overlap=1.5)
    with pytest.raises(InputError, match="expected"):
        run_steps(SlidingWindow((16, 16, 16)).steps(image, lambda x: x[..., :8]))
