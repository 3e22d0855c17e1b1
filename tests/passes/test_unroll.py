"""Unrolling: small constant loops marked unrolled (or serial ones, on request) become one copy of
the body per iteration with the loop variable a constant and inner names made unique; long loops,
loops that allocate and GPU-bound or vectorized loops stay. DSL kernels and GPU schedules give the
same bits after unrolling."""

from __future__ import annotations

import numpy as np
import pytest

from tessel.ir.dsl import lower
from tessel.ir.dtypes import numpy_dtype
from tessel.ir.interp import run
from tessel.ir.nodes import Allocate, Barrier, Buffer, Const, For, Kernel, LetStmt, Seq, Store, Var, walk
from tessel.ir.verify import verify
from tessel.passes.simplify import simplify
from tessel.passes.unroll import unroll
from tests.ir.dsl_programs import PROGRAMS, random_inputs

A = Buffer("A", (4, 4), "int32")
i, j, t = Var("i"), Var("j"), Var("t")


def kern(body):
    return Kernel("k", (A,), body)


def loops(k):
    return [n for n in walk(k.body) if isinstance(n, For)]


def test_unrolled_loop_becomes_copies_with_constants():
    k = kern(For(i, 3, Store(A, (i, 0), i * 2), "unrolled"))
    out = unroll(k)
    assert not loops(out)
    assert out.body == Seq(tuple(Store(A, (Const(c), 0), Const(c) * 2) for c in range(3)))
    assert simplify(out).body.stmts[2] == Store(A, (Const(2), 0), Const(4))


def test_nested_loops_get_fresh_names_and_verify():
    inner = For(j, 4, LetStmt(t, i + j, Store(A, (i, j), t)), "serial")
    k = kern(For(i, 4, inner, "unrolled"))
    out = unroll(k)
    verify(out)  # four inner loops, four lets: all names distinct
    names = [n.var.name for n in walk(out.body) if isinstance(n, (For, LetStmt))]
    assert len(names) == 8 and len(set(names)) == 8 and all(n.endswith(("_u0", "_u1", "_u2", "_u3")) for n in names)
    a0, a1 = np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32)
    run(k, a0)
    run(out, a1)
    assert (a0 == a1).all() and a0.sum() == 48


def test_what_stays_a_loop():
    T = Buffer("T", (2,), "int32", "local")
    cases = {
        "long": For(i, 9, Store(A, (0, 0), i), "unrolled"),
        "serial": For(i, 3, Store(A, (0, 0), i), "serial"),
        "allocates": For(i, 2, Allocate(T, Seq((Store(T, (0,), i), Store(A, (0, 0), T[0])))), "unrolled"),
        "gpu": For(i, 2, Store(A, (0, 0), i), "threadIdx.x"),
        "vectorized": For(i, 4, Store(A, (0, i), i), "vectorized"),
        "symbolic": For(j, 2, For(i, j + 1, Store(A, (0, 0), i), "unrolled")),
    }
    for what, body in cases.items():
        k = kern(body)
        out = unroll(k)
        assert [n.kind for n in loops(out)] == [n.kind for n in loops(k)], what
    # parameters: a longer limit, serial loops on request, the statement budget
    assert not loops(unroll(kern(cases["long"]), max_extent=9))
    assert not loops(unroll(kern(cases["serial"]), serial=True))
    assert loops(unroll(kern(For(i, 4, Seq((Store(A, (0, 0), i), Store(A, (1, 0), i))), "unrolled")), max_stmts=7))
    assert loops(unroll(kern(cases["long"]), max_extent=0))


def test_barriers_are_copied_in_order():
    B = Buffer("B", (8,), "float32")
    body = For(t, 8, For(i, 2, Seq((Store(B, (t,), B[t] + 1.0), Barrier())), "unrolled"), "threadIdx.x")
    out = unroll(Kernel("k", (B,), body, "cuda"))
    assert [type(n).__name__ for n in out.body.body.stmts] == ["Store", "Barrier", "Store", "Barrier"]


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_dsl_kernels_same_bits_after_unrolling_everything(name):
    """Every loop of the naive nest (serial) unrolled where the budget allows."""
    tensors, _ = PROGRAMS[name]()
    k = lower(tensors)
    out = unroll(k, max_extent=8, max_stmts=512, serial=True)
    verify(out)
    assert len(loops(out)) < len(loops(k))
    inputs = random_inputs(tensors, np.random.default_rng())
    outs = [[np.full(x.shape, 7.0, numpy_dtype(x.dtype)) for x in tensors if not x.is_placeholder] for _ in range(2)]
    run(k, *inputs, *outs[0])
    run(simplify(out), *inputs, *outs[1])
    for a, b in zip(*outs):
        assert a.tobytes() == b.tobytes()
