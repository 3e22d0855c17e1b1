"""CPU kernels with scalar parameters: one TVM-compiled kernel serves every extent.

Each kernel is built once with a scalar `n` (int32 or int64) in its buffer shapes and loop extents,
then called at several fresh random extents and checked against numpy; shape errors name the
array, the dimension and the scalar; the interpreter agrees with the compiled code.
"""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ArgumentError
from tessel.ir.nodes import Allocate, Buffer, Const, For, IfThenElse, Kernel, Seq, Store, Var
from tessel.ir.verify import verify

RNG = np.random.default_rng()


def _sizes(count=3, hi=70):
    return [int(x) for x in RNG.choice(np.arange(1, hi), size=count, replace=False)]


def _build(k):
    verify(k)
    return ts.build(k, "cpu", schedule=k)


def elementwise(dtype="int32"):
    """B[i, j] = A[i, j] * 2 + 1 over (n, 8): parallel rows, vectorized columns."""
    n = Var("n", dtype)
    A, B = Buffer("A", (n, 8)), Buffer("B", (n, 8))
    i, j = Var("i", dtype), Var("j", dtype)
    return Kernel("affine", (A, B, n), For(i, n, For(j, 8, Store(B, (i, j), A[i, j] * 2.0 + 1.0), "vectorized"),
                                           "parallel"))


def split_tail():
    """C[i] = A[i] - B[i] over (n,), split by 8 with a guarded tail (ceil(n / 8) outer iterations)."""
    n = Var("n")
    A, B, C = Buffer("A", (n,)), Buffer("B", (n,)), Buffer("C", (n,))
    o, t = Var("o"), Var("t")
    idx = o * 8 + t
    body = For(o, (n + 7) // 8, For(t, 8, IfThenElse(idx < n, Store(C, (idx,), A[idx] - B[idx])), "unrolled"))
    return Kernel("sub_tail", (n, A, B, C), body)


def row_sum():
    """S[i] = sum_j X[i, j] over an (n, 16) input, accumulated in a local register."""
    n = Var("n")
    X, S = Buffer("X", (n, 16)), Buffer("S", (n,))
    acc = Buffer("acc", (1,), scope="local")
    i, j = Var("i"), Var("j")
    body = For(i, n, Allocate(acc, Seq((Store(acc, (Const(0),), Const(0.0, "float32")),
                                        For(j, 16, Store(acc, (Const(0),), acc[0] + X[i, j])),
                                        Store(S, (i,), acc[0])))), "parallel")
    return Kernel("row_sum", (X, S, n), body)


def column_sum():
    """S[j] = sum_i X[i, j]: a reduction over the symbolic axis, into a symbolic temporary copy."""
    n = Var("n", "int64")
    X, S = Buffer("X", (n, 4)), Buffer("S", (4,))
    T = Buffer("T", (n, 4))
    i, j, k = Var("i", "int64"), Var("j", "int64"), Var("k", "int64")
    body = Allocate(T, Seq((For(k, n * 4, Store(T, (k // 4, k % 4), X[k // 4, k % 4])),
                            For(j, 4, Seq((Store(S, (j,), Const(0.0, "float32")),
                                           For(i, n, Store(S, (j,), S[j] + T[i, j]))))))))
    return Kernel("col_sum", (X, S, n), body)


def matmul():
    """C = A @ B for A (n, 12), B (12, 5): rows split by 4 with a guarded tail, k innermost."""
    n = Var("n")
    A, B, C = Buffer("A", (n, 12)), Buffer("B", (12, 5)), Buffer("C", (n, 5))
    o, r, j, k = Var("o"), Var("r"), Var("j"), Var("k")
    row = o * 4 + r
    body = For(o, (n + 3) // 4, For(r, 4, IfThenElse(row < n, For(j, 5, Seq((
        Store(C, (row, j), Const(0.0, "float32")),
        For(k, 12, Store(C, (row, j), C[row, j] + A[row, k] * B[k, j])))))), "unrolled"), "parallel")
    return Kernel("mm", (A, B, C, n), body)


def test_elementwise_serves_every_extent_with_either_scalar_width():
    for dtype in ("int32", "int64"):
        kern = _build(elementwise(dtype))
        assert f"n: {dtype}" in repr(kern) and "A: float32[n, 8]" in repr(kern)
        for m in _sizes():
            a = RNG.standard_normal((m, 8)).astype("float32")
            b = np.full((m, 8), np.nan, "float32")
            kern(a, b, m)
            np.testing.assert_allclose(b, a * 2 + 1, rtol=1e-6)


def test_split_with_guarded_tail_and_the_interpreter_agree():
    kern = _build(split_tail())
    for m in _sizes() + [8, 1]:
        a, b = RNG.standard_normal(m).astype("float32"), RNG.standard_normal(m).astype("float32")
        c, ref = np.full(m, np.nan, "float32"), np.full(m, np.nan, "float32")
        kern(m, a, b, c)
        kern.run_reference(m, a, b, ref)
        np.testing.assert_array_equal(c, a - b)
        np.testing.assert_array_equal(ref, c)


def test_reductions_over_static_and_symbolic_axes():
    rows, cols = _build(row_sum()), _build(column_sum())
    for m in _sizes():
        x = RNG.standard_normal((m, 16)).astype("float32")
        s = np.full(m, np.nan, "float32")
        rows(x, s, m)
        np.testing.assert_allclose(s, x.sum(1), rtol=1e-5, atol=1e-5)
        y = RNG.standard_normal((m, 4)).astype("float32")
        t = np.full(4, np.nan, "float32")
        cols(y, t, np.int64(m))
        np.testing.assert_allclose(t, y.sum(0), rtol=1e-5, atol=1e-5)


def test_matmul_with_symbolic_rows():
    kern = _build(matmul())
    b = RNG.standard_normal((12, 5)).astype("float32")
    for m in _sizes():
        a = RNG.standard_normal((m, 12)).astype("float32")
        c = np.full((m, 5), np.nan, "float32")
        kern(a, b, c, m)
        np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


def test_shape_and_scalar_errors_name_the_culprit():
    kern = _build(elementwise())
    with pytest.raises(ArgumentError, match=r"argument 'B': dimension 0 has 4 elements but must have n = 3"):
        kern(np.zeros((3, 8), "float32"), np.zeros((4, 8), "float32"), 3)
    with pytest.raises(ArgumentError, match=r"argument 'n': a scalar int32 parameter takes a Python or numpy int"):
        kern(np.zeros((3, 8), "float32"), np.zeros((3, 8), "float32"), 3.0)
    with pytest.raises(ArgumentError, match=r"argument 'n': 4294967296 is out of the range of int32"):
        kern(np.zeros((3, 8), "float32"), np.zeros((3, 8), "float32"), 2 ** 32)
    a = np.zeros((6, 8), "float32")
    with pytest.raises(ArgumentError, match="overlap in memory"):
        kern(a, a, 6)


def test_the_tir_has_symbolic_buffers_and_extents():
    from tessel.codegen.tvm_tir import to_tvm

    f = to_tvm(split_tail())
    assert [p.name for p in f.params] == ["n", "A", "B", "C"]
    assert "T.int32" in f.script() and "(n + 7) // 8" in f.script()
