"""The verifier finds every kind of ill-formed kernel, names the culprit, and never cries wolf.

Each check gets a kernel that violates it, and the message must name the kernel and the offending
variable, buffer or statement. DSL-lowered kernels (elementwise, reductions, GEMM, softmax,
layer norm, conv2d padded with where() or with a padded tensor), scheduled ones and simplified
ones must verify clean: the out-of-bounds check reports only accesses for which it has a concrete
witness, and respects Select branches and enclosing conditions.
"""

from __future__ import annotations

import pytest

import tessel as ts
from tessel.errors import VerifyError
from tessel.ir.dsl import lower
from tessel.ir.nodes import (
    Allocate, Barrier, Binary, Buffer, BufferRef, Call, Cast, Const, For, IfThenElse, Intrinsic, Kernel, Launch,
    LetStmt, Load, Not, Select, Seq, Store, Var,
)
from tessel.ir.verify import verify, verify_expr
from tests.ir.dsl_programs import PROGRAMS

A = Buffer("A", (8,), "float32")
M = Buffer("M", (4, 6), "float32")
IB = Buffer("IB", (8,), "int32")
i, j, k = Var("i"), Var("j"), Var("k")
ONE = Const(1.0, "float32")


def problems(kernel) -> str:
    with pytest.raises(VerifyError) as info:
        verify(kernel)
    return str(info.value)


def assert_problem(kernel, *fragments, count=None):
    msg = problems(kernel)
    assert f"kernel '{kernel.name}'" in msg
    for f in fragments:
        assert f in msg, f"{f!r} not in:\n{msg}"
    if count is not None:
        assert f"with {count} problem(s)" in msg, msg
    return msg


def kern(body, params=(A,), target="cpu", name="bad", launch=None):
    return Kernel(name, tuple(params), body, target, launch)


# ---------------------------------------------------------------------------------------------
# Scoping
# ---------------------------------------------------------------------------------------------


def test_undefined_variable():
    assert_problem(kern(Store(A, (i,), ONE)), "variable 'i'", "outside the loop or let binding it", "A[i]", count=1)


def test_variable_used_after_its_loop():
    body = Seq((For(i, 8, Store(A, (i,), ONE)), Store(A, (i,), A[0])))
    assert_problem(kern(body), "variable 'i'", "outside the loop", count=1)


def test_let_variable_used_outside_its_let():
    n = Var("n")
    body = Seq((LetStmt(n, Const(2), Store(A, (n,), ONE)), Store(A, (n + 1,), ONE)))
    assert_problem(kern(body), "variable 'n'", "(n + 1)", count=1)


def test_loop_extent_cannot_use_its_own_variable():
    assert_problem(kern(For(i, i + 1, Store(A, (Const(0),), ONE))), "variable 'i'")


def test_variable_bound_again_inside_its_scope():
    msg = assert_problem(kern(For(i, 8, For(i, 4, Store(A, (i,), ONE)))), "'i' is bound again")
    assert "two loops bind the variable 'i'" in msg
    assert_problem(kern(For(i, 8, LetStmt(i, Const(1), Store(A, (i,), ONE)))), "variable 'i' is bound again",
                   "let i = 1")


def test_two_sibling_loops_with_one_name():
    body = Seq((For(i, 8, Store(A, (i,), ONE)), For(i, 8, Store(A, (i,), ONE))))
    assert_problem(kern(body), "two loops bind the variable 'i'", count=1)


def test_buffer_used_outside_its_allocate():
    T = Buffer("T", (8,), "float32")
    body = Seq((Allocate(T, For(i, 8, Store(T, (i,), ONE))), For(j, 8, Store(A, (j,), T[j]))))
    assert_problem(kern(body), "buffer 'T'", "outside its Allocate and is not a parameter", count=1)


def test_buffer_that_is_neither_allocated_nor_a_parameter():
    T = Buffer("T", (8,), "float32")
    assert_problem(kern(For(i, 8, Store(T, (i,), ONE))), "buffer 'T'", "not a parameter")


def test_buffer_allocated_twice_or_shadowing_a_parameter():
    assert_problem(kern(Allocate(A, Store(A, (Const(0),), ONE))), "buffer 'A' is allocated again")


def test_two_buffers_with_one_name_and_different_shapes():
    other = Buffer("A", (4,), "float32")
    assert_problem(kern(For(i, 4, Store(A, (i,), other[i]))), "two buffers are named 'A'", "[8]", "[4]")
    wrong_dtype = Buffer("A", (8,), "float16")
    assert_problem(kern(For(i, 8, Store(wrong_dtype, (i,), Const(1.0, "float16")))), "two buffers are named 'A'")


def test_parameters_have_unique_names_and_live_in_global_memory():
    assert_problem(kern(Seq(()), params=(A, A)), "two parameters are named 'A'")
    S = Buffer("S", (8,), "float32", "shared")
    assert_problem(kern(Seq(()), params=(S,), target="cuda"), "parameter buffer 'S' has scope 'shared'")


# ---------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------


def test_index_count_must_match_the_buffer():
    assert_problem(kern(For(i, 4, Store(M, (i,), ONE)), params=(M,)), "'M' has 2 dimension(s)", "1 index")
    assert_problem(kern(For(i, 8, Store(A, (i,), M[i, i, i])), params=(A, M)), "'M' has 2 dimension(s)", "3 index")


@pytest.mark.parametrize("expr,fragment", [
    (Binary("add", Load(A, (Const(0),)), Const(1)), "operands of 'add' have dtypes float32 and int32"),
    (Binary("div", i, Const(2)), "'div' on int32 operands"),
    (Binary("and", i, i), "'and' needs bool operands"),
    (Binary("or", i < 2, i), "'or' needs bool operands"),
    (Binary("add", i < 2, i < 3), "arithmetic 'add' on bool operands"),
    (Not(i), "'not' of a int32 operand"),
    (Select(i, i, i), "select condition has dtype int32"),
    (Select(i < 2, i, Const(1, "int64")), "select branches have dtypes int32 and int64"),
    (Call("exp", (i,)), "'exp' of a int32 argument"),
    (Call("pow", (ONE, Const(2.0, "float64"))), "arguments of 'pow' have different dtypes"),
    (Call("frobnicate", (ONE,)), "unknown math function 'frobnicate'"),
    (Cast("float99", i), "cast to unknown dtype 'float99'"),
])
def test_dtype_mismatches(expr, fragment):
    body = For(i, 8, LetStmt(Var("v", expr.dtype), expr, Store(A, (i,), ONE)))
    assert_problem(kern(body), fragment)


def test_abs_of_an_integer_is_fine():
    verify(kern(For(i, 8, Store(IB, (i,), Call("abs", (i - 4,)))), params=(IB,)))


def test_store_value_dtype_must_match_the_buffer():
    assert_problem(kern(For(i, 8, Store(A, (i,), Const(1.0, "float16")))), "store of a float16 value into float32 "
                   "buffer 'A'")


def test_conditions_must_be_bool():
    assert_problem(kern(For(i, 8, IfThenElse(i, Store(A, (i,), ONE)))), "condition of 'if i' has dtype int32")


def test_indices_and_extents_must_be_integers():
    f = Var("f", "float32")
    assert_problem(kern(LetStmt(f, ONE, Store(A, (f,), ONE))), "index 0 of 'A'", "has dtype float32")
    assert_problem(kern(For(i, ONE, Store(A, (Const(0),), ONE))), "extent of dtype float32")
    assert_problem(kern(For(f, 8, Store(A, (Const(0),), ONE))), "variable 'f'", "expected an integer")


def test_let_value_must_match_its_variable():
    n = Var("n", "int64")
    assert_problem(kern(LetStmt(n, Const(1), Store(A, (Const(0),), ONE))), "binds a int32 value to a int64 variable")


# ---------------------------------------------------------------------------------------------
# Out-of-bounds accesses
# ---------------------------------------------------------------------------------------------


def test_constant_out_of_bounds_store_and_load():
    msg = assert_problem(kern(For(i, 8, Store(A, (i + 1,), ONE))), "index 0 of 'A'", "is 8 at i=7",
                         "outside [0, 7]")
    assert "A[(i + 1)]" in msg
    assert_problem(kern(For(i, 8, Store(A, (i,), A[i - 1]))), "index 0 of 'A'", "is -1 at i=0")
    assert_problem(kern(Store(A, (Const(8),), ONE)), "index 0 of 'A'", "is 8")


def test_out_of_bounds_in_a_two_dimensional_nest():
    body = For(i, 4, For(j, 6, Store(M, (i, j), M[j, i])))
    assert_problem(kern(body, params=(M,)), "index 0 of 'M'", "outside [0, 3]", count=1)


def test_loads_in_select_branches_may_be_out_of_bounds():
    guarded = Select((i >= 1) & (i < 8), A[i - 1], Const(0.0, "float32"))
    verify(kern(For(i, 9, Store(Buffer("P", (9,), "float32"), (i,), guarded)), params=(A, Buffer("P", (9,)))))


def test_but_select_conditions_are_checked():
    body = For(i, 8, Store(A, (i,), Select(A[i + 1] > 0.0, ONE, ONE)))
    assert_problem(kern(body), "index 0 of 'A'", "is 8 at i=7")


def test_guards_of_the_form_var_less_than_constant_tighten_ranges():
    verify(kern(For(i, 16, IfThenElse(i < 7, Store(A, (i + 1,), ONE)))))
    verify(kern(For(i, 16, IfThenElse(Const(7) > i, Store(A, (i + 1,), ONE)))))
    verify(kern(For(i, 16, IfThenElse(Not(i >= 8), Store(A, (i,), ONE)))))
    # the else branch of `i < 8` runs for i >= 8: an access there is out of bounds
    body = For(i, 16, IfThenElse(i < 8, Store(A, (i,), ONE), Store(A, (i,), ONE)))
    assert_problem(kern(body), "index 0 of 'A'", "at i=")


def test_guards_on_expressions_are_respected(monkeypatch):
    # split with a factor that does not divide: io*4 + ii runs to 11 but is guarded by `< 8`
    io, ii = Var("io"), Var("ii")
    import tessel.ir.verify as v

    searches = []
    monkeypatch.setattr(v, "witness", lambda *a: searches.append(a) or None)
    verify(kern(For(io, 3, For(ii, 4, IfThenElse(io * 4 + ii < 8, Store(A, (io * 4 + ii,), ONE))))))
    assert not searches  # the guard bounds the index itself: no witness search needed
    monkeypatch.undo()
    verify(kern(For(io, 3, For(ii, 4, IfThenElse((io * 4 + ii < 8) & (ii >= 0), Store(A, (io * 4 + ii,), ONE))))))
    # without the guard it is a real out-of-bounds access, with a witness
    assert_problem(kern(For(io, 3, For(ii, 4, Store(A, (io * 4 + ii,), ONE)))), "index 0 of 'A'", "io=2")


def test_correlated_indices_are_not_false_alarms():
    # interval arithmetic alone sees [-24, 31] for (i*8 + j) - i*8; every real value is j in [0, 7]
    verify(kern(For(i, 4, For(j, 8, Store(A, ((i * 8 + j) - i * 8,), ONE)))))
    verify(kern(For(i, 32, Store(A, (i - (i // 8) * 8,), ONE))))


def test_loops_with_variable_extents():
    # a triangular nest: j < 8 - i, so i + j <= 7
    verify(kern(For(i, 8, For(j, Const(8) - i, Store(A, (i + j,), ONE)))))
    assert_problem(kern(For(i, 8, For(j, Const(9) - i, Store(A, (i + j,), ONE)))), "is 8 at")


def test_let_bound_indices():
    n = Var("n")
    verify(kern(For(i, 4, LetStmt(n, i * 2 + 1, Store(A, (n,), ONE)))))
    assert_problem(kern(For(i, 5, LetStmt(n, i * 2, Store(A, (n,), ONE)))), "index 0 of 'A'", "is 8")


def test_loads_through_indirection_are_not_judged():
    verify(kern(For(i, 8, Store(A, (IB[i],), ONE)), params=(A, IB)))


# ---------------------------------------------------------------------------------------------
# GPU structure
# ---------------------------------------------------------------------------------------------

TX, BX = Var("tx"), Var("bx")
S = Buffer("S", (32,), "float32", "shared")
G = Buffer("G", (64,), "float32")


def gpu(body):
    return kern(Allocate(S, For(BX, 2, For(TX, 32, body, kind="threadIdx.x"), kind="blockIdx.x")), params=(G,),
                target="cuda", launch=Launch((2, 1, 1), (32, 1, 1)))


def test_a_uniform_barrier_is_fine():
    verify(gpu(Seq((Store(S, (TX,), G[BX * 32 + TX]), Barrier(), Store(G, (BX * 32 + TX,), S[31 - TX])))))
    verify(gpu(IfThenElse(BX < 1, Barrier())))  # the whole block takes the same branch


def test_barrier_under_a_thread_dependent_condition():
    assert_problem(gpu(IfThenElse(TX < 16, Barrier())), "barrier under a thread-divergent condition", "tx < 16")
    n = Var("n")
    assert_problem(gpu(LetStmt(n, TX * 2, IfThenElse(n < 16, Seq((Barrier(),))))), "thread-divergent")
    assert_problem(gpu(IfThenElse(G[TX] > 0.0, Seq(()), Barrier())), "thread-divergent")


def test_barrier_in_a_loop_whose_extent_depends_on_the_thread():
    assert_problem(gpu(For(i, TX + 1, Barrier())), "thread-divergent loop extent", "for i in range((tx + 1))")


def test_barrier_in_a_thread_loop_shorter_than_the_block():
    # the launch has 32 threads along x; those with tx >= 16 skip the loop body and its barrier
    k = kern(Allocate(S, For(TX, 16, Seq((Store(S, (TX,), G[TX]), Barrier())), kind="threadIdx.x")),
             params=(G,), target="cuda", launch=Launch((1, 1, 1), (32, 1, 1)))
    assert_problem(k, "barrier under a thread-divergent loop 'for tx in range(16) [threadIdx.x]'", "16 of the 32")
    # without a Launch the block is as large as the largest loop bound to the axis
    ty = Var("ty")
    body = Seq((For(TX, 32, Store(S, (TX,), G[TX]), kind="threadIdx.x"), For(ty, 8, Barrier(), kind="threadIdx.x")))
    assert_problem(kern(Allocate(S, body), params=(G,), target="cuda"), "8 of the 32 threads")


def test_thread_loop_longer_than_the_launch():
    k = kern(For(TX, 64, Store(G, (TX,), ONE), kind="threadIdx.x"), params=(G,), target="cuda",
             launch=Launch((1, 1, 1), (32, 1, 1)))
    assert_problem(k, "is bound to threadIdx.x with extent 64 but the launch has 32 along threadIdx.x")


def test_launch_cluster_must_divide_the_grid():
    body = For(BX, 4, Store(G, (BX,), ONE), kind="blockIdx.x")
    verify(kern(body, params=(G,), target="cuda", launch=Launch((4, 1, 1), (32, 1, 1), 0, (2, 1, 1))))
    assert_problem(kern(body, params=(G,), target="cuda", launch=Launch((4, 1, 1), (32, 1, 1), 0, (3, 1, 1))),
                   "cluster (3, 1, 1) does not divide the grid (4, 1, 1) along x")
    assert_problem(kern(body, params=(G,), target="cuda", launch=Launch((32, 1, 1), (32, 1, 1), 0, (32, 1, 1))),
                   "has 32 blocks; a cluster holds at most 16")
    assert_problem(kern(body, params=(G,), target="cuda", launch=Launch((4, 1, 1), (32, 1, 1), 0, (0, 1, 1))),
                   "must be three positive integers")


def test_loop_kinds():
    assert_problem(kern(For(i, 8, Store(A, (i,), ONE), kind="sideways")), "unknown kind 'sideways'")
    assert_problem(kern(For(i, 8, Store(A, (i,), ONE), kind="threadIdx.x")), "GPU axis threadIdx.x in a CPU kernel")
    assert_problem(kern(For(k, 2, For(i, Const(8) - k * 4, Store(A, (i,), ONE), kind="vectorized"))),
                   "vectorized loop", "needs a constant extent")
    nested = For(TX, 4, For(j, 8, Store(A, (j,), ONE), kind="threadIdx.x"), kind="threadIdx.x")
    assert_problem(kern(nested, target="cuda"), "bound to threadIdx.x, already bound by the enclosing loop 'tx'")


def test_parallel_inside_parallel():
    body = For(i, 2, For(j, 4, Store(A, (i * 4 + j,), ONE), kind="parallel"), kind="parallel")
    assert_problem(kern(body), "parallel loop 'for j in range(4) [parallel]' is nested inside parallel loop "
                               "'for i in range(2) [parallel]'")
    ok = For(i, 2, For(j, 4, Store(A, (i * 4 + j,), ONE), kind="vectorized"), kind="parallel")
    verify(kern(ok))


def test_shared_buffers_on_a_cpu_kernel():
    assert_problem(kern(Allocate(S, For(i, 8, Store(A, (i,), S[i])))), "buffer 'S' is in shared memory in a CPU kernel")


def test_intrinsic_operands_are_checked_for_scope_and_rank():
    T = Buffer("T", (8,), "float32", "local")
    ok = Allocate(T, Intrinsic("copy8", (BufferRef(T, (Const(0),)), BufferRef(A, (Const(0),)))))
    verify(kern(ok))
    assert_problem(kern(Intrinsic("copy8", (BufferRef(T, (Const(0),)),))), "buffer 'T'", "not a parameter")
    assert_problem(kern(Intrinsic("copy8", (BufferRef(M, (Const(0),)),)), params=(M,)), "'M' has 2 dimension(s)")


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def test_every_problem_is_listed_each_naming_the_kernel():
    T = Buffer("T", (8,), "float32")
    body = Seq((Store(A, (i,), ONE), Store(T, (Const(0),), ONE), For(j, 8, Store(A, (j + 1,), ONE))))
    msg = assert_problem(kern(body, name="many"), "variable 'i'", "buffer 'T'", "is 8 at j=7", count=3)
    assert all(line.startswith("  - kernel 'many': ") for line in msg.splitlines()[1:])


def test_verify_refuses_what_is_not_a_kernel():
    with pytest.raises(VerifyError, match="expects a Kernel"):
        verify(Store(A, (Const(0),), ONE))


def test_verify_expr():
    verify_expr(i * 4 + j, variables=[i, j])
    verify_expr(Binary("add", i, k))  # no variables given: scoping is not checked
    with pytest.raises(VerifyError, match="variable 'k'"):
        verify_expr(i + k, variables=[i])
    with pytest.raises(VerifyError, match="operands of 'mul'"):
        verify_expr(Binary("mul", i, ONE))


# ---------------------------------------------------------------------------------------------
# No false alarms on real kernels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_dsl_programs_verify_clean(name):
    tensors, _ = PROGRAMS[name]()
    verify(lower(tensors))


def test_conv2d_through_a_padded_tensor_verifies_clean():
    N, C, H, W, F, R = 1, 2, 5, 4, 3, 3
    X = ts.placeholder((N, C, H, W), name="X")
    Wt = ts.placeholder((F, C, R, R), name="Wt")
    Xp = ts.compute((N, C, H + 2, W + 2), lambda n, c, h, w: ts.where(
        (h >= 1) & (h < H + 1) & (w >= 1) & (w < W + 1), X[n, c, h - 1, w - 1], 0.0), name="Xp")
    c, r, s = ts.reduce_axis(C, name="c"), ts.reduce_axis(R, name="r"), ts.reduce_axis(R, name="s")
    Y = ts.compute((N, F, H, W), lambda n, f, y, x: ts.sum(Xp[n, c, y + r, x + s] * Wt[f, c, r, s], axis=[c, r, s]),
                   name="Y")
    verify(lower([X, Wt, Y]))


def test_scheduled_and_simplified_kernels_verify_clean():
    from tessel.passes.simplify import simplify

    tensors, _ = PROGRAMS["gemm_fp32"]()
    kernel = lower(tensors)
    verify(simplify(kernel))
    from tessel.schedules.schedule import Schedule
    sch = Schedule(kernel)
    io, ii = sch.split("i", [None, 3])  # 4 = 2*3 - 2: guarded by io*3 + ii < 4
    sch.split("j", [None, 2])
    sch.split("k", [None, 4])
    verify(sch.kernel)
    verify(simplify(sch.kernel))
