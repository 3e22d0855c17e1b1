"""Canonicalisation folds a batch norm with constant statistics into the convolution before it
(rule conv_batch_norm): the compiled model has no batch_norm op left and matches torch eager on
fresh random inputs, with and without a conv bias, grouped and depthwise, in both conv loop forms;
a conv whose output is also used elsewhere keeps its batch norm."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts

torch = pytest.importorskip("torch")


def _stats(m, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5, generator=g)
                mod.running_var.uniform_(0.3, 2.0, generator=g)
                mod.weight.uniform_(0.5, 1.5, generator=g)
                mod.bias.uniform_(-0.5, 0.5, generator=g)
    return m.eval()


@pytest.mark.parametrize("cin,cout,hw,groups,bias,stride", [(8, 16, 32, 1, False, 1), (8, 16, 8, 1, True, 1),
                                                            (16, 16, 16, 16, False, 2), (12, 24, 10, 3, True, 1)])
def test_batch_norm_folds_into_the_conv_and_matches_torch(cin, cout, hw, groups, bias, stride):
    torch.manual_seed(cin + cout + hw)
    m = _stats(torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=bias),
                                   torch.nn.BatchNorm2d(cout), torch.nn.ReLU()), seed=hw)
    x = torch.randn(2, cin, hw, hw)
    cm = ts.compile(m, (x,), target="cpu")
    assert "batch_norm" not in {n.op for n in cm.graph.nodes.values()}
    with torch.no_grad():
        want = m(x).numpy()
    np.testing.assert_allclose(cm(x.numpy()), want, rtol=1e-4, atol=1e-4)


def test_a_conv_read_elsewhere_keeps_its_batch_norm():
    torch.manual_seed(3)

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.bn = torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.BatchNorm2d(8)

        def forward(self, x):
            y = self.c(x)
            return self.bn(y) + y

    m = _stats(Two(), seed=5)
    x = torch.randn(1, 4, 12, 12)
    cm = ts.compile(m, (x,), target="cpu")
    assert "batch_norm" in {n.op for n in cm.graph.nodes.values()}
    with torch.no_grad():
        np.testing.assert_allclose(cm(x.numpy()), m(x).numpy(), rtol=1e-4, atol=1e-4)
