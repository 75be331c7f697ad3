"""Checks before training or fine-tuning starts: seconds, not minutes, before a refusal.

`finetune_preflight` puts the labels on the image grid exactly (another axis order is transposed/flipped, never
interpolated; a real mismatch is a `GeometryError` naming what differs), validates the model name, and checks
that the output (``-o`` folder, or ``<models home>/models/<name>``) is neither over nor around an input (image,
labels, parent package) and is writable -- all before any model is trained.
"""

from __future__ import annotations

from pathlib import Path

from napari_medseg._guard import check_output_paths
from napari_medseg.volume import Volume


def _target_name(model, from_scratch: bool, name: str | None) -> str:
    """The model name the new version will be saved under (as `finetune_steps` derives it)."""
    if name:
        return name
    if from_scratch:
        return "custom"
    from napari_medseg.models.package import read_card
    from napari_medseg.models.registry import resolve_model
    from napari_medseg.training import versions

    path = resolve_model(model if model is not None else "default")
    spec = versions.version_spec(path)
    return spec.split("@")[0] if "@" in spec else read_card(path).name


def output_inputs(model, from_scratch: bool) -> list:
    """Input paths a training output must not touch besides the volumes: the parent package, if any."""
    if from_scratch:
        return []
    from napari_medseg.models.registry import resolve_model

    try:
        return [resolve_model(model if model is not None else "default")]
    except Exception:  # noqa: BLE001 - an unknown model is reported by the loader with its own message
        return []


def finetune_preflight(image: Volume, labels: Volume, model=None, from_scratch: bool = False,
                       name: str | None = None, output=None) -> Volume:
    """``labels`` on ``image``'s grid; raises before any work when the outputs or the name are unusable."""
    from napari_medseg.models.registry import model_folder

    labels = labels.on_grid_of(image, tol=1e-2)
    inputs = [image, labels, *output_inputs(model, from_scratch)]
    if output is not None:  # -o DIR is replaced as a whole (with force): it must not hold an input either
        check_output_paths(Path(output), inputs, replaces_folder=True, what="model output")
    else:  # a new version folder beside the existing ones, which it never replaces
        folder = model_folder(_target_name(model, from_scratch, name))
        check_output_paths(folder / ".new-version", inputs, what="model output")
    return labels


def train_preflight(images, labels, output) -> None:
    """`train`: the package ``output`` is neither over nor around any training file, and is writable."""
    check_output_paths(Path(output), [*images, *labels], replaces_folder=True, what="model output")
