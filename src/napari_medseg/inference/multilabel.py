"""Output activations of a card: softmax (one class per voxel) or sigmoid regions merged by label rules.

For ``card.activation == "sigmoid"`` (MONAI bundles such as BraTS), each output channel is a region
probability: thresholded at ``card.threshold`` it is a binary mask, and ``card.label_rules`` ``[[channel,
value], ...]`` give each voxel the value of the first rule whose channel is on (0 where none is).
"""

from __future__ import annotations


def is_sigmoid(card) -> bool:
    return getattr(card, "activation", "softmax") == "sigmoid"


def activate(logits, card):
    """Probabilities ``[C, ...]`` from logits: softmax over channels, or a sigmoid per channel."""
    import torch

    return torch.sigmoid(logits) if is_sigmoid(card) else torch.softmax(logits, 0)


def merge_regions(probs, card):
    """``[C, ...]`` sigmoid probabilities -> ``[1, ...]`` label values (uint8/int16 tensor) by the card's rules."""
    import torch

    on = probs > float(card.threshold)
    dtype = torch.uint8 if max((int(v) for _, v in card.label_rules), default=0) < 256 else torch.int16
    out = torch.zeros((1, *probs.shape[1:]), dtype=dtype, device=probs.device)
    for channel, value in reversed(card.label_rules):  # the first rule wins: paint it last
        out[0][on[int(channel)]] = int(value)
    return out
