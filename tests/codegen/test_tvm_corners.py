"""The CPU backend's corners where TVM needs help: each test is a kernel that was wrong or refused
before a workaround, compiled and run on fresh random inputs against numpy or the interpreter.
The backend's general checks are in test_tvm_codegen.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tessel.codegen.tvm import compile_kernel
from tessel.ir.nodes import (
    Allocate,
    Binary,
    Buffer,
    Cast,
    Const,
    For,
    IfThenElse,
    Kernel,
    Store,
    Var,
    seq,
)
from tests.codegen.test_tvm_codegen import garbage, rand, run_both

i, j, io, ii = Var("i"), Var("j"), Var("io"), Var("ii")


# ---------------------------------------------------------------------------------------------
# Corners where TVM needs help (each was wrong or refused before a workaround)
# ---------------------------------------------------------------------------------------------


def test_allocation_inside_a_vectorized_loop():
    """A local buffer allocated inside a vectorized loop: each lane its own values."""
    A, B = Buffer("A", (4, 16)), Buffer("B", (4, 16))
    t = Buffer("t", (2,), scope="local")
    body = For(i, 4, For(j, 16, Allocate(t, seq(Store(t, (0,), A[i, j] * 2.0), Store(t, (1,), t[0] + 1.0),
                                                Store(B, (i, j), t[1]))), "vectorized"))
    a = rand(np.random.default_rng(20), (4, 16))
    _, b = run_both(Kernel("alloc_vec", (A, B), body), [a, garbage((4, 16))])
    np.testing.assert_allclose(b, a * 2 + 1, rtol=1e-6)


def test_loops_and_branches_inside_a_vectorized_loop():
    """A serial loop and an if/else nested in a vectorized loop."""
    A, B = Buffer("A", (4, 16)), Buffer("B", (4, 16))
    r = Var("r")
    inner = seq(Store(B, (i, j), Const(0.0, "float32")),
                For(r, 3, IfThenElse(A[(i + r) % 4, j] > 0.0, Store(B, (i, j), B[i, j] + A[(i + r) % 4, j]))))
    a = rand(np.random.default_rng(21), (4, 16))
    _, b = run_both(Kernel("loop_in_vec", (A, B), For(i, 4, For(j, 16, inner, "vectorized"))), [a, garbage((4, 16))])
    expect = sum(np.maximum(np.roll(a, -s, axis=0), 0) for s in range(3))
    np.testing.assert_allclose(b, expect, rtol=1e-6)


def test_float_min_max_propagate_nan():
    """min/max on floats return NaN when either operand is NaN (numpy.minimum / maximum)."""
    A, B, L, H = (Buffer(n, (16,)) for n in ("A", "B", "L", "H"))
    body = For(i, 16, seq(Store(L, (i,), Binary("min", A[i], B[i])), Store(H, (i,), Binary("max", A[i], B[i]))),
               "vectorized")
    rng = np.random.default_rng(22)
    a, b = rand(rng, (16,)), rand(rng, (16,))
    a[:3], b[2:5] = np.nan, np.nan
    arrays = [a, b, garbage((16,)), garbage((16,))]
    out = [x.copy() for x in arrays]
    compile_kernel(Kernel("nan_minmax", (A, B, L, H), body))(*out)
    np.testing.assert_array_equal(out[2], np.minimum(a, b))
    np.testing.assert_array_equal(out[3], np.maximum(a, b))


@pytest.mark.parametrize("c", [0.0, -0.0, 6.0, -np.inf, np.inf])
@pytest.mark.parametrize("const_first", [False, True])
def test_float_min_max_with_a_constant_follow_numpy(c, const_first):
    """min/max with a constant operand (ReLU, a clip): NaN propagates and the results, signed zeros
    included, are numpy.minimum / maximum's, bit for bit (tvm_minmax.py)."""
    from tessel.codegen.tvm import tvm_script

    A, L, H = (Buffer(n, (64,)) for n in ("A", "L", "H"))
    k = Const(float(c), "float32")
    lo, hi = (Binary("min", k, A[i]), Binary("max", k, A[i])) if const_first else \
        (Binary("min", A[i], k), Binary("max", A[i], k))
    kern = Kernel("const_minmax", (A, L, H), For(i, 64, seq(Store(L, (i,), lo), Store(H, (i,), hi)), "vectorized"))
    # a zero constant: one select (numpy's rule); any other: llvm.maximum, which agrees with numpy there
    assert ("llvm.maximum" in tvm_script(kern)) == (c != 0)
    a = rand(np.random.default_rng(), (64,))
    a[:6] = [np.nan, 0.0, -0.0, np.inf, -np.inf, c]
    out = [a.copy(), garbage((64,)), garbage((64,))]
    compile_kernel(kern)(*out)
    want = (np.minimum(c, a), np.maximum(c, a)) if const_first else (np.minimum(a, c), np.maximum(a, c))
    for got, w in zip(out[1:], want):
        np.testing.assert_array_equal(got.view(np.uint32), w.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_floordiv_floormod_follow_numpy(dtype):
    """x // 0.75 and x % -0.75 on floats: bit-exact with numpy's floor_divide / remainder."""
    A, Q, R = (Buffer(n, (32,), dtype) for n in ("A", "Q", "R"))
    body = For(i, 32, seq(Store(Q, (i,), A[i] // Const(0.75, dtype)), Store(R, (i,), A[i] % Const(-0.75, dtype))),
               "vectorized")
    a = (np.random.default_rng(23).standard_normal(32) * 4).astype(dtype)
    a[:2] = [1.5, -1.5]  # exact multiples
    _, q, r = run_both(Kernel(f"ffdiv_{dtype}", (A, Q, R), body), [a, garbage((32,), dtype), garbage((32,), dtype)])
    np.testing.assert_array_equal(q, a // np.array(0.75, dtype))
    np.testing.assert_array_equal(r, a % np.array(-0.75, dtype))


def test_int64_loop_variables_and_indices():
    """An int64 loop variable used as an index next to an int32 one."""
    D = Buffer("D", (4, 5), "int64")
    q = Var("q", "int64")
    body = For(q, Const(4, "int64"), For(j, 5, Store(D, (q, j), Cast("int64", j) * Const(10, "int64") + q)))
    _, = run_both(Kernel("i64_loops", (D,), body), [garbage((4, 5), "int64")])
    d = [garbage((4, 5), "int64")]
    compile_kernel(Kernel("i64_loops", (D,), body))(*d)
    np.testing.assert_array_equal(d[0], np.arange(4)[:, None] + 10 * np.arange(5)[None, :])


@pytest.mark.parametrize("dtype", ["int8", "int32", "int64"])
def test_min_int_floordiv_minus_one_wraps_instead_of_trapping(dtype):
    """MIN // -1 wraps to MIN and MIN % -1 is 0, as in the interpreter (x86 idiv would trap)."""
    A, B, Q, R = (Buffer(n, (16,), dtype) for n in ("A", "B", "Q", "R"))
    body = For(i, 16, seq(Store(Q, (i,), A[i] // B[i]), Store(R, (i,), A[i] % B[i])), "vectorized")
    lo = np.iinfo(dtype).min
    a = np.array([lo, lo, lo + 1, -7, 7, 0, -1, 5] * 2, dtype)
    b = np.array([-1, 1, -1, -1, -1, -1, -1, 3] * 2, dtype)
    _, _, q, r = run_both(Kernel(f"minint_{dtype}", (A, B, Q, R), body), [a, b, garbage((16,), dtype),
                                                                        garbage((16,), dtype)])
    def wrap(v):  # two's complement wrap-around into dtype
        return (v - lo) % (2 * -lo) + lo

    np.testing.assert_array_equal(q, np.array([wrap(int(x) // int(y)) for x, y in zip(a, b)], dtype))
    np.testing.assert_array_equal(r, np.array([int(x) % int(y) for x, y in zip(a, b)], dtype))


@pytest.mark.parametrize("src", ["float16", "float32", "float64"])
def test_float_to_int_casts_saturate(src):
    """Out-of-range floats saturate to the int range and NaN becomes 0 (the interpreter's rule),
    for each int dtype (one output each)."""
    dsts = ["int8", "int32", "int64"]
    A = Buffer("A", (8,), src)
    outs = [Buffer(f"B_{d}", (8,), d) for d in dsts]
    k = Kernel(f"sat_{src}", (A, *outs), For(i, 8, seq(*[Store(o, (i,), Cast(o.dtype, A[i])) for o in outs]),
                                           "vectorized"))
    a = np.array([np.nan, np.inf, -np.inf, 6e4, -6e4, 2.9, -2.9, 0.0], src)
    res = run_both(k, [a] + [garbage((8,), d) for d in dsts])
    for d, b in zip(dsts, res[1:]):
        info = np.iinfo(d)
        expect = [0, info.max, info.min, min(60000, info.max), max(-60000, info.min), 2, -2, 0]
        np.testing.assert_array_equal(b, np.array(expect, d), err_msg=f"{src} -> {d}")


def test_nan_test_survives_tvm_simplification():
    """`x != x` is the NaN test; TVM's simplifier (which assumes no NaN) must not fold it away."""
    import tessel as ts

    A = ts.placeholder((6,), name="A")
    B = ts.compute((6,), lambda i: ts.where(A[i].ne(A[i]), 1.0, 0.0), name="B")
    a = np.array([1.0, np.nan, -2.5, np.inf, -np.inf, np.nan], np.float32)
    b = np.empty(6, np.float32)
    ts.build([A, B])(a, b)
    np.testing.assert_array_equal(b, np.isnan(a).astype(np.float32))


def _fast_math_run(func: str, x: np.ndarray, ldexp: bool, monkeypatch) -> tuple:
    """`func` of float32 `x` through a kernel built (uncached) with exp's 2^n scaling by `llvm.ldexp`
    or from exponent bits; returns (output, assembly)."""
    import tessel as ts
    from tessel.codegen import tvm_fastmath, tvm_runtime
    from tessel.codegen.tvm import build_module
    from tessel.codegen.tvm_tir import symbol_name

    monkeypatch.setattr(tvm_fastmath, "native_ldexp", lambda: ldexp)
    A = ts.placeholder(x.shape, name="A")
    B = ts.compute(x.shape, lambda i: getattr(ts, func)(A[i]), name="B")
    k = ts.build([A, B]).ir
    module = build_module(k)
    run = tvm_runtime.Runner(module, symbol_name(k), k.params)
    out = np.full_like(x, np.nan)
    run.call(run.tensors([x, out]))
    return out, tvm_runtime.inspect(module, "asm")


@pytest.mark.parametrize("ldexp", [True, False], ids=["ldexp", "bits"])
@pytest.mark.parametrize("func", ["exp", "tanh", "sigmoid"])
def test_float32_fast_math_is_vectorized_and_within_2_ulp(func, ldexp, monkeypatch):
    """float32 exp / tanh / sigmoid compile to polynomials (no scalar libm call in the machine code)
    within 2 ulp of numpy's float64 result, rounded; overflow, NaN and infinities as numpy; results
    below the smallest normal float flush to (near) zero. Both of exp's ways to scale by 2^n: by
    `llvm.ldexp` (AVX-512 hosts) and from exponent bits (the others), on any host."""
    rng = np.random.default_rng()
    x = np.concatenate([rng.uniform(-90, 90, 4000), rng.uniform(-1, 1, 4000), rng.uniform(-1e-3, 1e-3, 64),
                        [0.0, -0.0, 88.7, 88.72, 88.73, 89.5, 200, -87.3, -87.4, -100, -104, -105, 1e30, -1e30,
                         np.inf, -np.inf, np.nan, -np.nan]])
    x = x.astype("f4")
    out, asm = _fast_math_run(func, x, ldexp, monkeypatch)
    import re

    from tessel.codegen.tvm_runtime import host_has_feature

    assert not re.search(r"call\w*\s+(expf|tanhf)\b", asm)
    # without AVX-512 LLVM expands a vector ldexp into ldexpf calls (why exp builds 2^n from bits there)
    if not ldexp or host_has_feature("avx512f"):
        assert "ldexpf" not in asm
    ref = {"exp": np.exp, "tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[func]
    with np.errstate(all="ignore"):
        want = ref(x.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(want))
    normal = np.isfinite(want) & (np.abs(want) >= np.finfo(np.float32).tiny)
    ulps = np.abs(out[normal].astype(np.float64) - want[normal]) / np.spacing(np.abs(want[normal]))
    assert ulps.max() <= 2
    tiny = np.isfinite(want) & ~normal
    assert np.all(np.abs(out[tiny]) <= np.finfo(np.float32).tiny)


def test_float32_exp_by_ldexp_gives_subnormal_results(monkeypatch):
    """With `llvm.ldexp` (one vscalefps on AVX-512) exp's results below the smallest normal float
    are the subnormals numpy gives, within 2 of their units, and 0 below exp's underflow."""
    rng = np.random.default_rng()
    x = np.concatenate([rng.uniform(-104, -87.3, 2000), [-103.28, -103.97, -104.5, -1000]]).astype("f4")
    out, asm = _fast_math_run("exp", x, True, monkeypatch)
    from tessel.codegen.tvm_runtime import host_has_feature

    if host_has_feature("avx512f"):
        assert "vscalefps" in asm
    want = np.exp(x.astype(np.float64)).astype(np.float32)
    unit = np.float64(np.finfo(np.float32).smallest_subnormal)
    err = np.abs(out.astype(np.float64) - want) / np.maximum(np.spacing(want).astype(np.float64), unit)
    assert err.max() <= 2
    assert np.all(out[x < -104] == 0) and np.count_nonzero(out) > 1500


def test_float32_erf_is_vectorized_and_within_8_ulp():
    """float32 erf compiles to a rational approximation (no scalar erff call) within 8 ulp of float64
    erf rounded, over moderate, tiny and huge arguments; +-inf give +-1, NaN stays NaN."""
    import math

    import tessel as ts

    rng = np.random.default_rng(17)
    x = np.concatenate([rng.uniform(-6, 6, 4000), rng.uniform(-1e-3, 1e-3, 64), -np.logspace(-30, 0, 50),
                        [0.0, -0.0, 3.9, 4.0, 4.1, 1e30, -1e30, np.inf, -np.inf, np.nan]]).astype("f4")
    A = ts.placeholder(x.shape, name="A")
    kern = ts.build([A, ts.compute(x.shape, lambda i: ts.erf(A[i]), name="B")])
    assert "erff" not in kern.inspect("asm")
    out = np.empty_like(x)
    kern(x, out)
    want = np.array([math.erf(v) if not np.isnan(v) else np.nan for v in x.astype(np.float64)]).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    ok = ~np.isnan(want)
    ulps = np.abs(out[ok].astype(np.float64) - want[ok]) / np.spacing(np.maximum(np.abs(want[ok]), 1e-38))
    assert ulps.max() <= 8


def test_float_floordiv_and_floormod_edge_cases_follow_numpy():
    """x // 0.0 is x / 0.0 (+-inf, nan for 0 // 0), x % 0.0 and inf // y, inf % y are nan, y % inf keeps
    numpy's sign rule (fuzz case tvm_float_floordiv_by_zero: compiled code gave 0)."""
    import tessel as ts

    A = ts.placeholder((12,), name="A")
    B = ts.placeholder((12,), name="B")
    kern = ts.build([A, B, ts.compute((12,), lambda i: A[i] // B[i], name="C"),
                     ts.compute((12,), lambda i: A[i] % B[i], name="D")])
    a = np.array([1, -1, 0, 5, -7, 3, 2.5, np.inf, 4, -3, -np.inf, 0.75], "f4")
    b = np.array([0, 0, 0, 2, 2, -2, 0.5, 3, np.inf, np.inf, -2, -0.25], "f4")
    c, d = np.empty(12, "f4"), np.empty(12, "f4")
    kern(a, b, c, d)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(c, np.floor_divide(a, b))
        np.testing.assert_array_equal(d, np.remainder(a, b))


def test_build_module_retries_a_refused_16_bit_kernel_with_fast_math_unbound(monkeypatch):
    """A kernel holding float16 values whose build TVM refuses (simulated: the first compile raises)
    is translated again with its fast-math values unbound, and that build runs right; a float32
    kernel's refusal is raised, not retried."""
    import tessel as ts
    from tessel.codegen import tvm as backend
    from tessel.codegen import tvm_runtime, tvm_tir
    from tessel.errors import CodegenError

    n = 200
    A = ts.placeholder((n,), dtype="float16", name="A")
    # float32 math in a kernel holding float16 values: bound unless the retry unbinds it
    B = ts.compute((n,), lambda i: ts.exp(A[i].astype("float32")).astype("float16"), name="B")
    k = ts.build([A, B]).ir
    A32 = ts.placeholder((n,), name="A")
    k32 = ts.build([A32, ts.compute((n,), lambda i: ts.exp(A32[i]), name="B")]).ir

    real_to_tvm, real_compile = tvm_tir.to_tvm, tvm_runtime.compile_module
    binds, scripts, refused = [], [], []

    def to_tvm(kernel, bind_in_narrow=True):
        binds.append(bind_in_narrow)
        prim = real_to_tvm(kernel, bind_in_narrow)
        scripts.append(prim.script())
        return prim

    def compile_module(func, target=None):
        if not refused:
            refused.append(True)
            raise CodegenError("TVM could not compile kernel: refused (simulated)")
        return real_compile(func, target)

    monkeypatch.setattr(tvm_tir, "to_tvm", to_tvm)
    monkeypatch.setattr(tvm_runtime, "compile_module", compile_module)
    module = backend.build_module(k)
    assert binds == [True, False]
    assert "T.Let" in scripts[0] and "T.Let" not in scripts[1]
    run = tvm_runtime.Runner(module, tvm_tir.symbol_name(k), k.params)
    a = np.random.default_rng().uniform(-8, 8, n).astype(np.float16)
    out = np.zeros(n, np.float16)
    run.call(run.tensors([a, out]))
    np.testing.assert_allclose(out.astype(np.float64), np.exp(a.astype(np.float64)), rtol=2e-3)

    binds.clear()
    refused.clear()
    with pytest.raises(CodegenError, match="simulated"):
        backend.build_module(k32)
    assert binds == [True]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_relu_of_a_fast_math_value_compiles_and_follows_numpy(dtype):
    """ReLU's select names its operand twice: an operand holding Lets (exp's) is bound once, or in a
    16-bit kernel kept in llvm.maximum; TVM refused the copied Lets (found by the random-graph test:
    relu(transpose(exp(transpose(x)))))."""
    import tessel as ts
    from tessel.ir.dtypes import numpy_dtype

    n = 100
    A = ts.placeholder((n,), dtype=dtype, name="A")
    B = ts.compute((n,), lambda i: ts.maximum(ts.exp(A[i]) - 1.5, 0.0), name="B")
    kern = ts.build([A, B])
    a = np.random.default_rng().uniform(-3, 3, n).astype(numpy_dtype(dtype))
    a[:2] = np.nan
    out = np.zeros(n, numpy_dtype(dtype))
    kern(a, out)
    want = np.maximum(np.exp(a.astype(np.float64)) - 1.5, 0.0)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    rtol = 1e-6 if dtype == "float32" else 1e-2
    np.testing.assert_allclose(out.astype(np.float64), want, rtol=rtol, atol=rtol)
