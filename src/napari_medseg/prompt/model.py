"""The promptable model: a MONAI UNet whose inputs are the image, the clicks and the previous mask.

A prompt model is an ordinary napari-medseg model package (``card.json`` + safetensors + ``integrity.json``)
whose card has ``channel_names == CHANNELS`` (image, positive, negative, previous), one sigmoid output, no
reorientation (``orientation: null``: the crop keeps the image's own axes) and its prompt settings under
``provenance["prompt"]`` (Gaussian ``sigma`` of the click signal in model voxels, crop sizes). The shipped one
lives in ``napari_medseg/models/prompt/``; `scripts/train_prompt_model.py` makes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from napari_medseg.models.card import ClassInfo, ModelCard
from napari_medseg.prompt.encode import CHANNELS
from napari_medseg.prompt.errors import PromptModelError

#: network defaults of the shipped model (MONAI UNet, four down-samplings: a 64³ crop reaches 4³ at the bottom)
UNET_ARGS = {"spatial_dims": 3, "channels": [16, 32, 64, 128, 128], "strides": [2, 2, 2, 2], "num_res_units": 1,
             "norm": "INSTANCE"}
#: crop sides (model voxels) must be multiples of this (the UNet's total stride)
SIDE_MULTIPLE = 16


@dataclass(frozen=True)
class PromptSettings:
    """How the crop and the click signal are made (stored in the card's ``provenance["prompt"]``)."""

    sigma: float = 3.0  # Gaussian sigma of the click signal, model voxels (AddGuidanceSignald)
    min_side: int = 64  # smallest crop side, model voxels (the training crop)
    max_side: int = 64  # largest crop side; a bigger object is seen at a coarser spacing (== min_side: fixed)
    grow_steps: int = 2  # AutoZoom: how many times the crop may grow when the mask touches its border
    threshold: float = 0.5

    @classmethod
    def from_card(cls, card: ModelCard) -> "PromptSettings":
        d = dict((card.provenance or {}).get("prompt") or {})
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        try:
            s = cls(**known)
            ok = s.sigma > 0 and SIDE_MULTIPLE <= s.min_side <= s.max_side <= 512 and 0 <= s.grow_steps <= 8
        except (TypeError, ValueError):
            ok = False
        if not ok or any(int(v) % SIDE_MULTIPLE for v in (s.min_side, s.max_side)):
            raise PromptModelError(f"model {card.name!r}: its prompt settings {d} are invalid (sigma > 0, crop sides "
                                   f"multiples of {SIDE_MULTIPLE} between {SIDE_MULTIPLE} and 512)")
        return s


def prompt_card(name: str = "prompt", arch_args: dict | None = None, spacing=(3.0, 3.0, 3.0),
                settings: PromptSettings | None = None, description: str = "", provenance: dict | None = None) -> ModelCard:
    """A model card for a promptable model (``in_channels`` 4, one sigmoid output)."""
    import dataclasses

    settings = settings or PromptSettings()
    prov = dict(provenance or {})
    prov["prompt"] = dataclasses.asdict(settings)
    side = settings.min_side
    return ModelCard(
        name=name, architecture="UNet", arch_args=dict(arch_args or UNET_ARGS), in_channels=len(CHANNELS),
        classes=[ClassInfo(1, "object", (1.0, 0.85, 0.1, 1.0))], orientation=None, spacing=tuple(spacing),
        intensity={"type": "ct_window", "a_min": -175.0, "a_max": 250.0, "b_min": 0.0, "b_max": 1.0, "clip": True},
        antialias=True, roi_size=(side, side, side), overlap=0.0, sw_batch_size=1, activation="sigmoid",
        threshold=settings.threshold, label_rules=[[0, 1]], channel_names=list(CHANNELS),
        description=description or "Promptable model: clicks (and the previous mask) in, a binary mask of the "
        "clicked structure out", provenance=prov,
    )


def builtin_prompt_path() -> Path:
    return Path(__file__).resolve().parents[1] / "models" / "prompt"


_CACHE: dict = {}


def check_prompt_card(card: ModelCard, source: str = "") -> PromptSettings:
    """`PromptModelError` unless ``card`` describes a promptable model; its `PromptSettings`."""
    where = f" ({source})" if source else ""
    if list(card.channel_names) != list(CHANNELS) or card.in_channels != len(CHANNELS):
        raise PromptModelError(
            f"model {card.name!r}{where} is not a promptable model: its inputs are {card.channel_names or card.in_channels} "
            f"but a prompt model takes {CHANNELS}. Use the shipped prompt model (model=None) or one made by "
            "scripts/train_prompt_model.py")
    if card.activation != "sigmoid" or card.out_channels != 1:
        raise PromptModelError(f"model {card.name!r}{where}: a prompt model has one sigmoid output, this one has "
                               f"{card.out_channels} {card.activation} output(s)")
    if card.spacing is None:
        raise PromptModelError(f"model {card.name!r}{where}: a prompt model needs a spacing in its card")
    return PromptSettings.from_card(card)


def load_prompt_model(spec=None):
    """The prompt model as a `LoadedModel` (None: the shipped one, loaded once and cached; or a path/LoadedModel),
    or a `DeepEditModel` for the path of a MONAI DeepEdit bundle (folder or zip)."""
    from napari_medseg.models import is_bundle
    from napari_medseg.models.package import LoadedModel, load_model_package
    from napari_medseg.prompt.deepedit import DeepEditModel, load_deepedit_bundle

    if isinstance(spec, DeepEditModel):
        return spec
    if isinstance(spec, LoadedModel):
        check_prompt_card(spec.card, str(spec.path))
        return spec
    path = Path(spec) if spec is not None else builtin_prompt_path()
    if not path.exists():
        raise PromptModelError(f"{path}: no such prompt model package" + (
            " (the package was installed without its shipped prompt weights; reinstall napari-medseg)" if spec is None else ""))
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _CACHE:
        if is_bundle(path):  # a MONAI bundle: DeepEdit ones are prompt models (prompt/deepedit.py)
            loaded = load_deepedit_bundle(path)
        else:
            loaded = load_model_package(path)
            check_prompt_card(loaded.card, str(path))
        _CACHE.clear()
        _CACHE[key] = loaded
    return _CACHE[key]
