"""The schedule primitive cache_accumulate (tessel/schedules/accumulate.py) and cpu.conv's blocked
reductions (knob acc_block): the interpreter and compiled code match numpy on fresh random inputs
within a relative tolerance, illegal uses are refused by name, the trace replays, and a 3x3 96->24
convolution (864 products per output) summed in blocks stays as close to float64 as torch's float32
convolution, where one chain over all products does not."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError
from tessel.frontend.ops import get_op
from tessel.ir.interp import run
from tessel.schedules.cpu_conv import CPU_CONV
from tessel.schedules.schedule import Schedule

torch = pytest.importorskip("torch")


def _gemm(m, n, k):
    A = ts.placeholder((m, k), name="A")
    B = ts.placeholder((k, n), name="B")
    r = ts.reduce_axis(k, name="r")
    C = ts.compute((m, n), lambda i, j: ts.sum(A[i, r] * B[r, j], axis=r), name="C")
    return ts.lower([A, B, C])


def _blocked(m, n, k, block):
    sch = Schedule(_gemm(m, n, k))
    ro, ri = sch.split("r", [None, block])
    sch.reorder("i", ro, "j", ri)
    sch.decompose_reduction("C", ro)
    acc = sch.cache_accumulate("C", ro)
    return sch, acc


@pytest.mark.parametrize("m,n,k,block", [(3, 5, 64, 8), (4, 6, 30, 10), (2, 7, 12, 1)])
def test_interpreter_and_compiled_match_numpy(m, n, k, block):
    sch, acc = _blocked(m, n, k, block)
    assert acc == "C_acc"
    rng = np.random.default_rng(m * 100 + k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    want = a.astype(np.float64) @ b.astype(np.float64)
    got = np.full((m, n), np.nan, np.float32)
    run(sch.kernel, a, b, got)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    out = np.full((m, n), np.nan, np.float32)
    ts.build(sch.original, target="cpu", schedule=sch.kernel)(a, b, out)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    assert Schedule.replay(sch.original, sch.trace_json()) == sch.kernel


def test_refuses_a_loop_whose_stores_are_not_updates():
    sch = Schedule(_gemm(4, 4, 16))
    ro, _ = sch.split("r", [None, 4])
    with pytest.raises(ScheduleError, match="not an update"):
        sch.cache_accumulate("C", ro)  # the guarded init `C = 0` is still inside the loop


def test_refuses_a_loop_that_does_not_update_the_buffer():
    A = ts.placeholder((4, 16), name="A")
    r = ts.reduce_axis(16, name="r")
    C = ts.compute((4,), lambda i: ts.sum(A[i, r], axis=r), name="C")
    D = ts.compute((4,), lambda i: C[i] * 2.0, name="D")
    sch = Schedule(ts.lower([A, D]))
    sch.decompose_reduction("C", "r")
    with pytest.raises(ScheduleError, match="does not write"):
        sch.cache_accumulate("C", "i_1")  # D's loop only reads C


def _conv(c, f, hw):
    x = ts.placeholder((1, c, hw, hw), name="x")
    w = ts.placeholder((f, c, 3, 3), name="w")
    (y,) = get_op("conv").lower([x, w], {"padding": (1, 1)}, [((1, f, hw, hw), "float32")], ["y"])
    return ts.lower([x, w, y])


def test_blocked_convolution_is_as_accurate_as_torch():
    ir = _conv(96, 24, 12)
    rng = np.random.default_rng(12)
    x = rng.random((1, 96, 12, 12)).astype(np.float32)  # positive inputs: no cancellation hides the drift
    w = (rng.random((24, 96, 3, 3)) - 0.3).astype(np.float32)
    exact = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1).numpy()
    t32 = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
    errs = {}
    for block in (64, 0):
        sch = CPU_CONV.apply(ir, {"acc_block": block}, "cpu")
        out = np.full(exact.shape, np.nan, np.float32)
        ts.build(ir, target="cpu", schedule=sch.kernel)(x, w, out)
        errs[block] = float((np.abs(out - exact) / np.abs(exact)).max())
    torch_err = float((np.abs(t32 - exact) / np.abs(exact)).max())
    assert errs[64] <= 2 * torch_err, (errs, torch_err)
    assert errs[64] < errs[0], errs


def test_blocked_convolution_in_the_interpreter():
    ir = _conv(16, 4, 6)  # 144 products per output: blocks of 63 (7 channels x 9)
    sch = CPU_CONV.apply(ir, None, "cpu")
    assert sch.trace[0].args["knobs"]["acc_block"] == 64
    assert any(s.primitive == "cache_accumulate" for s in sch.trace)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 16, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 16, 3, 3)).astype(np.float32)
    want = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1).numpy()
    got = np.full(want.shape, np.nan, np.float32)
    run(sch.kernel, x, w, got)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
