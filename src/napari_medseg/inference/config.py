"""`InferenceConfig`: the one frozen, validated set of inference settings.

The Segment widget, ``medseg predict`` / the cohort runner and the Python API (`segment`, `segment_steps`)
all build one of these; ``InferenceConfig.preset("fast" | "balanced" | "best")`` gives the same settings
everywhere. The model (which network) and the input (which image, which DICOM series) are not settings of
a run and stay separate arguments.

    cfg = InferenceConfig.preset("balanced").replace(device="cpu")
    result = segment(volume, model, config=cfg)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from napari_medseg.errors import InputError


class ConfigError(InputError):
    """An inference setting has a value it cannot take (the message names the setting)."""


#: where inference may run (``auto``: CUDA when available)
DEVICES = ("auto", "cpu", "cuda")
#: test-time augmentation: off, flips along each axis, or every combination of flips
TTA_MODES = (False, True, "flips", "all")
#: where the uncertainty map is computed: not at all, on the source grid (every voxel of the image), or on
#: the model grid (the network's own voxels, placed exactly over the image; what the Segment widget shows)
UNCERTAINTY_GRIDS = ("none", "source", "model")

#: speed/quality presets: sliding-window overlap and test-time augmentation (flips)
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"overlap": 0.25, "tta": False},
    "balanced": {"overlap": 0.5, "tta": False},
    "best": {"overlap": 0.5, "tta": True},
}
PRESET_HELP = "fast: overlap 0.25 · balanced: overlap 0.5 · best: overlap 0.5 + flip TTA"


@dataclass(frozen=True)
class InferenceConfig:
    """Settings of one segmentation run.

    ``overlap``: sliding-window overlap in [0, 1) (None: the model card's). ``tta``: average over flips
    (False, True/"flips", "all"). ``postprocess``: apply the card's clean-up rules (largest component,
    containment, hole filling). ``sw_batch_size``/``amp``: override the planner (None: planned).
    ``calibrate``: on a CPU, measure the runtimes for this model (None: once, cached). ``probabilities``:
    also return per-class probabilities (and the uncertainty) on the source grid. ``uncertainty``: see
    `UNCERTAINTY_GRIDS`. ``preset_name``: the preset this config was built from (informative only).
    """

    device: str = "auto"
    overlap: float | None = None
    tta: bool | str = False
    postprocess: bool = True
    sw_batch_size: int | None = None
    amp: bool | None = None
    calibrate: bool | None = None
    probabilities: bool = False
    uncertainty: str = "none"
    preset_name: str | None = None

    def __post_init__(self):
        if not isinstance(self.device, str) or not (self.device in DEVICES or self.device == "mps"
                                                    or re.fullmatch(r"cuda:\d+", self.device)):
            raise ConfigError(f"device must be one of {', '.join(DEVICES)} (or cuda:N); got {self.device!r}")
        if self.overlap is not None:
            try:
                ov = float(self.overlap)
            except (TypeError, ValueError):
                raise ConfigError(f"overlap must be a number in [0, 1) or None, got {self.overlap!r}") from None
            if not 0.0 <= ov < 1.0:
                raise ConfigError(f"overlap must be in [0, 1) (a share of the window), got {self.overlap!r}")
            object.__setattr__(self, "overlap", ov)
        if not any(self.tta is m or (isinstance(m, str) and self.tta == m) for m in TTA_MODES):
            raise ConfigError(f"tta must be False, True/'flips' or 'all', got {self.tta!r}")
        if self.sw_batch_size is not None and (isinstance(self.sw_batch_size, bool) or not isinstance(self.sw_batch_size, int)
                                               or self.sw_batch_size < 1):
            raise ConfigError(f"sw_batch_size must be a whole number >= 1 or None, got {self.sw_batch_size!r}")
        for name in ("amp", "calibrate"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"{name} must be True, False or None, got {value!r}")
        for name in ("postprocess", "probabilities"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        unc = self.uncertainty
        if unc is True or unc is False or unc is None:  # the boolean of the old keyword API
            object.__setattr__(self, "uncertainty", "source" if unc else "none")
        elif unc not in UNCERTAINTY_GRIDS:
            raise ConfigError(f"uncertainty must be one of {', '.join(UNCERTAINTY_GRIDS)}, got {unc!r}")
        if self.preset_name is not None and self.preset_name not in PRESETS:
            raise ConfigError(f"preset_name must be one of {', '.join(PRESETS)}, got {self.preset_name!r}")

    # ------------------------------------------------------------------ building
    @classmethod
    def preset(cls, name: str, **overrides) -> "InferenceConfig":
        """The named speed/quality preset (`PRESETS`), with optional overrides (e.g. ``device="cpu"``)."""
        if name not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
        return cls(**{**PRESETS[name], "preset_name": name, **overrides})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def replace(self, **changes) -> "InferenceConfig":
        """A copy with ``changes`` (validated again); unknown names raise `ConfigError`."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise ConfigError(f"unknown inference setting(s) {', '.join(unknown)}; known: {', '.join(self.field_names())}")
        return replace(self, **changes)

    @classmethod
    def from_keywords(cls, config: "InferenceConfig | None" = None, **keywords) -> "InferenceConfig":
        """The compatibility layer of the keyword API: ``config`` (or the defaults) with every keyword that is
        not None applied. ``return_probabilities``/``return_uncertainty`` are the old names of
        ``probabilities``/``uncertainty``."""
        if config is not None and not isinstance(config, cls):
            raise ConfigError(f"config must be an InferenceConfig, got {type(config).__name__}")
        aliases = {"return_probabilities": "probabilities", "return_uncertainty": "uncertainty"}
        changes = {aliases.get(k, k): v for k, v in keywords.items() if v is not None}
        if changes.get("uncertainty") is False and config is not None:
            changes.pop("uncertainty")  # "not asked for" in the old API: keep the config's choice
        if changes.get("probabilities") is False and config is not None:
            changes.pop("probabilities")
        return (config or cls()).replace(**changes)

    # ------------------------------------------------------------------ reading
    @property
    def wants_uncertainty(self) -> bool:
        return self.uncertainty != "none" or self.probabilities

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """``balanced: overlap 0.5, no TTA, device auto``."""
        parts = ["overlap " + ("of the model" if self.overlap is None else f"{self.overlap:g}"),
                 f"TTA {self.tta}" if self.tta else "no TTA", f"device {self.device}"]
        return (f"{self.preset_name}: " if self.preset_name else "") + ", ".join(parts)


def add_arguments(parser, presets: bool = True) -> None:
    """The command-line flags of an `InferenceConfig` (``--device``, ``--preset``, ``--overlap``, ``--tta``),
    with their choices taken from this module (defined once)."""
    parser.add_argument("--device", default="auto", choices=list(DEVICES))
    if presets:
        parser.add_argument("--preset", default=None, choices=list(PRESETS),
                            help=f"speed/quality preset, the same as the Segment widget's ({PRESET_HELP}); "
                                 "--overlap/--tta override it")
        parser.add_argument("--overlap", type=float, default=None,
                            help="sliding-window overlap in [0, 1) (default: the preset's, else the model's)")
        parser.add_argument("--tta", action="store_true", default=None,
                            help="test-time augmentation (average over flips; slower)")


def from_arguments(args) -> InferenceConfig:
    """The `InferenceConfig` of parsed command-line arguments (see `add_arguments`)."""
    preset = getattr(args, "preset", None)
    base = InferenceConfig.preset(preset) if preset else InferenceConfig()
    return InferenceConfig.from_keywords(base, device=getattr(args, "device", None), overlap=getattr(args, "overlap", None),
                                         tta=getattr(args, "tta", None))
