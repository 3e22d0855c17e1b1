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


# -- what the pipeline removes from the printed CUDA (today's strings, checked on the raw schedule) ---

GEMM_LEFTOVERS = ["(0 % 2)", "((0 / 2) % 4)", "- (k_0 * 32))", "- ((i_0 * 2) * 32))"]
CONST_OP = re.compile(r"\((\d+) [-+*/%] (\d+)\)")  # an operation of two integer literals


def _gemm():
    M, N, K = 128, 128, 64
    A = ts.placeholder((M, K), "float16", name="A")
    B = ts.placeholder((K, N), "float16", name="B")
    k = ts.reduce_axis(K, name="k")
    C = ts.compute((M, N), lambda i, j: ts.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                   name="C")
    return [A, B, C]


def test_raw_gemm_schedule_prints_constant_arithmetic():
    """The strings the next test looks for are really there without the pipeline."""
    c = case("gemm_default", seed=0)
    raw = print_kernel(c.kernel).source
    for s in GEMM_LEFTOVERS:
        assert s in raw, s
    assert CONST_OP.search(raw)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_build_runs_the_cuda_pipeline_on_the_default_gemm():
    kern = ts.build(_gemm(), target="cuda:sm_80")
    src = kern.source
    for s in GEMM_LEFTOVERS:
        assert s not in src, s
    assert not CONST_OP.search(src), CONST_OP.search(src).group(0)
    assert not re.search(r"- \(\w+ \* \d+\)\)\) \* ", src)  # no `(x + ...) - (x * c)` left in an index
    # unrolled accumulator initialisation: constant register indices
    assert re.search(r"C_local\[\d+\] = 0x0\.0p\+0f;", src)
    # and without the pipeline, the same build prints the leftovers
    raw = ts.build(_gemm(), target="cuda:sm_80", pipeline=[]).source
    assert "(0 % 2)" in raw
    # the built kernel's IR is the pipeline's output and computes the GEMM
    rng = np.random.default_rng()
    a, b = rng.standard_normal((128, 64)).astype(np.float16), rng.standard_normal((64, 128)).astype(np.float16)
    c = np.full((128, 128), 7e3, np.float32)
    kern.run_reference(a, b, c)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-3, atol=1e-3)
    assert any(isinstance(n, LetStmt) for n in walk(kern.ir.body))  # hoisted


def test_gemm_pipeline_structure():
    c = case("gemm_default", seed=1)
    out = run_pipeline(c.kernel, cuda_pipeline(), debug=True)
    # small unrolled loops without allocations are gone; the rest keep #pragma unroll
    for n in walk(out.body):
        if isinstance(n, For) and n.kind == "unrolled" and n.extent.value <= 8:
            assert any(isinstance(x, Allocate) for x in walk(n.body)), n.var
    # hoisted lets hold pure index arithmetic and sit outside the serial k loop
    lets = [n for n in walk(out.body) if isinstance(n, LetStmt)]
    assert lets and all(not any(isinstance(x, Load) for x in walk(n.value)) for n in lets)
    (k_loop,) = [n for n in walk(out.body) if isinstance(n, For) and n.var.name == "k_0"]
    assert any(any(x is k_loop for x in walk(n.body)) for n in lets)  # something climbed out of k_0


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
