"""Rounding to bfloat16 in CPU code, bit for bit against ml_dtypes (what numpy and the interpreter use).

TVM computes bfloat16 values in float32 and dropped the rounding of a cast that is only read
(fuzz case tvm_drops_bfloat16_round_trip); tessel now rounds on the bits (ties to even).
"""

from __future__ import annotations

import numpy as np
import pytest

from tessel.codegen.tvm import compile_kernel
from tessel.ir.dtypes import numpy_dtype
from tessel.ir.nodes import Buffer, Cast, For, Kernel, Store, Var

i = Var("i")


def _awkward_float32(rng, n: int, src: str) -> np.ndarray:
    """Random values plus ties, NaN, infinities, subnormals and the largest finite values."""
    a = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e3], n)).astype(np.float32)
    bits = a.view(np.uint32)
    bits[:8] = (bits[:8] & 0xFFFF0000) | 0x8000  # exact ties: half-way between two bfloat16s
    bits[8:10] |= 0x00018000  # ties with an odd last kept bit
    a[10:16] = [np.nan, np.inf, -np.inf, 3.4028235e38, -3.4028235e38, 1e-40]
    if src == "float32":
        return a
    a = a.astype(np.float64)
    # just past a tie that float32 cannot see: rounding through float32 first would round it twice
    a[16:24] = (1 + 2.0 ** -8 + 2.0 ** -40) * rng.choice([-1.0, 1.0], 8) * 2.0 ** rng.integers(-100, 100, 8)
    a[24:28] = [1e300, -1e300, 1e-300, -1e-300]
    return a


@pytest.mark.parametrize("vectorize", [False, True])
@pytest.mark.parametrize("src", ["float32", "float64"])
def test_round_trip_through_bfloat16_rounds(src, vectorize):
    n = 64
    A, B = Buffer("A", (n,), src), Buffer("B", (n,), "float32")
    body = Store(B, (i,), Cast("float32", Cast("bfloat16", A[i])))
    k = Kernel(f"bf16_trip_{src}_{int(vectorize)}", (A, B), For(i, n, body, "vectorized" if vectorize else "serial"))
    a = _awkward_float32(np.random.default_rng(), n, src)
    b = np.full(n, 7.0, np.float32)
    compile_kernel(k)(a, b)
    with np.errstate(over="ignore"):  # 1e300 to bfloat16 is inf, as it should be
        want = a.astype(numpy_dtype("bfloat16")).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(b), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(b[ok].view(np.uint32), want[ok].view(np.uint32))


def test_store_to_bfloat16_buffer_rounds():
    n = 48
    A, B = Buffer("A", (n,), "float32"), Buffer("B", (n,), "bfloat16")
    k = Kernel("bf16_store", (A, B), For(i, n, Store(B, (i,), Cast("bfloat16", A[i] * A[i])), "vectorized"))
    a = _awkward_float32(np.random.default_rng(), n, "float32")[16:]
    a = np.concatenate([a, a[:16]])
    b = np.zeros(n, numpy_dtype("bfloat16"))
    compile_kernel(k)(a, b)
    want = (a * a).astype(numpy_dtype("bfloat16"))
    np.testing.assert_array_equal(b.view(np.uint16), want.view(np.uint16))
