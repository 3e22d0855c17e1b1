"""The CUDA pass pipeline on the default GPU schedules: every pass keeps the meaning (the
interpreter gives the same bits before and after it, on fresh random inputs, and numpy agrees),
the verifier accepts every intermediate kernel, the build path runs the pipeline (the printed GEMM
no longer carries the constant arithmetic the schedules leave), and nvcc compiles what comes out
for sm_80 and sm_90a."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import tessel as ts
from tessel.codegen.cuda_printer import print_kernel
from tessel.compiler.pipeline import Pass, cuda_pipeline, run_pipeline
from tessel.ir.nodes import Allocate, Barrier, For, LetStmt, Load, Seq, rewrite, walk
from tessel.ir.verify import verify
from tests.passes.gpu_cases import CASES, case, equal_bits, run_case


def _pipeline_steps(kernel):
    """The kernel after each pass of the CUDA pipeline, in order: [(pass, kernel), ...]."""
    out = []
    for p in cuda_pipeline():
        kernel = p(kernel)
        out.append((p, kernel))
    return out


@pytest.mark.parametrize("name", CASES)
def test_every_pass_of_the_pipeline_keeps_the_meaning(name):
    c = case(name)
    before = run_case(c.kernel, c)
    np.testing.assert_allclose(before.astype(np.float64), c.want, rtol=c.tol, atol=c.tol)
    for p, kernel in _pipeline_steps(c.kernel):
        verify(kernel)
        after = run_case(kernel, c)
        assert equal_bits(before, after), f"{name}: pass '{p.name}' changed the result"


# Each pass alone, on the scheduled kernel as the schedule left it (not only where the pipeline puts it).
PASSES_ALONE = [Pass("simplify"), Pass("remove_dead_code"), Pass("vector_access"),
                Pass("vector_access", {"enabled": False}), Pass("unroll"),
                Pass("unroll", {"serial": True, "max_extent": 16, "max_stmts": 4096}),
                Pass("storage_rewrite"), Pass("hoist"), Pass("hoist", {"min_ops": 1})]


@pytest.mark.parametrize("p", PASSES_ALONE, ids=lambda p: f"{p.name}-{p.params}")
@pytest.mark.parametrize("name", ["elementwise_f16", "softmax_block", "layer_norm", "matmul_mma", "matmul_simt",
                                  "transpose", "row_max_block"])
def test_each_pass_alone_keeps_the_meaning(name, p):
    c = case(name)
    before = run_case(c.kernel, c)
    out = p(c.kernel)
    verify(out)
    assert equal_bits(before, run_case(out, c))


# -- what the pipeline removes from the printed CUDA (forms the raw schedules print today) -----------

LEFTOVERS = {
    "constant op": re.compile(r"\((\d+) [-+*/%] (\d+)\)"),  # (0 % 2), (0 * 32): two integer literals
    "zero added": re.compile(r"\(0 \+ "),
    "by one": re.compile(r" [/%] 1\)"),  # (gemm_warp / 1), (gemm_warp % 1)
    "times one": re.compile(r" \* 1\)"),  # (i0_2_0 * 1)
    "product subtracted": re.compile(r" - \(\(?\w+ \* \d+\)"),  # (k_0 * 32 + ...) - (k_0 * 32)
}


def _device_code(src: str) -> str:
    return src.split("__global__")[-1]  # the kernel, not the header


def test_the_pipeline_removes_the_constant_arithmetic_schedules_leave():
    seen = dict.fromkeys(LEFTOVERS, 0)
    for name in CASES:
        c = case(name, seed=0)
        raw = _device_code(print_kernel(c.kernel).source)
        out = _device_code(print_kernel(run_pipeline(c.kernel, cuda_pipeline())).source)
        for what, pat in LEFTOVERS.items():
            seen[what] += len(pat.findall(raw))
            assert not pat.search(out), (name, what, pat.search(out))
    assert all(seen.values()), seen  # every form is there without the pipeline


def _gemm():
    M, N, K = 128, 128, 64
    A = ts.placeholder((M, K), "float16", name="A")
    B = ts.placeholder((K, N), "float16", name="B")
    k = ts.reduce_axis(K, name="k")
    C = ts.compute((M, N), lambda i, j: ts.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                   name="C")
    return [A, B, C]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_build_runs_the_cuda_pipeline_on_the_default_gemm():
    kern = ts.build(_gemm(), target="cuda:sm_80")
    raw = _device_code(ts.build(_gemm(), target="cuda:sm_80", pipeline=[]).source)
    src = _device_code(kern.source)
    found = [what for what, pat in LEFTOVERS.items() if pat.search(raw)]
    assert len(found) >= 2, found  # today: constant ops, zeros added, divisions by one
    for what in found:
        assert not LEFTOVERS[what].search(src), what
    # unrolled accumulator initialisation: constant register indices
    assert re.search(r"\w+\[\d+\] = 0x0\.0p\+0f;", src)
    # the built kernel's IR is the pipeline's output and computes the GEMM
    rng = np.random.default_rng()
    a, b = rng.standard_normal((128, 64)).astype(np.float16), rng.standard_normal((64, 128)).astype(np.float16)
    c = np.full((128, 128), 7e3, np.float32)
    kern.run_reference(a, b, c)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-3, atol=1e-3)


def test_gemm_pipeline_structure():
    c = case("gemm_default", seed=1)
    out = run_pipeline(c.kernel, cuda_pipeline(), debug=True)
    # small unrolled loops without allocations are gone; the rest keep #pragma unroll
    for n in walk(out.body):
        if isinstance(n, For) and n.kind == "unrolled" and n.extent.value <= 8:
            assert any(isinstance(x, Allocate) for x in walk(n.body)), n.var
    # hoisted lets hold pure index arithmetic, and some sit outside the serial loop over K
    before = {n.var for n in walk(c.kernel.body) if isinstance(n, LetStmt)}
    lets = [n for n in walk(out.body) if isinstance(n, LetStmt) and n.var not in before]
    assert lets and all(not any(isinstance(x, Load) for x in walk(n.value)) for n in lets)
    k_loops = [n for n in walk(out.body) if isinstance(n, For) and n.kind == "serial"
               and any(isinstance(x, Barrier) for x in walk(n.body))]
    assert k_loops and any(any(x is k for k in k_loops for x in walk(n.body)) for n in lets)


# -- storage: the merged shared buffer depends on the barriers between its two uses ------------------

def test_block_softmax_shares_one_shared_buffer_and_needs_its_barriers():
    c = case("softmax_block")

    def shared(k):
        return sorted(n.buffer.name for n in walk(k.body) if isinstance(n, Allocate) and n.buffer.scope == "shared")

    out = run_pipeline(c.kernel, cuda_pipeline(), debug=True)
    assert len(shared(c.kernel)) == 2 and len(shared(out)) == 1  # max and sum partials share one
    y = run_case(out, c)
    np.testing.assert_allclose(y.astype(np.float64), c.want, rtol=1e-4, atol=1e-5)
    # without its barriers the merged kernel computes garbage in the interpreter
    no_barriers = rewrite(out, lambda n: Seq(()) if isinstance(n, Barrier) else None, fixpoint=False)
    try:
        bad = run_case(no_barriers, c)
    except ts.TesselError:
        return  # a race or a barrier mismatch reported: also a failure
    assert not np.allclose(bad.astype(np.float64), c.want, rtol=1e-4, atol=1e-5)


# -- nvcc compiles the pipeline's output ----------------------------------------------------------

@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("name", CASES)
def test_pipeline_output_compiles_with_nvcc(name, arch):
    from tessel.codegen.cuda_build import compile_cuda

    c = case(name, seed=0)
    out = run_pipeline(c.kernel, cuda_pipeline())
    binary = compile_cuda(print_kernel(out).source, arch, name=f"passes_{name}", compiler="nvcc")
    assert binary.code


# -- a kernel with a scalar parameter and symbolic extents: one kernel for every length ----------

def _symbolic_add(dtype):
    """O[i] = A[i] + S[t] for i < n, blocks of 32 threads, S a shared staging copy; n a scalar parameter."""
    from tessel.ir.nodes import Buffer, Const, IfThenElse, Kernel, Launch, Store, Var, seq

    n = Var("n", dtype)
    A, O, S = Buffer("A", (n,)), Buffer("O", (n,)), Buffer("S", (32,), "float32", "shared")
    b, t, i = Var("b"), Var("t"), Var("i", dtype)
    nb = (n + 31) // 32
    body = LetStmt(i, Const(32, dtype) * b.astype(dtype) + t.astype(dtype) + Const(0, dtype) * n,
                   seq(IfThenElse(i < n, Store(S, (t,), A[i])), Barrier(),
                       IfThenElse(i < n, Store(O, (i,), A[i] + S[t]))))
    grid = nb if dtype == "int32" else nb.astype("int32")
    return Kernel("add", (A, n, O), For(b, grid, Allocate(S, For(t, 32, body, "threadIdx.x")), "blockIdx.x"),
                  target="cuda", launch=Launch((nb, 1, 1), (32, 1, 1)))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_symbolic_extents_keep_their_bits_for_every_length(dtype):
    from tessel.ir.interp import run

    k = _symbolic_add(dtype)
    out = run_pipeline(k, cuda_pipeline(), debug=True)
    assert out != k  # `0 * n` folded at least
    for length in (70, 5, 32):
        a = np.random.default_rng().standard_normal(length).astype(np.float32)
        o1, o2 = np.full(length, 7e3, np.float32), np.full(length, 7e3, np.float32)
        run(k, a, length, o1)
        run(out, a, length, o2)
        assert o1.tobytes() == o2.tobytes()
        np.testing.assert_array_equal(o2, 2 * a)
