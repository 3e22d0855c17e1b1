"""The CPU backend (tessel IR -> TVM TIR -> LLVM) on hand-built kernels, against numpy and, where
it exists, the reference interpreter.

Every kernel here runs on fresh random inputs; each test states the property it checks.
"""

from __future__ import annotations

import numpy as np
import pytest

from tessel.codegen.tvm import compile_kernel, tvm_script
from tessel.codegen.tvm_tir import to_tvm
from tessel.errors import CodegenError
from tessel.ir.dtypes import numpy_dtype
from tessel.ir.nodes import (
    Allocate,
    Barrier,
    Binary,
    Buffer,
    Cast,
    Const,
    For,
    IfThenElse,
    Kernel,
    LetStmt,
    Load,
    Not,
    Select,
    Seq,
    Store,
    Var,
    call,
    seq,
)

i, j, io, ii = Var("i"), Var("j"), Var("io"), Var("ii")


def interp_run():
    """tessel.ir.interp.run (imported for real: a broken interpreter fails the tests, never skips a check)."""
    from tessel.ir.interp import run

    return run


def run_both(kernel: Kernel, inputs: list, rtol=1e-6, atol=1e-6) -> list:
    """Run the compiled kernel on `inputs` (outputs included, filled with garbage); compare with
    the interpreter when there is one. Returns the compiled run's arrays."""
    compiled = [a.copy() for a in inputs]
    compile_kernel(kernel)(*compiled)
    run = interp_run()
    if run is not None:
        ref = [a.copy() for a in inputs]
        run(kernel, *ref)
        for c, r, p in zip(compiled, ref, kernel.params):
            np.testing.assert_allclose(c.astype(np.float64), r.astype(np.float64), rtol=rtol, atol=atol,
                                       err_msg=f"compiled vs interpreter, buffer {p.name}")
    return compiled


def rand(rng, shape, dtype="float32"):
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith("int"):
        return rng.integers(-50, 50, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(numpy_dtype(dtype))


def garbage(shape, dtype="float32"):
    """An output buffer's initial contents: never the answer."""
    return np.full(shape, 7, dtype=numpy_dtype(dtype))


# ---------------------------------------------------------------------------------------------
# Loop kinds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outer,inner", [("serial", "serial"), ("parallel", "vectorized"), ("unrolled", "vectorized"),
                                         ("parallel", "unrolled"), ("parallel", "parallel")])
def test_loop_kinds_compute_the_same_values(outer, inner):
    """C[i, j] = A[i, j] * B[j] + 1 under every loop-kind combination (nested parallel included,
    which runs the inner loop serially)."""
    rng = np.random.default_rng(1)
    A, B, C = Buffer("A", (6, 16)), Buffer("B", (16,)), Buffer("C", (6, 16))
    body = For(i, 6, For(j, 16, Store(C, (i, j), A[i, j] * B[j] + 1.0), inner), outer)
    k = Kernel(f"loops_{outer}_{inner}", (A, B, C), body)
    a, b = rand(rng, (6, 16)), rand(rng, (16,))
    _, _, c = run_both(k, [a, b, garbage((6, 16))])
    np.testing.assert_allclose(c, a * b + 1, rtol=1e-6, atol=1e-6)  # LLVM may fuse to an FMA
    script = tvm_script(k)
    if "parallel" == outer:
        assert "T.parallel(6)" in script
    if inner == "vectorized":
        assert "T.vectorized(16)" in script
    if inner == "parallel":  # nested parallelism is demoted, not passed to TVM
        assert "T.parallel(16)" not in script


def test_vectorized_loop_gives_vector_instructions():
    """A vectorized float32 loop of 8 lanes compiles to 256-bit (ymm) or wider instructions."""
    A, B = Buffer("A", (64,)), Buffer("B", (64,))
    k = Kernel("vec_asm", (A, B), For(io, 8, For(ii, 8, Store(B, (io * 8 + ii,), A[io * 8 + ii] * 3.0),
                                                 "vectorized")))
    from tessel.codegen import tvm_runtime

    asm = tvm_runtime.inspect(tvm_runtime.compile_module(to_tvm(k)), "asm")
    assert "ymm" in asm or "zmm" in asm
    rng = np.random.default_rng(2)
    a = rand(rng, (64,))
    _, b = run_both(k, [a, garbage((64,))])
    np.testing.assert_allclose(b, a * 3, rtol=1e-6)


def test_split_loop_with_symbolic_tail_extent():
    """A vectorized loop whose extent is an expression (a tail `min(8, 20 - io*8)`) runs serially
    and still covers exactly the 20 elements."""
    A, B = Buffer("A", (20,)), Buffer("B", (20,))
    ext = Binary("min", Const(8), Const(20) - io * 8)
    k = Kernel("tail", (A, B), For(io, 3, For(ii, ext, Store(B, (io * 8 + ii,), A[io * 8 + ii] + 2.0), "vectorized")))
    rng = np.random.default_rng(3)
    a = rand(rng, (20,))
    _, b = run_both(k, [a, garbage((20,))])
    np.testing.assert_allclose(b, a + 2, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Allocations, lets, ifs
# ---------------------------------------------------------------------------------------------


def softmax_kernel(m: int, n: int, vector: bool) -> Kernel:
    """Row softmax with a global temporary E (m, n) and a local accumulator acc (2,) per row."""
    X, Y = Buffer("X", (m, n)), Buffer("Y", (m, n))
    E = Buffer("E", (m, n), scope="global")
    acc = Buffer("acc", (2,), scope="local")
    kind = "vectorized" if vector else "serial"
    row = seq(
        Store(acc, (0,), Const(float("-inf"), "float32")),
        For(j, n, Store(acc, (0,), Binary("max", acc[0], X[i, j]))),
        Store(acc, (1,), Const(0.0, "float32")),
        For(j, n, seq(Store(E, (i, j), call("exp", X[i, j] - acc[0])), Store(acc, (1,), acc[1] + E[i, j]))),
        LetStmt(Var("inv", "float32"), 1.0 / acc[1],
                For(j, n, Store(Y, (i, j), E[i, j] * Var("inv", "float32")), kind)),
    )
    return Kernel(f"softmax_{vector}", (X, Y), Allocate(E, For(i, m, Allocate(acc, row), "parallel")))


@pytest.mark.parametrize("vector", [False, True])
def test_global_and_local_allocations(vector):
    """Softmax through a global temporary and a per-row local accumulator matches numpy."""
    rng = np.random.default_rng(4)
    x = rand(rng, (5, 16))
    _, y = run_both(softmax_kernel(5, 16, vector), [x, garbage((5, 16))], rtol=1e-5)
    z = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(y, z / z.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_let_inside_vectorized_loop():
    """A let in a vectorized loop binds each lane's own value (TVMScript `x = ...` text would
    give every lane the last lane's value in TVM 0.27)."""
    A, B = Buffer("A", (64,)), Buffer("B", (64,))
    x = Var("x", "float32")
    idx = io * 8 + ii
    body = For(io, 8, For(ii, 8, LetStmt(x, A[idx] * 2.0, Store(B, (idx,), Binary("max", x, Const(0.0, "float32")))),
                          "vectorized"))
    rng = np.random.default_rng(5)
    a = rand(rng, (64,))
    _, b = run_both(Kernel("let_vec", (A, B), body), [a, garbage((64,))])
    np.testing.assert_allclose(b, np.maximum(2 * a, 0), rtol=1e-6)


def test_let_bound_index_and_shadowing_by_scope():
    """Lets binding an index and a bool, used in loads, stores and conditions."""
    A, B = Buffer("A", (10,)), Buffer("B", (10,))
    r, neg = Var("r"), Var("neg", "bool")
    body = For(i, 10, LetStmt(r, 9 - i, LetStmt(neg, A[r] < 0.0,
                                                IfThenElse(neg, Store(B, (i,), -A[r]), Store(B, (i,), A[r])))))
    rng = np.random.default_rng(6)
    a = rand(rng, (10,))
    _, b = run_both(Kernel("let_idx", (A, B), body), [a, garbage((10,))])
    np.testing.assert_allclose(b, np.abs(a[::-1]), rtol=1e-6)


@pytest.mark.parametrize("kind", ["serial", "vectorized", "parallel"])
def test_if_then_else(kind):
    """IfThenElse with and without else, in each loop kind: B = A where A > 0 else -2; C set only
    where i is even."""
    A, B, C = Buffer("A", (32,)), Buffer("B", (32,)), Buffer("C", (32,))
    body = For(i, 32, seq(
        IfThenElse(A[i] > 0.0, Store(B, (i,), A[i]), Store(B, (i,), Const(-2.0, "float32"))),
        IfThenElse((i % 2).eq(0), Store(C, (i,), A[i] * 4.0)),
    ), kind)
    rng = np.random.default_rng(7)
    a = rand(rng, (32,))
    _, b, c = run_both(Kernel(f"ite_{kind}", (A, B, C), body), [a, garbage((32,)), garbage((32,))])
    np.testing.assert_allclose(b, np.where(a > 0, a, -2), rtol=1e-6)
    expect = np.full(32, 7.0, "float32")
    expect[::2] = a[::2] * 4
    np.testing.assert_allclose(c, expect, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Select is lazy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["serial", "vectorized"])
def test_select_guards_out_of_bounds_loads(kind):
    """B[i] = A[i - 1] if i > 0 else 0 (padding): the load at -1 never happens, and the values are a
    shift: the guarded load becomes T.if_then_else (tvm_tir.CLAMP_SELECTS, off, would clamp the index
    and select eagerly in vectorized loops)."""
    A, B = Buffer("A", (16,)), Buffer("B", (16,))
    k = Kernel(f"pad_{kind}", (A, B), For(i, 16, Store(B, (i,), Select(i > 0, A[i - 1], Const(0.0, "float32"))), kind))
    assert "if_then_else" in tvm_script(k)
    rng = np.random.default_rng(8)
    a = rand(rng, (16,))
    _, b = run_both(k, [a, garbage((16,))])
    np.testing.assert_allclose(b, np.concatenate([[0], a[:-1]]), rtol=1e-6)


def test_select_guards_integer_division_by_zero():
    """C = A // B where B != 0 else 0: eager evaluation would trap (SIGFPE) on the zeros."""
    A, B, C = Buffer("A", (64,), "int32"), Buffer("B", (64,), "int32"), Buffer("C", (64,), "int32")
    k = Kernel("safe_div", (A, B, C), For(i, 64, Store(C, (i,), Select(B[i].ne(0), A[i] // B[i], Const(0, "int32")))))
    rng = np.random.default_rng(9)
    a = rand(rng, (64,), "int32")
    b = rng.integers(-3, 4, size=64).astype("int32")
    b[:4] = 0
    _, _, c = run_both(k, [a, b, garbage((64,), "int32")])
    safe = np.where(b != 0, b, 1)
    np.testing.assert_array_equal(c, np.where(b != 0, a // safe, 0))


def test_select_without_loads_is_eager_and_vectorizes():
    """A Select whose branches cannot fault stays a Select (a blend), not a branch."""
    A, B = Buffer("A", (16,)), Buffer("B", (16,))
    x = A[i]
    k = Kernel("relu_sel", (A, B), For(i, 16, LetStmt(Var("v", "float32"), x, Store(
        B, (i,), Select(Var("v", "float32") > 0.0, Var("v", "float32"), Var("v", "float32") * 0.5))), "vectorized"))
    script = tvm_script(k)
    assert "T.Select" in script and "if_then_else" not in script
    rng = np.random.default_rng(10)
    a = rand(rng, (16,))
    _, b = run_both(k, [a, garbage((16,))])
    np.testing.assert_allclose(b, np.where(a > 0, a, a * 0.5), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Dtypes, integer division, casts, math
# ---------------------------------------------------------------------------------------------

ALL = ["float16", "bfloat16", "float32", "float64", "int8", "int32", "int64", "bool"]


@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("kind", ["serial", "vectorized"])
def test_every_dtype_round_trips_and_computes(dtype, kind):
    """B = A op A' per dtype (add for numbers, xor-like `a != b` for bools), and C = copy of A
    reversed: loads, stores and arithmetic of each dtype, zero-copy in and out."""
    n = 32
    A, A2, B, C = (Buffer(nm, (n,), dtype) for nm in ("A", "A2", "B", "C"))
    combined = A[i].ne(A2[i]) if dtype == "bool" else A[i] + A2[i]
    k = Kernel(f"dt_{dtype}_{kind}", (A, A2, B, C), For(i, n, seq(Store(B, (i,), combined),
                                                                  Store(C, (i,), A[n - 1 - i])), kind))
    rng = np.random.default_rng(11)
    a, a2 = rand(rng, (n,), dtype), rand(rng, (n,), dtype)
    out = run_both(k, [a, a2, np.zeros(n, numpy_dtype(dtype)), np.zeros(n, numpy_dtype(dtype))], rtol=1e-2)
    if dtype == "bool":
        np.testing.assert_array_equal(out[2], a != a2)
    elif dtype == "int8":
        np.testing.assert_array_equal(out[2], (a.astype(np.int64) + a2).astype(np.int8))
    elif dtype.startswith("int"):
        np.testing.assert_array_equal(out[2], a + a2)
    else:
        expect = (a.astype(np.float64) + a2.astype(np.float64)).astype(numpy_dtype(dtype))
        np.testing.assert_allclose(out[2].astype(np.float64), expect.astype(np.float64), rtol=1e-2)
    np.testing.assert_array_equal(out[3], a[::-1])


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64"])
@pytest.mark.parametrize("kind", ["serial", "vectorized"])
def test_floordiv_floormod_round_toward_minus_infinity(dtype, kind):
    """Q = A // B and R = A % B with negative operands follow Python: floor rounding, the
    remainder takes the divisor's sign."""
    n = 64
    A, B, Q, R = (Buffer(nm, (n,), dtype) for nm in ("A", "B", "Q", "R"))
    k = Kernel(f"fdiv_{dtype}_{kind}", (A, B, Q, R),
               For(i, n, seq(Store(Q, (i,), A[i] // B[i]), Store(R, (i,), A[i] % B[i])), kind))
    rng = np.random.default_rng(12)
    a = rng.integers(-100, 100, size=n).astype(dtype)
    b = rng.choice([-7, -3, -1, 1, 2, 5, 9], size=n).astype(dtype)
    _, _, q, r = run_both(k, [a, b, garbage((n,), dtype), garbage((n,), dtype)])
    np.testing.assert_array_equal(q, a.astype(np.int64) // b)
    np.testing.assert_array_equal(r, a.astype(np.int64) % b)


def test_floordiv_by_constants_on_indices():
    """Index arithmetic i // 4 and i % 4 on negative-shifted indices: B[i] = A[(i - 5) // 4 + 2] + ((i - 5) % 4)."""
    A, B = Buffer("A", (8,)), Buffer("B", (16,))
    val = A[(i - 5) // 4 + 2] + Cast("float32", (i - 5) % 4)
    k = Kernel("fdiv_idx", (A, B), For(i, 16, Store(B, (i,), val), "vectorized"))
    rng = np.random.default_rng(13)
    a = rand(rng, (8,))
    _, b = run_both(k, [a, garbage((16,))])
    idx = np.arange(16)
    np.testing.assert_allclose(b, a[(idx - 5) // 4 + 2] + (idx - 5) % 4, rtol=1e-6)


CASTS = [("float32", "int32"), ("float32", "int8"), ("float64", "int64"), ("float32", "float16"),
         ("float32", "bfloat16"), ("float16", "float32"), ("bfloat16", "float64"), ("int32", "float32"),
         ("int8", "int32"), ("int64", "int32"), ("float32", "bool"), ("int32", "bool"), ("bool", "float32"),
         ("bool", "int8")]


@pytest.mark.parametrize("src,dst", CASTS)
def test_casts(src, dst):
    """Casts as numpy does them: float -> int truncates toward zero, -> bool tests != 0."""
    n = 32
    A, B = Buffer("A", (n,), src), Buffer("B", (n,), dst)
    k = Kernel(f"cast_{src}_{dst}", (A, B), For(i, n, Store(B, (i,), Cast(dst, A[i])), "vectorized"))
    rng = np.random.default_rng(14)
    if src.startswith("float") or src == "bfloat16":
        a = (rng.standard_normal(n) * 40).astype(numpy_dtype(src))
        a[:3] = [0.0, -0.75, 2.5]
    else:
        a = rand(rng, (n,), src)
    if src == "int32" and dst == "bool":
        a[:2] = 0
    _, b = run_both(k, [a, np.zeros(n, numpy_dtype(dst))], rtol=1e-2)
    if dst.startswith("int") and src.startswith("float"):
        expect = np.trunc(a.astype(np.float64)).astype(dst)
    elif dst == "bool":
        expect = a != 0
    else:
        expect = a.astype(numpy_dtype(dst))
    np.testing.assert_array_equal(b, expect)


UNARY = {"exp": np.exp, "log": None, "sqrt": None, "rsqrt": None, "tanh": np.tanh,
         "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "erf": None, "sin": np.sin, "cos": np.cos, "abs": np.abs,
         "floor": np.floor, "ceil": np.ceil}


def _np_math(func, x):
    import math

    if func == "log":
        return np.log(x)
    if func == "sqrt":
        return np.sqrt(x)
    if func == "rsqrt":
        return 1 / np.sqrt(x)
    if func == "erf":
        return np.vectorize(math.erf)(x)
    return UNARY[func](x)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_math_functions(dtype):
    """Every unary math function (one output each, one vectorized kernel per dtype) against numpy
    in float64; inputs are positive for log / sqrt / rsqrt."""
    n = 16
    funcs = list(UNARY)
    A = Buffer("A", (n,), dtype)
    P = Buffer("P", (n,), dtype)  # |A| + 0.1, for the functions that need positive inputs
    outs = [Buffer(f"out_{f}", (n,), dtype) for f in funcs]
    pos = call("abs", A[i]) + 0.1
    stores = [Store(o, (i,), call(f, pos if f in ("log", "sqrt", "rsqrt") else A[i])) for f, o in zip(funcs, outs)]
    k = Kernel(f"math_{dtype}", (A, P, *outs), For(i, n, seq(Store(P, (i,), pos), *stores), "vectorized"))
    rng = np.random.default_rng(15)
    a = (rng.standard_normal(n) * 2).astype(numpy_dtype(dtype))
    tol = {"float16": 2e-3, "bfloat16": 1.6e-2, "float32": 2e-6, "float64": 1e-12}[dtype]
    res = run_both(k, [a, garbage((n,), dtype)] + [garbage((n,), dtype) for _ in funcs], rtol=tol, atol=tol)
    p = res[1].astype(np.float64)  # the positive input, as rounded to dtype by the kernel
    for f, got in zip(funcs, res[2:]):
        x = p if f in ("log", "sqrt", "rsqrt") else a.astype(np.float64)
        np.testing.assert_allclose(got.astype(np.float64), _np_math(f, x), rtol=2 * tol, atol=2 * tol,
                                   err_msg=f"{f} on {dtype}")


def test_pow_min_max_compare_logic():
    """pow, min, max, comparisons, and/or/not in one kernel."""
    n = 32
    A, B = Buffer("A", (n,)), Buffer("B", (n,))
    P, M, L = Buffer("P", (n,)), Buffer("M", (n,)), Buffer("L", (n,), "bool")
    x, y = A[i], B[i]
    body = For(i, n, seq(
        Store(P, (i,), call("pow", call("abs", x) + 0.5, y)),
        Store(M, (i,), Binary("min", x, y) - Binary("max", x, y)),
        Store(L, (i,), ((x < y) & Not(x.eq(y))) | (x >= 1.0)),
    ), "vectorized")
    rng = np.random.default_rng(16)
    a, b = rand(rng, (n,)), rand(rng, (n,))
    _, _, p, m, lg = run_both(Kernel("mixed", (A, B, P, M, L), body),
                              [a, b, garbage((n,)), garbage((n,)), np.zeros(n, bool)], rtol=1e-5)
    np.testing.assert_allclose(p, (np.abs(a) + 0.5) ** b, rtol=1e-5)
    np.testing.assert_allclose(m, np.minimum(a, b) - np.maximum(a, b), rtol=1e-6)
    np.testing.assert_array_equal(lg, ((a < b) & (a != b)) | (a >= 1))


def test_zero_dimensional_buffer():
    """A full reduction into a 0-d output S[()] = sum(A)."""
    A, S = Buffer("A", (10,)), Buffer("S", ())
    k = Kernel("sum0d", (A, S), seq(Store(S, (), Const(0.0, "float32")), For(i, 10, Store(S, (), Load(S, ()) + A[i]))))
    rng = np.random.default_rng(17)
    a = rand(rng, (10,))
    _, s = run_both(k, [a, np.array(3.0, "float32")], rtol=1e-5)
    np.testing.assert_allclose(s, a.sum(), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# What the CPU backend refuses
# ---------------------------------------------------------------------------------------------


def test_gpu_constructs_are_refused():
    A = Buffer("A", (8,))
    with pytest.raises(CodegenError, match="threadIdx.x"):
        to_tvm(Kernel("g1", (A,), For(i, 8, Store(A, (i,), A[i] + 1.0), "threadIdx.x")))
    with pytest.raises(CodegenError, match="barrier"):
        to_tvm(Kernel("g2", (A,), Seq((Barrier(), Store(A, (0,), Const(1.0, "float32"))))))
    with pytest.raises(CodegenError, match="target 'cuda'"):
        to_tvm(Kernel("g3", (A,), Store(A, (0,), Const(1.0, "float32")), target="cuda"))


def test_unbound_variable_and_out_of_scope_buffer_are_refused():
    A, T = Buffer("A", (8,)), Buffer("T", (8,), scope="local")
    with pytest.raises(CodegenError, match="variable 'j'"):
        to_tvm(Kernel("u1", (A,), For(i, 8, Store(A, (i,), A[j]))))
    with pytest.raises(CodegenError, match="buffer 'T'"):
        to_tvm(Kernel("u2", (A,), seq(Allocate(T, Store(T, (0,), Const(1.0, "float32"))),
                                      Store(A, (0,), T[0]))))
