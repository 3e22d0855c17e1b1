"""The race checker on real GPU schedules (issue 7's key check): every default GPU schedule runs
race-free and matches numpy; with its Barriers (or cp.async waits) deleted from the IR the
interpreter raises RaceError or reads poison. The default cuda GEMM (128x128x64 fp16 on tensor
cores, cp.async double buffering) is the headline case: before the race checker, deleting all its
barriers still matched numpy."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tessel as ts
from tessel.fuzz import suite
from tessel.ir import interp
from tessel.ir.interp import RaceError
from tessel.ir.nodes import Allocate, Barrier, Intrinsic, Seq, collect, rewrite
from tessel.schedules.generic_gpu import default_gpu_schedule

NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}


def _rand(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(NP[dtype])


def _matmul(M, N, K, dtype="float16", a_t=False, b_t=False):
    A = ts.placeholder((K, M) if a_t else (M, K), dtype, name="A")
    B = ts.placeholder((N, K) if b_t else (K, N), dtype, name="B")
    k = ts.reduce_axis(K, name="k")
    acc = "float32" if dtype != "float32" else dtype
    C = ts.compute((M, N), lambda i, j: ts.sum((A[k, i] if a_t else A[i, k]).astype(acc) *
                                               (B[j, k] if b_t else B[k, j]).astype(acc), axis=k), name="C")
    a, b = _rand(A.shape, dtype, 1), _rand(B.shape, dtype, 2)
    want = (a.T if a_t else a).astype(np.float64) @ (b.T if b_t else b).astype(np.float64)
    return ts.lower([A, B, C]), [a, b], want


def _case(name):
    """(unscheduled kernel, inputs, numpy result) of one kernel per default GPU schedule."""
    if name == "elementwise":
        A = ts.placeholder((37, 19), name="A")
        return ts.lower([A, ts.compute((37, 19), lambda i, j: ts.exp(A[i, j]) * 2.0, name="B")]), \
            [_rand((37, 19), "float32", 0)], None
    if name in ("row_sum", "row_max_block", "column_sum"):
        rows, cols = {"row_sum": (6, 100), "row_max_block": (3, 1000), "column_sum": (50, 7)}[name]
        X = ts.placeholder((rows, cols), name="X")
        if name == "column_sum":
            k = ts.reduce_axis(rows, name="k")
            out = ts.compute((cols,), lambda j: ts.sum(X[k, j], axis=k), name="S")
        else:
            k = ts.reduce_axis(cols, name="k")
            red = ts.sum if name == "row_sum" else ts.max
            out = ts.compute((rows,), lambda i: red(X[i, k], axis=k), name="S")
        return ts.lower([X, out]), [_rand((rows, cols), "float32", 3)], None
    if name == "transpose":
        A = ts.placeholder((40, 70), name="A")
        return ts.lower([A, ts.compute((70, 40), lambda i, j: A[j, i], name="B")]), [_rand((40, 70), "float32", 4)], \
            None
    if name in ("softmax", "layer_norm", "rms_norm"):
        shapes, dtype = {"softmax": ([(6, 40)], "float32"), "layer_norm": ([(5, 64), (64,), (64,)], "float16"),
                         "rms_norm": ([(4, 600), (600,)], "bfloat16")}[name]
        return suite.lowered(name, shapes, dtype), [_rand(s, dtype, 5 + k) for k, s in enumerate(shapes)], None
    if name == "matmul_mma_bf16_t":
        return _matmul(64, 64, 64, "bfloat16", True, True)
    if name == "matmul_simt":
        return _matmul(33, 40, 17, "float32")
    raise KeyError(name)


def _outputs(kernel):
    return [np.full(p.shape, 7e3, NP[p.dtype]) for p in kernel.params[kernel_inputs(kernel):]]


def kernel_inputs(kernel) -> int:
    return len(kernel.params) - 1  # every case has one output, the last parameter


def _without(kernel, drop):
    return rewrite(kernel, lambda n: Seq(()) if drop(n) else None, fixpoint=False)


def _fails(kernel, inputs, good) -> bool:
    """The kernel raises RaceError, or its output differs from the race-free run's (poison, NaN)."""
    outs = _outputs(kernel)
    try:
        interp.run(kernel, *inputs, *outs)
    except RaceError:
        return True
    return not np.array_equal(outs[0], good, equal_nan=False)


CASES = ["elementwise", "row_sum", "row_max_block", "column_sum", "transpose", "softmax", "layer_norm", "rms_norm",
         "matmul_mma_bf16_t", "matmul_simt"]


@pytest.mark.parametrize("name", CASES)
def test_default_schedules_are_race_free_and_fail_without_their_barriers(name):
    kernel, inputs, want = _case(name)
    sch = default_gpu_schedule(kernel, "cuda").kernel
    outs = _outputs(sch)
    interp.run(sch, *inputs, *outs)  # race checked, a fresh seed each run
    ref = [np.empty(p.shape, NP[p.dtype]) for p in kernel.params[len(inputs):]]
    interp.run(kernel, *inputs, *ref)  # the unscheduled kernel (CPU semantics) is the reference
    tol = 1e-2 if kernel.params[-1].dtype != "float32" else 1e-4
    np.testing.assert_allclose(outs[0].astype(np.float64), ref[0].astype(np.float64), rtol=tol, atol=tol)
    if want is not None:
        np.testing.assert_allclose(outs[0].astype(np.float64), want, rtol=tol, atol=tol)
    barriers = collect(sch.body, Barrier)
    if not barriers:
        # nothing to delete: then no thread reads what another wrote (no shared memory at all)
        assert not any(a.buffer.scope == "shared" for a in collect(sch.body, Allocate))
        return
    assert _fails(_without(sch, lambda n: isinstance(n, Barrier)), inputs, outs[0])


def _default_gemm(target="cuda:sm_80"):
    kernel, inputs, want = _matmul(128, 128, 64)
    return default_gpu_schedule(kernel, target).kernel, inputs, want


def test_default_cuda_gemm_is_race_free_and_matches_numpy():
    sch, inputs, want = _default_gemm()
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in {n.name for n in collect(sch.body, Intrinsic)}
    for seed in (1, 2):
        c = np.full((128, 128), 7e3, np.float32)
        interp.run(sch, *inputs, c, seed=seed)
        np.testing.assert_allclose(c, want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("target", ["cuda:sm_80", "cuda:sm_90a"])
def test_default_cuda_gemm_without_barriers_races(target):
    sch, inputs, _ = _default_gemm(target)
    assert collect(sch.body, Barrier)
    nob = _without(sch, lambda n: isinstance(n, Barrier))
    with pytest.raises(RaceError, match=r"kernel 'C': data race on shared buffer '\w+' element"):
        interp.run(nob, *inputs, np.zeros((128, 128), np.float32))


def test_default_cuda_gemm_without_cp_async_waits_races():
    sch, inputs, _ = _default_gemm()
    nowait = _without(sch, lambda n: isinstance(n, Intrinsic) and n.name == "cp.async.wait_group")
    with pytest.raises(RaceError, match="cp.async"):
        interp.run(nowait, *inputs, np.zeros((128, 128), np.float32))


def _pipelined(stages: int):
    """The tensor-core GEMM built step by step with a `stages`-deep cp.async pipeline, on 4 warps
    (tests/schedules/test_gpu_primitives.py's mma_schedule)."""
    from tests.schedules.test_gpu_primitives import mma_schedule

    kernel, inputs, want = _matmul(64, 32, 96)
    sch, _ = mma_schedule(kernel, warps=(2, 2), tiles=(1, 1), bk=16, stages=stages, pad=8)
    return sch.kernel, inputs, want


@pytest.mark.parametrize("stages", [2, 3])
def test_pipelined_mma_gemm_is_race_free_and_fails_without_barriers(stages):
    kernel, inputs, want = _pipelined(stages)
    assert {"cp.async.wait_group", "cp.async.commit_group"} <= {n.name for n in collect(kernel.body, Intrinsic)}
    c = np.zeros((64, 32), np.float32)
    interp.run(kernel, *inputs, c)
    np.testing.assert_allclose(c, want, rtol=1e-3, atol=1e-3)
    with pytest.raises(RaceError):
        interp.run(_without(kernel, lambda n: isinstance(n, Barrier)), *inputs, c)
    with pytest.raises(RaceError, match="cp.async"):
        interp.run(_without(kernel, lambda n: isinstance(n, Intrinsic) and n.name == "cp.async.wait_group"),
                   *inputs, c)
