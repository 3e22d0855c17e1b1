"""tests/tolerances.py gives bounds that hold for honest rounding and fail real bugs.

Honest rounding is emulated in numpy: fp16/bf16 inputs, products summed into a float32
accumulator k-step by k-step (rounding to nearest, and a tensor-core-like variant that adds each
16-term chunk exactly and truncates toward zero), the result rounded to the output dtype. A bug is
one 16-term k-step dropped from one element, or the output of one row shifted by one element.
"""

from __future__ import annotations

import doctest

import ml_dtypes
import numpy as np
import pytest

from tests import tolerances
from tests.tolerances import elementwise_tol, matmul_tol, reduction_tol, unit_roundoff

NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}


def _emulated_mma(a, b, out_dtype, truncate: bool):
    m, k = a.shape
    acc = np.zeros((m, b.shape[1]), np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    for k0 in range(0, k, 16):
        chunk = a64[:, k0:k0 + 16] @ b64[k0:k0 + 16]  # fp16/bf16 products are exact
        if truncate:
            s = acc.astype(np.float64) + chunk
            f = s.astype(np.float32)
            over = np.abs(f.astype(np.float64)) > np.abs(s)
            acc = np.where(over, np.nextafter(f, np.float32(0)), f)
        else:
            for kk in range(chunk.shape[0] and min(16, k - k0)):
                acc = (acc + (a64[:, k0 + kk:k0 + kk + 1] * b64[k0 + kk:k0 + kk + 1]).astype(np.float32))
    return acc.astype(NP[out_dtype])


@pytest.mark.parametrize("in_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("k", [16, 256, 4096])
@pytest.mark.parametrize("out_dtype", [None, "float32"])
@pytest.mark.parametrize("truncate", [False, True])
def test_matmul_tol_holds_for_rounding_and_catches_a_dropped_k_step(in_dtype, k, out_dtype, truncate):
    rng = np.random.default_rng(k + 7 * truncate)
    m = n = 48
    a = rng.standard_normal((m, k)).astype(NP[in_dtype])
    b = rng.standard_normal((k, n)).astype(NP[in_dtype])
    want = a.astype(np.float64) @ b.astype(np.float64)
    got = _emulated_mma(a, b, out_dtype or in_dtype, truncate).astype(np.float64)
    tol = matmul_tol(in_dtype, k, out_dtype=out_dtype)
    np.testing.assert_allclose(got, want, **tol)
    # the bound is not vacuous: the largest error uses a sensible part of it, and bugs fail it
    used = np.max(np.abs(got - want) / (tol["atol"] + tol["rtol"] * np.abs(want)))
    assert used > 1e-3, f"tolerance {tol} is far looser than the errors (uses {used:.1e} of it)"
    bad = got.copy()
    bad[3, 5] -= a[3, 16:32].astype(np.float64) @ b[16:32, 5].astype(np.float64) if k > 16 else want[3, 5]
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(bad, want, **tol)
    shifted = got.copy()
    shifted[7] = np.roll(shifted[7], 1)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(shifted, want, **tol)


def test_reduction_tol_holds_for_float32_sums_in_any_order():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 5000)).astype(np.float32)
    want = x.astype(np.float64).sum(axis=1)
    sequential = np.zeros(64, np.float32)
    for j in range(x.shape[1]):
        sequential += x[:, j]
    tol = reduction_tol("float32", k=5000)
    for got in (sequential, x.sum(axis=1), x[:, ::-1].sum(axis=1)):
        np.testing.assert_allclose(got.astype(np.float64), want, **tol)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(want - x[:, 17].astype(np.float64) * (np.arange(64) == 9), want, **tol)


def test_rounding_the_inputs_widens_the_bound():
    rng = np.random.default_rng(4)
    a32, b32 = rng.standard_normal((32, 1024)).astype(np.float32), rng.standard_normal((1024, 32)).astype(np.float32)
    want = a32.astype(np.float64) @ b32.astype(np.float64)  # the reference never rounded the inputs
    got = _emulated_mma(a32.astype(np.float16), b32.astype(np.float16), "float32", truncate=False)
    tol = matmul_tol("float16", 1024, out_dtype="float32", rounds_inputs=True)
    np.testing.assert_allclose(got.astype(np.float64), want, **tol)
    with pytest.raises(AssertionError):  # without counting the input rounding the bound is too tight
        np.testing.assert_allclose(got.astype(np.float64), want, **matmul_tol("float16", 1024, out_dtype="float32"))


def test_elementwise_and_unit_roundoff():
    x = np.random.default_rng(5).uniform(-3, 3, 1000)
    for dtype in ("float16", "bfloat16", "float32"):
        np.testing.assert_allclose(np.exp(x).astype(NP[dtype]).astype(np.float64), np.exp(x),
                                   **elementwise_tol(dtype))
        with pytest.raises(AssertionError):
            np.testing.assert_allclose(np.exp(x * (1 + 8 * unit_roundoff(dtype))), np.exp(x),
                                       **elementwise_tol(dtype, ulps=1))
    with pytest.raises(ValueError, match="no unit roundoff known for dtype 'complex64'"):
        unit_roundoff("complex64")


def test_the_helpers_examples():
    assert doctest.testmod(tolerances).failed == 0
