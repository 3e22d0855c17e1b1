"""Measurement: a candidate that crashes, hangs or runs out of memory costs one trial, never the
tuner; a candidate with a wrong result is rejected by the reference check; a good one is timed."""

import numpy as np
import pytest

import tessel as ts
from tessel.tune.api import build_candidate
from tessel.tune.isolate import Job, run_isolated
from tessel.tune.measure import LocalExecutor, MeasureInput, MeasureTask, make_inputs, time_calls
from tests.tune import helpers


def _task(builder, n=16):
    kernel = ts.lower(helpers.matmul(n))
    a, b, _ = make_inputs(kernel, 7)
    return MeasureTask(kernel, "cpu", builder, (a.astype(np.float64) @ b,), seed=7, repeats=3, min_round_s=0)


def test_crash_hang_and_oom_each_cost_one_trial():
    ex = LocalExecutor(parallel=2, build_timeout=8, memory_limit=400 * 2**20)
    good = _task(build_candidate)
    inputs = [MeasureInput(_task(helpers.segfault_builder), "cpu.generic", {}),
              MeasureInput(_task(helpers.hang_builder), "cpu.generic", {}),
              MeasureInput(_task(helpers.oom_builder), "cpu.generic", {}),
              MeasureInput(good, "cpu.generic", {})]
    res = ex.measure(inputs)
    assert "crashed (SIGSEGV)" in res[0].error
    assert "timed out after 8 s" in res[1].error
    assert "out of memory" in res[2].error
    assert res[3].ok and res[3].time > 0 and len(res[3].times) == 3, res[3].error
    assert ex.count == 4


def test_wrong_result_is_rejected():
    res = LocalExecutor(parallel=1).measure([MeasureInput(_task(helpers.wrong_builder), "cpu.generic", {}),
                                             MeasureInput(_task(build_candidate), "cpu.generic", {})])
    assert res[0].error is not None and "wrong result" in res[0].error and res[0].time is None
    assert res[1].ok, res[1].error


def test_isolated_outcomes_in_order():
    outs = run_isolated([Job(pow, (3, 4)), Job(helpers.segfault_builder, (None,) * 4), Job(divmod, (1, 0))],
                        parallel=2)
    assert [o.ok for o in outs] == [True, False, False]
    assert outs[0].value == 81 and "ZeroDivisionError" in outs[2].error


def test_time_calls_rotates_inputs():
    seen = []
    sets = [(i,) for i in range(4)]
    times = time_calls(seen.append, sets, warmup=1, repeats=5, min_round_s=0)
    assert len(times) == 5 and all(t >= 0 for t in times)
    assert set(seen) == {0, 1, 2, 3}


def test_one_thread_candidates_are_timed_by_thread_cpu_time(monkeypatch):
    import time

    from tessel.tune.measure import cpu_clock

    monkeypatch.setenv("TESSEL_NUM_THREADS", "1")
    assert cpu_clock() is time.thread_time
    monkeypatch.setenv("TESSEL_NUM_THREADS", "2")
    assert cpu_clock() is time.perf_counter
    # a sleeping call (what a descheduled one looks like) costs wall time but no thread CPU time
    wall = time_calls(lambda: time.sleep(0.004), [()], warmup=1, repeats=3, min_round_s=0)
    cpu = time_calls(lambda: time.sleep(0.004), [()], warmup=1, repeats=3, min_round_s=0, clock=time.thread_time)
    assert min(wall) >= 0.004 and max(cpu) < 0.002


@pytest.mark.gpu
def test_gpu_timer_against_a_known_kernel():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    from tessel.tune.measure import gpu_time_calls

    n = 4096
    sets = [[torch.randn(n, n, device="cuda", dtype=torch.float16) for _ in range(2)] for _ in range(3)]
    times = gpu_time_calls(lambda a, b: a @ b, sets, repeats=50)
    t = float(np.median(times))
    tflops = 2 * n ** 3 / t / 1e12
    # a 4096^3 fp16 GEMM is compute-bound: between 20 and 2000 TFLOP/s on any recent GPU; a timer
    # that did not wait for the work (or counted launch time only) would be far outside
    assert 20 < tflops < 2000, tflops
    # an eighth of the work takes clearly less time (the events bracket the work, not a fixed cost)
    half = [[torch.randn(n // 2, n // 2, device="cuda", dtype=torch.float16) for _ in range(2)] for _ in range(3)]
    small = float(np.median(gpu_time_calls(lambda a, b: a @ b, half, repeats=50)))
    assert small < t / 3, (small, t)


def test_ir_crossing_processes_compares_equal():
    # IR nodes cache their (per-process salted) hash; a kernel sent to a child must still equal
    # the same kernel built there, or template matching fails in the child only
    kernel = ts.lower(helpers.matmul(8))
    hash(kernel)  # cache the parent's hashes in the nodes
    out = run_isolated([Job(helpers.equals_rebuilt, (kernel, 8))])[0]
    assert out.ok and out.value is True, out


def test_outputs_are_those_of_the_unscheduled_kernel():
    # the GPU GEMM template hands A and B to cp.async intrinsics: the scheduled kernel "writes" them
    # as far as a syntactic scan goes; the check must compare C alone (found on the H200)
    n = 64
    A = ts.placeholder((n, n), "float16", name="A")
    B = ts.placeholder((n, n), "float16", name="B")
    k = ts.reduce_axis(n, name="k")
    C = ts.compute((n, n), lambda i, j: ts.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                   name="C")
    from tessel.schedules.template import get_template
    from tessel.tune.measure import output_names, outputs_of

    kernel = ts.lower([A, B, C])
    built = get_template("gemm.mma_sync").apply(kernel, None, "cuda:sm_90a").kernel
    arrays = make_inputs(built, 0)
    assert set(output_names(built)) > {"C"}  # the syntactic scan over the scheduled kernel
    got = outputs_of(kernel, built, arrays)
    assert len(got) == 1 and got[0] is arrays[[p.name for p in built.params].index("C")]


def test_reference_of_last_resort_is_the_default_candidate(monkeypatch):
    # above the interpreter's limit the default point's own output is the reference (with a warning)
    from tessel.tune import api

    monkeypatch.setattr(api, "INTERP_LIMIT", 10)
    kernel = ts.lower(helpers.matmul(16))
    space = api._space_for(kernel, "cpu", None)
    with pytest.warns(UserWarning, match="too large for the interpreter"):
        (c,) = api._expected(kernel, "cpu", 3, None, space, None)
    a, b, _ = make_inputs(kernel, 3)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)
