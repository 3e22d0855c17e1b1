"""The CPU call path and its knobs: a compiled model's bound calls (arguments packed once per call)
give what the checked per-kernel path gives on fresh inputs, including read-only inputs and outputs
that alias inputs; TESSEL_NUM_THREADS sets the pool's threads (counted in a child process); the host
vector shape sizes the default register tiles; the per-kernel floor of `.summary()` counts FLOPs and
bytes right."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tessel.codegen.tvm_profile import floor_seconds, kernel_cost
from tessel.codegen.tvm_runtime import BoundSteps
from tessel.compiler.model import compile_graph
from tessel.frontend.builder import GraphBuilder
from tessel.schedules.cpu_host import host_vector


def _chain(n_layers=4, seed=0):
    rng = np.random.default_rng(seed)
    g = GraphBuilder("chain")
    x = g.input("x", (4, 8))
    h = x
    for i in range(n_layers):
        h = g.relu(h @ g.const(rng.standard_normal((8, 8)).astype("f4"), f"w{i}"))
    g.output(h, g.exp(x))  # two outputs, one straight from the input
    return compile_graph(g.graph)


def test_bound_calls_match_the_reference_on_fresh_inputs():
    cm = _chain()
    rng = np.random.default_rng(1)
    program = cm._current
    for call in range(4):
        x = rng.standard_normal((4, 8)).astype("f4")
        if call == 3:
            x.setflags(write=False)  # read-only inputs go through versioned DLPack
        got = cm(x)
        want = cm.run_reference(x)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        if call == 0:
            assert isinstance(program._bound, BoundSteps)  # bound after the first, checked call
    a, b = cm(x), cm(x)
    assert a[0] is not b[0]  # fresh output arrays every call


def test_bound_steps_view_each_changing_array_once():
    cm = _chain(3)
    program = cm._current
    cm(np.ones((4, 8), np.float32))
    bound = program._bound
    assert len(bound._makers) == len(program._changing)  # one view per input / fresh output per call
    assert len(bound._calls) == len(program.steps)


def _threads_in_child(value: str | None) -> tuple[int, int]:
    code = textwrap.dedent("""
        import os, numpy as np, tessel as ts
        A = ts.placeholder((256, 256), name="A"); B = ts.placeholder((256, 256), name="B")
        k = ts.reduce_axis(256, name="k")
        C = ts.compute((256, 256), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
        kern = ts.build([A, B, C])
        a = np.ones((256, 256), np.float32)
        kern(a, a, np.empty_like(a))
        print(len(os.listdir("/proc/self/task")))
        import tessel.codegen.tvm_runtime as r; print(r.num_threads())
    """)
    env = dict(os.environ)
    env.pop("TVM_NUM_THREADS", None)
    env.pop("TESSEL_NUM_THREADS", None)
    if value is not None:
        env["TESSEL_NUM_THREADS"] = value
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    tasks, threads = (int(x) for x in out.stdout.split()[-2:])
    return tasks, threads


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc to count threads")
def test_tessel_num_threads_sets_the_pool():
    one_tasks, one = _threads_in_child("1")
    two_tasks, two = _threads_in_child("2")
    assert (one, two) == (1, 2)
    assert two_tasks > one_tasks  # the pool started a worker thread


def test_default_gemm_tile_fills_the_host_registers():
    import tessel as ts
    from tessel.schedules.generic import default_schedule

    A = ts.placeholder((64, 64), name="A")
    B = ts.placeholder((64, 64), name="B")
    k = ts.reduce_axis(64, name="k")
    C = ts.compute((64, 64), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
    knobs = default_schedule(ts.lower([A, B, C])).trace[0].args["knobs"]
    hv = host_vector()
    vecs = knobs["tile_cols"] // hv.lanes("float32")
    assert vecs >= 1 and knobs["tile_cols"] % hv.lanes("float32") == 0
    assert knobs["tile_rows"] * vecs <= hv.registers - 4  # accumulators leave room for operands
    assert knobs["tile_rows"] * vecs >= hv.registers // 4  # and use a good part of the file


def test_forced_vector_width_is_honoured(monkeypatch):
    host_vector.cache_clear()
    try:
        monkeypatch.setenv("TESSEL_CPU_VECTOR_BYTES", "32")
        assert host_vector().bytes == 32 and host_vector().lanes("float32") == 8
    finally:
        host_vector.cache_clear()


def test_kernel_cost_counts_gemm_flops_and_bytes():
    cm = compile_graph(_gemm_graph(16, 24, 8))
    (step,) = cm.steps
    flops, nbytes = kernel_cost(step.kernel.ir)
    assert flops == 2 * 16 * 24 * 8  # one multiply and one add per step of the reduction (inits are free)
    assert nbytes == 4 * (16 * 8 + 8 * 24 + 16 * 24)
    t, bound = floor_seconds((flops, nbytes), (1e9, 1e12, 1e12))
    assert bound == "compute" and t == pytest.approx(flops / 1e9)
    text = cm.summary(np.ones((16, 8), np.float32))
    assert "floor (us)" in text and "% of floor" in text and "GFLOP/s" in text


def _gemm_graph(m, n, k):
    g = GraphBuilder("gemm")
    x = g.input("x", (m, k))
    g.output(x @ g.const(np.random.default_rng(0).standard_normal((k, n)).astype("f4"), "w"))
    return g.graph
