"""The mma.sync GEMM template (tessel/schedules/gemm.py): the race-checked interpreter against numpy
on fresh random inputs (small sizes, edges, transposed and batched operands, several knob points),
impossible knobs, the template through the DSL and its trace, deleted barriers and waits caught,
and nvcc compiling the printed source for sm_80 and sm_90a."""

from __future__ import annotations

import shutil

import ml_dtypes
import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError
from tessel.ir import interp
from tessel.ir.nodes import Barrier, Intrinsic, Seq, rewrite, walk
from tessel.ir.verify import verify
from tessel.schedules.gemm import GEMM_TEMPLATE, GemmKnobs, GemmProblem, check_knobs, default_knobs, gemm_kernel
from tessel.schedules.schedule import Schedule

NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}


def _inputs(p: GemmProblem):
    seed = int(np.random.SeedSequence().entropy % 2**32)  # fresh inputs every run; the seed is in messages
    rng = np.random.default_rng(seed)
    a_buf, b_buf, c_buf = p.buffers()
    a = rng.standard_normal(a_buf.shape).astype(NP[p.dtype])
    b = rng.standard_normal(b_buf.shape).astype(NP[p.dtype])
    return seed, a, b, c_buf


def _reference(p: GemmProblem, a, b):
    x, y = a.astype(np.float64), b.astype(np.float64)
    if not p.a_kcontig:
        x = np.swapaxes(x, -1, -2)
    if p.b_kcontig:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _run(kernel, p: GemmProblem):
    seed, a, b, c_buf = _inputs(p)
    c = np.full(c_buf.shape, 7e3, NP[p.out_dtype])  # garbage: every element must be written
    interp.run(kernel, a, b, c)
    return seed, c.astype(np.float64), _reference(p, a, b)


CASES = [
    (GemmProblem(64, 64, 64), GemmKnobs(bm=64, bn=64, bk=32, warps_m=2, warps_n=2, stages=3)),
    (GemmProblem(64, 64, 128, "bfloat16"), GemmKnobs(bm=32, bn=64, bk=64, warps_m=1, warps_n=2, stages=2)),
    (GemmProblem(37, 50, 70, "bfloat16"), GemmKnobs(bm=32, bn=32, bk=32, warps_m=1, warps_n=1, stages=3)),
    (GemmProblem(37, 50, 72, "float16", a_kcontig=False, b_kcontig=True),
     GemmKnobs(bm=32, bn=32, bk=32, warps_m=2, warps_n=1, stages=2)),
    (GemmProblem(33, 17, 19, "float16", a_kcontig=False), GemmKnobs(bm=16, bn=16, bk=16, warps_m=1, warps_n=1,
                                                                   stages=2)),
    (GemmProblem(40, 24, 64, "bfloat16", batch=(2,), b_kcontig=True),
     GemmKnobs(bm=32, bn=16, bk=64, warps_m=1, warps_n=1, stages=4, group_m=1)),
    (GemmProblem(48, 32, 96, "float16", batch=(2, 1)), GemmKnobs(bm=16, bn=32, bk=32, warps_m=1, warps_n=1,
                                                                  stages=4, swizzle="none")),
    (GemmProblem(96, 32, 32, "float16"), GemmKnobs(bm=32, bn=32, bk=32, warps_m=1, warps_n=1, stages=2,
                                                   group_m=2)),
    (GemmProblem(64, 64, 128, "float16"), GemmKnobs(bm=32, bn=32, bk=32, warps_m=1, warps_n=2, stages=3,
                                                    spread=True)),
    (GemmProblem(37, 50, 70, "bfloat16", a_kcontig=False, b_kcontig=True),
     GemmKnobs(bm=32, bn=32, bk=64, warps_m=2, warps_n=1, stages=4, spread=True)),
]


@pytest.mark.parametrize("p,kn", CASES, ids=[f"{p.m}x{p.n}x{p.k}-{p.dtype}-{i}" for i, (p, _) in enumerate(CASES)])
def test_interpreter_matches_numpy(p, kn):
    kernel = gemm_kernel(p, kn)
    verify(kernel)
    seed, c, want = _run(kernel, p)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-4, err_msg=f"input seed {seed}")


def test_output_cast_in_the_epilogue():
    p = GemmProblem(64, 32, 64, "bfloat16", out_dtype="bfloat16")
    seed, c, want = _run(gemm_kernel(p, GemmKnobs(bm=32, bn=32, bk=32, warps_m=2, warps_n=1, stages=2)), p)
    np.testing.assert_allclose(c, want, rtol=2**-8, atol=2**-8 * np.abs(want).max(), err_msg=f"input seed {seed}")


def test_kernel_shape_and_instructions():
    p = GemmProblem(256, 256, 256, "bfloat16")
    kn = GemmKnobs(bm=128, bn=128, bk=32, warps_m=2, warps_n=2, stages=4, group_m=2)
    k = gemm_kernel(p, kn)
    assert k.launch.grid == (4, 1, 1) and k.launch.block == (128, 1, 1)
    assert k.launch.shared_bytes == 4 * (128 + 128) * 32 * 2
    names = [n.name for n in walk(k.body) if isinstance(n, Intrinsic)]
    assert "cp.async.cg.shared.global.16" in names and "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in names
    assert "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" in names  # B is row-major (n-contiguous)
    # one barrier in the k-loop and one after the prologue
    assert sum(isinstance(n, Barrier) for n in walk(k.body)) == 2
    waits = [n.args[0].value for n in walk(k.body) if isinstance(n, Intrinsic) and n.name == "cp.async.wait_group"]
    assert waits == [2, 2]


@pytest.mark.parametrize("knobs,culprit", [
    (dict(bm=96), "bm"), (dict(bk=8), "bk"), (dict(bm=16, warps_m=2), "bm"), (dict(bn=16, warps_n=2), "bn"),
    (dict(stages=1), "stages"), (dict(stages=10), "stages"), (dict(swizzle="xor"), "swizzle"),
    (dict(split_k=9), "split_k"), (dict(warps_m=8, warps_n=8, bm=128, bn=128), "warps_n"),
    (dict(bm=256, bn=256, bk=128, stages=4, warps_m=4, warps_n=4), "stages"),
    (dict(bm=256, bn=256, warps_m=1, warps_n=1, bk=16, stages=2), "bm"), (dict(group_m=3), "group_m"),
    (dict(bm=128, bn=128, bk=16, warps_m=4, warps_n=4), "bk"), (dict(spread=1), "spread"),
])
def test_impossible_knobs_raise_naming_the_knob(knobs, culprit):
    p = GemmProblem(256, 256, 256)
    kn = GemmKnobs(**knobs)
    with pytest.raises(ScheduleError, match=f"knob {culprit}="):
        check_knobs(p, kn)
    with pytest.raises(ScheduleError, match=f"knob {culprit}="):
        gemm_kernel(p, kn)


def test_template_refuses_impossible_knobs_before_applying():
    kernel = _dsl_matmul(64, 64, 64, "float16")
    with pytest.raises(ScheduleError, match="'stages'=1"):
        GEMM_TEMPLATE.apply(kernel, {"stages": 1}, "cuda:sm_80")
    with pytest.raises(ScheduleError, match="'stages'=6.*shared memory"):
        GEMM_TEMPLATE.apply(kernel, {"bm": 256, "bn": 128, "bk": 128, "warps_m": 4, "warps_n": 2, "stages": 6},
                            "cuda:sm_80")


def test_default_knobs_are_valid_for_every_benchmark_shape():
    for m, n, k in [(2048, 2048, 2048), (4096, 4096, 4096), (8192, 8192, 8192), (16384, 4096, 4096),
                    (4096, 4096, 16384), (128, 8192, 8192), (8192, 128, 8192), (1, 7, 127), (1000, 520, 333)]:
        p = GemmProblem(m, n, k, "bfloat16")
        check_knobs(p, default_knobs(p), "sm_80")


def _dsl_matmul(M, N, K, dtype, a_t=False, b_t=False, batch=None):
    pre = (batch,) if batch else ()
    A = ts.placeholder(pre + ((K, M) if a_t else (M, K)), dtype, name="A")
    B = ts.placeholder(pre + ((N, K) if b_t else (K, N)), dtype, name="B")
    k = ts.reduce_axis(K, name="k")

    def body(*idx):
        b, (i, j) = idx[:-2], idx[-2:]
        x = A[b + ((k, i) if a_t else (i, k))]
        y = B[b + ((j, k) if b_t else (k, j))]
        return ts.sum(x.astype("float32") * y.astype("float32"), axis=k)

    return ts.lower([A, B, ts.compute(pre + (M, N), body, name="C")])


@pytest.mark.parametrize("M,N,K,dtype,a_t,b_t,batch,knobs", [
    (37, 50, 70, "float16", False, False, None, None),
    (32, 48, 64, "bfloat16", True, True, 3, {"bm": 32, "bn": 16, "warps_m": 2, "warps_n": 1, "bk": 32,
                                               "stages": 2}),
    (64, 64, 64, "float16", False, True, None, {"bm": 64, "bn": 64, "bk": 64, "stages": 2}),
])
def test_template_on_a_dsl_contraction(M, N, K, dtype, a_t, b_t, batch, knobs):
    kernel = _dsl_matmul(M, N, K, dtype, a_t, b_t, batch)
    sch = GEMM_TEMPLATE.apply(kernel, knobs, "cuda:sm_80")
    step = sch.trace[0]
    assert step.primitive == "template" and step.args["name"] == "gemm.mma_sync"
    assert set(step.args["knobs"]) == set(GemmKnobs().as_dict())
    assert all(step.args["knobs"][k] == v for k, v in (knobs or {}).items())
    assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel
    p = GemmProblem(M, N, K, dtype, (batch,) if batch else (), not a_t, b_t)
    seed, a, b, _ = _inputs(p)
    c = np.full(((batch,) if batch else ()) + (M, N), 7e3, np.float32)
    interp.run(sch.kernel, a, b, c)
    np.testing.assert_allclose(c, _reference(p, a, b), rtol=1e-5, atol=1e-4, err_msg=f"input seed {seed}")


def test_template_does_not_take_other_dtypes():
    A = ts.placeholder((16, 16), "float32", name="A")
    B = ts.placeholder((16, 16), "float32", name="B")
    k = ts.reduce_axis(16, name="k")
    kernel = ts.lower([A, B, ts.compute((16, 16), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")])
    assert "float32 products of casts" in GEMM_TEMPLATE.applies(kernel, "cuda:sm_80")
    A = ts.placeholder((16, 16), "float32", name="A")
    kernel = ts.lower([A, B, ts.compute((16, 16), lambda i, j: ts.sum(A[i, k].astype("float32") *
                                                                      B[k, j].astype("float32"), axis=k), name="C")])
    assert GEMM_TEMPLATE.applies(kernel, "cuda:sm_80") is not None


# -- deleting synchronisation must be caught ----------------------------------------------------------

def _without(kernel, pred):
    out = rewrite(kernel, lambda n: Seq(()) if pred(n) else None, fixpoint=False)
    assert out != kernel
    return out


@pytest.mark.parametrize("spread", [False, True])
@pytest.mark.parametrize("what", ["barriers", "loop barrier", "waits"])
def test_deleted_synchronisation_fails_in_the_interpreter(what, spread):
    p = GemmProblem(64, 64, 128, "float16")
    kernel = gemm_kernel(p, GemmKnobs(bm=32, bn=32, bk=32, warps_m=1, warps_n=2, stages=3, spread=spread))
    if what == "barriers":
        broken = _without(kernel, lambda n: isinstance(n, Barrier))
    elif what == "loop barrier":  # only the one __syncthreads per k-tile
        loop = next(n for n in walk(kernel.body) if getattr(n, "kind", None) == "serial" and
                    any(isinstance(x, Barrier) for x in walk(n)))
        fixed = rewrite(loop, lambda n: Seq(()) if isinstance(n, Barrier) else None, fixpoint=False)
        broken = rewrite(kernel, lambda n: fixed if n is loop or n == loop else None, fixpoint=False)
        assert sum(isinstance(n, Barrier) for n in walk(broken.body)) == 1
    else:
        broken = _without(kernel, lambda n: isinstance(n, Intrinsic) and n.name.startswith("cp.async.wait"))
    with pytest.raises(interp.ExecutionError):
        _run(broken, p)


# -- the printed source compiles -------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("p,kn", [
    (GemmProblem(4096, 4096, 4096, "bfloat16", out_dtype="bfloat16"), None),
    (GemmProblem(1000, 520, 333, "float16", a_kcontig=False, b_kcontig=True), None),
    (GemmProblem(64, 48, 80, "bfloat16", batch=(3,)), GemmKnobs(bm=32, bn=16, bk=32, warps_m=2, warps_n=1, stages=2)),
])
def test_nvcc_compiles_the_printed_source(p, kn, arch):
    from tessel.codegen.cuda import cuda_source
    from tessel.codegen.cuda_build import compile_cuda

    binary = compile_cuda(cuda_source(gemm_kernel(p, kn)), arch, name="gemm", compiler="nvcc")
    assert binary.code


# -- on the GPU, against torch.matmul -----------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k,dtype,a_t,b_t", [
    (1, 7, 127, "bfloat16", False, False), (127, 1000, 4097, "float16", False, False),
    (1000, 127, 1, "bfloat16", True, False), (4097, 7, 1000, "float16", False, True),
    (512, 512, 512, "bfloat16", True, True), (2048, 2048, 4096, "bfloat16", False, False),
])
def test_gpu_matches_torch(m, n, k, dtype, a_t, b_t):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from tessel.codegen.cuda import build_kernel

    p = GemmProblem(m, n, k, dtype, a_kcontig=not a_t, b_kcontig=b_t)
    kern = build_kernel(gemm_kernel(p), "cuda")
    tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    a_buf, b_buf, c_buf = p.buffers()
    a = torch.randn(a_buf.shape, device="cuda", dtype=tdt)
    b = torch.randn(b_buf.shape, device="cuda", dtype=tdt)
    c = torch.full(c_buf.shape, float("nan"), device="cuda")
    kern(a, b, c)
    x, y = (a.float().T if a_t else a.float()), (b.float().T if b_t else b.float())
    ref = x @ y
    err = float((c - ref).norm() / ref.norm())
    assert err <= 5e-3 and not torch.isnan(c).any()
