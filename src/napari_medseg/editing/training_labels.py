"""From corrected slices to fine-tuning labels (no Qt): the training-label snapshot and the class check."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from napari_medseg.errors import InputError

AXIS_NAMES = {0: "z", 1: "y", 2: "x"}


def training_labels(labels_vol, data, slices: Iterable[tuple[int, int]]):
    """A snapshot of the labels keeping only the corrected ``slices`` (0 elsewhere), as a Volume on the grid
    of ``labels_vol``.

    Training only sees the corrected slices' voxels anyway; dropping the rest means stale model output or
    classes painted elsewhere (e.g. a class the model does not know, outside the corrected slices)
    cannot get in the way, and painting can go on while the worker runs.
    """
    data = np.asarray(data)
    out = np.zeros_like(data)
    for axis, index in slices:
        sl = [slice(None)] * data.ndim
        sl[int(axis)] = int(index)
        out[tuple(sl)] = data[tuple(sl)]
    return labels_vol.with_array(out)


def values_on_slices(array, slices: Iterable[tuple[int, int]]) -> set[int]:
    """Label values present on the given ``(axis, index)`` slices."""
    present: set[int] = set()
    for a, i in slices:
        present |= {int(v) for v in np.unique(np.take(array, int(i), axis=int(a)))}
    return present


def check_known_classes(array, slices, known: Iterable[int], model_name: str) -> None:
    """Raise `InputError` when the corrected slices hold label values the model does not know."""
    known = {int(v) for v in known} | {0}
    unknown = sorted(values_on_slices(array, slices) - known)
    if unknown:
        raise InputError(
            f"the corrected slices hold label values {unknown} that model '{model_name}' does not know "
            f"({sorted(known - {0})}); tick 'train a new model from scratch' to learn new classes"
        )


def model_class_values(model: str) -> set[int]:
    """The class values of a model (name, name@version or path), from its card."""
    from napari_medseg.models.package import read_card
    from napari_medseg.models.registry import resolve_model

    return {int(c.value) for c in read_card(resolve_model(model)).classes}


def describe_slices(slices) -> str:
    """"N corrected slice(s) — z: 3, 7" (or how to get some)."""
    if not slices:
        return "no corrected slices yet: mark slices as corrected in the 'Correct labels' widget"
    by_axis: dict[int, list[int]] = {}
    for a, i in slices:
        by_axis.setdefault(int(a), []).append(int(i))
    parts = [f"{AXIS_NAMES.get(a, a)}: {', '.join(map(str, sorted(v)))}" for a, v in sorted(by_axis.items())]
    return f"{len(slices)} corrected slice(s) — " + "; ".join(parts)
