"""Inference-only network rewrites that do not change the function computed (up to float rounding)."""

from __future__ import annotations

import copy


def fold_batchnorm(network):
    """A copy of ``network`` with every eval-mode BatchNorm that directly follows a convolution folded into it.

    Handles MONAI's ``Convolution`` blocks (``conv`` then ``adn`` whose ordering starts with the norm, possibly
    after dropout, which is the identity in eval mode) for ``Conv*d`` and ``ConvTranspose*d``. Anything else is
    left alone, so the result is always safe to use; the original network is not modified.
    """
    import torch
    from torch import nn

    net = copy.deepcopy(network).eval()
    folded = 0
    for module in net.modules():
        conv = getattr(module, "conv", None)
        adn = getattr(module, "adn", None)
        if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            continue
        if adn is None or not isinstance(adn, nn.Sequential):
            continue
        names = [n for n in adn._modules]
        # the norm must come first (dropout before it is the identity in eval mode)
        pos = next((i for i, n in enumerate(names) if n == "N"), None)
        if pos is None or any(n != "D" for n in names[:pos]):
            continue
        bn = adn._modules["N"]
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) or not bn.track_running_stats:
            continue
        if bn.running_mean is None or bn.running_var is None:
            continue
        with torch.no_grad():
            scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
            shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
            w = conv.weight
            if isinstance(conv, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                g = conv.groups
                w = w.view(g, w.shape[0] // g, w.shape[1], *w.shape[2:])
                w.mul_(scale.view(g, 1, -1, *([1] * (w.dim() - 3))))
            else:
                w.mul_(scale.view(-1, *([1] * (w.dim() - 1))))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
            new_bias = bias * scale + shift
            if conv.bias is None:
                conv.bias = nn.Parameter(new_bias)
            else:
                conv.bias.copy_(new_bias)
        adn._modules["N"] = nn.Identity()
        folded += 1
    net._medseg_folded_bn = folded
    return net
