"""Train a model package on fully labelled volumes (`train`, `train_steps`, ``medseg train``)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from napari_medseg.errors import InputError
from napari_medseg.models.card import ClassInfo, ModelCard
from napari_medseg.progress import run_steps
from napari_medseg.training.config import TrainConfig
from napari_medseg.training.data import Case, prepare_case
from napari_medseg.training.loop import TrainLog, training_steps
from napari_medseg.volume import Volume


@dataclass
class TrainResult:
    network: Any
    card: ModelCard
    log: TrainLog
    path: Path | None = None
    metrics: dict = field(default_factory=dict)


def unet_card(
    name: str,
    classes: dict[int, str] | Sequence[ClassInfo],
    spacing: tuple[float, float, float] | None = (2.0, 2.0, 2.0),
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 1,
    roi_size: tuple[int, int, int] = (96, 96, 96),
    intensity: dict | None = None,
    orientation: str | None = "RAS",
    in_channels: int = 1,
    description: str = "",
) -> ModelCard:
    """A model card for a MONAI `UNet` (classes ``{value: name}``; colours from the shared table if known)."""
    from napari_medseg.classes import ABDOMEN_CLASSES

    if isinstance(classes, dict):
        infos = []
        for v, n in sorted(classes.items()):
            if int(v) == 0:
                continue
            known = ABDOMEN_CLASSES.get(int(v))
            infos.append(ClassInfo(int(v), str(n), known[1] if known and known[0] == n else None))
    else:
        infos = [c for c in classes if int(c.value) != 0]
    if not infos:
        raise InputError("a model needs at least one foreground class")
    card = ModelCard(
        name=name,
        architecture="UNet",
        arch_args={
            "spatial_dims": 3,
            "channels": list(channels),
            "strides": list(strides),
            "num_res_units": int(num_res_units),
            "norm": "INSTANCE",
        },
        in_channels=in_channels,
        classes=infos,
        orientation=orientation,
        spacing=None if spacing is None else tuple(float(s) for s in spacing),
        roi_size=tuple(int(r) for r in roi_size),
        description=description,
    )
    if intensity is not None:
        card.intensity = dict(intensity)
    return card


def _as_volume(x, what: str) -> Volume:
    if isinstance(x, Volume):
        return x
    from napari_medseg.io import read_volume

    return read_volume(x)


def build_cases(images, labels, card, masks=None, label_map=None, pad_to=None) -> list[Case]:
    images, labels = list(images), list(labels)
    if len(images) != len(labels):
        raise InputError(f"got {len(images)} image(s) but {len(labels)} label volume(s); give them in pairs")
    masks = list(masks) if masks is not None else [None] * len(images)
    cases = []
    for img, lab, msk in zip(images, labels, masks):
        iv, lv = _as_volume(img, "image"), _as_volume(lab, "labels")
        name = str(iv.meta.get("source_path") or (img if not isinstance(img, Volume) else f"volume {len(cases)}"))
        cases.append(prepare_case(iv, lv, card, mask=msk, label_map=label_map, name=name, pad_to=pad_to))
    return cases


def train_steps(
    images,
    labels,
    card: ModelCard,
    config: TrainConfig = TrainConfig(),
    val_images=(),
    val_labels=(),
    label_map: dict[int, int] | None = None,
    network=None,
):
    """Step generator: build the network (or continue ``network``), train it; returns a `TrainResult`."""
    from napari_medseg.models.network import build_network

    cases = build_cases(images, labels, card, label_map=label_map, pad_to=config.patch_size)
    val_cases = build_cases(val_images, val_labels, card, label_map=label_map) if val_images else []
    net = network if network is not None else build_network(card)
    log = yield from training_steps(net, cases, config, card.out_channels, val_cases, class_names(card), stage="train")
    metrics = {}
    if log.final_val is not None:
        metrics = {"heldout_dice": log.final_val["dice"], "heldout_dice_mean": log.final_val["dice_mean"]}
    return TrainResult(net, card, log, metrics=metrics)


def channel_class_names(card: ModelCard) -> dict[int, str]:
    """Network channel index -> class name (the order `value_to_channel` uses; `ClassTable.by_channel`). Not
    to be confused with ``card.class_names()``/`napari_medseg.classes.class_names`, keyed by label value."""
    return card.class_table.by_channel()


class_names = channel_class_names  # the former name, kept for callers


def describe_sources(items) -> list[str]:
    out = []
    for x in items:
        if isinstance(x, Volume):
            out.append(str(x.meta.get("source_path") or x.meta.get("description") or "in-memory volume"))
        else:
            out.append(str(x))
    return out


def finish_card(card: ModelCard, result: TrainResult, config: TrainConfig, data: dict, extra: dict | None = None) -> ModelCard:
    """Copy of ``card`` with training provenance (date, data, hyper-parameters, metrics) filled in."""
    prov = dict(card.provenance)
    prov.update(
        {
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "data": data,
            "hyper_parameters": config.to_dict(),
            "steps": result.log.steps,
            "train_seconds": round(result.log.elapsed_s, 1),
            "metrics": result.metrics,
        }
    )
    prov.update(extra or {})
    return dataclasses.replace(card, provenance=prov)


def train(
    images,
    labels,
    output=None,
    card: ModelCard | None = None,
    classes: dict[int, str] | None = None,
    config: TrainConfig = TrainConfig(),
    label_map: dict[int, int] | None = None,
    val_images=(),
    val_labels=(),
    name: str | None = None,
    force: bool = False,
    progress=None,
    cancel=None,
    **arch,
) -> TrainResult:
    """Train a model on fully labelled ``(image, labels)`` pairs (paths or `Volume`) and save it to ``output``.

    ``card`` gives the architecture and preprocessing; without it a `unet_card` is built from ``classes``
    (default: the label values found, named from ``labels.meta["classes"]``) and ``arch`` keywords
    (``spacing``, ``channels``, ``strides``, ``num_res_units``, ``roi_size``, ``intensity``).
    ``val_images``/``val_labels`` are held-out pairs whose Dice is stored in the card. Nothing is written
    when ``output`` is None; a cancelled run writes nothing.
    """
    from napari_medseg._atomic import check_overwrite
    from napari_medseg.models.package import save_model_package

    images, labels = list(images), list(labels)
    if output is not None:
        from napari_medseg.training.preflight import train_preflight

        train_preflight([*images, *val_images], [*labels, *val_labels], output)  # before any training
        check_overwrite(output, force)
    if card is None:
        if classes is None:
            classes = _classes_from_labels(labels, label_map)
        card = unet_card(name or (Path(output).stem if output else "model"), classes, **arch)
    result = run_steps(
        train_steps(images, labels, card, config, val_images, val_labels, label_map), progress, cancel
    )
    data = {"train": describe_sources(images), "heldout": describe_sources(val_images), "label_map": label_map}
    result.card = finish_card(card, result, config, data)
    if output is not None:
        result.path = save_model_package(result.network, result.card, output, force=force)
    return result


def _classes_from_labels(labels, label_map=None) -> dict[int, str]:
    found: dict[int, str] = {}
    for lab in labels:
        lv = _as_volume(lab, "labels")
        arr = np.asarray(lv.array)
        values = np.unique(arr).tolist()
        if label_map:
            values = sorted({label_map[v] for v in values if v in label_map})
        names = {int(k): str(v) for k, v in (lv.meta.get("classes") or {}).items()}
        for v in values:
            if int(v) != 0:
                found.setdefault(int(v), names.get(int(v), f"class_{int(v)}") if not label_map else f"class_{int(v)}")
    if not found:
        raise InputError("the label volumes contain no foreground voxels; nothing to train")
    return found
