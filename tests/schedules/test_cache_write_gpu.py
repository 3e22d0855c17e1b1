"""cache_write in GPU kernels keeps one copy per thread (tessel/schedules/caching.py).

Every thread runs the statements outside its thread-bound loops, so a cache whose copy nests sit
outside them is filled and drained by every thread: before the fix, cache_write at the block loop
of gpu.reduce_outer's kernel copied the block's whole part of the output in and out in each thread
(fuzz case cache_write_in_gpu_reduce_outer_races). Now each thread stages its own box inside its
thread loop, or (the row-wise schedules) every thread holds a replicated copy and one thread writes
it back. Checked against numpy and the race-checking interpreter under several interleavings.
"""

from __future__ import annotations

import dataclasses
import re
import shutil

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError
from tessel.ir import interp
from tessel.ir.nodes import Allocate, Barrier, For, Seq, Stmt, Store, walk
from tessel.ir.text import parse_kernel
from tessel.ir.verify import verify
from tessel.schedules.schedule import Schedule


def column_sum(rows: int, cols: int):
    X = ts.placeholder((rows, cols), name="X")
    k = ts.reduce_axis(rows, name="k")
    return ts.lower([X, ts.compute((cols,), lambda j: ts.sum(X[k, j], axis=k), name="S")])


def reduce_outer(rows: int, cols: int, threads: int = 32) -> Schedule:
    sch = Schedule(column_sum(rows, cols))
    sch.apply("template", name="gpu.reduce_outer", knobs={"threads": threads}, target="cuda:sm_80")
    return sch


def run_seeds(kernel, *args, seeds=range(3)) -> list:
    """The output of `kernel` on inputs `args[:-1]` (the last: the output's shape), one per seed."""
    *inputs, shape = args
    outs = []
    for s in seeds:
        out = np.full(shape, 7e3, np.float32)
        interp.run(kernel, *inputs, out, seed=s)
        outs.append(out)
    return outs


# What cache_write("S", at="j_0") built before the fix (the old code's output, its cache indices
# simplified, the scope a parameter): one 32-element cache per block iteration, written back by a copy nest outside the
# thread loop, which every thread of the block runs.
OLD_STAGING = """
kernel S(X: float32[5, 64] global, S: float32[64] global) target cuda launch grid(2, 1, 1) block(32, 1, 1) shared 0 {
  for j_0 in 2 bind blockIdx.x {
    alloc S_local: float32[32] SCOPE {
      for j_1 in 32 bind threadIdx.x {
        for k in 5 {
          if (k == 0) {
            S_local[j_1] = 0.0f32
          }
          S_local[j_1] = (S_local[j_1] + X[k, ((j_0 * 32) + j_1)])
        }
      }
      for S_local_out_ax0 in 32 {
        S[((j_0 * 32) + S_local_out_ax0)] = S_local[S_local_out_ax0]
      }
    }
  }
}
"""


@pytest.mark.parametrize("scope,where", [("local", "global buffer 'S'"), ("shared", "shared buffer 'S_local'")])
def test_block_level_staging_races(scope, where):
    """The old schedule races: per-thread copies (local) each write the whole block's part of S,
    holes included; one shared staging buffer is filled by every thread at once."""
    kern = parse_kernel(OLD_STAGING.replace("SCOPE", scope))
    verify(kern)
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    with pytest.raises(interp.RaceError, match=re.escape(where)):
        run_seeds(kern, x, (64,), seeds=[0])


@pytest.mark.parametrize("rows,cols,threads", [(5, 64, 32), (3, 50, 32), (4, 100, 64)])
def test_cache_write_over_threads_is_one_register_per_thread(rows, cols, threads):
    sch = reduce_outer(rows, cols, threads)
    name = sch.cache_write("S", "j_0", "local")
    verify(sch.kernel)
    assert Schedule.replay(column_sum(rows, cols), sch.trace_json()) == sch.kernel
    # the cache lives inside the thread loop: one element per thread
    (thread_loop,) = [n for n in walk(sch.kernel.body) if isinstance(n, For) and n.kind == "threadIdx.x"]
    (alloc,) = [n for n in walk(thread_loop.body) if isinstance(n, Allocate) and n.buffer.name == name]
    assert alloc.buffer.shape == (1,) and alloc.buffer.scope == "local"
    x = np.random.default_rng(rows * cols).standard_normal((rows, cols)).astype(np.float32)
    for out in run_seeds(sch.kernel, x, (cols,)):  # race-checked, three interleavings
        np.testing.assert_allclose(out, x.sum(axis=0), rtol=1e-5, atol=1e-5)


def test_fixed_cache_is_in_registers_in_cuda():
    from tessel.codegen.cuda import cuda_source

    sch = reduce_outer(5, 64)
    sch.cache_write("S", "j_0", "local")
    src = cuda_source(sch.kernel)
    body = src[src.index("__global__"):]
    assert "__shared__" not in body
    # declared after the thread index is read: a per-thread array of one element (a register)
    assert re.search(r"threadIdx\.x;\s*\n\s*(__align__\(\d+\) )?float S_local\[1\];", body), body


@pytest.mark.skipif(not shutil.which("nvcc"), reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_fixed_cache_compiles_with_nvcc(arch):
    from tessel.codegen.cuda import cuda_source
    from tessel.codegen.cuda_build import compile_cuda

    sch = reduce_outer(3, 50)
    sch.cache_write("S", "j_0", "local")
    assert compile_cuda(cuda_source(sch.kernel), arch, name="colsum_cached", compiler="nvcc").code


@pytest.mark.gpu
@pytest.mark.parametrize("rows,cols,threads", [(5, 64, 32), (7, 1000, 128)])
def test_fixed_cache_runs_on_the_gpu(rows, cols, threads):
    import torch

    from tessel.codegen.cuda import build_kernel

    sch = reduce_outer(rows, cols, threads)
    sch.cache_write("S", "j_0", "local")
    x = np.random.default_rng(cols).standard_normal((rows, cols)).astype(np.float32)
    out = torch.full((cols,), 7e3, dtype=torch.float32, device="cuda")
    build_kernel(sch.kernel, "cuda")(torch.from_numpy(x).cuda(), out)
    torch.cuda.synchronize()
    np.testing.assert_allclose(out.cpu().numpy(), x.sum(axis=0), rtol=1e-5, atol=1e-5)


def _rowwise_steps(shape, threads=32, rows=3):
    """gpu.rowwise's steps for softmax, without its final dead-code removal: the copy-outs of the
    cached statistics into their global temporaries stay."""
    from tessel.schedules.generic_gpu import _rowwise_analyze
    from tests.schedules.test_generic_gpu import _lowered

    kernel = _lowered("softmax", [shape], "float32")
    info = _rowwise_analyze(kernel, "cuda")
    sch = Schedule(kernel)
    for name, _ in reversed(info.producers):
        sch.compute_at(name, info.row_loops[-1])
    rb, ry = sch.split(info.row_loops[0], [None, rows])
    sch.bind(rb, "blockIdx.x")
    sch.bind(ry, "threadIdx.y")
    for name, red in info.producers:
        ro, rt = sch.split(red[0], [None, threads])
        sch.reorder(rt, ro)
        sch.cross_thread_reduce(name, rt)
    co, ct = sch.split(info.col_loops[0], [None, threads])
    sch.reorder(ct, co)
    sch.bind(ct, "threadIdx.x")
    for name, _ in info.producers:
        sch.cache_write(name, ry, "local")
    return sch


def _softmax(x):
    e = np.exp(x.astype(np.float64) - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_replicated_copies_are_written_back_by_one_thread():
    """Row-wise statistics: every thread holds the row's value after the shuffles, so each keeps a
    replicated copy, and the copy-out is thread 0's (a loop of extent 1 bound to threadIdx.x). With
    every thread writing it back (the copy-out unwrapped), the interpreter reports the race."""
    sch = _rowwise_steps((6, 40))
    kern = sch.kernel
    verify(kern)
    outs = [n for n in walk(kern.body) if isinstance(n, For) and n.kind == "threadIdx.x" and "_out" in n.var.name]
    assert len(outs) == 2 and all(n.extent.value == 1 for n in outs)
    x = np.random.default_rng(3).standard_normal((6, 40)).astype(np.float32)
    for out in run_seeds(kern, x, (6, 40)):
        np.testing.assert_allclose(out, _softmax(x), rtol=1e-5, atol=1e-6)
    everyone = dataclasses.replace(kern, body=_unwrap(kern.body, {n.var.name for n in outs}))
    with pytest.raises(interp.RaceError, match="out0_(max|sum)"):
        run_seeds(everyone, x, (6, 40), seeds=[0])


def _rebuild(node, fn):
    """`node` with each statement s replaced by fn(s) (or kept when None), by position (the rewrite
    engine merges equal subtrees, and all barriers are equal)."""
    got = fn(node)
    if got is not None:
        return got
    changes = {}
    for f in dataclasses.fields(node):
        v = getattr(node, f.name)
        if isinstance(v, Stmt):
            changes[f.name] = _rebuild(v, fn)
        elif isinstance(v, tuple) and v and all(isinstance(e, Stmt) for e in v):
            changes[f.name] = tuple(_rebuild(e, fn) for e in v)
    return dataclasses.replace(node, **changes) if changes else node


def _unwrap(body, names):
    return _rebuild(body, lambda n: _unwrap(n.body, names) if isinstance(n, For) and n.var.name in names else None)


def _drop_barrier(body, index):
    seen = [0]

    def fn(n):
        if not isinstance(n, Barrier):
            return None
        seen[0] += 1
        return Seq(()) if seen[0] - 1 == index else n

    return _rebuild(body, fn)


@pytest.mark.parametrize("index", [0, 2])
def test_deleting_a_barrier_of_the_cached_rowwise_schedule_is_caught(index):
    """softmax over 700 columns: 128 threads (4 warps) per row, each statistic combined across
    warps through shared memory between two barriers. Dropping the barrier between the warps'
    partials and their reads (the 1st and 3rd) must race under every interleaving (the 2nd and 4th
    guard a reuse of the partials that a block with one row does not have)."""
    from tessel.schedules.generic_gpu import default_gpu_schedule
    from tests.schedules.test_generic_gpu import _lowered

    kern = default_gpu_schedule(_lowered("softmax", [(3, 700)], "float32"), "cuda").kernel
    assert sum(isinstance(n, Barrier) for n in walk(kern.body)) == 4
    x = np.random.default_rng(index).standard_normal((3, 700)).astype(np.float32)
    for out in run_seeds(kern, x, (3, 700)):  # the intact kernel: race-free, right
        np.testing.assert_allclose(out, _softmax(x), rtol=1e-4, atol=1e-5)
    broken = dataclasses.replace(kern, body=_drop_barrier(kern.body, index))
    for seed in range(3):
        with pytest.raises(interp.RaceError):
            run_seeds(broken, x, (3, 700), seeds=[seed])


# -- what cannot be per thread is refused ------------------------------------------------------------

def test_shared_or_global_cache_among_threads_is_refused():
    for scope in ("shared", "global"):
        with pytest.raises(ScheduleError, match="one buffer for all the threads"):
            reduce_outer(5, 64).cache_write("S", "j_0", scope)
        with pytest.raises(ScheduleError, match="one buffer for all the threads"):
            reduce_outer(5, 64).cache_write("S", "j_1", scope)  # inside the thread loop: still one per block
    with pytest.raises(ScheduleError, match="cache_shared"):
        reduce_outer(5, 64).cache_read("X", "j_0", "shared")


def test_shared_cache_write_in_a_cpu_kernel_is_refused():
    # a 4-minute sm_90a campaign: a GPU case before any template is still a CPU kernel
    with pytest.raises(ScheduleError, match="needs a GPU kernel"):
        Schedule(column_sum(5, 64)).cache_write("S", "j", "shared")


def _kernel(body: str, params="C: float32[64] global, D: float32[64] global"):
    return parse_kernel(f"kernel f({params}) target cuda launch grid(2, 1, 1) block(32, 1, 1) shared 0 {{\n"
                        f"  for b in 2 bind blockIdx.x {{\n{body}\n  }}\n}}")


def test_overlapping_thread_boxes_are_refused():
    # thread t reads C[t + 1], which thread t + 1 writes: their boxes overlap
    k = _kernel("for t in 32 bind threadIdx.x { if ((b * 32) + t) < 63 { C[((b * 32) + t)] = "
                "(C[(((b * 32) + t) + 1)] + 1.0f32) } }")
    with pytest.raises(ScheduleError, match="overlapping boxes"):
        Schedule(k).cache_write("C", "b", "local")


def test_barrier_ordering_threads_across_iterations_is_refused():
    # iteration s of thread t updates C[t + s]: at s = 1 thread t updates what thread t + 1 wrote at
    # s = 0, ordered by the barrier; a per-thread copy written back after that barrier would not be
    body = ("for s in 2 {{ for t in 32 bind threadIdx.x {{ C[(((b * 33) + t) + s)] = (C[(((b * 33) + t) + s)] + "
            "1.0f32){} }} }}")
    params = "C: float32[66] global, D: float32[64] global"
    with pytest.raises(ScheduleError, match="barrier inside it would order"):
        Schedule(_kernel(body.format("\n barrier"), params)).cache_write("C", "s", "local")
    Schedule(_kernel(body.format(""), params)).cache_write("C", "s", "local")  # no barrier: each (s, t) its own


def test_threads_around_the_cache_must_own_their_box():
    """gpu.reduce_inner: thread 0 stores the row's sum. A cache at the thread loop itself would be
    copied in and out by every thread of the row."""
    X = ts.placeholder((5, 70), name="X")
    k = ts.reduce_axis(70, name="k")
    sch = Schedule(ts.lower([X, ts.compute((5,), lambda i: ts.sum(X[i, k], axis=k), name="S")]))
    sch.apply("template", name="gpu.reduce_inner", knobs=None, target="cuda:sm_80")
    (tx,) = [n.var.name for n in walk(sch.kernel.body) if isinstance(n, For) and n.kind == "threadIdx.x"]
    with pytest.raises(ScheduleError, match="overlapping boxes"):
        sch.cache_write("S", tx, "local")


def test_replicated_copy_needing_a_copy_in_is_refused():
    # thread 0 writes C[b], every thread reads it after the barrier: a per-thread copy of the others
    # would start from the old C[b]
    k = _kernel("for t in 32 bind threadIdx.x { if t == 0 { C[b] = 1.0f32 } }\n barrier\n"
                "for t2 in 32 bind threadIdx.x { D[((b * 32) + t2)] = C[b] }")
    with pytest.raises(ScheduleError, match="miss the others' writes"):
        Schedule(k).cache_write("C", "b", "local")



# -- every accepted cache_write is race-free and right ------------------------------------------------

def _sweep_kernels():
    from tests.schedules.test_generic_gpu import _lowered

    X = ts.placeholder((5, 70), name="X")
    k, k2 = ts.reduce_axis(5, name="k"), ts.reduce_axis(70, name="k2")
    return {"column_sum": ts.lower([X, ts.compute((70,), lambda j: ts.sum(X[k, j], axis=k), name="S")]),
            "row_sum": ts.lower([X, ts.compute((5,), lambda i: ts.sum(X[i, k2], axis=k2), name="S")]),
            "softmax": _lowered("softmax", [(6, 40)], "float32"),
            # rows fused from two axes: the statistics' box bases are floordivs of the fused row
            "log_softmax": _lowered("log_softmax", [(2, 3, 50)], "float32")}


@pytest.mark.parametrize("name", ["column_sum", "row_sum", "softmax", "log_softmax"])
def test_every_accepted_cache_write_is_race_free_and_right(name):
    """cache_write(B, L, "local") for every buffer B the default GPU schedule writes and every loop
    L: each one accepted computes what the unscheduled kernel computes, race-free under two
    interleavings; each one refused says why (ScheduleError)."""
    from tessel.schedules.generic_gpu import default_gpu_schedule

    kernel = _sweep_kernels()[name]
    base = default_gpu_schedule(kernel, "cuda:sm_80")
    rng = np.random.default_rng()
    inputs = [rng.standard_normal(p.shape).astype(np.float32) for p in kernel.params[:-1]]
    want = np.zeros(kernel.params[-1].shape, np.float32)
    interp.run(kernel, *inputs, want)
    written = sorted({n.buffer.name for n in walk(base.kernel.body) if isinstance(n, Store)})
    loops = [n.var.name for n in walk(base.kernel.body) if isinstance(n, For)]
    accepted = 0
    for buffer in written:
        for loop in loops:
            sch = Schedule(base.kernel)
            try:
                sch.cache_write(buffer, loop, "local")
            except ScheduleError:
                continue
            accepted += 1
            for out in run_seeds(sch.kernel, *inputs, want.shape, seeds=range(2)):
                np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5, err_msg=f"cache_write {buffer} at {loop}")
    assert accepted >= 1
