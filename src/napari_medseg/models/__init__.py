"""Models: network construction, model packages, MONAI bundles and the model registry."""

from __future__ import annotations

from pathlib import Path

from napari_medseg.models.card import ClassInfo, ModelCard
from napari_medseg.models.package import LoadedModel, load_model_package, save_model_package
from napari_medseg.models.registry import list_models, models_home, resolve_model

__all__ = [
    "ClassInfo",
    "ModelCard",
    "LoadedModel",
    "load_model",
    "load_model_package",
    "save_model_package",
    "list_models",
    "models_home",
    "resolve_model",
    "build_network",
]


def build_network(card):
    from napari_medseg.models.network import build_network as _build

    return _build(card)


def is_bundle(path) -> bool:
    """True for a MONAI Model Zoo bundle folder or zip (``configs/inference.json``)."""
    import zipfile

    from napari_medseg.models.bundle_config import CONFIG_EXTS

    p = Path(path)
    names = tuple(f"configs/inference{ext}" for ext in CONFIG_EXTS)
    if p.is_dir():
        return any((p / n).is_file() for n in names)
    if p.is_file() and p.suffix.lower() == ".zip" and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as zf:
            return any(n.endswith(names) for n in zf.namelist())
    return False


def load_model(spec=None, lazy: bool = False) -> LoadedModel:
    """Load a model by name, ``name@version``, package path or MONAI bundle path (None: the default model).

    ``lazy``: leave the network unbuilt until first used when an earlier run built it from the same weights and
    card (what `segment` and ``medseg predict`` do: a cached plan on a converted runtime then never imports
    MONAI); a model not seen before is always built and checked here."""
    if isinstance(spec, LoadedModel):
        return spec
    path = resolve_model(spec)
    if is_bundle(path):
        from napari_medseg.models.bundle import load_bundle

        return load_bundle(path, lazy)
    return load_model_package(path, lazy)
