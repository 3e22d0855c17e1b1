"""Scalar kernel parameters and symbolic extents: one kernel, translated once, serves every
length. The interpreter takes a Python / numpy int for a Var parameter and checks array shapes
against the evaluated symbolic shape; the verifier, the text form and the parser know them."""

from __future__ import annotations

import numpy as np
import pytest

from tessel.errors import ArgumentError, VerifyError
from tessel.ir.interp import ExecutionError, Interpreter, run
from tessel.ir.nodes import (
    Allocate, Barrier, Buffer, Const, For, IfThenElse, Kernel, Launch, LetStmt, Store, Var, seq,
)
from tessel.ir.text import parse_kernel, to_text
from tessel.ir.verify import verify

n = Var("n")


def _scale() -> Kernel:
    """B[i] = 2 A[i] for i < n, on the CPU."""
    A, B, i = Buffer("A", (n,)), Buffer("B", (n,)), Var("i")
    return Kernel("scale", (n, A, B), For(i, n, Store(B, (i,), A[i] * 2.0)))


def _gpu_add(m: Var = n) -> Kernel:
    """O[i] = A[i] + S[i] with one block of 32 threads per 32 elements; S is a shared staging copy."""
    A, O = Buffer("A", (m,)), Buffer("O", (m,))
    S = Buffer("S", (32,), "float32", "shared")
    b, t, i = Var("b"), Var("t"), Var("i", m.dtype)
    nb = (m + 31) // 32
    i_of = Const(32, m.dtype) * Var("b").astype(m.dtype) + Var("t").astype(m.dtype)
    body = LetStmt(i, i_of, seq(IfThenElse(i < m, Store(S, (t,), A[i])), Barrier(),
                                IfThenElse(i < m, Store(O, (i,), A[i] + S[t]))))
    return Kernel("add", (A, m, O), For(b, nb.astype("int32") if m.dtype != "int32" else nb,
                                        Allocate(S, For(t, 32, body, "threadIdx.x")), "blockIdx.x"),
                  target="cuda", launch=Launch((nb, 1, 1), (32, 1, 1)))


def test_one_cpu_kernel_serves_every_length():
    k = _scale()
    verify(k)
    interp = Interpreter()
    for length in (1, 5, 37):
        a = np.random.default_rng(length).standard_normal(length).astype(np.float32)
        b = np.full(length, 7e3, np.float32)
        interp.run(k, length, a, b)
        np.testing.assert_array_equal(b, 2 * a)
    assert len({interp.translate(k).source}) == 1 and "range(v_n_" in interp.translate(k).source


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_one_gpu_kernel_with_a_symbolic_grid(dtype):
    k = _gpu_add(Var("n", dtype))
    verify(k)
    for length, value in ((70, np.int64(70)), (5, 5), (32, np.int32(32))):
        a = np.random.default_rng(length).standard_normal(length).astype(np.float32)
        o = np.zeros(length, np.float32)
        run(k, a, value, o)  # race checked; ceil(n / 32) blocks
        np.testing.assert_array_equal(o, 2 * a)


def test_scalar_arguments_are_checked():
    k = _scale()
    a, b = np.zeros(4, np.float32), np.zeros(4, np.float32)
    for bad in (4.0, True, np.float32(4), a):
        with pytest.raises(ArgumentError, match=r"argument 0 \('n'\): a scalar int32 parameter takes a Python or "
                                                r"numpy int"):
            run(k, bad, a, b)
    with pytest.raises(ArgumentError, match="does not fit in int32"):
        run(k, 2**31, a, b)
    with pytest.raises(ArgumentError, match=r"argument 1 \('A'\): expected shape \(5,\) \(n\), got \(4,\)"):
        run(k, 5, a, b)
    with pytest.raises(ArgumentError, match="negative extent -1"):
        run(k, -1, a, b)


def test_symbolic_shapes_are_bounds_checked_at_run_time():
    A, B, i = Buffer("A", (n, 3)), Buffer("B", (n,)), Var("i")
    k = Kernel("rows", (n, A, B), For(i, n + 1, Store(B, (i,), A[i, 2])))
    with pytest.raises(ExecutionError, match=r"load of buffer 'A' at index \(4, 2\) is out of bounds"):
        run(k, 4, np.zeros((4, 3), np.float32), np.zeros(4, np.float32))


def test_symbolic_local_and_shared_allocations():
    """A per-row scratch buffer of symbolic length m (allocated once per run, poisoned)."""
    m = Var("m")
    A, O, T = Buffer("A", (m,)), Buffer("O", (1,)), Buffer("T", (m,), "float32", "local")
    i = Var("i")
    body = Allocate(T, seq(For(i, m, Store(T, (i,), A[i] * A[i])), Store(O, (0,), Const(0.0, "float32")),
                           For(Var("j"), m, Store(O, (0,), O[0] + T[Var("j")]))))
    k = Kernel("sumsq", (m, A, O), body)
    for length in (3, 10):
        a = np.random.default_rng(length).standard_normal(length).astype(np.float32)
        o = np.zeros(1, np.float32)
        run(k, length, a, o)
        np.testing.assert_allclose(o[0], (a.astype(np.float64) ** 2).sum(), rtol=1e-5)


def test_text_form_roundtrips_scalar_parameters():
    m = Var("m", "int64")
    A, O, i = Buffer("A", (m, 4), "float16"), Buffer("O", (m,), "float16"), Var("i", "int64")
    k = Kernel("t", (A, m, O), For(i, m, Store(O, (i,), A[i, Const(0, "int64")])), "cuda",
               Launch(((m + 127) // 128, 1, 1), (128, 1, 1)))
    text = to_text(k)
    # m is spelled out where it is not yet declared, bare after its declaration
    assert "(A: float16[m:int64, 4] global, m: int64, O: float16[m] global)" in text
    assert "launch grid(((m + 127i64) // 128i64), 1, 1) block(128, 1, 1)" in text
    assert parse_kernel(text) == k
    typed = parse_kernel("kernel s(n: int32, A: float32[n] global) target cpu { for i in n { A[i] = 1.0 } }")
    assert typed.params[0] == n and typed.params[1].shape == (n,)


def test_verifier_on_scalar_parameters():
    A = Buffer("A", (Var("q"),))
    with pytest.raises(VerifyError, match="uses 'q' \\(int32\\), which is not a scalar parameter"):
        verify(Kernel("k", (n, A), For(Var("i"), n, Store(A, (Var("i"),), Const(1.0, "float32")))))
    with pytest.raises(VerifyError, match="scalar parameter 'x' has dtype float32"):
        verify(Kernel("k", (Var("x", "float32"),), _empty()))
    with pytest.raises(VerifyError, match="two parameters are named 'n'"):
        verify(Kernel("k", (n, Buffer("n", (4,))), _empty()))


def _empty():
    from tessel.ir.nodes import Seq

    return Seq(())
