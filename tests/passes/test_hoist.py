"""Loop-invariant hoisting: invariant integer index arithmetic leaves the loop as a let, invariant
terms of a sum are gathered, invariant lets climb out; loads (which may alias the loop's stores),
divisions by non-constants, statements (barriers, intrinsics), GPU-bound and vectorized loops stay
where they are. Kernels give the same bits after hoisting."""

from __future__ import annotations

import numpy as np
import pytest

from tessel.ir.dsl import lower
from tessel.ir.dtypes import numpy_dtype
from tessel.ir.interp import run
from tessel.ir.nodes import (
    Barrier, Binary, Buffer, BufferRef, For, Intrinsic, Kernel, LetStmt, Load, Seq, Store, Var, free_vars, walk,
)
from tessel.ir.verify import verify
from tessel.passes.hoist import hoist_invariants
from tessel.schedules.generic import default_schedule
from tests.ir.dsl_programs import PROGRAMS, random_inputs

A = Buffer("A", (256,), "int32")
i, j, k, n = Var("i"), Var("j"), Var("k"), Var("n")


def kern(body, params=(A,)):
    return Kernel("k", tuple(params), body)


def lets(node):
    return [x for x in walk(node) if isinstance(x, LetStmt)]


def same_bits(k0, k1, *arrays):
    outs = [[a.copy() for a in arrays] for _ in range(2)]
    run(k0, *outs[0])
    run(k1, *outs[1])
    return all(a.tobytes() == b.tobytes() for a, b in zip(*outs))


def test_invariant_terms_of_a_sum_are_gathered_before_the_loop():
    body = For(i, 4, For(j, 8, Store(A, (i * 32 + j + i * 16 + 3,), j)))
    out = hoist_invariants(kern(body))
    verify(out)
    outer = out.body
    (let,) = lets(out)
    assert isinstance(outer, For) and outer.body is let and isinstance(let.body, For) and let.body.var == j
    assert let.value == i * 32 + i * 16
    assert let.body.body.indices[0] == let.var + j + 3  # the constant stays, so lets are shared
    assert same_bits(kern(body), out, np.zeros(256, np.int32))


def test_expressions_invariant_in_several_loops_climb_out_of_each():
    body = For(i, 4, For(j, 4, For(k, 4, Store(A, (i * 48 + i * 4 + j * 4 + k,), k))))
    out = hoist_invariants(kern(body))
    verify(out)
    let = out.body.body  # i*48 + i*4 left k's loop, then j's: right inside the i loop
    assert isinstance(let, LetStmt) and free_vars(let.value) == {i} and let.value == i * 48 + i * 4
    assert same_bits(kern(body), out, np.zeros(256, np.int32))


def new_lets(before, after):
    old = {x.var for x in lets(before)}
    return [x for x in lets(after) if x.var not in old]


def test_loads_divisions_statements_and_gpu_loops_stay():
    Bf = Buffer("B", (64,), "int32")
    cases = {
        # A[0] may be what the loop stores: it is read again each iteration
        "load": For(i, 8, Store(A, (i,), Load(A, (0,)) * 2 + Load(A, (1,)) * 3 + 1)),
        # x // k, k unknown (maybe 0): evaluating it before the loop could fail where the loop does not run
        "division": LetStmt(k, Load(Bf, (0,)), For(i, 8, Store(A, (i * 8 + (n * 3 + n * 5) // k,), i))),
        "gpu": For(i, 8, For(j, 8, Store(A, (i * 16 + i * 8 + j,), j), "threadIdx.x"), "threadIdx.y"),
        "vectorized": For(i, 8, For(j, 4, Store(A, (k * 64 + k * 4 + j,), j), "vectorized")),
    }
    for what, body in cases.items():
        k0 = kern(body, (A, Bf))
        made = new_lets(k0, hoist_invariants(k0))
        for x in made:
            assert not any(isinstance(y, Load) for y in walk(x.value)), what
            assert not any(isinstance(y, Binary) and y.op == "floordiv" for y in walk(x.value)), what
        assert len(made) == (1 if what == "division" else 0), what  # only n*3 + n*5 moves
    # the statements of a loop never move
    body = For(i, 4, Seq((Barrier(), Intrinsic("shfl.sync.bfly.b32", (BufferRef(A, (i * 4 + n * 8 + n,)), i, 1)))))
    out = hoist_invariants(kern(body))
    assert len(lets(out)) == 1
    loop = next(x for x in walk(out) if isinstance(x, For))
    kept = [type(s).__name__ for s in walk(loop.body) if isinstance(s, (Barrier, Intrinsic))]
    assert kept == ["Barrier", "Intrinsic"]


def test_min_ops_and_invariant_lets():
    body = For(i, 4, For(j, 4, LetStmt(k, i * 8 + 2, Store(A, (k + j,), j))))
    out = hoist_invariants(kern(body))
    (let,) = lets(out)
    assert let.var == k and isinstance(let.body, For) and let.body.var == j  # the let itself left j's loop
    assert hoist_invariants(kern(For(i, 4, For(j, 4, Store(A, (i * 8 + j,), j))))) == kern(
        For(i, 4, For(j, 4, Store(A, (i * 8 + j,), j))))  # one operation: below min_ops=2
    assert lets(hoist_invariants(kern(For(i, 4, For(j, 4, Store(A, (i * 8 + j,), j)))), min_ops=1))


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_scheduled_cpu_kernels_same_bits_after_hoisting(name):
    tensors, _ = PROGRAMS[name]()
    k0 = default_schedule(lower(tensors), "cpu").kernel
    out = hoist_invariants(k0, min_ops=1)
    verify(out)
    inputs = random_inputs(tensors, np.random.default_rng())
    outs = [[np.full(x.shape, 7.0, numpy_dtype(x.dtype)) for x in tensors if not x.is_placeholder] for _ in range(2)]
    run(k0, *inputs, *outs[0])
    run(out, *inputs, *outs[1])
    for a, b in zip(*outs):
        assert a.tobytes() == b.tobytes()


def test_equal_lets_from_two_loops_become_one_and_every_use_follows():
    m = Var("m")
    M = Buffer("M", (1,), "int32")
    for order in (1, -1):  # whichever of the two lets is kept, every use follows it
        loops = (For(j, 4, LetStmt(Var("x1"), m * 8 + m * 2, Store(A, (Var("x1") + j,), j))),
                 For(k, 4, LetStmt(Var("x2"), m * 8 + m * 2, Store(A, (Var("x2") + m * 4 + i * 16 + k,), k))))
        k0 = Kernel("k", (A, M), LetStmt(m, Load(M, (0,)), For(i, 4, Seq(loops[::order]))))
        out = hoist_invariants(k0)
        verify(out)  # no let refers to a variable whose let was merged away
        assert [x.value for x in lets(out)].count(m * 8 + m * 2) == 1
        assert same_bits(k0, out, np.zeros(256, np.int32), np.array([3], np.int32))
