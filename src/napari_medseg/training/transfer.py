"""Start a new model from a trained one: transfer of the encoder (and decoder) weights.

A model trained from scratch on 5 slices has seen five images of its organ; the default model's encoder has
learnt CT anatomy from many. `init_from` copies a source model's tensors into a new network wherever the
parameter name *and* shape match -- with ``scope="encoder"`` only the down-path and the bottom (the blocks
`loop.freeze_encoder` names), with ``scope="all"`` the decoder too; the output head, whose shape follows
the class count, is newly initialised -- except, with ``classes=True`` (`FinetuneConfig.scratch_head`), the
output channels of the classes the source model knows *by name* (and background): `copy_head` copies those
rows of the head, so a new model for liver and spleen starts out finding them as its source did, and only a
class the source does not know starts from scratch.

The source must be the same architecture (MONAI ``UNet`` with the same channels, strides and residual
units) and the same input (channels, intensity normalisation); otherwise the copy would be meaningless.
For an explicitly named source that is an error (`ModelError` naming both); for the implicit
``"default"`` the transfer is skipped with a note (e.g. an MR image: z-score input vs the CT window).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from napari_medseg.errors import ModelError
from napari_medseg.models.card import ModelCard


@dataclass
class TransferReport:
    source: str | None  # the source model (None: random start)
    copied: int = 0  # tensors copied
    kept: int = 0  # tensors left at their new initialisation (head, other scope, shape mismatch)
    note: str = ""
    names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"source": self.source, "copied": self.copied, "kept": self.kept, "note": self.note}


def _arch(card: ModelCard) -> dict:
    a = dict(card.arch_args or {})
    return {"architecture": card.architecture, "channels": list(a.get("channels") or []),
            "strides": list(a.get("strides") or []), "num_res_units": int(a.get("num_res_units", 0)),
            "in_channels": int(card.in_channels)}


def compatibility(source: ModelCard, target: ModelCard) -> str:
    """Why ``source``'s weights cannot start ``target`` ("" when they can)."""
    a, b = _arch(source), _arch(target)
    diff = [f"{k} {a[k]} vs {b[k]}" for k in a if a[k] != b[k]]
    if diff:
        return "different network: " + ", ".join(diff)
    ia, ib = (source.intensity or {}).get("type"), (target.intensity or {}).get("type")
    if ia != ib:
        return f"different input normalisation: {ia} vs {ib}"
    return ""


def is_encoder(name: str) -> bool:
    """True for a MONAI UNet parameter of the down-path or the bottom block (as `loop.freeze_encoder`)."""
    rest = name[len("model."):] if name.startswith("model.") else name
    while rest.startswith("1.submodule."):
        rest = rest[len("1.submodule."):]
    return rest.startswith(("0.", "conv.", "residual."))


def copy_matching(net, source_net, scope: str = "all", skip: str | None = None) -> tuple[int, int, list[str]]:
    """Copy ``source_net``'s tensors into ``net`` where name and shape match (and in ``scope``; names starting
    with ``skip`` are left alone)."""
    import torch

    src = source_net.state_dict()
    copied, kept, names = 0, 0, []
    state = net.state_dict()
    with torch.no_grad():
        for k, v in state.items():
            s = src.get(k)
            ok = s is not None and tuple(s.shape) == tuple(v.shape) and not (skip and k.startswith(skip))
            if ok and (scope == "all" or is_encoder(k)):
                v.copy_(s.to(v.dtype))
                copied += 1
                names.append(k)
            else:
                kept += 1
    return copied, kept, names


HEAD_PREFIX = "model.2."  # MONAI UNet: Sequential(down, SkipConnection(...), up): the top up-layer is the head


def head_channels(source: ModelCard, target: ModelCard) -> dict[int, int]:
    """Output channel of ``target`` -> channel of ``source`` for background and every class both name alike."""
    from napari_medseg.training.data import value_to_channel

    sv, tv = value_to_channel(source), value_to_channel(target)
    by_name = {str(n).lower(): sv[int(v)] for v, n in source.class_names().items() if int(v) in sv}
    out = {0: 0}
    for v, n in target.class_names().items():
        c = by_name.get(str(n).lower())
        if int(v) in tv and int(v) != 0 and c is not None and c != 0:
            out[tv[int(v)]] = c
    return out


def copy_head(net, source_net, mapping: dict[int, int], n_src: int, n_new: int) -> list[str]:
    """Copy the head's class-indexed rows (``mapping``: new channel -> source channel) from ``source_net``.

    A head tensor's class dimensions are its channel dimensions of size ``n_new`` here and ``n_src`` in the
    source (the transposed conv's output, the last residual conv's input and output, the biases); other
    dimensions must match. Rows of unmapped channels keep their new initialisation."""
    import itertools

    import torch

    src, names = source_net.state_dict(), []
    pairs = sorted(mapping.items())
    with torch.no_grad():
        for k, v in net.state_dict().items():
            s = src.get(k)
            if not k.startswith(HEAD_PREFIX) or s is None or s.ndim != v.ndim:
                continue
            # channel dimensions only (0, 1 of a conv weight; 0 of a bias), never a kernel's spatial sides
            dims = [d for d in range(min(2, v.ndim)) if v.shape[d] == n_new and s.shape[d] == n_src]
            if any(v.shape[d] != s.shape[d] for d in range(v.ndim) if d not in dims):
                continue
            if not dims:
                v.copy_(s.to(v.dtype))
            else:
                if len(dims) > 1:  # a known class's output reads nothing from a new class's (random) features
                    for a, _ in pairs:
                        v.select(dims[0], a).zero_()
                for combo in itertools.product(pairs, repeat=len(dims)):
                    dst, srci = [slice(None)] * v.ndim, [slice(None)] * v.ndim
                    for d, (a, b) in zip(dims, combo):
                        dst[d], srci[d] = a, b
                    v[tuple(dst)] = s[tuple(srci)].to(v.dtype)
            names.append(k)
    return names


def init_from(net, card: ModelCard, source: str | None = "default", scope: str = "all",
              classes: bool = False) -> TransferReport:
    """Initialise ``net`` (built from ``card``) from ``source``'s weights; see the module docstring.

    ``source``: ``"random"``/None (nothing copied), ``"default"`` (the active default model; skipped with a
    note when incompatible) or a model name, ``name@version`` or package path (`ModelError` when incompatible).
    """
    if source in (None, "", "random"):
        return TransferReport(None, note="random initialisation")
    if scope not in ("encoder", "all"):
        raise ModelError(f"transfer scope must be 'encoder' or 'all', got {scope!r}")
    from napari_medseg.models import load_model

    implicit = source == "default"
    try:
        loaded = load_model(source)
    except Exception as e:  # the default may be missing or broken in an unusual install: start randomly
        if implicit:
            return TransferReport(None, note=f"default model not available ({e}); random initialisation")
        raise
    why = compatibility(loaded.card, card)
    spec = f"{loaded.card.name}@{loaded.card.version}" if loaded.card.version else str(source)
    if why:
        if implicit:
            return TransferReport(None, note=f"{spec} not transferred ({why}); random initialisation")
        raise ModelError(
            f"cannot start the new model from {spec}: {why}. Choose a model of the same architecture and input, "
            "or start from random weights (scratch_init='random')"
        )
    mapping = head_channels(loaded.card, card) if classes and scope == "all" else {}
    known = len(mapping) > 1  # a class besides background: the head is copied row by row
    copied, kept, names = copy_matching(net, loaded.network, scope, skip=HEAD_PREFIX if known else None)
    if copied == 0:
        raise ModelError(f"no weight of {spec} matches the new network's parameters; nothing to transfer")
    note = f"{scope} weights from {spec}"
    if known:
        head = copy_head(net, loaded.network, mapping, loaded.card.out_channels, card.out_channels)
        names += head
        cls = {v: n for v, n in card.class_names().items() if int(v) != 0}
        from napari_medseg.training.data import value_to_channel

        c2v = {c: v for v, c in value_to_channel(card).items()}
        same = [cls.get(c2v.get(c), str(c)) for c in sorted(mapping) if c != 0]
        note += f"; output channels of {', '.join(same)} from {spec}'s classes of the same name"
    return TransferReport(spec, copied, kept, note, names)


def scratch_start(card: ModelCard, config):
    """The network and training settings of a new model from scratch (`finetune(..., from_scratch=True)`).

    Returns ``(net, train_config, report)``: the network built from ``card`` and started from
    ``config.scratch_init`` (`init_from`), the training settings with the from-scratch learning rate and no
    parent targets (a new model has no parent whose predictions could teach it), and the `TransferReport`.
    """
    import dataclasses

    from napari_medseg.models.network import build_network

    net = build_network(card)
    report = init_from(net, card, config.scratch_init, config.scratch_transfer, classes=config.scratch_head)
    tcfg = dataclasses.replace(config.train, lr=config.scratch_lr, parent_weight=0.0, distill_weight=0.0)
    return net, tcfg, report
