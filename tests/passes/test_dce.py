"""Dead-code removal removes exactly what nothing can observe.

Before/after: stores into allocated buffers that nothing reads later go, and so do the
Allocates, empty loops, ifs and Seqs, and unused lets they leave; stores into parameters, stores
read later in program order or in a later loop iteration, and intrinsics stay. DSL kernels give
the same bits after `remove_dead_code(simplify(kernel))`.
"""

from __future__ import annotations

import numpy as np
import pytest

from tessel.ir.dsl import lower
from tessel.ir.dtypes import numpy_dtype
from tessel.ir.nodes import (
    Allocate, Barrier, Buffer, BufferRef, Const, For, IfThenElse, Intrinsic, Kernel, LetStmt, Seq, Store, Var,
)
from tessel.ir.verify import verify
from tessel.passes.dce import remove_dead_code
from tessel.passes.simplify import simplify
from tests.ir.dsl_programs import PROGRAMS, random_inputs

A = Buffer("A", (8,), "float32")
B = Buffer("B", (8,), "float32")
T = Buffer("T", (8,), "float32")
U = Buffer("U", (8,), "float32")
i, j = Var("i"), Var("j")
ONE, TWO = Const(1.0, "float32"), Const(2.0, "float32")
EMPTY = Seq(())


def kernel(body, params=(A, B)):
    return Kernel("k", tuple(params), body)


def dce(body, params=(A, B)):
    out = remove_dead_code(kernel(body, params))
    verify(out)
    return out.body


def test_a_temporary_nobody_reads_goes_with_its_allocate():
    body = Allocate(T, For(i, 8, Seq((Store(T, (i,), A[i] * TWO), Store(B, (i,), A[i])))))
    assert dce(body) == For(i, 8, Store(B, (i,), A[i]))


def test_stores_into_parameters_stay():
    body = For(i, 8, Store(B, (i,), ONE))
    assert dce(body) == body


def test_a_temporary_that_is_read_stays():
    body = Allocate(T, Seq((For(i, 8, Store(T, (i,), A[i])), For(j, 8, Store(B, (j,), T[7 - j])))))
    assert dce(body) == body


def test_only_the_stores_after_the_last_read_go():
    keep = Store(T, (Const(0),), ONE)
    read = Store(B, (Const(0),), T[0])
    body = Allocate(T, Seq((keep, read, Store(T, (Const(0),), TWO))))
    assert dce(body) == Allocate(T, Seq((keep, read)))


def test_a_read_in_the_next_iteration_keeps_the_store():
    # B[i] reads T[0] before T[0] is written in the same iteration: the write feeds iteration i+1
    body = Allocate(T, Seq((Store(T, (Const(0),), ONE),
                            For(i, 8, Seq((Store(B, (i,), T[0]), Store(T, (Const(0),), A[i])))))))
    assert dce(body) == body


def test_chains_of_dead_temporaries_all_go():
    # U is read only by stores into T, and T by nobody: both go, one after the other
    body = Allocate(T, Allocate(U, Seq((
        For(i, 8, Store(U, (i,), A[i])),
        For(j, 8, Store(T, (j,), U[j] + ONE)),
        For(i, 8, Store(B, (i,), A[i] * TWO)),
    ))))
    assert dce(body) == For(i, 8, Store(B, (i,), A[i] * TWO))


def test_empty_loops_ifs_and_seqs_go():
    p = A[0] > 0.0
    body = Seq((For(i, 8, Seq((EMPTY, Seq(())))), IfThenElse(p, EMPTY),
                IfThenElse(p, Store(B, (Const(0),), ONE), EMPTY), Seq((Seq((Store(B, (Const(1),), TWO),)),))))
    assert dce(body) == Seq((IfThenElse(p, Store(B, (Const(0),), ONE)), Store(B, (Const(1),), TWO)))


def test_unused_lets_go_and_used_ones_stay():
    n, m = Var("n"), Var("m")
    used = LetStmt(m, Const(3), Store(B, (m,), ONE))
    assert dce(LetStmt(n, Const(2), used)) == used


def test_a_let_left_unused_by_a_dead_store_goes_too():
    n = Var("n")
    body = Allocate(T, For(i, 8, LetStmt(n, i + 1, Seq((Store(T, (n % 8,), A[i]), Store(B, (i,), ONE))))))
    assert dce(body) == For(i, 8, Store(B, (i,), ONE))


def test_intrinsics_and_their_buffers_stay():
    L = Buffer("L", (8,), "float32", "local")
    body = Allocate(L, Seq((For(i, 8, Store(L, (i,), A[i])), Intrinsic("consume8", (BufferRef(L, (Const(0),)),)))))
    assert dce(body, params=(A,)) == body


def test_barriers_stay():
    body = Seq((Barrier(), Store(B, (Const(0),), ONE)))
    assert dce(body) == body


def test_nothing_to_do_gives_the_same_kernel_back():
    k = kernel(For(i, 8, Store(B, (i,), A[i])))
    assert remove_dead_code(k) is k


def _run(k, tensors, inputs):
    from tessel.ir.interp import run

    outs = [np.full(t.shape, np.nan, numpy_dtype(t.dtype)) for t in tensors[len(inputs):]]
    run(k, *inputs, *outs)
    return outs


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_dsl_kernels_give_the_same_bits_after_cleanup(name):
    tensors, reference = PROGRAMS[name]()
    k = lower(tensors)
    clean = remove_dead_code(simplify(k))
    verify(clean)
    inputs = random_inputs(tensors, np.random.default_rng(11))
    for got, before, want in zip(_run(clean, tensors, inputs), _run(k, tensors, inputs), reference(*inputs)):
        np.testing.assert_array_equal(got, before)
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=2e-2, atol=1e-3)
