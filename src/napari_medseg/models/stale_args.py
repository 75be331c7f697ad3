"""Network arguments that MONAI releases removed or renamed, so that published bundles still load.

Each entry: ``(class name, old argument) -> (new argument or None, MONAI version, why)``. An entry applies only
when the installed MONAI's class no longer accepts the old argument; the caller reports each with a warning.
"""

from __future__ import annotations

import inspect

#: (class, argument) -> (replacement or None when removed, MONAI release, explanation)
STALE_ARGS: dict[tuple[str, str], tuple[str | None, str, str]] = {
    ("SwinUNETR", "img_size"): (None, "1.5", "SwinUNETR works on any input whose size is divisible by 32"),
    ("UNETR", "pos_embed"): ("proj_type", "1.4", "renamed to proj_type"),
    ("ViT", "pos_embed"): ("proj_type", "1.4", "renamed to proj_type"),
    ("UNet", "dimensions"): ("spatial_dims", "1.3", "renamed to spatial_dims"),
    ("BasicUNet", "dimensions"): ("spatial_dims", "1.3", "renamed to spatial_dims"),
}


def apply_stale_args(cls, name: str, args: dict) -> tuple[dict, list[str]]:
    """``args`` with removed arguments dropped and renamed ones renamed (for ``cls``); and the warnings."""
    try:
        params = set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        return args, []
    out, warnings = dict(args), []
    for key in list(args):
        entry = STALE_ARGS.get((name, key))
        if entry is None or key in params:
            continue
        new, release, why = entry
        value = out.pop(key)
        if new is None:
            warnings.append(f"{name} argument {key}={value!r} was removed in MONAI {release} ({why}); it is ignored")
        elif new in out:
            warnings.append(f"{name} argument {key!r} was renamed {new!r} in MONAI {release}; both are given, "
                            f"{new}={out[new]!r} is used")
        else:
            out[new] = value
            warnings.append(f"{name} argument {key!r} was renamed {new!r} in MONAI {release}; {new}={value!r} is used")
    return out, warnings
