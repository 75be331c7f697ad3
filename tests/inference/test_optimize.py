"""BatchNorm folding computes the same function and leaves the original network untouched."""

from __future__ import annotations

import torch
from monai.networks.nets import UNet

from napari_medseg.inference.optimize import fold_batchnorm


def test_fold_batchnorm_is_exact_and_non_destructive():
    torch.manual_seed(0)
    net = UNet(3, 1, 3, (8, 16, 32), (2, 2), num_res_units=2, norm="batch")
    net.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            net(torch.rand(2, 1, 24, 24, 24) * 3 + 1)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    assert folded._medseg_folded_bn > 0
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in folded.modules())
    x = torch.rand(2, 1, 24, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_instance_norm_networks_are_left_alone():
    net = UNet(3, 1, 2, (8, 16), (2,), num_res_units=1, norm="instance").eval()
    folded = fold_batchnorm(net)
    assert folded._medseg_folded_bn == 0
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x))
