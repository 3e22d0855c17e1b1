"""`tessel.build` end to end on the CPU: every DSL kernel kind against numpy (and the interpreter),
the schedule forms build accepts, and what it refuses."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError, TesselError
from tessel.ir.dtypes import numpy_dtype
from tests.ir.dsl_programs import PROGRAMS, random_inputs

TOL = {"float16": 2e-3, "bfloat16": 2e-2, "float32": 1e-4, "float64": 1e-10}


def outputs_of(tensors, rng):
    """Garbage-filled output arrays (never the answer) for the computed tensors."""
    return [np.full(t.shape, 7, numpy_dtype(t.dtype)) for t in tensors if not t.is_placeholder]


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_dsl_programs_match_numpy(program):
    """Each program of tests/ir/dsl_programs.py, built with the default schedule, matches its
    numpy reference on random inputs; `run_reference` (the interpreter on `.ir`) agrees."""
    tensors, reference = PROGRAMS[program]()
    rng = np.random.default_rng(abs(hash(program)) % 2**32)
    inputs = random_inputs(tensors, rng)
    outs = outputs_of(tensors, rng)
    kern = ts.build(tensors, target="cpu")
    kern(*inputs, *outs)
    for got, want, t in zip(outs, reference(*inputs), [t for t in tensors if not t.is_placeholder]):
        tol = TOL[t.dtype]
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol,
                                   err_msg=f"{program}: output {t.name}")
    ref_outs = outputs_of(tensors, rng)
    kern.run_reference(*inputs, *ref_outs)
    for got, want in zip(outs, ref_outs):
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-4, atol=1e-5)


def test_larger_gemm_and_conv_match_numpy():
    """Sizes that exercise the default schedule's tiles and tails: GEMM 37x70x19, conv 2x3x9x7."""
    from tests.ir.dsl_programs import conv2d, gemm

    for tensors, reference in (gemm(37, 70, 19), conv2d(batch=2, cin=3, h=9, w=7, cout=4)):
        rng = np.random.default_rng(5)
        inputs = random_inputs(tensors, rng)
        outs = outputs_of(tensors, rng)
        ts.build(tensors)(*inputs, *outs)
        np.testing.assert_allclose(outs[0], reference(*inputs)[0], rtol=1e-4, atol=1e-4)


def unscheduled_gemm(n=8):
    A = ts.placeholder((n, n), name="A")
    B = ts.placeholder((n, n), name="B")
    k = ts.reduce_axis(n, name="k")
    C = ts.compute((n, n), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
    return [A, B, C]


def check_gemm(kern, n=8):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((n, n)).astype("float32"), rng.standard_normal((n, n)).astype("float32")
    c = np.full((n, n), 7.0, "float32")
    kern(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


def test_schedule_forms():
    """schedule= accepts a function IR -> IR, a function IR -> Schedule, a Schedule, and an
    already scheduled IR Kernel; each result is what it asked for and computes the GEMM."""
    from tessel.schedules.schedule import Schedule

    tensors = unscheduled_gemm()

    def with_parallel(ir):
        sch = Schedule(ir)
        sch.parallel("i")
        return sch

    k1 = ts.build(tensors, schedule=lambda ir: ir)
    assert "T.parallel" not in k1.source and "T.vectorized" not in k1.source  # the naive nest
    check_gemm(k1)
    k2 = ts.build(tensors, schedule=with_parallel)
    assert "T.parallel(8)" in k2.source
    check_gemm(k2)
    sch = with_parallel(ts.lower(tensors))
    check_gemm(ts.build(tensors, schedule=sch))
    check_gemm(ts.build(sch.kernel))
    check_gemm(ts.build(tensors, schedule=sch.kernel))


def test_default_schedule_is_used():
    """With no schedule, the GEMM gets the default CPU schedule (a parallel, vectorized nest)."""
    kern = ts.build(unscheduled_gemm(64))
    assert "T.parallel" in kern.source and "T.vectorized" in kern.source
    check_gemm(kern, 64)


def test_build_names_and_attributes():
    tensors = unscheduled_gemm()
    kern = ts.build(tensors, name="matmul8")
    assert kern.name == "matmul8" and kern.ir.name == "matmul8"
    assert [(p.name, p.shape, p.dtype) for p in kern.params] == [(n, (8, 8), "float32") for n in "ABC"]
    assert "def tessel_matmul8" in kern.source
    assert str(kern.target) == "cpu"
    assert ".text" in kern.inspect("asm") or "tessel_matmul8" in kern.inspect("asm")
    assert "define" in kern.inspect("ll")
    assert "matmul8" in repr(kern)


def test_build_refuses_bad_requests():
    tensors = unscheduled_gemm()
    with pytest.raises(TesselError, match="schedule=... or tuning_log=..., not both"):
        ts.build(tensors, tuning_log="tune.jsonl", schedule=lambda ir: ir)
    with pytest.raises(TesselError, match="unknown target 'tpu'.*cpu.*cuda"):
        ts.build(tensors, target="tpu")
    with pytest.raises(ScheduleError, match="expected a Schedule"):
        ts.build(tensors, schedule=42)
    with pytest.raises(ScheduleError, match="produced int"):
        ts.build(tensors, schedule=lambda ir: 3)
    with pytest.raises(TesselError, match="list of DSL tensors"):
        ts.build("C")


def test_time_returns_a_positive_median():
    kern = ts.build(unscheduled_gemm(16))
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((16, 16)).astype("float32") for _ in range(2)] + [np.zeros((16, 16), "float32")]
    t = kern.time(*args, number=5, repeat=3)
    assert 0 < t < 1.0
    np.testing.assert_allclose(args[2], args[0] @ args[1], rtol=1e-5, atol=1e-5)  # it did run


def test_importing_the_driver_does_not_import_tvm():
    """TVM (seconds to import) loads when the first CPU kernel is compiled, not before."""
    import subprocess
    import sys

    code = ("import sys, tessel, tessel.compiler.driver, tessel.codegen.tvm, tessel.compiler.kernel; "
            "print('tvm' in sys.modules or 'tvm_ffi' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
