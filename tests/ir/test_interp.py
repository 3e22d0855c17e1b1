"""The reference interpreter computes what its semantics say, checked against independent numpy.

Properties: DSL programs (elementwise with broadcast, reductions, GEMM, softmax, layer norm,
padded conv2d) match their float64 numpy references; float16 / bfloat16 arithmetic rounds once
per operation (checked against exact float64 results rounded once); float32 GEMM accumulates in
order in float32 (bit-exact against a numpy loop); integers wrap; floordiv / floormod round to
minus infinity; casts truncate / saturate / wrap; Select evaluates one branch; out-of-bounds
accesses, division by zero and bad arguments raise; allocated buffers are poisoned. GPU
semantics are tested in test_interp_gpu.py.
"""

from __future__ import annotations

import math
import time

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tessel as ts
from tessel.errors import ArgumentError, DTypeError, TesselError, VerifyError
from tessel.ir.dsl import lower
from tessel.ir.interp import POISON_INT, ExecutionError, Interpreter, interpret_expr, run
from tessel.ir.nodes import (
    Allocate, Binary, Buffer, Call, Cast, Const, For, IfThenElse, Kernel, LetStmt, Load, Select, Store, Var, seq,
)
from tests.ir.dsl_programs import PROGRAMS, random_inputs

BF16 = np.dtype(ml_dtypes.bfloat16)


def _outputs(tensors) -> list[np.ndarray]:
    """Output arrays pre-filled with NaN (or garbage), so an element the kernel misses fails."""
    out = []
    for t in tensors:
        if not t.is_placeholder:
            dt = np.dtype(BF16 if t.dtype == "bfloat16" else t.dtype)
            out.append(np.full(t.shape, np.nan if dt.kind == "f" or dt == BF16 else -7, dtype=dt))
    return out


def _kernel(name, params, body, **kw) -> Kernel:
    return Kernel(name, tuple(params), body, **kw)


def _c(value, dtype="float32") -> Const:
    return Const(value, dtype)


# ---------------------------------------------------------------------------------------------
# DSL programs against numpy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_dsl_program_matches_numpy(name):
    tensors, reference = PROGRAMS[name]()
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    inputs = random_inputs(tensors, rng)
    outputs = _outputs(tensors)
    run(lower(tensors), *inputs, *outputs)
    for got, want in zip(outputs, reference(*inputs)):
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=2e-5, atol=2e-6)


def test_gemm_accumulates_in_order_in_float32_bit_exact():
    # fp16 inputs cast to fp32: products are exact in fp32, the running sum rounds each step.
    A = ts.placeholder((5, 9), "float16", name="A")
    B = ts.placeholder((9, 4), "float16", name="B")
    k = ts.reduce_axis(9, name="k")
    C = ts.compute((5, 4), lambda i, j: ts.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                   name="C")
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 9)).astype(np.float16)
    b = rng.standard_normal((9, 4)).astype(np.float16)
    c = np.full((5, 4), np.nan, np.float32)
    run(lower([A, B, C]), a, b, c)
    acc = np.zeros((5, 4), np.float32)
    for kk in range(9):
        acc = acc + a[:, kk, None].astype(np.float32) * b[None, kk, :].astype(np.float32)
    assert np.array_equal(c, acc)


def test_float16_sum_rounds_every_step():
    # Summing in float16 loses what float32 accumulation keeps: the interpreter must show it.
    A = ts.placeholder((1, 64), "float16", name="A")
    k = ts.reduce_axis(64, name="k")
    S = ts.compute((1,), lambda i: ts.sum(A[i, k], axis=k), name="S")
    a = np.full((1, 64), 0.9375, np.float16)
    a[0, 0] = 2048.0
    s = np.full(1, np.nan, np.float16)
    run(lower([A, S]), a, s)
    want = np.float16(0)
    for x in a[0]:
        want = np.float16(np.float64(want) + np.float64(x))
    assert s[0] == want == 2048.0  # each addend is below half an ulp (1.0) of 2048 in float16
    assert a.astype(np.float32).sum() > 2100  # what a float32 accumulator would have given


def test_integer_dsl_program_wraps():
    A = ts.placeholder((16,), "int32", name="A")
    C = ts.compute((16,), lambda i: A[i] * A[i] * 3 + 7, name="C")
    a = np.random.default_rng(2).integers(-2**31, 2**31, 16).astype(np.int32)
    c = np.zeros(16, np.int32)
    run(lower([A, C]), a, c)
    assert np.array_equal(c, a * a * np.int32(3) + np.int32(7))  # numpy int32 arrays wrap too


def test_gemm_32_cubed_is_fast():
    A = ts.placeholder((32, 32), name="A")
    B = ts.placeholder((32, 32), name="B")
    k = ts.reduce_axis(32, name="k")
    C = ts.compute((32, 32), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
    kernel = lower([A, B, C])
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 32, 32)).astype(np.float32)
    c = np.empty((32, 32), np.float32)
    start = time.perf_counter()
    run(kernel, a, b, c)
    elapsed = time.perf_counter() - start
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)
    assert elapsed < 3.0, f"32^3 GEMM took {elapsed:.2f} s in the interpreter"  # ~0.03 s when translated


def test_translation_is_cached_by_structure():
    def build():
        A = ts.placeholder((4,), name="A")
        return lower([A, ts.compute((4,), lambda i: A[i] + 1.0, name="B")])

    interp = Interpreter()
    assert interp.translate(build()) is interp.translate(build())


# ---------------------------------------------------------------------------------------------
# Scalar semantics: float rounding, math, integers, casts
# ---------------------------------------------------------------------------------------------

_OPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b}


def _round_bf16(x: float):
    """Correct rounding of a double to bfloat16 (ties to even), picked among neighbours."""
    r = ml_dtypes.bfloat16(x)
    if not math.isfinite(x):
        return r
    cands = [r, np.nextafter(r, ml_dtypes.bfloat16(np.inf)), np.nextafter(r, ml_dtypes.bfloat16(-np.inf))]

    def key(c):
        bits = int(np.array(c).view(np.uint16))
        return abs(float(c) - x), bits & 1

    return min(cands, key=key)


@pytest.mark.parametrize("op", sorted(_OPS))
def test_float16_ops_round_once_per_op(op):
    x, y = Var("x", "float16"), Var("y", "float16")
    expr = Binary(op, x, y)
    rng = np.random.default_rng(4)
    for a, b in rng.standard_normal((200, 2)).astype(np.float16) * np.float16(30):
        got = interpret_expr(expr, {x: a, y: b})
        want = np.float16(_OPS[op](np.float64(a), np.float64(b)))  # exact in float64, rounded once
        assert type(got) is np.float16
        assert got == want or (np.isnan(got) and np.isnan(want)), (op, a, b, got, want)


@pytest.mark.parametrize("op", sorted(_OPS))
def test_bfloat16_ops_round_once_per_op(op):
    x, y = Var("x", "bfloat16"), Var("y", "bfloat16")
    expr = Binary(op, x, y)
    rng = np.random.default_rng(5)
    for a, b in rng.standard_normal((200, 2)).astype(BF16):
        got = interpret_expr(expr, {x: a, y: b})
        assert type(got) is ml_dtypes.bfloat16
        assert float(got) == float(_round_bf16(_OPS[op](float(a), float(b)))), (op, a, b, got)


def test_float16_kernel_rounds_each_op_not_once():
    n = 256
    A, B, D, O = (Buffer(nm, (n,), "float16") for nm in "ABDO")
    i = Var("i")
    value = (A[i] * B[i] + D[i]) * A[i] - B[i]
    kernel = _kernel("f16chain", (A, B, D, O), For(i, n, Store(O, (i,), value)))
    rng = np.random.default_rng(6)
    a, b, d = (rng.standard_normal((3, n)) * 8).astype(np.float16)
    o = np.full(n, np.nan, np.float16)
    run(kernel, a, b, d, o)

    def r(v):
        return np.float64(v).astype(np.float16).astype(np.float64)

    a64, b64, d64 = (v.astype(np.float64) for v in (a, b, d))
    per_op = r(r(r(r(a64 * b64) + d64) * a64) - b64).astype(np.float16)
    once = ((a64 * b64 + d64) * a64 - b64).astype(np.float16)
    assert np.array_equal(o, per_op)
    assert not np.array_equal(o, once)  # the test can tell the two apart


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("func", ["exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "erf", "sin", "cos", "floor",
                                  "ceil"])
def test_math_functions_in_float64_rounded_to_dtype(func, dtype):
    x = Var("x", dtype)
    expr = Call(func, (x,))
    npdt = BF16 if dtype == "bfloat16" else np.dtype(dtype)
    f64 = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "rsqrt": lambda v: 1 / np.sqrt(v), "tanh": np.tanh,
           "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "erf": np.vectorize(math.erf), "sin": np.sin, "cos": np.cos,
           "floor": np.floor, "ceil": np.ceil}[func]
    rng = np.random.default_rng(7)
    values = rng.standard_normal(40) * 3
    if func in ("log", "sqrt", "rsqrt"):
        values = np.abs(values) + 0.01
    for v in values.astype(npdt):
        got = interpret_expr(expr, {"x": v})
        want = f64(np.float64(v))
        assert type(got) is npdt.type
        rounded = _round_bf16(float(want)) if dtype == "bfloat16" else npdt.type(want)
        # float64 math libraries may differ in the last bit; allow one ulp of the dtype
        ulp = abs(float(np.nextafter(rounded, npdt.type(np.inf))) - float(rounded))
        assert abs(float(got) - float(rounded)) <= ulp, (func, v, got, rounded)


@pytest.mark.parametrize("func, arg, want", [
    ("log", 0.0, -np.inf), ("log", -1.0, np.nan), ("sqrt", -1.0, np.nan), ("rsqrt", 0.0, np.inf),
    ("exp", 1000.0, np.inf), ("exp", -1000.0, 0.0), ("sigmoid", -1000.0, 0.0), ("sigmoid", 1000.0, 1.0),
    ("sin", np.inf, np.nan), ("tanh", np.inf, 1.0), ("floor", -0.5, -1.0), ("ceil", -0.5, -0.0),
    ("abs", -np.inf, np.inf), ("exp", np.nan, np.nan),
])
def test_math_special_values(func, arg, want):
    got = interpret_expr(Call(func, (Var("x", "float32"),)), {"x": np.float32(arg)})
    assert type(got) is np.float32
    if np.isnan(want):
        assert np.isnan(got)
    else:
        assert got == want and np.signbit(got) == np.signbit(want)


def test_pow_and_min_max_propagate_nan():
    x, y = Var("x", "float32"), Var("y", "float32")
    assert interpret_expr(Call("pow", (x, y)), {x: 2.0, y: 10.0}) == np.float32(1024)
    assert np.isnan(interpret_expr(Call("pow", (x, y)), {x: -8.0, y: 1 / 3}))
    assert interpret_expr(Call("pow", (x, y)), {x: 0.0, y: -1.0}) == np.inf
    for op in ("min", "max"):
        assert np.isnan(interpret_expr(Binary(op, x, y), {x: np.nan, y: 1.0}))
        assert np.isnan(interpret_expr(Binary(op, x, y), {x: 1.0, y: np.nan}))
    assert interpret_expr(Binary("max", x, y), {x: 1.0, y: 2.0}) == 2.0


_I32 = st.integers(-2**31, 2**31 - 1)


@given(_I32, _I32)
def test_int32_arithmetic_wraps(a, b):
    x, y = Var("x", "int32"), Var("y", "int32")
    na, nb = np.array([a], np.int32), np.array([b], np.int32)
    for op, want in (("add", na + nb), ("sub", na - nb), ("mul", na * nb)):
        got = interpret_expr(Binary(op, x, y), {x: a, y: b})
        assert type(got) is np.int32 and got == want[0], (op, a, b)
    if b != 0:
        q = interpret_expr(Binary("floordiv", x, y), {x: a, y: b})
        m = interpret_expr(Binary("floormod", x, y), {x: a, y: b})
        assert int(q) == ((a // b) + 2**31) % 2**32 - 2**31  # INT_MIN // -1 wraps to INT_MIN
        assert int(m) == a % b


def test_floordiv_floormod_of_negatives_and_by_zero():
    x, y = Var("x", "int32"), Var("y", "int32")
    cases = [(-7, 2, -4, 1), (7, -2, -4, -1), (-7, -2, 3, -1), (7, 2, 3, 1), (-8, 2, -4, 0)]
    for a, b, q, m in cases:
        assert interpret_expr(Binary("floordiv", x, y), {x: a, y: b}) == q
        assert interpret_expr(Binary("floormod", x, y), {x: a, y: b}) == m
        assert interpret_expr(Binary("floordiv", x, Const(b, "int32")), {x: a}) == q  # constant divisor path
        assert interpret_expr(Binary("floormod", x, Const(b, "int32")), {x: a}) == m
    for op in ("floordiv", "floormod"):
        with pytest.raises(ExecutionError, match="by zero"):
            interpret_expr(Binary(op, x, y), {x: 5, y: 0})
    assert issubclass(ExecutionError, TesselError) and not issubclass(ExecutionError, ArgumentError)


def test_int_div_is_refused():
    x = Var("x", "int32")
    with pytest.raises(DTypeError, match="floordiv"):
        interpret_expr(Binary("div", x, x), {x: 1})


def test_int8_wraps_and_abs_of_min_wraps():
    x = Var("x", "int8")
    assert interpret_expr(x + Const(1, "int8"), {x: 127}) == -128
    assert interpret_expr(x * Const(3, "int8"), {x: 100}) == np.int8(44)
    assert interpret_expr(Call("abs", (x,)), {x: -128}) == -128
    assert type(interpret_expr(x, {x: 5})) is np.int8


@pytest.mark.parametrize("src, dst, value, want", [
    ("float32", "int32", -2.7, -2), ("float32", "int32", 2.7, 2), ("float32", "int32", 3e10, 2**31 - 1),
    ("float32", "int32", -3e10, -2**31), ("float32", "int32", np.nan, 0), ("float16", "int8", -300.0, -128),
    ("int32", "int8", 300, 44), ("int32", "int8", -129, 127), ("int64", "int32", 2**40 + 5, 5),
    ("int32", "bool", 3, True), ("int32", "bool", 0, False), ("float32", "bool", np.nan, True),
    ("float32", "bool", -0.0, False), ("bool", "int32", True, 1), ("bool", "float32", True, 1.0),
    ("int32", "float16", 65520, np.inf), ("int32", "float16", 65519, 65504.0),
    ("int32", "float32", 16777217, 16777216.0),
    ("float32", "float16", 1.0 + 2**-11, 1.0), ("float32", "float16", 1.0 + 2**-11 + 2**-20, 1.0 + 2**-10),
    ("float16", "float32", 0.1, float(np.float16(0.1))), ("float64", "bfloat16", 1 + 2**-8 + 2**-30, 1.0078125),
    ("float32", "float64", -0.0, -0.0),
])
def test_casts(src, dst, value, want):
    x = Var("x", src)
    got = interpret_expr(Cast(dst, x), {x: value})
    npdt = BF16 if dst == "bfloat16" else np.dtype(dst)
    assert type(got) is npdt.type
    if isinstance(want, float) and np.isnan(want):
        assert np.isnan(got)
    else:
        assert got == want and (not isinstance(want, float) or np.signbit(got) == np.signbit(want))


def test_logic_and_select_laziness():
    i = Var("i")
    A = Buffer("A", (4,), "float32")
    guarded = Select(Binary("lt", i, Const(4)), Load(A, (i,)), _c(-1.0))
    a = np.arange(4, dtype=np.float32) + 10
    assert interpret_expr(guarded, {i: 2, A: a}) == 12.0
    assert interpret_expr(guarded, {i: 9, "A": a}) == -1.0  # the load in the other branch never ran
    with pytest.raises(ExecutionError, match=r"'A' at index \(9,\)"):
        interpret_expr(Load(A, (i,)), {i: 9, A: a})
    # and / or evaluate both operands: a guard written with `and` does not protect a load
    b = Binary("and", Binary("lt", i, Const(4)), Binary("gt", Load(A, (i,)), _c(0.0)))
    with pytest.raises(ExecutionError):
        interpret_expr(b, {i: 9, A: a})


def test_select_guards_padding_in_a_kernel():
    n = 6
    A, O = Buffer("A", (n,), "float32"), Buffer("O", (n + 2,), "float32")
    i = Var("i")
    j = i - 1
    padded = Select(Binary("and", Binary("ge", j, Const(0)), Binary("lt", j, Const(n))), Load(A, (j,)), _c(0.0))
    kernel = _kernel("pad", (A, O), For(i, n + 2, Store(O, (i,), padded)))
    a = np.random.default_rng(8).standard_normal(n).astype(np.float32)
    o = np.full(n + 2, np.nan, np.float32)
    run(kernel, a, o)
    assert np.array_equal(o, np.pad(a, 1))
    unguarded = _kernel("nopad", (A, O), For(i, n + 2, Store(O, (i,), Load(A, (j,)))))
    with pytest.raises(ExecutionError, match=r"load of buffer 'A' at index \(-1,\).*shape \(6,\)"):
        run(unguarded, a, o)


# ---------------------------------------------------------------------------------------------
# Bounds, poison, arguments, loops
# ---------------------------------------------------------------------------------------------


def test_out_of_bounds_store_names_buffer_index_and_shape():
    A = Buffer("A", (3, 4), "float32")
    i, j = Var("i"), Var("j")
    kernel = _kernel("oob", (A,), For(i, 3, For(j, 5, Store(A, (i, j), _c(1.0)))))
    with pytest.raises(ExecutionError, match=r"kernel 'oob': store of buffer 'A' at index \(0, 4\).*\(3, 4\)"):
        run(kernel, np.zeros((3, 4), np.float32))
    # an index that stays inside the flat array but leaves a dimension is caught too
    flat_ok = _kernel("oob2", (A,), For(i, 2, Store(A, (i, Const(4)), _c(1.0))))
    with pytest.raises(ExecutionError, match=r"\(0, 4\)"):
        run(flat_ok, np.zeros((3, 4), np.float32))


def test_out_of_bounds_load_through_computed_index():
    A, O = Buffer("A", (8,), "int32"), Buffer("O", (8,), "int32")
    i = Var("i")
    kernel = _kernel("gather", (A, O), For(i, 8, Store(O, (i,), Load(A, (Load(A, (i,)),)))))
    o = np.zeros(8, np.int32)
    run(kernel, np.array([7, 6, 5, 4, 3, 2, 1, 0], np.int32), o)
    assert o.tolist() == list(range(8))
    with pytest.raises(ExecutionError, match=r"'A' at index \(8,\)"):
        run(kernel, np.array([0, 1, 8, 0, 0, 0, 0, 0], np.int32), o)


@pytest.mark.parametrize("dtype, poison", [
    ("float32", "nan"), ("float16", "nan"), ("bfloat16", "nan"), ("int32", -0x5A5A5A5A), ("int8", -90),
    ("int64", POISON_INT), ("bool", True)])
def test_allocated_buffers_start_poisoned(dtype, poison):
    T, O = Buffer("T", (3,), dtype), Buffer("O", (3,), dtype)
    i = Var("i")
    kernel = _kernel("uninit", (O,), Allocate(T, For(i, 3, Store(O, (i,), Load(T, (i,))))))
    npdt = BF16 if dtype == "bfloat16" else np.dtype(dtype)
    o = np.zeros(3, npdt)
    run(kernel, o)
    if poison == "nan":
        assert np.isnan(o.astype(np.float32)).all()
    else:
        assert (o == poison).all()


def test_missing_reduction_init_shows_poison():
    # a temporary accumulator without its init: the result must be NaN, not right by luck
    A, O = Buffer("A", (2, 5), "float32"), Buffer("O", (2,), "float32")
    T = Buffer("acc", (2,), "float32")
    i, k = Var("i"), Var("k")
    body = Allocate(T, seq(
        For(i, 2, For(k, 5, Store(T, (i,), Load(T, (i,)) + Load(A, (i, k))))),
        For(i, 2, Store(O, (i,), Load(T, (i,))))))
    o = np.zeros(2, np.float32)
    run(_kernel("noinit", (A, O), body), np.ones((2, 5), np.float32), o)
    assert np.isnan(o).all()


def test_allocate_inside_a_loop_is_poisoned_each_time():
    A, O = Buffer("A", (3,), "float32"), Buffer("O", (3,), "float32")
    T = Buffer("t", (1,), "float32")
    i = Var("i")
    # iteration 0 writes T, iterations 1 and 2 read T before writing it: stale data is poison
    body = For(i, 3, Allocate(T, seq(
        IfThenElse(Binary("eq", i, Const(0)), Store(T, (0,), Load(A, (i,)))),
        Store(O, (i,), Load(T, (0,))))))
    o = np.zeros(3, np.float32)
    run(_kernel("stale", (A, O), body), np.array([1, 2, 3], np.float32), o)
    assert o[0] == 1 and np.isnan(o[1:]).all()


def test_argument_errors_name_the_parameter():
    A = ts.placeholder((2, 3), name="A")
    B = ts.compute((2, 3), lambda i, j: A[i, j] * 2.0, name="B")
    kernel = lower([A, B])
    a, b = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    with pytest.raises(ArgumentError, match=r"takes 2 array\(s\) \(A, B\), got 1"):
        run(kernel, a)
    with pytest.raises(ArgumentError, match=r"'B'.*expected shape \(2, 3\), got \(3, 2\)"):
        run(kernel, a, np.zeros((3, 2), np.float32))
    with pytest.raises(ArgumentError, match=r"'A'.*expected dtype float32, got float64"):
        run(kernel, a.astype(np.float64), b)
    with pytest.raises(ArgumentError, match=r"'A'.*got list"):
        run(kernel, [[1.0] * 3] * 2, b)
    ro = np.zeros((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ArgumentError, match=r"'B'.*read-only"):
        run(kernel, a, ro)
    run(kernel, ro, b)  # a read-only input is fine
    assert (b == 0).all()


def test_non_contiguous_arguments_are_written_back():
    A = ts.placeholder((3, 4), name="A")
    B = ts.compute((3, 4), lambda i, j: A[i, j] + 1.0, name="B")
    a = np.random.default_rng(9).standard_normal((4, 3)).astype(np.float32).T  # a transposed view
    big = np.zeros((4, 3), np.float32)
    run(lower([A, B]), a, big.T)
    assert np.array_equal(big.T, a + 1)


@pytest.mark.parametrize("kind", ["serial", "parallel", "vectorized", "unrolled"])
def test_loop_kinds_run_serially_with_let_and_if(kind):
    A, O = Buffer("A", (10,), "float32"), Buffer("O", (10,), "float32")
    i, t = Var("i"), Var("t", "float32")
    body = For(i, 10, LetStmt(t, Load(A, (i,)) * _c(2.0), IfThenElse(
        Binary("gt", t, _c(0.0)), Store(O, (i,), t), Store(O, (i,), -t))), kind)
    a = np.random.default_rng(10).standard_normal(10).astype(np.float32)
    o = np.full(10, np.nan, np.float32)
    run(_kernel("k", (A, O), body), a, o)
    assert np.array_equal(o, np.abs(2 * a))


def test_deep_loop_nest_beyond_python_block_limit():
    depth = 26
    vs = [Var(f"i{d}") for d in range(depth)]
    wide = {0: 2, 13: 2, depth - 1: 2}
    O = Buffer("O", (8,), "int32")
    idx = vs[0] * 4 + vs[13] * 2 + vs[depth - 1]
    stmt = Store(O, (idx,), idx * 10)
    for d in reversed(range(depth)):
        stmt = For(vs[d], wide.get(d, 1), stmt)
    o = np.zeros(8, np.int32)
    run(_kernel("deep", (O,), stmt), o)
    assert o.tolist() == [10 * x for x in range(8)]


def test_malformed_kernels_are_refused_at_translation():
    A = Buffer("A", (4,), "float32")
    i = Var("i")
    with pytest.raises(VerifyError, match="variable 'j'"):
        run(_kernel("k", (A,), For(i, 4, Store(A, (Var("j"),), _c(1.0)))), np.zeros(4, np.float32))
    with pytest.raises(VerifyError, match="buffer 'Z'"):
        run(_kernel("k", (A,), For(i, 4, Store(Buffer("Z", (4,)), (i,), _c(1.0)))), np.zeros(4, np.float32))
    with pytest.raises(DTypeError, match="store of a int32 value"):
        run(_kernel("k", (A,), For(i, 4, Store(A, (i,), i))), np.zeros(4, np.float32))
