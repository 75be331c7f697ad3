"""MONAI DeepEdit bundles (e.g. the Model Zoo's ``spleen_deepedit_annotation``) as prompt models.

The bundle's ``configs/inference.json|yaml`` is read with the project's safe bundle reader
(`napari_medseg.models.bundle_config`: references followed, ``$`` expressions interpreted, never ``eval``;
no bundle code runs, its ``scripts/`` are never imported). What is taken from it:

* ``network_def`` (a class of `monai.networks.nets`, e.g. DynUNet) and the weights its CheckpointLoader names
  (``torch.load(weights_only=True)``);
* ``label_names`` (``{"spleen": 1, "background": 0}``): the click channels, in the config's order, follow the
  image channel(s) (``AddGuidanceFromPointsDeepEditd`` iterates them in that order); output channel ``v`` is
  label value ``v``. Positive clicks go to the first foreground label, negative clicks to ``background``;
* the plain preprocessing (``Orientationd``, ``Spacingd``, ``ScaleIntensityRanged``, ...) as for automatic
  bundles, then DeepEdit's chain: the whole oriented image is resized to ``Resized.spatial_size`` (area),
  click coordinates are scaled by the same factor and truncated (as ``ResizeGuidanceMultipleLabelDeepEditd``),
  and the signal is made by MONAI's own ``AddGuidanceSignalDeepEditd`` (its ``sigma``). The bundle's
  ``OrientationGuidanceMultipleLabelDeepEditd`` (bundle code) only maps clicks onto the oriented image: we
  compute that mapping from the exact geometry instead;
* softmax over the output, resampled (linear) back onto the volume's own grid; a voxel is the object where
  the foreground channel is the largest (the bundle's ``Invertd`` then ``AsDiscreted(argmax)``).

A bundle whose preprocessing has no ``AddGuidanceSignalDeepEditd`` (VISTA3D, SAM-style point prompts) or
a transform we cannot translate is refused with a `PromptModelError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medseg.errors import ModelError
from napari_medseg.prompt.errors import PromptModelError

#: DeepEdit's click transforms, translated here (the rest of the preprocessing goes through the bundle reader)
DEEPEDIT_STEPS = {"OrientationGuidanceMultipleLabelDeepEditd", "AddGuidanceFromPointsDeepEditd", "Resized",
                  "ResizeGuidanceMultipleLabelDeepEditd", "AddGuidanceSignalDeepEditd"}


@dataclass
class DeepEditModel:
    network: Any
    card: Any  # ModelCard: architecture, orientation, spacing, intensity, classes, channel names
    path: Path
    label_names: dict[str, int]  # config order = click channel order
    spatial_size: tuple[int, int, int]  # network input (x, y, z) after Resized
    sigma: float
    number_intensity_ch: int
    foreground: str  # the label positive clicks go to
    warnings: list[str] = field(default_factory=list)


def _fail(where: str, what: str) -> PromptModelError:
    return PromptModelError(f"{where}: {what}")


def _label_names(cfg: dict, res, where: str) -> dict[str, int]:
    names = res.literal(cfg.get("label_names"), "label_names") if "label_names" in cfg else None
    if not isinstance(names, dict) or not names:
        raise _fail(where, "a DeepEdit bundle needs label_names ({name: value}, e.g. {'spleen': 1, 'background': 0})")
    try:
        out = {str(k): int(v) for k, v in names.items()}
    except (TypeError, ValueError) as e:
        raise _fail(where, f"label_names {names!r} must map names to integer values") from e
    if out.get("background") != 0 or len(out) < 2 or sorted(out.values()) != list(range(len(out))):
        raise _fail(where, f"label_names {out} must hold 'background': 0 and foreground labels 1..n")
    return out


def _deepedit_args(items, names, res, where):
    """``(spatial_size (x, y, z), sigma, number_intensity_ch)`` from the DeepEdit steps of the preprocessing."""
    from napari_medseg.models.bundle import _arg

    size, sigma, n_int = None, 3.0, 1
    for i, (t, name) in enumerate(zip(items, names)):
        trail = f"preprocessing[{i}]"
        if name == "Resized":
            s = _arg(t, "spatial_size", res, trail)
            size = tuple(int(v) for v in (s if isinstance(s, (list, tuple)) else [s] * 3))
            mode = str(_arg(t, "mode", res, trail, "area"))
            if mode != "area":
                raise _fail(where, f"{trail}: Resized mode {mode!r} is not supported for DeepEdit (area)")
        elif name == "AddGuidanceSignalDeepEditd":
            sigma = float(_arg(t, "sigma", res, trail, 3))
            n_int = int(_arg(t, "number_intensity_ch", res, trail, 1))
    if size is None or len(size) != 3 or min(size) < 1:
        raise _fail(where, "a DeepEdit bundle resizes the image to a fixed spatial_size (Resized); none found")
    return size, sigma, n_int


def load_deepedit_bundle(path) -> DeepEditModel:
    """A `DeepEditModel` from a MONAI DeepEdit bundle folder or zip (see the module docstring)."""
    from napari_medseg.classes import ClassInfo
    from napari_medseg.models.bundle import _network, _translate_pre, _weights_file, target_name, transforms
    from napari_medseg.models.bundle_config import BundleFiles, Resolver, load_config
    from napari_medseg.models.card import ModelCard
    from napari_medseg.models.network import build_network
    from napari_medseg.models.package import load_state_dict_bytes, load_weights

    path = Path(path)
    files = BundleFiles(path)
    cfg, where = load_config(files, "inference")
    if not cfg:
        raise PromptModelError(f"{path}: not a MONAI bundle (no configs/inference.json or .yaml)")
    res = Resolver(cfg, where, files)
    items = transforms(cfg.get("preprocessing"), res, "preprocessing")
    names = [target_name(t.get("_target_"), f"preprocessing[{i}]", where) for i, t in enumerate(items)]
    if "AddGuidanceSignalDeepEditd" not in names:
        raise _fail(where, "not a DeepEdit bundle (its preprocessing has no AddGuidanceSignalDeepEditd); of the "
                    "click-guided bundles prompt_segment runs DeepEdit ones (VISTA3D point prompts are not supported)")
    labels = _label_names(cfg, res, where)
    size, sigma, n_int = _deepedit_args(items, names, res, where)
    card: dict[str, Any] = {}
    _translate_pre([t for t, n in zip(items, names) if n not in DEEPEDIT_STEPS], res, card)
    inferer = res.shallow(cfg.get("inferer"), "inferer")
    if isinstance(inferer, dict) and target_name(inferer.get("_target_"), "inferer", where) != "SimpleInferer":
        raise _fail(where, f"inferer {inferer.get('_target_')!r}: DeepEdit bundles run the whole resized image "
                    "(SimpleInferer)")
    warnings: list[str] = []
    arch, args = _network(cfg, res, warnings)
    in_ch, out_ch = int(args.get("in_channels", n_int + len(labels))), int(args.get("out_channels", len(labels)))
    if in_ch != n_int + len(labels) or out_ch != len(labels):
        raise _fail(where, f"the network takes {in_ch} channels and gives {out_ch}, but {n_int} image channel(s) and "
                    f"label_names {labels} need {n_int + len(labels)} in and {len(labels)} out")
    foreground = next(n for n, v in labels.items() if v != 0)
    order = sorted(labels, key=labels.get)
    mc = ModelCard(name=path.stem if path.suffix.lower() == ".zip" else path.name, architecture=arch, arch_args=args,
                   in_channels=in_ch, classes=[ClassInfo(labels[n], n, (1.0, 0.85, 0.1, 1.0)) for n in order[1:]],
                   roi_size=size, activation="softmax", channel_names=["image"] * n_int + list(labels),
                   provenance={"source": "MONAI DeepEdit bundle", "bundle_path": str(path)}, **card)
    rel = _weights_file(cfg, res)
    blob = files.read(rel)
    if blob is None:
        raise _fail(str(path), f"the bundle has no {rel} weights (named by its CheckpointLoader)")
    try:
        net = build_network(mc)
        load_weights(net, load_state_dict_bytes(blob, Path(rel).name, files.where(rel)), files.where(rel), arch)
    except ModelError as e:
        raise PromptModelError(str(e)) from e
    net.eval()
    warnings.append(f"{path.name}: MONAI bundle weights carry no SHA-256 in the bundle; not integrity-checked")
    return DeepEditModel(net, mc, path, labels, size, sigma, n_int, foreground, warnings + res.notes)


def _resized_grid(g, size_xyz):
    """The grid MONAI's ``Resize`` (area, align_corners=False) puts ``g``'s extent on: ``size_xyz`` voxels."""
    from napari_medseg.inference.resample import Grid

    n = np.asarray(g.size_ijk, float)
    s = n / np.asarray(size_xyz, float)
    sp = np.asarray(g.spacing, float) * s
    d = np.asarray(g.direction, float)
    origin = np.asarray(g.origin, float) + d @ (np.asarray(g.spacing, float) * (s - 1) / 2)
    return Grid(tuple(int(v) for v in size_xyz[::-1]), tuple(sp), tuple(origin), d)


def _oriented_clicks(points, volume, g) -> list[list[int]]:
    """Clicks ``(k, j, i)`` of ``volume`` as voxel indices ``(x, y, z)`` of the oriented grid ``g``."""
    if not points:
        return []
    phys = volume.index_to_physical(np.asarray([p[::-1] for p in points], float))
    a = np.linalg.inv(g.affine_lps())
    return np.rint(phys @ a[:3, :3].T + a[:3, 3]).astype(int).tolist()


def deepedit_input(volume, positive, negative, model: DeepEditModel):
    """``(network input [C, x, y, z] float32 on the resized grid, the resized Grid, the oriented Grid)``."""
    from monai.apps.deepedit.transforms import AddGuidanceSignalDeepEditd
    from monai.transforms import Resize

    from napari_medseg.inference.preprocess import intensity, model_grid
    from napari_medseg.inference.resample import resample

    g = model_grid(volume, model.card)
    arr = resample(np.asarray(volume.array, np.float32), volume, g, mode="linear", padding="border")
    img = intensity(arr, model.card).transpose(2, 1, 0)[None]  # [1, x, y, z]
    resized = np.asarray(Resize(model.spatial_size, mode="area")(img), np.float32)
    factor = np.asarray(model.spatial_size, float) / np.asarray(img.shape[1:], float)
    scale = lambda pts: np.multiply(pts, factor).astype(int).tolist() if pts else []  # noqa: E731 (as MONAI)
    clicks = {"pos": scale(_oriented_clicks(list(positive), volume, g)),
              "neg": scale(_oriented_clicks(list(negative), volume, g))}
    guidance = {n: clicks["pos"] if n == model.foreground else clicks["neg"] if n == "background" else []
                for n in model.label_names}
    t = AddGuidanceSignalDeepEditd(keys="image", guidance="guidance", sigma=model.sigma,
                                   number_intensity_ch=model.number_intensity_ch)
    x = t({"image": resized, "guidance": guidance})["image"]
    return np.asarray(x, np.float32), _resized_grid(g, model.spatial_size), g


def deepedit_mask(volume, positive, negative, model: DeepEditModel, bf16: bool) -> np.ndarray:
    """Boolean mask on ``volume``'s grid: where the foreground channel wins (softmax, resampled back linearly)."""
    import torch

    from napari_medseg.inference.resample import Grid, resample

    x, g_small, _ = deepedit_input(volume, positive, negative, model)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model.network(torch.from_numpy(x)[None])
    if isinstance(out, (list, tuple)):  # deep supervision heads: the first is the prediction
        out = out[0]
    probs = torch.softmax(out.float(), dim=1)[0].numpy()  # [C, x, y, z]
    fg = probs[model.label_names[model.foreground]]
    others = np.delete(probs, model.label_names[model.foreground], axis=0).max(axis=0)
    dst = Grid.of(volume)
    back = lambda a: resample(np.ascontiguousarray(a.transpose(2, 1, 0)), g_small, dst, mode="linear", padding="border")  # noqa: E731
    return back(fg) >= back(others)
