"""Build a network from a model card: only classes of `monai.networks.nets`, only literal arguments."""

from __future__ import annotations

import inspect
import math
from typing import Any

from napari_medseg.errors import ModelError

_LITERALS = (str, int, float, bool, type(None))


def check_literal(value: Any, where: str) -> Any:
    """Return ``value`` if it is built from JSON literals only (no "$" expressions); else `ModelError`."""
    if isinstance(value, str) and value.startswith("$"):
        raise ModelError(f"{where}: {value!r} is a code expression; napari-medseg never evaluates code in model configs")
    if isinstance(value, _LITERALS):
        return value
    if isinstance(value, (list, tuple)):
        return [check_literal(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): check_literal(v, f"{where}.{k}") for k, v in value.items()}
    raise ModelError(f"{where}: {type(value).__name__} is not a literal value")


#: seconds this process spent importing MONAI (its ``__init__`` loads every submodule), 0 until it has
_MONAI_IMPORT_S = [0.0]


def monai_import_seconds() -> float:
    return _MONAI_IMPORT_S[0]


def network_class(name: str):
    """The class ``monai.networks.nets.<name>``; `ModelError` for anything else."""
    import sys
    import time

    import torch

    t = time.perf_counter()
    fresh = "monai" not in sys.modules
    from monai.networks import nets

    if fresh:
        _MONAI_IMPORT_S[0] = time.perf_counter() - t

    short = name.rsplit(".", 1)[-1] if name.startswith(("monai.networks.nets.", "monai.networks.nets")) else name
    if "." in short or not short.isidentifier():
        raise ModelError(f"architecture {name!r} is not a class of monai.networks.nets; only those are allowed")
    cls = getattr(nets, short, None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
        raise ModelError(
            f"architecture {name!r} is not a network class of monai.networks.nets "
            "(e.g. UNet, DynUNet, SegResNet, SwinUNETR, BasicUNet)"
        )
    return cls


def _dints_components(args: dict, model: str) -> dict:
    """DiNTS arguments with its ``dints_space`` (a literal TopologyInstance definition) and ``node_a`` built."""
    import numpy as np
    import torch
    from monai.networks.nets import TopologyInstance

    space = dict(args.get("dints_space") or {})
    if str(space.pop("_target_", "")).rsplit(".", 1)[-1] != "TopologyInstance" or "arch_code" not in space:
        raise ModelError(f"model {model!r}: DiNTS needs dints_space = {{'_target_': 'TopologyInstance', 'arch_code': ...}}")
    space.pop("device", None)
    try:
        space["arch_code"] = [np.asarray(a) for a in space["arch_code"]]
        out = dict(args, dints_space=TopologyInstance(**space, device="cpu"))
        if out.get("node_a") is not None:
            out["node_a"] = torch.as_tensor(np.asarray(out["node_a"]))
    except Exception as e:  # noqa: BLE001 - a malformed architecture code
        raise ModelError(f"model {model!r}: cannot build the DiNTS search space from its arch_code ({e})") from e
    return out


def _arguments(card):
    cls = network_class(card.architecture)
    args = check_literal(dict(card.arch_args), f"arch_args of model {card.name!r}")
    params = inspect.signature(cls.__init__).parameters
    for key, value in (("in_channels", card.in_channels), ("out_channels", card.out_channels)):
        if key in params:
            if key not in args:
                args[key] = value
            elif int(args[key]) != int(value):
                raise ModelError(
                    f"model {card.name!r}: arch_args.{key}={args[key]} but the card says {value} "
                    f"({'input channels' if key == 'in_channels' else 'classes incl. background'}); fix card.json"
                )
    if cls.__name__ == "DiNTS":
        args = _dints_components(args, card.name)
    return cls, args


def build_network(card) -> "torch.nn.Module":  # noqa: F821
    """Instantiate ``card.architecture`` with ``card.arch_args`` (in/out channels filled from the card)."""
    cls, args = _arguments(card)
    try:
        return cls(**args)
    except Exception as e:  # noqa: BLE001 - any constructor failure is a bad card
        raise ModelError(f"cannot build {card.architecture}({args}) for model {card.name!r}: {e}") from e


def check_fits(card, state_dict: dict, source: str) -> None:
    """`ModelError` unless the card's network has exactly the weights' tensor names and shapes.

    The network is built on torch's ``meta`` device (no memory, no initialisation), so a card with absurd
    ``arch_args`` costs nothing before it is refused; only a network the size of the weights is then built.
    """
    import torch

    cls, args = _arguments(card)
    try:
        with torch.device("meta"):
            net = cls(**args)
    except Exception:  # noqa: BLE001 - some networks (SwinUNETR: .item() in __init__) cannot be built on meta;
        return  # the real build and the strict load_state_dict then judge the card, as before
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    have = {str(k).removeprefix("module."): tuple(v.shape) for k, v in state_dict.items()}
    if want == have:
        return
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    shapes = [f"{k}: card {want[k]} vs weights {have[k]}" for k in sorted(set(want) & set(have)) if want[k] != have[k]]
    n_want = sum(math.prod(s) for s in want.values())
    n_have = sum(math.prod(s) for s in have.values())
    detail = "; ".join(
        x for x in (
            f"{len(missing)} tensor(s) missing from the weights (e.g. {missing[0]})" if missing else "",
            f"{len(extra)} unexpected tensor(s) (e.g. {extra[0]})" if extra else "",
            f"{len(shapes)} shape mismatch(es) (e.g. {shapes[0]})" if shapes else "",
        ) if x
    )
    raise ModelError(
        f"{source}: the weights ({n_have:,} values) do not fit the {card.architecture} described by the model card "
        f"({n_want:,} values): {detail}. The card's arch_args are wrong or the card belongs to other weights"
    )
