"""Zero-size tensors: an op whose result is empty, or whose inputs are all empty or constant,
becomes a constant in the graph (no kernel has a zero extent); torch models with empty inputs
match eager on fresh random inputs."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts

torch = pytest.importorskip("torch")


class _Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


CASES = {
    "sum_over_empty_axis": (lambda x: x.sum(0) + 1.0, [(0, 3)]),
    "cat_with_empty": (lambda x, y: torch.cat([x * 2, y], 0).tanh(), [(0, 3), (4, 3)]),
    "roll_empty": (lambda x: torch.roll(x, 2, 0), [(0, 5)]),
    "flip_empty": (lambda x: torch.flip(x, (0, 1)), [(3, 0)]),
    "flip_no_dims": (lambda x: torch.flip(x, ()), [(3, 4)]),
    "var_of_empty_is_nan": (lambda x: torch.var(x, 0), [(0, 4)]),
    "matmul_inner_zero": (lambda a, b: a @ b + 0.5, [(3, 0), (0, 4)]),
    "empty_result": (lambda x: torch.sin(x) * 3.0, [(2, 0, 4)]),
    "mixed": (lambda x, y: (torch.cat([x, y], 1).amax(1) + y.mean()), [(5, 0), (5, 3)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_zero_size_models_match_eager(name):
    fn, shapes = CASES[name]
    module = _Fn(fn)
    xs = tuple(torch.randn(s) for s in shapes)
    cm = ts.compile(module, xs, target="cpu")
    fresh = tuple(torch.randn(s) for s in shapes)
    got = np.asarray(cm(*fresh))
    want = module(*fresh).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
