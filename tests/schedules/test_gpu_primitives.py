"""GPU schedule primitives: what each does to the loop nest (before/after), that the scheduled
kernel computes what the unscheduled one does (reference interpreter on random inputs, outputs
starting from garbage), that the synchronisation they insert is needed (removing it reads poison
or gives wrong results), and that illegal requests raise ScheduleError."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError
from tessel.ir import interp
from tessel.ir.intrinsics import mma_name
from tessel.ir.nodes import Allocate, Barrier, For, Intrinsic, Kernel, Load, Seq, Store, rewrite, walk
from tessel.ir.verify import verify
from tessel.schedules.gpu import shared_bytes
from tessel.schedules.schedule import Schedule

NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "int32": np.int32}


def outputs_of(kernel: Kernel) -> set:
    return {n.buffer.name for n in walk(kernel.body) if isinstance(n, Store)} & {p.name for p in kernel.params}


def run_both(reference: Kernel, scheduled: Kernel, seed=0):
    """The outputs of both kernels on the same random inputs (outputs start as different garbage)."""
    rng = np.random.default_rng(seed)
    written = outputs_of(reference)
    a = [rng.standard_normal(p.shape).astype(NP[p.dtype]) for p in reference.params]
    b = [(x + 1000.0).astype(x.dtype) if p.name in written else x.copy() for p, x in zip(reference.params, a)]
    interp.run(reference, *a)
    interp.run(scheduled, *b)
    return [(p.name, a[i], b[i]) for i, p in enumerate(reference.params) if p.name in written]


def assert_broken(reference, broken):
    """The interpreter catches a kernel with a barrier or wait removed: it reports the race
    (RaceError) or the output reads poison (NaN)."""
    try:
        (_, _, got), = run_both(reference, broken)
    except interp.RaceError:
        return
    assert np.isnan(got).any()


def assert_same(reference, scheduled, tol=1e-5, seed=0):
    verify(scheduled)
    for name, want, got in run_both(reference, scheduled, seed):
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol, err_msg=name)


def loops(kernel):
    return {n.var.name: (n.kind, n.extent.value) for n in walk(kernel.body) if isinstance(n, For)}


def elementwise(n=100):
    A = ts.placeholder((n,), name="A")
    return ts.lower([A, ts.compute((n,), lambda i: A[i] * 3.0 + 1.0, name="B")])


def stencil(n=70):
    A = ts.placeholder((n + 2,), name="A")
    return ts.lower([A, ts.compute((n,), lambda i: A[i] + A[i + 1] * 2.0 + A[i + 2], name="B")])


def row_sum(rows=3, cols=100, dtype="float32", op="sum"):
    X = ts.placeholder((rows, cols), dtype, name="X")
    k = ts.reduce_axis(cols, name="k")
    red = {"sum": ts.sum, "max": ts.max, "min": ts.min}[op]
    return ts.lower([X, ts.compute((rows,), lambda i: red(X[i, k], axis=k), name="S")])


def gemm(M=32, N=16, K=32, dtype="float16", a_t=False, b_t=False):
    A = ts.placeholder((K, M) if a_t else (M, K), dtype, name="A")
    B = ts.placeholder((N, K) if b_t else (K, N), dtype, name="B")
    k = ts.reduce_axis(K, name="k")

    def body(i, j):
        a = A[k, i] if a_t else A[i, k]
        b = B[j, k] if b_t else B[k, j]
        return ts.sum(a.astype("float32") * b.astype("float32"), axis=k)

    return ts.lower([A, B, ts.compute((M, N), body, name="C")])


# -- bind ------------------------------------------------------------------------------------------

def test_bind_sets_kinds_launch_and_target():
    k = elementwise(100)
    sch = Schedule(k)
    bo, bi = sch.split("i", [None, 32])
    assert sch.bind(bo, "blockIdx.x") == bo
    sch.bind(bi, "threadIdx.x")
    assert loops(sch.kernel) == {bo: ("blockIdx.x", 4), bi: ("threadIdx.x", 32)}
    assert sch.kernel.target == "cuda" and k.target == "cpu"
    assert sch.kernel.launch.grid == (4, 1, 1) and sch.kernel.launch.block == (32, 1, 1)
    assert_same(k, sch.kernel)


def test_bind_illegal_requests():
    with pytest.raises(ScheduleError, match="not one of"):
        Schedule(elementwise()).bind("i", "warpIdx")
    with pytest.raises(ScheduleError, match="reduction"):
        Schedule(row_sum()).bind("k", "threadIdx.x")
    sch = Schedule(elementwise(64))
    a, b = sch.split("i", [None, 8])
    sch.bind(b, "threadIdx.x")
    with pytest.raises(ScheduleError, match="already"):
        sch.bind(a, "threadIdx.x")  # nested under the same axis
    with pytest.raises(ScheduleError, match="blocks must be outside threads"):
        _bind_block_inside_threads()
    with pytest.raises(ScheduleError, match="at most 1024"):
        Schedule(elementwise(2048)).bind("i", "threadIdx.x")


def _bind_block_inside_threads():
    sch = Schedule(elementwise(64))
    a, b = sch.split("i", [None, 8])
    sch.bind(a, "threadIdx.x")
    sch.bind(b, "blockIdx.x")


def test_bind_refuses_to_make_a_reduction_run_on_every_thread():
    # two stages: a reduction into the output S, then an elementwise stage; binding the second
    # stage's loop to threads would run the first stage's read-modify-write on every thread
    X = ts.placeholder((4, 8), name="X")
    k = ts.reduce_axis(8, name="k")
    S = ts.compute((4,), lambda i: ts.sum(X[i, k], axis=k), name="S")
    Y = ts.compute((4, 8), lambda a, b: X[a, b] * 2.0, name="Y")
    sch = Schedule(ts.lower([X, S, Y]))
    with pytest.raises(ScheduleError, match="read-modify-write"):
        sch.bind("b", "threadIdx.x")


def test_bind_refuses_a_sibling_store_that_every_thread_would_run():
    # fuzz case (race helper, 2026-12-07): binding i1 made the block 20 threads tall, and the
    # unbound sibling nest storing a constant to D then ran on all 20: a write-write race
    from tessel.ir.text import parse_kernel
    from tessel.schedules.gpu import with_launch

    text = """kernel D(A: bfloat16[32, 96] global, B: bfloat16[96, 80] global, D: bfloat16[32, 80] global) target cpu {
  alloc C: float32[32, 80] global {
    for i0 in 1 { for i1 in 20 { for k in 1 { } } }
    for i0_1 in 1 { for i1_1 in 1 { D[i0_1, i1_1] = 1.0bf16 } }
  }
}"""
    kernel = parse_kernel(text)
    with pytest.raises(ScheduleError, match="write-write race"):
        Schedule(kernel).bind("i1", "threadIdx.y")
    # what the check prevents: the same binding, forced, races in the interpreter
    forced = with_launch(rewrite(kernel, lambda n: For(n.var, n.extent, n.body, "threadIdx.y")
                                 if isinstance(n, For) and n.var.name == "i1" else None, fixpoint=False))
    rng = np.random.default_rng()
    arrays = [rng.standard_normal(p.shape).astype(NP[p.dtype]) for p in kernel.params]
    with pytest.raises(interp.RaceError):
        for seed in range(3):
            interp.run(forced, *[a.copy() for a in arrays], seed=seed)


# -- cache_shared ----------------------------------------------------------------------------------

def test_cache_shared_stencil_halo_cooperative_copy():
    k = stencil(70)
    sch = Schedule(k)
    bo, bi = sch.split("i", [None, 32])
    sch.bind(bo, "blockIdx.x")
    sch.bind(bi, "threadIdx.x")
    name = sch.cache_shared("A", bi)
    assert name == "A_shared"
    alloc = [n for n in walk(sch.kernel.body) if isinstance(n, Allocate)][0]
    assert alloc.buffer.shape == (34,) and alloc.buffer.scope == "shared"  # 32 outputs need 34 inputs
    block_loop = [n for n in walk(sch.kernel.body) if isinstance(n, For) and n.var.name == bo][0]
    assert isinstance(block_loop.body, Allocate)  # once per block, outside the thread loop
    barriers = [n for n in walk(sch.kernel.body) if isinstance(n, Barrier)]
    assert len(barriers) == 1  # `at` is a thread loop: no iteration to wait for before the copy
    assert shared_bytes(sch.kernel) == 144
    assert_same(k, sch.kernel)


def test_cache_shared_without_its_barrier_fails_in_the_interpreter():
    k = stencil(30)
    sch = Schedule(k)
    sch.bind("i", "threadIdx.x")
    sch.cache_shared("A", "i")
    no_barrier = rewrite(sch.kernel, lambda n: Seq(()) if isinstance(n, Barrier) else None, fixpoint=False)
    assert_broken(k, no_barrier)  # threads read elements other threads had not copied yet
    (_, want, got), = run_both(k, sch.kernel)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_cache_shared_in_a_serial_loop_gets_a_barrier_before_and_after():
    k = gemm(16, 16, 64, "float32")
    sch = Schedule(k)
    sch.bind("i", "threadIdx.y")
    sch.bind("j", "threadIdx.x")
    ko, ki = sch.split("k", [None, 16])
    sch.cache_shared("A", ko, vector=4)
    sch.cache_shared("B", ko)
    kloop = [n for n in walk(sch.kernel.body) if isinstance(n, For) and n.var.name == ko][0]
    body = kloop.body.stmts
    assert isinstance(body[0], Barrier) and isinstance(body[3], Barrier)  # barrier, copy B, copy A, barrier
    vec = [n for n in walk(sch.kernel.body) if isinstance(n, For) and n.kind == "vectorized"]
    assert [v.extent.value for v in vec] == [4]
    assert_same(k, sch.kernel, tol=1e-4)


def test_cache_shared_illegal():
    with pytest.raises(ScheduleError, match="no thread-bound loops"):
        Schedule(stencil()).cache_shared("A", "i")
    sch = Schedule(stencil())
    sch.bind("i", "threadIdx.x")
    with pytest.raises(ScheduleError, match="does not read"):
        sch.cache_shared("B", "i")
    with pytest.raises(ScheduleError, match="vector"):
        sch.cache_shared("A", "i", vector=5)  # 72 elements are not whole vectors of 5
    with pytest.raises(ScheduleError, match="positive integer"):
        sch.cache_shared("A", "i", vector=0)


# -- pad and swizzle -------------------------------------------------------------------------------

def _transpose_tiled(n=40, m=24, pad=0, swizzle=False):
    A = ts.placeholder((m, n), name="A")
    k = ts.lower([A, ts.compute((n, m), lambda i, j: A[j, i], name="B")])
    sch = Schedule(k)
    io, ii = sch.split("i", [None, 8])
    jo, ji = sch.split("j", [None, 8])
    sch.reorder(io, jo, ii, ji)
    sch.bind(io, "blockIdx.y")
    sch.bind(jo, "blockIdx.x")
    sch.bind(ii, "threadIdx.y")
    sch.bind(ji, "threadIdx.x")
    s = sch.cache_shared("A", ji)
    if pad:
        sch.pad(s, pad)
    if swizzle:
        sch.swizzle(s)
    return k, sch


def test_pad_changes_only_the_row_length():
    k, sch = _transpose_tiled(pad=1)
    alloc = [n.buffer for n in walk(sch.kernel.body) if isinstance(n, Allocate)][0]
    assert alloc.shape == (8, 9)
    assert all(ld.buffer.shape == (8, 9) for ld in walk(sch.kernel.body) if isinstance(ld, Load)
               and ld.buffer.name == alloc.name)
    assert shared_bytes(sch.kernel) == 288
    assert_same(k, sch.kernel)


def test_swizzle_rotates_chunks_and_keeps_the_result():
    k, sch = _transpose_tiled(n=64, m=64, swizzle=False)
    sch2 = Schedule(k)
    for step in sch.trace:
        sch2.apply(step.primitive, **step.args)
    # 8 float32 = two 16-byte chunks per row
    sch2.swizzle("A_shared")
    idx = [ld.indices[-1] for ld in walk(sch2.kernel.body) if isinstance(ld, Load) and ld.buffer.name == "A_shared"]
    assert idx and all("% 2" in str(i) for i in idx)
    assert_same(k, sch2.kernel)


def test_pad_and_swizzle_illegal():
    k, sch = _transpose_tiled()
    with pytest.raises(ScheduleError, match="parameter"):
        sch.pad("A", 1)
    with pytest.raises(ScheduleError, match="positive"):
        sch.pad("A_shared", 0)
    k2 = stencil()
    sch2 = Schedule(k2)
    sch2.bind("i", "threadIdx.x")
    s = sch2.cache_shared("A", "i")
    with pytest.raises(ScheduleError, match="chunks"):
        sch2.swizzle(s)  # one-dimensional


# -- cross_thread_reduce ---------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["sum", "max", "min"])
@pytest.mark.parametrize("threads,cols", [(32, 100), (128, 300)])
def test_cross_thread_reduce(op, threads, cols):
    k = row_sum(3, cols, op=op)
    sch = Schedule(k)
    ko, kt = sch.split("k", [None, threads])
    sch.reorder(kt, ko)
    sch.bind("i", "blockIdx.x")
    names = sch.cross_thread_reduce("S", kt)
    assert names[0] == "S_acc" and (len(names) == 2) == (threads > 32)
    assert loops(sch.kernel)[kt] == ("threadIdx.x", threads)
    shuffles = [n for n in walk(sch.kernel.body) if isinstance(n, Intrinsic)]
    assert len(shuffles) == 5 and all(s.name == "shfl.sync.bfly.b32" for s in shuffles)
    assert_same(k, sch.kernel, tol=1e-4)


def test_cross_thread_reduce_with_warp_rows_and_guards():
    k = row_sum(6, 45)
    sch = Schedule(k)
    ko, kt = sch.split("k", [None, 32])
    sch.reorder(kt, ko)
    rb, ry = sch.split("i", [None, 4])  # 6 rows in blocks of 4: the last block is guarded
    sch.bind(rb, "blockIdx.x")
    sch.bind(ry, "threadIdx.y")
    sch.cross_thread_reduce("S", kt)
    assert_same(k, sch.kernel, tol=1e-4)


def test_cross_thread_reduce_illegal():
    sch = Schedule(row_sum(3, 100))
    ko, kt = sch.split("k", [None, 16])
    sch.reorder(kt, ko)
    with pytest.raises(ScheduleError, match="multiple of 32"):
        sch.cross_thread_reduce("S", kt)
    sch = Schedule(row_sum(3, 100))
    ko, kt = sch.split("k", [None, 32])
    with pytest.raises(ScheduleError, match="outermost reduction loop"):
        sch.cross_thread_reduce("S", kt)  # ko is outside kt
    with pytest.raises(ScheduleError, match="no guarded reduction"):
        Schedule(elementwise()).cross_thread_reduce("B", "i")
    sch = Schedule(row_sum(3, 64, dtype="float16"))
    ko, kt = sch.split("k", [None, 32])
    sch.reorder(kt, ko)
    with pytest.raises(ScheduleError, match="float32 or int32"):
        sch.cross_thread_reduce("S", kt)


# -- fragment, tensorize, pipeline -----------------------------------------------------------------

def mma_schedule(k, warps=(1, 2), tiles=(2, 1), bk=16, shared=True, stages=0, pad=8, swizzle=False,
                 tensorize=True):
    """The tensor-core GEMM schedule, step by step (what generic_gpu_matmul does)."""
    sch = Schedule(k)
    wm, wn = warps
    tm, tn = tiles
    bi, wi, ir = sch.split("i", [None, wm, tm * 16])
    bj, wj, jr = sch.split("j", [None, wn, tn * 8])
    ko, kr = sch.split("k", [None, bk])
    sch.reorder(bi, bj, wi, wj, ko, kr, ir, jr)
    acc = sch.cache_write("C", wj, "local")
    iri, jri = sch.decompose_reduction(acc, ko)
    mi, ii = sch.split(ir, [None, 16])
    ni, jj = sch.split(jr, [None, 8])
    ki, kk = sch.split(kr, [None, 16])
    sch.reorder(ki, mi, ni, ii, jj, kk)
    a, b = sch.split(iri, [None, 16])
    c, d = sch.split(jri, [None, 8])
    sch.reorder(a, c, b, d)
    out = sch.get_loops("C")
    o0, o1 = sch.split(out[-2], [None, 16])
    p0, p1 = sch.split(out[-1], [None, 8])
    sch.reorder(o0, p0, o1, p1)
    sch.bind(bi, "blockIdx.y")
    sch.bind(bj, "blockIdx.x")
    sch.bind(wi, "threadIdx.z")
    sch.bind(wj, "threadIdx.y")
    names = sch.fragment(acc, "m16n8k16.acc")
    if shared:
        for operand in ("A", "B"):
            s = sch.cache_shared(operand, ko, 8)
            if pad:
                sch.pad(s, pad)
            if swizzle:
                sch.swizzle(s)
        if stages:
            sch.pipeline(ko, stages)
    if tensorize:
        sch.tensorize(names[3], mma_name(k.param("A").dtype))
    return sch, names


def test_fragment_distributes_the_accumulator_over_lanes():
    k = gemm(32, 16, 32)
    sch, names = mma_schedule(k, tensorize=False)
    assert len(names) == 6  # (lane, element) loops of the init, the update and the copy-out
    assert all(loops(sch.kernel)[n] == ("threadIdx.x", 32) for n in names[0::2])
    assert all(loops(sch.kernel)[n] == ("serial", 4) for n in names[1::2])
    acc = [n.buffer for n in walk(sch.kernel.body) if isinstance(n, Allocate) and n.buffer.name == "C_local"][0]
    assert acc.shape == (2, 1, 4)  # a 32 x 8 warp tile: 2 x 1 mma tiles of 4 elements per lane
    assert sch.kernel.launch.block == (32, 2, 1)
    assert_same(k, sch.kernel, tol=1e-4)


@pytest.mark.parametrize("dtype,a_t,b_t", [("float16", False, False), ("bfloat16", False, True),
                                           ("float16", True, False), ("bfloat16", True, True)])
def test_tensorize_mma_with_ldmatrix(dtype, a_t, b_t):
    k = gemm(32, 32, 32, dtype, a_t, b_t)
    sch, _ = mma_schedule(k, warps=(1, 2), tiles=(2, 2))
    calls = [n.name for n in walk(sch.kernel.body) if isinstance(n, Intrinsic)]
    a_ld = "ldmatrix.sync.aligned.m8n8.x4" + (".trans" if a_t else "") + ".shared.b16"
    b_ld = "ldmatrix.sync.aligned.m8n8.x2" + ("" if b_t else ".trans") + ".shared.b16"
    assert calls == [a_ld, b_ld, mma_name(dtype)]
    assert sch.trace[-1].results == ("A_shared_frag", "B_shared_frag")
    assert_same(k, sch.kernel, tol=1e-3)


def test_tensorize_from_global_memory_loads_elements():
    k = gemm(16, 8, 32)
    sch, _ = mma_schedule(k, warps=(1, 1), tiles=(1, 1), shared=False)
    calls = [n.name for n in walk(sch.kernel.body) if isinstance(n, Intrinsic)]
    assert calls == [mma_name("float16")]  # fragments loaded element by element
    assert_same(k, sch.kernel, tol=1e-3)


def test_tensorize_with_swizzled_shared_memory():
    k = gemm(16, 16, 64)
    sch, _ = mma_schedule(k, warps=(1, 1), tiles=(1, 2), bk=32, pad=0, swizzle=True)
    assert any(n.name.startswith("ldmatrix") for n in walk(sch.kernel.body) if isinstance(n, Intrinsic))
    assert_same(k, sch.kernel, tol=1e-3)


def test_tensorize_refuses_what_is_not_a_16x8x16_product():
    # a product of the accumulator's row with itself (A[i, k] * A[i, k]): not an mma operand pair
    X = ts.placeholder((16, 16), "float16", name="A")
    k = ts.reduce_axis(16, name="k")
    bad = ts.lower([X, ts.placeholder((16, 8), "float16", name="B"),
                    ts.compute((16, 8), lambda i, j: ts.sum(X[i, k].astype("float32") * X[i, k].astype("float32"),
                                                            axis=k), name="C")])
    with pytest.raises(ScheduleError, match="do not read A"):
        mma_schedule(bad, warps=(1, 1), tiles=(1, 1), shared=False)
    sch, names = mma_schedule(gemm(16, 8, 16), warps=(1, 1), tiles=(1, 1), tensorize=False)
    with pytest.raises(ScheduleError, match="element loop"):
        sch.tensorize(names[1], mma_name("float16"))  # the init nest
    with pytest.raises(ScheduleError, match="no loop-nest pattern"):
        sch.tensorize(names[3], "shfl.sync.bfly.b32")


def test_fragment_illegal():
    sch = Schedule(gemm(16, 8, 16))
    with pytest.raises(ScheduleError, match="parameter"):
        sch.fragment("C", "m16n8k16.acc")
    with pytest.raises(ScheduleError, match="unknown fragment layout"):
        sch.fragment("C", "m8n8")
    sch = Schedule(gemm(16, 8, 16))
    acc = sch.cache_write("C", "i", "local")
    with pytest.raises(ScheduleError, match="multiples of 16 and 8"):
        sch.fragment(acc, "m16n8k16.acc")  # a 1 x 8 row tile


@pytest.mark.parametrize("stages", [2, 3])
def test_pipeline_with_cp_async(stages):
    k = gemm(16, 16, 64)
    sch, _ = mma_schedule(k, warps=(1, 1), tiles=(1, 2), bk=16, stages=stages)
    calls = [n.name for n in walk(sch.kernel.body) if isinstance(n, Intrinsic)]
    assert calls.count("cp.async.commit_group") == stages  # prologue (stages - 1) + loop
    assert "cp.async.wait_group" in calls and "cp.async.cg.shared.global.16" in calls
    shared = [n.buffer for n in walk(sch.kernel.body) if isinstance(n, Allocate) and n.buffer.scope == "shared"]
    assert all(b.shape[0] == stages for b in shared)
    assert_same(k, sch.kernel, tol=1e-3)


def test_pipeline_that_waits_too_little_fails_in_the_interpreter():
    k = gemm(16, 16, 64)
    sch, _ = mma_schedule(k, warps=(1, 1), tiles=(1, 2), bk=16, stages=3)
    from tessel.ir.nodes import Const

    lazy = rewrite(sch.kernel, lambda n: Intrinsic(n.name, (Const(2),)) if isinstance(n, Intrinsic)
                   and n.name == "cp.async.wait_group" else None, fixpoint=False)
    assert_broken(k, lazy)


def test_pipeline_illegal():
    sch, _ = mma_schedule(gemm(16, 16, 64), warps=(1, 1), tiles=(1, 2), bk=16)
    ko = "k_0"
    with pytest.raises(ScheduleError, match="stages"):
        sch.pipeline(ko, 1)
    with pytest.raises(ScheduleError, match="sequential"):
        sch.pipeline("i_0", 2)  # a block loop
    with pytest.raises(ScheduleError, match="barrier; copies; barrier"):
        sch.pipeline("k_1_0", 2)  # no copies of its own
    # a copy of 2 bytes per thread and step cannot be a cp.async
    k = gemm(16, 8, 32)
    s2 = Schedule(k)
    s2.bind("i", "threadIdx.y")
    s2.bind("j", "threadIdx.x")
    ko2, _ = s2.split("k", [None, 16])
    s2.cache_shared("A", ko2)
    with pytest.raises(ScheduleError, match="4, 8 or 16"):
        s2.pipeline(ko2, 2)


def test_gpu_trace_replays_to_an_equal_kernel():
    k = gemm(32, 16, 64)
    sch, _ = mma_schedule(k, warps=(1, 1), tiles=(2, 2), bk=16, stages=2)
    assert Schedule.replay(k, sch.trace) == sch.kernel
    assert Schedule.replay(k, sch.trace_json()) == sch.kernel


def test_with_launch_keeps_the_cluster_and_refuses_a_grid_it_no_longer_divides():
    """The launch is re-derived from the bound loops, the cluster (not a loop) is kept; a grid the
    cluster no longer divides is a ScheduleError naming both (a dropped cluster deadlocked split-K)."""
    import dataclasses

    from tessel.ir.nodes import Buffer, Launch, Var
    from tessel.schedules.gpu import with_launch

    b, t, B = Var("b"), Var("t"), Buffer("B", (8, 32))
    rng = np.random.default_rng()
    blocks = int(rng.choice([2, 4, 8]))
    body = For(b, blocks, For(t, 32, Store(B, (b, t), Load(B, (b, t)) + 1.0), "threadIdx.x"), "blockIdx.x")
    k = Kernel("k", (B,), body, target="cuda", launch=Launch((blocks, 1, 1), (32, 1, 1), 0, (2, 1, 1)))
    assert with_launch(k).launch.cluster == (2, 1, 1) and with_launch(k).launch.grid == (blocks, 1, 1)
    odd = dataclasses.replace(k, body=For(b, 3, body.body, "blockIdx.x"))
    with pytest.raises(ScheduleError, match=r"grid \(3, 1, 1\).*cluster \(2, 1, 1\)"):
        with_launch(odd)
