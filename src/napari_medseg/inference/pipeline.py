"""The segmentation pipeline: read -> model grid -> intensity -> sliding window -> source grid -> labels.

`segment_steps` is a step generator (progress per window batch; cancellable between batches by
`run_steps`); `segment` runs it. Nothing is written to disk here, so a cancelled run leaves nothing behind.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medseg._messages import fmt
from napari_medseg.errors import InputError, ModelError
from napari_medseg.inference.config import ConfigError, InferenceConfig
from napari_medseg.progress import Progress, run_steps
from napari_medseg.volume import Volume

#: refuse model grids above this many voxels (a spacing mismatch that would exhaust memory)
MAX_MODEL_VOXELS = 400_000_000


def _as_volume(volume_or_path, series=None) -> Volume:
    if isinstance(volume_or_path, Volume):
        return volume_or_path
    if isinstance(volume_or_path, (str, Path)):
        from napari_medseg.io import read_volume

        return read_volume(volume_or_path, series=series)
    if isinstance(volume_or_path, (list, tuple)):  # several images as channels, in the model's channel order
        from napari_medseg.inference.channels import stack_channels

        return stack_channels(volume_or_path, series=series)
    if isinstance(volume_or_path, np.ndarray):
        if volume_or_path.ndim == 2:
            raise InputError(f"a 2D image (shape {volume_or_path.shape}) cannot be segmented by a 3D model; "
                             "pass a 3D volume [k, j, i]")
        vol = Volume(volume_or_path)
        vol.warnings.append("a plain array was given: assuming 1 mm isotropic spacing and an identity orientation")
        return vol
    raise InputError(f"segment() takes a Volume, a path or a 3D numpy array, not {type(volume_or_path).__name__}")


def check_input(volume: Volume, card, model_grid_shape) -> list[str]:
    """Errors for inputs the model cannot handle; warnings for ones it handles poorly."""
    from napari_medseg.inference.preprocess import check_channels

    src = volume._source_suffix()
    if 1 in volume.spatial_shape:
        raise InputError(
            f"the image{src} is 2D (shape {volume.spatial_shape}, array order k, j, i); the model "
            f"{card.name!r} is a 3D network: load the whole series/volume, not a single slice"
        )
    check_channels(volume, card)
    if not card.classes:
        raise ModelError(f"model {card.name!r} declares no classes in its card; it cannot label an image")
    warnings = []
    voxels = int(np.prod(model_grid_shape))
    if voxels > MAX_MODEL_VOXELS:
        raise ModelError(
            f"model {card.name!r} resamples the image{src} (spacing {tuple(round(s, 3) for s in volume.spacing)} mm) "
            f"to its spacing {fmt(card.spacing)} mm: {fmt(tuple(model_grid_shape))} = {voxels:,} voxels is more than this machine "
            "should hold; the image and the model do not fit (check the image's spacing header or use a model "
            "trained at a coarser spacing)"
        )
    if card.spacing is not None:
        img_sp = sorted(volume.spacing)
        coarse = max(img_sp) / min(card.spacing)
        if coarse > 4:
            warnings.append(
                f"the image{src} has {max(img_sp):.2f} mm voxels along one axis but the model {card.name!r} works "
                f"at {fmt(tuple(card.spacing))} mm: it is upsampled {coarse:.1f}x there and results may be poor"
            )
    if not np.issubdtype(volume.array.dtype, np.number) or volume.array.dtype == bool:
        raise InputError(f"the image{src} has dtype {volume.array.dtype}; a numeric intensity image is needed")
    return warnings


def _flip_sets(tta) -> list[tuple[int, ...]]:
    if not tta:
        return [()]
    if tta is True or tta == "flips":
        return [(), (1,), (2,), (3,)]
    if tta == "all":
        return [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
    raise InputError(f"tta must be False, True/'flips' or 'all', got {tta!r}")


@dataclass
class _Run:
    """What the stages of one run share: settings, the input, the model, the plan, timings and warnings."""

    config: InferenceConfig
    volume: Volume
    loaded: Any
    mem_info: Any = None
    plan: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def card(self):
        return self.loaded.card

    @contextmanager
    def timed(self, stage: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = time.perf_counter() - t


def segment_steps(volume_or_path, model=None, device: str | None = None, overlap: float | None = None, tta=None,
                  return_probabilities: bool | None = None, series=None, postprocess: bool | None = None,
                  sw_batch_size: int | None = None, amp: bool | None = None, mem_info=None,
                  return_uncertainty: bool | None = None, calibrate: bool | None = None,
                  config: InferenceConfig | None = None):
    """Step generator of :func:`segment`: yields `Progress`, returns a `LabelResult`.

    The settings are one `InferenceConfig` (``config``); the keywords are the older spelling of its
    fields and override it where given (not None).
    """
    cfg = InferenceConfig.from_keywords(
        config, device=device, overlap=overlap, tta=tta, return_probabilities=return_probabilities,
        postprocess=postprocess, sw_batch_size=sw_batch_size, amp=amp, return_uncertainty=return_uncertainty,
        calibrate=calibrate)
    run = yield from _open(volume_or_path, model, series, cfg, mem_info)
    x, mvol = yield from _preprocess(run)
    with _run_threads(run):
        net = yield from _prepare_network(run, x)
        acc = yield from _infer(run, net, x)
        del net, x
        labels, probs_vol, unc_vol = yield from _invert(run, acc, mvol)
        del acc
        labels = yield from _postprocess(run, labels)
    result = _result(run, labels, probs_vol, unc_vol)
    yield Progress(1, 1, "done", "")
    return result


@contextmanager
def _run_threads(run: _Run):
    """On a CPU, torch's intra-op threads (and a converted runtime's) for the rest of the run: fewer when other
    processes keep cores busy (`calibrate.run_threads`); restored afterwards. With calibration off
    (``MEDSEG_CALIBRATE=0``) the fixed plan keeps torch's own setting."""
    from napari_medseg.inference.calibrate import calibration_enabled, cpu_threads, run_threads

    if run.plan.device != "cpu" or not calibration_enabled(run.config.calibrate):  # off: torch's defaults, as planned
        yield
        return
    import torch

    before = torch.get_num_threads()
    run.plan.torch_threads, run.plan.threads_note = run_threads(min(cpu_threads(), before))
    torch.set_num_threads(run.plan.torch_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- stages
def _open(volume_or_path, model, series, cfg: InferenceConfig, mem_info):
    """Read the image and load the model."""
    from napari_medseg.models import LoadedModel, load_model

    t0 = time.perf_counter()
    yield Progress(0, 1, "read", "reading the image")
    volume = _as_volume(volume_or_path, series)
    read_s = time.perf_counter() - t0
    t = time.perf_counter()
    yield Progress(0, 1, "load", "loading the model")
    loaded = model if isinstance(model, LoadedModel) else load_model(model, lazy=True)
    run = _Run(cfg, volume, loaded, mem_info, timings={"read": read_s, "load_model": time.perf_counter() - t})
    run.warnings = list(volume.warnings) + list(loaded.warnings)
    return run


def _preprocess(run: _Run):
    """Check the input fits, plan the run, resample to the model grid: ``(x [C, i, j, k], model-grid Volume)``."""

    from napari_medseg.inference.planner import plan_run
    from napari_medseg.inference.preprocess import model_grid, model_input

    cfg, card, volume = run.config, run.card, run.volume
    with run.timed("preprocess"):
        grid = model_grid(volume, card)
        run.warnings += check_input(volume, card, grid.spatial_shape)
        run.plan = plan_run(card, int(np.prod(grid.spatial_shape)), cfg.device, cfg.sw_batch_size, mem_info=run.mem_info,
                            amp=cfg.amp, is_module=run.loaded.is_module())
        run.warnings += run.plan.notes
        yield Progress(0, 1, "preprocess", "resampling to the model grid")
        work = volume
        if not np.all(np.isfinite(volume.array)) and np.issubdtype(volume.array.dtype, np.floating):
            run.warnings.append("the image has NaN/inf voxels; they were set to 0 for the model")
            work = volume.with_array(np.nan_to_num(volume.array, nan=0.0, posinf=0.0, neginf=0.0))
        return model_input(work, card, device=run.plan.device)


def _prepare_network(run: _Run, x):
    """BatchNorm folded; on a CPU the measured (cached) plan's runtime: inference/cpu_plan.py."""
    if not run.loaded.is_module():
        return run.loaded.network
    from napari_medseg.inference.cpu_plan import prepare_network

    yield Progress(0, 1, "plan", "preparing the network (on a CPU: the plan measured on a model's first run)")
    cfg = run.config
    with run.timed("plan"):
        net, run.plan = prepare_network(run.loaded, run.card, run.plan, x, sw_batch_size=cfg.sw_batch_size, amp=cfg.amp,
                                        calibrate=cfg.calibrate, passes=len(_flip_sets(cfg.tta)))
    run.warnings += run.plan.info.get("notes", [])
    return net


def _infer(run: _Run, net, x):
    """Sliding-window inference (over each TTA flip): activated probabilities ``[C, i, j, k]`` on the model grid."""
    import torch

    from napari_medseg.inference.multilabel import activate
    from napari_medseg.inference.sliding import SlidingWindow, sliding_window_steps

    card, plan, cfg = run.card, run.plan, run.config
    t = time.perf_counter()
    sw = SlidingWindow(tuple(card.roi_size), card.overlap if cfg.overlap is None else float(cfg.overlap), plan.sw_batch_size,
                       card.blend_mode, getattr(card, "pad_mode", "constant"), device=plan.device,
                       stitch_device=plan.stitch_device, amp_dtype=plan.amp_dtype, channels_last=plan.channels_last)
    full_shape, crop = tuple(x.shape[1:]), None
    if card.crop_foreground:
        x, crop = _crop_foreground(x)
    flips = _flip_sets(cfg.tta)
    per_pass = sw.n_windows(tuple(x.shape[1:]))
    acc = None
    try:
        for n, dims in enumerate(flips):
            xin = torch.flip(x, dims) if dims else x
            out = yield from _offset_progress(sliding_window_steps(xin, net, sw, n_out=card.out_channels),
                                              n * per_pass, per_pass * len(flips))
            if dims:
                out = torch.flip(out, dims)
            if len(flips) > 1:
                out = activate(out, card)
                acc = out if acc is None else acc.add_(out)
            else:
                acc = out
    finally:
        del net
    if len(flips) > 1:
        acc /= len(flips)
    else:  # probabilities are what gets resampled (as MONAI bundles do: Activationsd -> Invertd -> argmax)
        acc = activate(acc, card)
    if crop is not None:  # outside the foreground box: zeros, as MONAI's Invertd pads the cropped prediction
        full = torch.zeros((acc.shape[0], *full_shape), dtype=acc.dtype, device=acc.device)
        full[(slice(None), *crop)] = acc
        acc = full
    run.warnings += sw.events
    run.timings["inference"] = time.perf_counter() - t
    return acc


def _offset_progress(gen, offset: int, total: int):
    """Re-yield a sliding-window pass's progress as part of all passes; return its result."""
    try:
        while True:
            p = next(gen)
            yield Progress(offset + p.done, total, "inference", p.message)
    except StopIteration as stop:
        return stop.value


def _invert(run: _Run, acc, mvol):
    """Model-grid probabilities -> label values on the source grid (+ probabilities/uncertainty as asked)."""
    import torch

    from napari_medseg.inference.multilabel import is_sigmoid, merge_regions
    from napari_medseg.inference.resample import resample

    card, cfg, volume, dev = run.card, run.config, run.volume, run.plan.stitch_device
    t = time.perf_counter()
    yield Progress(0, 1, "invert", "resampling to the source grid")
    out_kji = acc.permute(0, 3, 2, 1)  # [C, k, j, i] on the model grid
    lut = _channel_to_value(card)
    probs_vol = unc_vol = None
    direct = is_sigmoid(card)  # labels_idx holds label values, not channel indices
    if cfg.uncertainty == "model" and not direct:
        from napari_medseg.inference.uncertainty import model_grid_uncertainty

        unc_vol = model_grid_uncertainty(out_kji, mvol, volume)
    if direct:  # sigmoid regions: resample the probabilities, threshold, merge by the card's label rules
        if cfg.wants_uncertainty:
            run.warnings.append("probabilities and uncertainty are not computed for sigmoid (overlapping-region) models")
        labels_idx = resample(out_kji.contiguous(), mvol, volume, mode="linear", device=dev,
                              reduce=lambda r: merge_regions(r, card))[0]
    elif getattr(card, "invert_labels", False) and not cfg.probabilities:  # AsDiscreted before Invertd
        labels_idx = resample(out_kji.argmax(0).to(torch.int16).contiguous(), mvol, volume, mode="nearest", device=dev)
    elif cfg.probabilities:
        p_src = resample(out_kji.contiguous(), mvol, volume, mode="linear", device=dev)
        p_src /= np.maximum(p_src.sum(0, keepdims=True), 1e-8)
        labels_idx = p_src.argmax(0)
        probs_vol = volume.with_array(p_src.astype(np.float32), channel_names=[card.class_names().get(int(v), str(v)) for v in lut])
        if unc_vol is None:
            unc_vol = volume.with_array((1.0 - p_src.max(0)).astype(np.float32), kind="uncertainty (1 - max probability)")
        del p_src
    else:  # exact argmax of the interpolated probabilities, interpolating only where classes meet
        from napari_medseg.inference.argmax_resample import argmax_resample

        labels_idx, unc = argmax_resample(out_kji, mvol, volume, uncertainty=cfg.uncertainty == "source", device=dev)
        if unc is not None:
            unc_vol = volume.with_array(unc, kind="uncertainty (1 - max probability)")
    del out_kji
    if direct:
        labels = labels_idx.astype(np.uint8 if int(labels_idx.max(initial=0)) < 256 else np.uint16)
    else:
        dtype = np.uint8 if max(lut) < 256 else np.uint16
        labels = lut.astype(dtype)[labels_idx] if not np.array_equal(lut, np.arange(len(lut))) else labels_idx.astype(dtype)
    run.timings["invert"] = time.perf_counter() - t
    return labels, probs_vol, unc_vol


def _postprocess(run: _Run, labels):
    """The card's clean-up rules: largest component per class, containment, hole filling."""
    from napari_medseg.inference.postprocess import contained_in, fill_holes, keep_largest

    card = run.card
    with run.timed("postprocess"):
        rules = getattr(card, "contained_in", None) or {}
        if run.config.postprocess and (card.keep_largest or card.fill_holes or rules):
            yield Progress(0, 1, "postprocess", "cleaning up the labels")
            if card.keep_largest:
                labels = keep_largest(labels, card.keep_largest)
            if rules:
                labels = contained_in(labels, rules)
            if card.fill_holes:
                labels = fill_holes(labels)
    return labels


def _result(run: _Run, labels, probs_vol, unc_vol):
    """Class statistics (the one core table) and the `LabelResult`."""
    from napari_medseg.inference.result import LabelResult, class_stats

    card, loaded, volume = run.card, run.loaded, run.volume
    with run.timed("stats"):
        classes = card.class_names()  # with 0: "background", as LabelResult.classes has always been
        class_meta = card.class_table.to_meta({})  # the one class table's stored form (names and colours)
        class_meta["classes"] = classes
        colors = dict(class_meta.get("class_colors", {}))
        image = volume.array if not volume.is_4d else volume.array[0]
        stats = class_stats(labels, image, classes, volume.voxel_volume_mm3)
    model_info = {"name": card.name, "version": card.version, "path": str(loaded.path) if loaded.path else "",
                  "architecture": card.architecture, "sha256": card.weights_sha256}
    lab_vol = volume.with_array(labels, **class_meta, model=model_info, modality="SEG")
    lab_vol.meta["warnings"] = list(run.warnings)
    return LabelResult(labels=lab_vol, classes=classes, colors=colors, stats=stats, probabilities=probs_vol,
                       uncertainty=unc_vol, timings=run.timings, warnings=run.warnings, model=model_info,
                       plan=run.plan.describe(), plan_info=run.plan.info, config=run.config)


def _crop_foreground(x):
    """Crop ``[C, i, j, k]`` to the box of voxels > 0 (MONAI's CropForegroundd default, margin 0)."""
    fg = (x > 0).any(0)
    if not bool(fg.any()):
        return x, None
    box = []
    for ax in range(3):
        nz = fg.any(dim=tuple(a for a in range(3) if a != ax)).nonzero()
        box.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return x[(slice(None), *box)], tuple(box)


def _channel_to_value(card) -> np.ndarray:
    """Label value of each output channel: channel 0 is background, then the classes in value order."""
    values = sorted(int(c.value) for c in card.classes)
    if values and min(values) == 0:
        return np.asarray(values, dtype=np.int64)
    return np.asarray([0] + values, dtype=np.int64)


def segment(volume_or_path, model=None, device: str | None = None, overlap: float | None = None, tta=None,
            return_probabilities: bool | None = None, progress=None, cancel=None, series=None,
            config: InferenceConfig | None = None, **options):
    """Segment a volume (a `Volume`, a path to DICOM/NIfTI/NRRD/MHA, or a 3D array) with a model.

    ``model``: None (the default model), a name (``"default"``, ``"default@v2"``), a model package or MONAI
    bundle path, or a `LoadedModel` (whose ``network`` may be any callable ``[N, C, i, j, k] -> logits``).
    ``config``: the run's `InferenceConfig` (e.g. ``InferenceConfig.preset("balanced")``; default: the
    model card's settings). The keywords are its fields under their older names and override it:
    ``device`` (``"auto"``: CUDA when available, ``"cpu"``, ``"cuda"``), ``overlap`` (sliding-window
    overlap), ``tta`` (average over flips), ``return_probabilities`` (per-class probabilities and an
    uncertainty map on the source grid), and in ``options`` ``return_uncertainty``, ``postprocess``,
    ``sw_batch_size``, ``amp``, ``calibrate``. ``progress(Progress)`` is called per batch of windows;
    ``cancel()`` returning True stops the run (`CancelledError`). Returns a `LabelResult`.
    """
    known = {"postprocess", "sw_batch_size", "amp", "mem_info", "return_uncertainty", "calibrate"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"segment() got unknown setting(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known | set(InferenceConfig.field_names())))}")
    steps = segment_steps(volume_or_path, model=model, device=device, overlap=overlap, tta=tta,
                          return_probabilities=return_probabilities, series=series, config=config, **options)
    return run_steps(steps, progress, cancel)
