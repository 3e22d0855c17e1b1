"""The CUDA printer: hand-built GPU kernels (thread-bound elementwise, a shared-memory block
reduction with barriers, float16 / bfloat16 arithmetic, every math call, every cast, integer and
float operators on special values, a warp-shuffle reduction through the intrinsic table)

- compile with nvcc for sm_90a and sm_80 (skipped, with the reason, where nvcc is absent);
- compute what the reference interpreter computes: the printed code runs on the CPU through a
  host harness (tests/codegen/cuda_host.py) and must agree bit for bit with the interpreter,
  except math functions, which may differ in the last bits (CUDA's are not correctly rounded);
- and the interpreter agrees with numpy on the same kernels.
"""

from __future__ import annotations

import numpy as np
import pytest

from tessel.codegen.cuda_build import compile_cuda, nvcc_path
from tessel.codegen.cuda_printer import float_literal, int_literal, print_kernel
from tessel.errors import CodegenError
from tessel.ir.dtypes import numpy_dtype
from tessel.ir.interp import Interpreter, run
from tessel.ir.nodes import (
    Buffer, Const, For, Intrinsic, Kernel, Launch, Store, Var,
)
from tests.codegen import gpu_kernels as gk
from tests.codegen.cuda_host import run_on_host

needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc is not installed (CUDA compile checks need it)")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # One cache folder for the module: kernels compiled by one test are reused by the next.
    monkeypatch.setenv("TESSEL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cuda-cache"))


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_90a", "sm_80"])
@pytest.mark.parametrize("name", sorted(gk.KERNELS))
def test_printed_kernels_compile_with_nvcc(name, arch):
    kernel, _ = gk.KERNELS[name]()
    binary = compile_cuda(print_kernel(kernel).source, arch, name=kernel.name, compiler="nvcc")
    assert binary.code[:4] == b"\x7fELF" and binary.arch == arch


def _same(got: np.ndarray, want: np.ndarray, ulps: int = 0) -> np.ndarray:
    """Elementwise: equal values (NaN equals NaN, and the sign of zero counts), or within `ulps`
    units in the last place for floats."""
    if got.dtype.kind in "biu":
        return got == want
    g, w = got.astype(np.float64), want.astype(np.float64)
    eq = ((g == w) & (np.signbit(g) == np.signbit(w))) | (np.isnan(g) & np.isnan(w))
    if ulps:
        with np.errstate(invalid="ignore"):
            ulp = np.abs(np.spacing(want.astype(got.dtype)).astype(np.float64))
        eq |= np.abs(g - w) <= ulps * ulp
    return eq


@needs_nvcc
@pytest.mark.parametrize("name", gk.HOST_RUNNABLE)
def test_printed_code_computes_what_the_interpreter_computes(name, tmp_path):
    kernel, make = gk.KERNELS[name]()
    rng = np.random.default_rng(hash(name) % 2**32)
    arrays = make(rng)
    expect = [a.copy() for a in arrays]
    run(kernel, *expect)
    run_on_host(print_kernel(kernel), arrays, tmp_path / "harness")
    ulps = 2 if name == "math_calls" else 0
    for p, got, want in zip(kernel.params, arrays, expect):
        ok = _same(got, want, ulps)
        bad = np.argwhere(~ok)[:5].tolist()
        assert ok.all(), f"{name}: buffer {p.name} differs at {bad}: {[got[tuple(i)] for i in bad]} vs " \
                         f"{[want[tuple(i)] for i in bad]}"


def test_interpreter_agrees_with_numpy_on_the_test_kernels():
    rng = np.random.default_rng(5)
    kernel, make = gk.elementwise()
    arrays = make(rng)
    run(kernel, *arrays)
    for k in range(3):
        a, b, c = arrays[3 * k: 3 * k + 3]
        want = (a * b + a - b / a.dtype.type(2)).astype(np.float64)  # rounded per op, as numpy does too
        np.testing.assert_allclose(c.astype(np.float64), want, rtol=1e-2, atol=1e-2)
    kernel, make = gk.block_sum()
    a, o = make(rng)
    run(kernel, a, o)
    np.testing.assert_allclose(o, a.reshape(3, 64).sum(axis=1), rtol=1e-5)
    kernel, make, funcs = gk.math_calls()
    arrays = make(rng)
    run(kernel, *arrays)
    k32 = 3 * gk.FLOAT_DTYPES.index("float32")
    x, y, o = (a.astype(np.float64) for a in arrays[k32:k32 + 3])
    with np.errstate(all="ignore"):
        ref = {"exp": np.exp(x), "log": np.log(x), "sqrt": np.sqrt(x), "rsqrt": 1 / np.sqrt(x),
               "tanh": np.tanh(x),
               "sigmoid": 1 / (1 + np.exp(-x)), "sin": np.sin(x), "cos": np.cos(x), "abs": np.abs(x),
               "floor": np.floor(x), "ceil": np.ceil(x), "pow": np.power(x, y)}
    for k, f in enumerate(funcs):
        if f in ref:
            np.testing.assert_allclose(o[k], ref[f], rtol=1e-6, equal_nan=True, err_msg=f)
    kernel, make = gk.warp_sum()
    a, o = make(rng)
    from tessel.ir.intrinsics import interp_registry

    Interpreter(interp_registry()).run(kernel, a, o)
    np.testing.assert_allclose(o, a.sum(axis=1), rtol=1e-5)


def test_thread_bindings_guards_and_launch_shape():
    A, B = Buffer("A", (100,)), Buffer("B", (100,))
    b, t = Var("b"), Var("t")
    kernel = Kernel("g", (A, B), For(b, 4, For(t, 25, Store(B, (b * 25 + t,), A[b * 25 + t]), "threadIdx.x"),
                                     "blockIdx.x"), target="cuda", launch=Launch((4, 1, 1), (32, 1, 1)))
    out = print_kernel(kernel)
    assert (out.grid, out.block) == ((4, 1, 1), (32, 1, 1))
    assert "const int b = (int)blockIdx.x;" in out.source and "if (t < 25)" in out.source
    assert "if (b <" not in out.source  # the grid matches the loop: no guard
    assert "const float* __restrict__ A" in out.source and "float* __restrict__ B" in out.source
    with pytest.raises(CodegenError, match="extent 25 but the launch has only 16"):
        print_kernel(Kernel("g", (A, B), kernel.body, target="cuda", launch=Launch((4, 1, 1), (16, 1, 1))))
    wide = Kernel("w", (A,), For(t, 2048, Store(A, (t % 100,), Const(1.0, "float32")), "threadIdx.x"), target="cuda")
    with pytest.raises(CodegenError, match="2048 threads"):
        print_kernel(wide)


def test_vectorized_loops_become_vector_accesses_with_a_tail_path():
    kernel, _ = gk.elementwise(n=1000, block=64, lanes=4)
    out = print_kernel(kernel)
    assert "tessel::load_vec<float, 4>" in out.source and "tessel::store_vec<__half, 4>" in out.source
    assert out.alignment == {f"{x}_{dt}": 16 if dt == "float32" else 8 for dt in ("float32", "float16", "bfloat16")
                             for x in "ABC"}
    assert "} else {" in out.source  # the guarded scalar path for the tail
    scalar = print_kernel(kernel, vectorize=False)
    assert "load_vec" not in scalar.source and scalar.alignment == {}
    # a strided access is not contiguous: plain unrolled loop
    A, B, v, i = Buffer("A", (64,)), Buffer("B", (32,)), Var("v"), Var("i")
    strided = Kernel("s", (A, B), For(i, 8, For(v, 4, Store(B, (i * 4 + v,), A[(i * 4 + v) * 2]), "vectorized"),
                                      "threadIdx.x"), target="cuda")
    src = print_kernel(strided).source
    assert "load_vec" not in src and "#pragma unroll" in src


def test_large_shared_memory_is_carved_from_dynamic_shared_memory():
    kernel, n = gk.shared_reverse(), 16384  # 64 KB of float32: above the 48 KB static limit
    out = print_kernel(kernel)
    assert out.shared_bytes == n * 4 and "extern __shared__" in out.source
    small = print_kernel(gk.block_sum()[0])
    assert small.shared_bytes == 0 and "__shared__ __align__(16) float S[64];" in small.source
    if nvcc_path():
        compile_cuda(out.source, "sm_90a", name="rev", compiler="nvcc")
    a = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    b = np.zeros(n, np.float32)
    run(kernel, a, b)
    assert np.array_equal(b, a[::-1])


def test_global_allocations_use_the_workspace():
    out = print_kernel(gk.workspace()[0])
    assert out.workspace_bytes == 512 and "unsigned char* __restrict__ tessel_ws" in out.source


def test_names_that_clash_with_cpp_are_renamed():
    A, B = Buffer("int", (8,)), Buffer("exp", (8,))
    i = Var("threadIdx")
    kernel = Kernel("float", (A, B), For(i, 8, Store(B, (i,), A[i] + 1), "threadIdx.x"), target="cuda")
    out = print_kernel(kernel)
    assert out.symbol == "float_1" and "int* __restrict__ int_1" not in out.source.replace("const ", "X")
    if nvcc_path():
        compile_cuda(out.source, "sm_80", name="float", compiler="nvcc")


def test_intrinsics_print_the_table_text_and_unknown_ones_fail():
    kernel, _ = gk.warp_sum()
    src = print_kernel(kernel).source
    assert "tessel::shfl_bfly(&tmp[0], acc[0], 16);" in src and "TESSEL_DEVICE_HEADER_INCLUDED" in src
    bad = Kernel("bad", kernel.params, Intrinsic("no.such.op", ()), target="cuda")
    with pytest.raises(CodegenError, match="kernel 'bad': unknown intrinsic 'no.such.op'"):
        print_kernel(bad)


def test_literals_are_exact():
    assert float_literal(float("nan"), "float32") == "tessel::f32_bits(0x7fc00000u)"
    assert float_literal(float("-inf"), "float64") == "tessel::f64_bits(0xfff0000000000000ull)"
    assert float_literal(-0.0, "float32") == "(-0x0.0p+0f)"
    assert float_literal(1.0 / 3.0, "bfloat16") == "tessel::bf16_bits(0x3eab)"
    assert float.fromhex(float_literal(0.1, "float32")[:-1]) == float(np.float32(0.1))
    assert int_literal(-2**63, "int64") == "(-9223372036854775807LL - 1)"
    assert int_literal(True, "bool") == "true"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_arithmetic_rounds_after_every_operation(dtype):
    # (a * b) rounded to the dtype, then + c rounded again: differs from one rounding of a*b+c
    A = Buffer("A", (3,), dtype)
    t = Var("t")
    kernel = Kernel("r", (A,), For(t, 1, Store(A, (2,), A[0] * A[1] + A[2]), "threadIdx.x"), target="cuda")
    src = print_kernel(kernel).source
    assert "tessel::add(tessel::mul(A[0], A[1]), A[2])" in src
    npd = numpy_dtype(dtype)
    a = np.array([1.0 + 2.0 ** -7, 1.0 + 2.0 ** -7, -1.0], dtype=npd)
    run(kernel, a)
    want = npd.type(npd.type(a[0] * a[1]) + npd.type(-1.0))
    assert a[2] == want


def _bench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "gpu_generic.py"
    spec = importlib.util.spec_from_file_location("bench_gpu_generic", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name, dtype", [("add", "float32"), ("row_sum", "bfloat16"), ("row_sum_warp", "float32"),
                                         ("softmax", "float32"),
                                         ("softmax", "float16"), ("layer_norm", "bfloat16")])
def test_benchmark_hand_schedules_are_right_in_the_interpreter_and_compile(name, dtype):
    """bench/gpu_generic.py's hand-built kernels (warp shuffles, block reductions, rows in
    registers) at small sizes: interpreter against numpy, and nvcc for sm_90a."""
    from tessel.ir.intrinsics import interp_registry

    bench = _bench_module()
    rng = np.random.default_rng(8)
    npd = numpy_dtype(dtype)
    m, n, threads = 3, 512, 64
    if name == "add":
        kernel = bench.elementwise_ir("add", 4096, dtype, threads=64, lanes=4, unroll=2)
        a, b = rng.standard_normal(4096).astype(npd), rng.standard_normal(4096).astype(npd)
        arrays, want = [a, b, np.full(4096, 7, npd)], a + b
    else:
        if name == "row_sum_warp":
            m, name = 4, "row_sum"
            kernel = bench.row_sum_ir(m, n, dtype, warp_rows=2)
        else:
            kernel = {"row_sum": bench.row_sum_ir, "softmax": bench.softmax_ir,
                      "layer_norm": bench.layer_norm_ir}[name](m, n, dtype, threads=threads)
        x = rng.standard_normal((m, n)).astype(npd)
        xf = x.astype(np.float64)
        if name == "row_sum":
            arrays, want = [x, np.full(m, 7, np.float32)], xf.sum(axis=1)
        elif name == "softmax":
            e = np.exp(xf - xf.max(axis=1, keepdims=True))
            arrays, want = [x, np.full((m, n), 7, npd)], e / e.sum(axis=1, keepdims=True)
        else:
            w, bias = rng.standard_normal(n).astype(npd), rng.standard_normal(n).astype(npd)
            mu, var = xf.mean(axis=1, keepdims=True), xf.var(axis=1, keepdims=True)
            want = (xf - mu) / np.sqrt(var + 1e-5) * w.astype(np.float64) + bias.astype(np.float64)
            arrays = [x, w, bias, np.full((m, n), 7, npd)]
    Interpreter(interp_registry()).run(kernel, *arrays)
    tol = 1e-5 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(arrays[-1].astype(np.float64), want, rtol=tol, atol=tol)
    src = print_kernel(kernel).source
    assert "load_vec" in src or "store_vec" in src
    if nvcc_path() and (name in ("softmax", "layer_norm") or kernel.launch is None and "threadIdx.y" in src):
        compile_cuda(src, "sm_90a", name=kernel.name, compiler="nvcc")  # the structures no other test compiles
