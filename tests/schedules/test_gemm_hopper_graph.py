"""The Hopper GEMM template 'gemm.wgmma' as the default for compiled models on sm_90a: the graph's
GEMM + elementwise groups (matmul + bias + GELU, linear, 3-D linear + tanh-GELU, batched matmul,
q @ k^T * scale with the transposed copy read in place by TMA, matmul + SiLU + residual) become ONE
wgmma kernel whose epilogue runs the elementwise ops on the float32 accumulators, and match a numpy
reference in the race-checked interpreter on fresh random inputs; what the template cannot take
(a raw result that is also an output, a dimension under 64, TMA-misaligned rows, sm_80) falls back
to gemm.mma_sync; deleting the fused kernel's barriers still fails; nvcc compiles it for sm_90a."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from scipy.special import erf

from tessel.ir.interp.race import RaceError
from tessel.ir.nodes import Intrinsic, walk
from tests.schedules.test_gemm_epilogue import _h, _rng
from tessel.codegen.cuda_build import available_compilers

needs_cuda_compiler = pytest.mark.skipif(not available_compilers(), reason="no CUDA compiler (nvcc or NVRTC)")

F = lambda a: np.asarray(a).astype(np.float64)  # noqa: E731
R16 = lambda a: F(np.asarray(a).astype(np.float16))  # noqa: E731


def _case(name, rng):
    """(builder, inputs, numpy reference in float64 of the graph's float16 semantics)."""
    from tessel.frontend.builder import GraphBuilder

    b = GraphBuilder(name)
    x = _h(rng, 130, 64, scale=1.0)  # M = 130: a partial 64-row tile at the edge
    if name == "matmul_bias_gelu":
        w, bias = _h(rng, 64, 72), _h(rng, 72)
        b.output(b.gelu(b.add(b.matmul(b.input("x", x.shape, "float16"), w), bias)))
        h = R16(R16(F(x) @ F(w)) + F(bias))
        return b, [x], 0.5 * h * (1 + erf(h / math.sqrt(2)))
    if name == "linear":
        w, bias = _h(rng, 80, 64), _h(rng, 80)
        b.output(b.linear(b.input("x", x.shape, "float16"), w, bias))
        return b, [x], F(x) @ F(w).T + F(bias)
    if name == "linear3d_gelu_tanh":
        x3, w, bias = _h(rng, 2, 66, 64, scale=1.0), _h(rng, 64, 64), _h(rng, 64)
        b.output(b.gelu(b.linear(b.input("x", x3.shape, "float16"), w, bias), approximate="tanh"))
        h = R16(R16(F(x3) @ F(w).T) + F(bias))
        return b, [x3], 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    if name == "bmm":
        xs, y = _h(rng, 2, 64, 72, scale=1.0), _h(rng, 2, 72, 64, scale=1.0)
        b.output(b.matmul(b.input("x", xs.shape, "float16"), b.input("y", y.shape, "float16")))
        return b, [xs, y], np.matmul(F(xs), F(y))
    if name == "scores":  # B (k) read K-major through TMA: the transposed copy disappears
        q, k = _h(rng, 2, 64, 64, scale=1.0), _h(rng, 2, 96, 64, scale=1.0)
        qi, ki = b.input("q", q.shape, "float16"), b.input("k", k.shape, "float16")
        b.output(b.mul(b.matmul(qi, b.transpose(ki, (0, 2, 1))), 0.125))
        return b, [q, k], R16(np.matmul(F(q), np.swapaxes(F(k), 1, 2))) * 0.125
    if name == "matmul_silu_residual":
        w, res = _h(rng, 64, 64), _h(rng, 130, 64, scale=1.0)
        b.output(b.add(b.silu(b.matmul(b.input("x", x.shape, "float16"), w)), b.input("r", res.shape, "float16")))
        h = R16(F(x) @ F(w))
        return b, [x, res], R16(h / (1 + np.exp(-h))) + F(res)
    raise AssertionError(name)


def _template_of(cm):
    assert len(cm.kernels) == 1, [k.name for k in cm.kernels]
    names = {n.name for n in walk(cm.kernels[0].ir) if isinstance(n, Intrinsic)}
    return ("gemm.wgmma" if any(x.startswith("wgmma.mma_async") for x in names) else
            "gemm.mma_sync" if any(x.startswith("mma.sync") for x in names) else "other")


@needs_cuda_compiler
@pytest.mark.parametrize("name", ["matmul_bias_gelu", "linear", "linear3d_gelu_tanh", "bmm", "scores",
                                  "matmul_silu_residual"])
def test_graph_gemm_groups_are_one_wgmma_kernel_on_sm90a(name):
    from tessel.compiler.model import compile_graph

    seed, rng = _rng()
    b, inputs, want = _case(name, rng)
    cm = compile_graph(b.graph, target="cuda:sm_90a")
    assert _template_of(cm) == "gemm.wgmma"
    got = F(cm.run_interpreted(*inputs))
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= 2e-3, f"seed {seed}: {name} relative error {err}"


@needs_cuda_compiler
def test_sm80_and_small_or_misaligned_gemms_keep_mma_sync():
    from tessel.compiler.model import compile_graph
    from tessel.frontend.builder import GraphBuilder

    seed, rng = _rng()
    for target, m, k, n in (("cuda:sm_80", 130, 64, 72), ("cuda:sm_90a", 40, 64, 72),  # M < 64
                            ("cuda:sm_90a", 130, 60, 72)):  # K = 60: rows of 120 bytes, not TMA's 16-byte pitch
        x, w = _h(rng, m, k), _h(rng, k, n)
        b = GraphBuilder("g")
        b.output(b.relu(b.matmul(b.input("x", x.shape, "float16"), w)))
        cm = compile_graph(b.graph, target=target)
        assert _template_of(cm) == "gemm.mma_sync", (target, m, k, n)
        want = R16(np.maximum(R16(F(x) @ F(w)), 0))
        got = F(cm.run_interpreted(x))
        assert np.abs(got - want).max() <= 2e-3 * np.abs(want).max(), f"seed {seed}"


def test_raw_result_that_is_also_an_output_falls_back_to_mma_sync():
    """C = A @ B is a kernel output and D = relu(C) another: gemm.wgmma stores one output, so the
    mma.sync template (which stores both) takes it."""
    import ml_dtypes

    import tessel as ts
    from tessel.ir import interp
    from tessel.schedules.generic_gpu import default_gpu_schedule

    A = ts.placeholder((128, 64), "bfloat16", name="A")
    B = ts.placeholder((64, 64), "bfloat16", name="B")
    k = ts.reduce_axis(64, name="k")
    C = ts.compute((128, 64), lambda i, j: ts.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                   name="C")
    D = ts.compute((128, 64), lambda i, j: ts.maximum(C[i, j], 0.0).astype("bfloat16"), name="D")
    sch = default_gpu_schedule(ts.lower([A, B, C, D]), "cuda:sm_90a")
    assert sch.trace[0].args["name"] == "gemm.mma_sync"
    seed, rng = _rng()
    a, b = (rng.standard_normal(s).astype(ml_dtypes.bfloat16) for s in ((128, 64), (64, 64)))
    c, d = np.full((128, 64), 7e3, np.float32), np.full((128, 64), 7e3, ml_dtypes.bfloat16)
    interp.run(sch.kernel, a, b, c, d)
    assert np.abs(c - F(a) @ F(b)).max() <= 1e-3 * np.abs(c).max(), f"seed {seed}"


def _fused_kernel():
    """relu(A @ B + bias) as float16: a GEMM stage and its elementwise epilogue stage."""
    import tessel as ts

    A = ts.placeholder((128, 64), "float16", name="A")
    B = ts.placeholder((64, 64), "float16", name="B")
    bias = ts.placeholder((64,), "float16", name="bias")
    k = ts.reduce_axis(64, name="k")
    C = ts.compute((128, 64), lambda i, j: ts.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                   name="C")
    D = ts.compute((128, 64), lambda i, j: ts.maximum(C[i, j] + bias[j].astype("float32"), 0.0).astype("float16"),
                   name="D")
    return ts.lower([A, B, bias, D])


def _fused_schedule():
    from tessel.schedules.generic_gpu import default_gpu_schedule

    return default_gpu_schedule(_fused_kernel(), "cuda:sm_90a")


def test_fused_kernel_replays_and_without_its_full_waits_fails():
    from tessel.ir import interp
    from tessel.ir.nodes import Seq, rewrite
    from tessel.schedules.schedule import Schedule

    sch = _fused_schedule()
    assert sch.trace[0].args["name"] == "gemm.wgmma"
    assert Schedule.replay(_fused_kernel(), sch.trace_json()) == sch.kernel
    seed, rng = _rng()
    a, b, bias = _h(rng, 128, 64, scale=1.0), _h(rng, 64, 64), _h(rng, 64)
    d = np.full((128, 64), 7e3, np.float16)
    interp.run(sch.kernel, a, b, bias, d, seed=seed)
    want = R16(np.maximum(F(a) @ F(b) + F(bias), 0))
    assert np.abs(F(d) - want).max() <= 2e-3 * np.abs(want).max(), f"seed {seed}"

    def no_waits(n):  # the consumers stop waiting for the TMA loads to land
        if isinstance(n, Intrinsic) and n.name.startswith("mbarrier.try_wait"):
            return Seq(())
        return None

    broken = rewrite(sch.kernel, no_waits, fixpoint=False)
    assert broken != sch.kernel
    with pytest.raises((RaceError, AssertionError)):
        for s in range(4):
            out = np.full((128, 64), 7e3, np.float16)
            interp.run(broken, a, b, bias, out, seed=seed + s)
            assert np.abs(F(out) - want).max() <= 2e-3 * np.abs(want).max()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_nvcc_compiles_the_fused_wgmma_kernel_for_sm90a():
    from tessel.codegen.cuda import cuda_source
    from tessel.codegen.cuda_build import compile_cuda

    binary = compile_cuda(cuda_source(_fused_schedule().kernel), "sm_90a", name="fused_wgmma", compiler="nvcc")
    assert binary.code


@needs_cuda_compiler
def test_compile_option_allow_tf32_puts_a_float32_linear_on_tf32_wgmma():
    from tessel.compiler.model import compile_graph
    from tessel.frontend.builder import GraphBuilder

    seed, rng = _rng()
    x = rng.standard_normal((128, 64)).astype(np.float32)
    w = (rng.standard_normal((96, 64)) / 8).astype(np.float32)  # linear: x @ w.T, both K-major
    b = GraphBuilder("g")
    b.output(b.linear(b.input("x", x.shape, "float32"), w))
    want = F(x) @ F(w).T
    exact = compile_graph(b.graph, target="cuda:sm_90a")  # default: exact float32, no tf32 instruction
    tf32 = compile_graph(b.graph, target="cuda:sm_90a", allow_tf32=True)

    def wgmma_names(cm):
        return {n.name for k in cm.kernels for n in walk(k.ir) if isinstance(n, Intrinsic) and "wgmma.mma" in n.name}

    assert not any("tf32" in n for n in wgmma_names(exact))
    assert wgmma_names(tf32) and all(n.endswith(".tf32.tf32") for n in wgmma_names(tf32))
    got = F(tf32.run_interpreted(x))
    bound = 2.0 ** -9 * (np.abs(F(x)) @ np.abs(F(w)).T)  # tf32's 10-bit mantissa, per product
    assert (np.abs(got - want) <= bound + 1e-6).all(), f"seed {seed}"
    assert not np.array_equal(got, F(exact.run_interpreted(x)))  # really tf32, not float32
