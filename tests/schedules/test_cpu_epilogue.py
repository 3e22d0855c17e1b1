"""Epilogue fusion of CPU contractions (tessel/schedules/cpu_epilogue.py): the elementwise stage after a
register-tiled contraction runs in its write-back, the temporary disappears, and the results match
numpy on fresh random inputs; where the temporary has another reader it stays, still correct."""

from __future__ import annotations

import numpy as np

import tessel as ts
from tessel.ir.nodes import Allocate, walk
from tessel.schedules.generic import default_schedule


def _global_temps(kernel):
    return [n.buffer.name for n in walk(kernel.ir.body) if isinstance(n, Allocate) and n.buffer.scope == "global"]


def _gemm_epilogue(m, n, k, second_reader=False):
    A = ts.placeholder((m, k), name="A")
    B = ts.placeholder((k, n), name="B")
    bias = ts.placeholder((n,), name="bias")
    R = ts.placeholder((m, n), name="R")
    r = ts.reduce_axis(k, name="r")
    T = ts.compute((m, n), lambda i, j: ts.sum(A[i, r] * B[r, j], axis=r), name="T")
    C = ts.compute((m, n), lambda i, j: ts.maximum(T[i, j] + bias[j], 0.0) + R[i, j], name="C")
    outs = [C]
    if second_reader:
        outs.append(ts.compute((m, n), lambda i, j: T[i, j] * 2.0, name="D"))
    return [A, B, bias, R] + outs


def _inputs(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype("f4") for s in shapes]


def test_epilogue_runs_in_the_write_back_and_matches_numpy():
    tensors = _gemm_epilogue(48, 64, 40)
    kern = ts.build(tensors)
    assert _global_temps(kern) == []  # T never reaches memory
    a, b, bias, res = _inputs([(48, 40), (40, 64), (64,), (48, 64)], seed=1)
    c = np.full((48, 64), np.nan, np.float32)  # outputs start from garbage
    kern(a, b, bias, res, c)
    np.testing.assert_allclose(c, np.maximum(a @ b + bias, 0) + res, rtol=1e-4, atol=1e-4)


def test_a_temporary_with_another_reader_stays():
    tensors = _gemm_epilogue(16, 32, 8, second_reader=True)
    sch = default_schedule(ts.lower(tensors))
    assert [n.buffer.name for n in walk(sch.kernel.body) if isinstance(n, Allocate)
            and n.buffer.scope == "global"] == ["T"]
    kern = ts.build(tensors)
    a, b, bias, res = _inputs([(16, 8), (8, 32), (32,), (16, 32)], seed=2)
    c, d = np.empty((16, 32), np.float32), np.empty((16, 32), np.float32)
    kern(a, b, bias, res, c, d)
    np.testing.assert_allclose(c, np.maximum(a @ b + bias, 0) + res, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d, 2 * (a @ b), rtol=1e-4, atol=1e-4)


def test_fused_schedule_replays_from_its_trace():
    from tessel.schedules.schedule import Schedule

    kernel = ts.lower(_gemm_epilogue(24, 32, 16))
    sch = default_schedule(kernel)
    assert Schedule.replay(kernel, sch.trace_json()) == sch.kernel
