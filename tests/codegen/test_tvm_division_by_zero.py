"""Float division by a constant zero on the CPU follows IEEE (x / +-0.0: +-inf by the signs, NaN for
0 and NaN), as numpy does; TVM's constant folder aborted on it before (fuzz case
tvm_printer_folds_division_by_zero)."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts


@pytest.mark.parametrize("zero", [0.0, -0.0])
def test_division_by_a_constant_zero_matches_numpy(zero):
    rng = np.random.default_rng()
    x = ts.placeholder((12,), name="x")
    y = ts.compute((12,), lambda i: x[i] / ts.const(zero, "float32"), name="y")
    kern = ts.build([x, y], target="cpu")
    a = rng.standard_normal(12).astype(np.float32)
    a[:4] = [0.0, -0.0, np.inf, np.nan]
    got = np.full(12, 7.0, np.float32)
    kern(a, got)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = a / np.float32(zero)
    np.testing.assert_array_equal(got, want)
