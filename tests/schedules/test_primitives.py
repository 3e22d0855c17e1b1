"""Each schedule primitive: what it does to the loop nest (before/after), that the scheduled kernel
computes the same as the unscheduled one (reference interpreter and compiled CPU code, on random
inputs), and that illegal requests raise ScheduleError."""

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError
from tessel.ir import interp
from tessel.ir.nodes import Allocate, For, IfThenElse, Store, walk
from tessel.schedules.schedule import Schedule


def gemm(M=12, N=10, K=6):
    A = ts.placeholder((M, K), name="A")
    B = ts.placeholder((K, N), name="B")
    k = ts.reduce_axis(K, name="k")
    C = ts.compute((M, N), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
    return ts.lower([A, B, C])


def two_stage(M=8, N=12):
    A = ts.placeholder((M, N), name="A")
    T = ts.compute((M, N), lambda i, j: A[i, j] * 2.0 + 1.0, name="T")
    B = ts.compute((M, N), lambda x, y: T[x, y] * T[x, y] - A[x, y], name="B")
    return ts.lower([A, B])


def stencil(N=16):
    A = ts.placeholder((N,), name="A")
    T = ts.compute((N,), lambda i: ts.exp(A[i]), name="T")
    B = ts.compute((N - 2,), lambda x: T[x] + T[x + 1] + T[x + 2], name="B")
    return ts.lower([A, B])


def random_args(kernel, rng):
    out = []
    for p in kernel.params:
        out.append(rng.standard_normal(p.shape).astype(p.dtype))
    return out


def assert_same(reference, scheduled, seed=0):
    """Run both kernels on the same random inputs, their outputs starting from different garbage
    (so an element the scheduled kernel forgets to write shows up), and compare the outputs."""
    rng = np.random.default_rng(seed)
    written = {n.buffer.name for n in walk(reference.body) if isinstance(n, Store)}
    a = random_args(reference, rng)
    b = [x.copy() if p.name not in written else x + 1000.0 for p, x in zip(reference.params, a)]
    c = [x.copy() for x in b]
    interp.run(reference, *a)
    interp.run(scheduled, *b)
    ts.build(scheduled, schedule=scheduled)(*c)  # the compiled code of exactly this schedule
    outputs = [i for i, p in enumerate(reference.params) if p.name in written]
    assert outputs
    for i in outputs:
        name = reference.params[i].name
        np.testing.assert_allclose(b[i], a[i], rtol=1e-5, atol=1e-5, err_msg=f"interpreted, param {name}")
        np.testing.assert_allclose(c[i], a[i], rtol=1e-5, atol=1e-5, err_msg=f"compiled, param {name}")


def loops(kernel):
    return [(n.var.name, n.kind, n.extent.value) for n in walk(kernel.body) if isinstance(n, For)]


# -- split ---------------------------------------------------------------------------------------

def test_split_divisible_before_after_and_equivalence():
    k = gemm()
    sch = Schedule(k)
    io, ii = sch.split("i", [None, 4])
    assert (io, ii) == ("i_0", "i_1")
    assert loops(sch.kernel)[:3] == [("i_0", "serial", 3), ("i_1", "serial", 4), ("j", "serial", 10)]
    assert not [n for n in walk(sch.kernel.body) if isinstance(n, IfThenElse) and "i_" in str(n.cond)]
    assert_same(k, sch.kernel)


def test_split_non_divisible_guards_and_stays_correct():
    k = gemm(M=10)
    sch = Schedule(k)
    sch.split("i", [None, 4])
    assert loops(sch.kernel)[:2] == [("i_0", "serial", 3), ("i_1", "serial", 4)]
    assert any(isinstance(n, IfThenElse) and "< 10" in str(n.cond) for n in walk(sch.kernel.body))
    assert_same(k, sch.kernel)


def test_split_three_ways():
    k = gemm(N=24)
    sch = Schedule(k)
    assert sch.split("j", [2, None, 4]) == ["j_0", "j_1", "j_2"]
    assert [x[2] for x in loops(sch.kernel)[1:4]] == [2, 3, 4]
    assert_same(k, sch.kernel)


@pytest.mark.parametrize("loop,factors", [("nope", [2, 2]), ("i", [0, 4]), ("i", [None, None]), ("i", [2, 2]),
                                          ("i", [5])])
def test_split_illegal(loop, factors):
    with pytest.raises(ScheduleError):
        Schedule(gemm()).split(loop, factors)


# -- reorder -------------------------------------------------------------------------------------

def test_reorder_reduction_outside_is_fine_in_guarded_form():
    k = gemm()
    sch = Schedule(k)
    sch.reorder("k", "j", "i")
    assert [x[0] for x in loops(sch.kernel)] == ["k", "j", "i"]
    assert_same(k, sch.kernel)


def test_reorder_reduction_above_its_init_is_illegal():
    sch = Schedule(gemm())
    sch.decompose_reduction("C", "k")  # init now sits between j and k
    with pytest.raises(ScheduleError, match="perfectly nested"):
        sch.reorder("k", "j")


def test_reorder_unknown_or_repeated_loop():
    with pytest.raises(ScheduleError):
        Schedule(gemm()).reorder("i", "zz")
    with pytest.raises(ScheduleError):
        Schedule(gemm()).reorder("i", "i")


def test_reorder_across_stages_is_illegal():
    with pytest.raises(ScheduleError):
        Schedule(two_stage()).reorder("x", "i")


# -- fuse ----------------------------------------------------------------------------------------

def test_fuse_then_split_equivalent():
    k = two_stage()
    sch = Schedule(k)
    f = sch.fuse("i", "j")
    assert f == "i_j_fused" and loops(sch.kernel)[0] == ("i_j_fused", "serial", 96)
    sch.split(f, [None, 7])
    assert_same(k, sch.kernel)


def test_fuse_illegal():
    with pytest.raises(ScheduleError):
        Schedule(gemm()).fuse("i", "k")  # not adjacent
    with pytest.raises(ScheduleError):
        Schedule(gemm()).fuse("j", "i")  # inner first
    with pytest.raises(ScheduleError):
        Schedule(gemm()).fuse("i")


# -- parallel / vectorize / unroll ----------------------------------------------------------------

def test_annotations_set_kinds_and_keep_results():
    k = gemm(N=16)
    sch = Schedule(k)
    sch.parallel("i")
    sch.split("j", [None, 8])
    sch.decompose_reduction("C", "k")
    sch.unroll("k")
    kinds = {name: kind for name, kind, _ in loops(sch.kernel)}
    assert kinds["i"] == "parallel" and kinds["k"] == "unrolled"
    assert_same(k, sch.kernel)


def test_vectorize_innermost_spatial():
    k = two_stage()
    sch = Schedule(k)
    sch.vectorize("y")
    assert dict((n, kd) for n, kd, _ in loops(sch.kernel))["y"] == "vectorized"
    assert_same(k, sch.kernel)


def test_parallel_reduction_loop_is_illegal():
    with pytest.raises(ScheduleError, match="reduction"):
        Schedule(gemm()).parallel("k")
    sch = Schedule(gemm())
    sch.reorder("i", "k", "j")
    with pytest.raises(ScheduleError):
        sch.vectorize("k")  # not innermost
    sch2 = Schedule(gemm())
    sch2.decompose_reduction("C", "i")
    with pytest.raises(ScheduleError, match="same element"):
        sch2.parallel("k")


def test_nested_parallel_is_illegal():
    sch = Schedule(two_stage())
    sch.parallel("i")
    with pytest.raises(ScheduleError, match="already parallel"):
        sch.parallel("j")


# -- cache_read / cache_write --------------------------------------------------------------------

def test_cache_write_register_tile_gemm():
    k = gemm(M=12, N=16, K=6)
    sch = Schedule(k)
    io, ii = sch.split("i", [None, 4])
    jo, ji = sch.split("j", [None, 8])
    sch.reorder(io, jo, "k", ii, ji)
    cl = sch.cache_write("C", jo)
    assert cl == "C_local"
    alloc = [n for n in walk(sch.kernel.body) if isinstance(n, Allocate)][0]
    assert alloc.buffer.shape == (4, 8) and alloc.buffer.scope == "local"
    sch.decompose_reduction(cl, "k")
    sch.vectorize(ji)
    assert_same(k, sch.kernel)


def test_cache_write_copies_in_when_reduction_spans_iterations():
    k = gemm(M=8, N=8, K=8)
    sch = Schedule(k)
    ko, ki = sch.split("k", [None, 4])
    sch.reorder(ko, "i", "j", ki)
    sch.cache_write("C", "i")  # the init is not inside 'i' for ko > 0: needs a copy-in
    assert_same(k, sch.kernel)


def test_cache_read_region_of_a_stencil():
    k = stencil()
    sch = Schedule(k)
    xo, xi = sch.split("x", [None, 4])
    name = sch.cache_read("T", xo)
    alloc = [n for n in walk(sch.kernel.body) if isinstance(n, Allocate) and n.buffer.name == name][0]
    assert alloc.buffer.shape == (6,)  # 4 outputs need 4 + 2 inputs
    assert_same(k, sch.kernel)


def test_cache_read_illegal():
    with pytest.raises(ScheduleError):
        Schedule(gemm()).cache_read("C", "i")  # written there
    with pytest.raises(ScheduleError):
        Schedule(gemm()).cache_read("A", "nope")
    with pytest.raises(ScheduleError):
        Schedule(gemm()).cache_read("A", "i", scope="texture")


# -- compute_at / compute_inline -----------------------------------------------------------------

def test_compute_at_computes_only_the_needed_region():
    k = stencil()
    sch = Schedule(k)
    xo, xi = sch.split("x", [None, 2])
    sch.compute_at("T", xo)
    inner = [n for n in walk(sch.kernel.body) if isinstance(n, For) and n.var.name == "i"][0]
    assert inner.extent.value == 4  # 2 outputs need 4 values of T
    assert_same(k, sch.kernel)


def test_compute_at_elementwise_two_stage():
    k = two_stage()
    sch = Schedule(k)
    sch.compute_at("T", "x")
    assert_same(k, sch.kernel)


def test_compute_inline_removes_the_temporary():
    k = two_stage()
    sch = Schedule(k)
    sch.compute_inline("T")
    assert not [n for n in walk(sch.kernel.body) if isinstance(n, Allocate)]
    assert_same(k, sch.kernel)


def test_compute_at_and_inline_illegal():
    with pytest.raises(ScheduleError):
        Schedule(gemm()).compute_inline("C")  # a parameter
    with pytest.raises(ScheduleError):
        Schedule(two_stage()).compute_at("T", "i")  # its own loop
    sch = Schedule(two_stage())
    sch.split("i", [None, 2])
    with pytest.raises(ScheduleError, match="original loop nest"):
        sch.compute_inline("T")


# -- decompose_reduction -------------------------------------------------------------------------

def test_decompose_reduction_before_after():
    k = gemm()
    sch = Schedule(k)
    assert sch.decompose_reduction("C", "k") == []
    sch2 = Schedule(k)
    assert sch2.decompose_reduction("C", "i") == ["i_init", "j_init"]
    assert not [n for n in walk(sch2.kernel.body) if isinstance(n, IfThenElse)]
    assert_same(k, sch.kernel)
    assert_same(k, sch2.kernel)
    with pytest.raises(ScheduleError, match="already decomposed"):
        sch2.decompose_reduction("C", "i")


def test_decompose_after_split_of_reduction():
    k = gemm(K=10)
    sch = Schedule(k)
    ko, ki = sch.split("k", [None, 4])
    sch.reorder("i", ko, "j", ki)
    sch.decompose_reduction("C", "j")  # init still guarded by ko == 0
    assert_same(k, sch.kernel)


# -- traces --------------------------------------------------------------------------------------

def test_trace_replays_to_an_equal_kernel_and_survives_json():
    k = gemm(M=12, N=16, K=6)
    sch = Schedule(k)
    io, ii = sch.split("i", [None, 4])
    jo, ji = sch.split("j", [None, 8])
    sch.reorder(io, jo, "k", ii, ji)
    cl = sch.cache_write("C", jo)
    sch.decompose_reduction(cl, "k")
    sch.parallel(sch.fuse(io, jo))
    assert Schedule.replay(k, sch.trace) == sch.kernel
    assert Schedule.replay(k, sch.trace_json()) == sch.kernel


def test_replay_on_the_wrong_kernel_fails_clearly():
    sch = Schedule(gemm())
    sch.split("k", [None, 2])
    with pytest.raises(ScheduleError, match="no loop named 'k'"):
        Schedule.replay(two_stage(), sch.trace)
    with pytest.raises(ScheduleError):
        Schedule.replay(gemm(), [{"primitive": "explode", "args": {}}])


def test_vectorize_refuses_a_fused_loop_whose_iterations_share_an_element():
    """decompose_reduction + fuse(j, k) of a GEMM: C[i, jk // 2] += .. over the fused loop is a
    reduction (lanes 2t and 2t + 1 write one element); vectorizing or parallelizing it would race
    (cpu.generic did vectorize it: a CPU miscompile found by test_random_schedules)."""
    from tests.ir import dsl_programs as progs

    tensors, reference = progs.gemm(2, 4, 2)
    sch = Schedule(ts.lower(tensors))
    sch.decompose_reduction("C", "i")
    fused = sch.fuse("j", "k")
    fused = fused[0] if isinstance(fused, list) else fused
    for prim in (sch.vectorize, sch.parallel):
        with pytest.raises(ScheduleError, match="write the same element of 'C'"):
            prim(fused)
    s2 = Schedule(ts.lower(tensors))  # a fused spatial loop (C[f // 4, f % 4]) stays legal
    ij = s2.fuse("i", "j")
    s2.parallel(ij[0] if isinstance(ij, list) else ij)
