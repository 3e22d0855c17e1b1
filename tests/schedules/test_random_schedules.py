"""Random sequences of schedule primitives on random DSL kernels keep their results.

Hypothesis draws a program (with random small sizes) and a sequence of primitive requests whose
arguments come from the kernel as it stands (its loops and buffers). A primitive may refuse a
request with ScheduleError; anything it accepts must leave the kernel well formed and computing
what the numpy reference computes, in the reference interpreter and in the compiled CPU code."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tessel as ts
from tessel.errors import ScheduleError
from tessel.ir import interp
from tessel.ir.nodes import Allocate, For, Load, Store, walk
from tessel.ir.verify import verify
from tessel.schedules.nest import perfect_chain
from tessel.schedules.schedule import Schedule
from tests.ir import dsl_programs as progs


def draw_program(data):
    name = data.draw(st.sampled_from(["elementwise", "sum", "max", "gemm", "softmax", "layernorm", "conv2d"]))
    dim = st.integers(2, 9)
    if name == "elementwise":
        return progs.elementwise_broadcast(data.draw(dim), data.draw(dim))
    if name == "sum":
        return progs.reduction_sum(data.draw(dim), data.draw(dim))
    if name == "max":
        return progs.reduction_max(data.draw(dim), data.draw(dim))
    if name == "gemm":
        return progs.gemm(data.draw(dim), data.draw(dim), data.draw(dim))
    if name == "softmax":
        return progs.softmax(data.draw(dim), data.draw(dim))
    if name == "layernorm":
        return progs.layernorm(data.draw(dim), data.draw(dim))
    return progs.conv2d(1, data.draw(st.integers(1, 3)), data.draw(st.integers(3, 6)), data.draw(st.integers(3, 6)),
                        data.draw(st.integers(1, 3)))


def loop_names(kernel):
    return [n.var.name for n in walk(kernel.body) if isinstance(n, For)]


def buffers_written(kernel):
    return sorted({n.buffer.name for n in walk(kernel.body) if isinstance(n, Store)})


def temporaries(kernel):
    return sorted({n.buffer.name for n in walk(kernel.body) if isinstance(n, Allocate)})


def buffers_read(kernel):
    return sorted({n.buffer.name for n in walk(kernel.body) if isinstance(n, Load)})


def draw_step(data, sch: Schedule):
    """One primitive request with arguments taken from the current kernel."""
    k = sch.kernel
    loops = loop_names(k)
    prim = data.draw(st.sampled_from(["split", "split", "reorder", "fuse", "parallel", "vectorize", "unroll",
                                      "cache_read", "cache_write", "compute_at", "compute_inline",
                                      "decompose_reduction"]))
    loop = data.draw(st.sampled_from(loops))
    if prim == "split":
        return sch.split, (loop, [None, data.draw(st.sampled_from([2, 3, 4]))])
    if prim == "reorder":
        chain = [lp.var.name for lp in perfect_chain(next(n for n in walk(k.body)
                                                            if isinstance(n, For) and n.var.name == loop))]
        return sch.reorder, tuple(data.draw(st.permutations(chain)))
    if prim == "fuse":
        node = next(n for n in walk(k.body) if isinstance(n, For) and n.var.name == loop)
        inner = node.body.var.name if isinstance(node.body, For) else loop
        return sch.fuse, (loop, inner)
    if prim in ("parallel", "vectorize", "unroll"):
        return getattr(sch, prim), (loop,)
    if prim == "cache_read":
        return sch.cache_read, (data.draw(st.sampled_from(buffers_read(k))), loop)
    if prim == "cache_write":
        return sch.cache_write, (data.draw(st.sampled_from(buffers_written(k))), loop)
    if prim in ("compute_at", "compute_inline"):
        temps = temporaries(k)
        if not temps:
            return None
        buf = data.draw(st.sampled_from(temps))
        return (sch.compute_at, (buf, loop)) if prim == "compute_at" else (sch.compute_inline, (buf,))
    return sch.decompose_reduction, (data.draw(st.sampled_from(buffers_written(k))), loop)


def random_schedule(data, kernel, steps: int) -> Schedule:
    sch = Schedule(kernel)
    for _ in range(steps):
        step = draw_step(data, sch)
        if step is None:
            continue
        fn, args = step
        try:
            fn(*args)
        except ScheduleError:
            continue  # refusing is allowed; miscompiling is not
        verify(sch.kernel)
    return sch


def check_against_reference(tensors, reference, run, seed):
    rng = np.random.default_rng(seed)
    inputs = progs.random_inputs(tensors, rng)
    expected = reference(*inputs)
    outputs = [np.full(t.shape, np.nan, t.dtype) for t in tensors if not t.is_placeholder]
    run(*inputs, *outputs)
    for t, got, want in zip([t for t in tensors if not t.is_placeholder], outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"output {t.name}")


@given(data=st.data())
def test_random_schedules_match_reference_in_interpreter(data):
    tensors, reference = draw_program(data)
    sch = random_schedule(data, ts.lower(tensors), data.draw(st.integers(1, 8)))
    check_against_reference(tensors, reference, lambda *a: interp.run(sch.kernel, *a), data.draw(st.integers(0, 99)))
    assert Schedule.replay(ts.lower(tensors), sch.trace_json()) == sch.kernel


@pytest.mark.slow
@given(data=st.data())
def test_random_schedules_match_reference_when_compiled(data):
    tensors, reference = draw_program(data)
    sch = random_schedule(data, ts.lower(tensors), data.draw(st.integers(1, 6)))
    kernel = ts.build(sch.kernel, target="cpu")
    check_against_reference(tensors, reference, kernel, data.draw(st.integers(0, 99)))
