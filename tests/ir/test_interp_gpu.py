"""The interpreter runs GPU kernels as blocks of threads: thread and block indices, guards below
the launch shape, shared memory once per block and local memory once per thread, barriers that
hold every thread of a block (missing ones read poison or give wrong sums; divergent ones raise),
warp-collective and per-thread intrinsics from a registry, and intrinsics that defer work to a
later wait (the cp.async pattern).
"""

from __future__ import annotations

import numpy as np
import pytest

from tessel.errors import TesselError, VerifyError
from tessel.ir.interp import Context, ExecutionError, Interpreter, IntrinsicImpl, RaceError, run
from tessel.ir.nodes import (
    Allocate, Barrier, Buffer, BufferRef, Cast, Const, For, IfThenElse, Intrinsic, Kernel, Launch, Store, Var, seq,
)


def _kernel(name, params, body, **kw) -> Kernel:
    return Kernel(name, tuple(params), body, **kw)


def _c(value, dtype="float32") -> Const:
    return Const(value, dtype)


def _block_sum(nblocks: int, threads: int, dtype: str, load_barrier=True, step_barriers=True) -> Kernel:
    """Each block sums its `threads` elements of A by a tree reduction in shared memory."""
    A = Buffer("A", (nblocks * threads,), dtype)
    O = Buffer("O", (nblocks,), dtype)
    S = Buffer("S", (threads,), dtype, "shared")
    b, t = Var("b"), Var("t")
    steps, s = [], threads // 2
    while s >= 1:
        steps.append(IfThenElse(t < s, Store(S, (t,), S[t] + S[t + s])))
        if step_barriers:
            steps.append(Barrier())
        s //= 2
    body = seq(Store(S, (t,), A[b * threads + t]), Barrier() if load_barrier else None, *steps,
               IfThenElse(t.eq(0), Store(O, (b,), S[0])))
    return _kernel("block_sum", (A, O), For(b, nblocks, Allocate(S, For(t, threads, body, "threadIdx.x")),
                                             "blockIdx.x"), target="cuda")


@pytest.mark.parametrize("dtype", ["int32", "float32"])
def test_block_reduction_in_shared_memory(dtype):
    nb, nt = 3, 8
    rng = np.random.default_rng(11)
    a = (rng.integers(-100, 100, nb * nt) if dtype == "int32" else rng.standard_normal(nb * nt)).astype(dtype)
    o = np.full(nb, -1, dtype)
    run(_block_sum(nb, nt, dtype), a, o)
    np.testing.assert_allclose(o, a.reshape(nb, nt).sum(axis=1), rtol=1e-6)


def test_missing_load_barrier_is_a_race():
    nb, nt = 2, 8
    a = np.random.default_rng(12).standard_normal(nb * nt).astype(np.float32)
    o = np.zeros(nb, np.float32)
    kernel = _block_sum(nb, nt, "float32", load_barrier=False, step_barriers=False)
    with pytest.raises(RaceError, match=r"kernel 'block_sum': data race on shared buffer 'S' element \(\d,\)"):
        run(kernel, a, o)
    # without race checking the threads read what is there: poison in some lanes
    run(kernel, a, o, race_check=False, seed=0)
    assert np.isnan(o).any()


def test_missing_step_barriers_are_a_race():
    nb, nt = 2, 8
    a = np.random.default_rng(13).integers(1, 100, nb * nt).astype(np.int32)
    o = np.zeros(nb, np.int32)
    with pytest.raises(RaceError, match=r"load S\[\(t \+ \d\)\]"):
        run(_block_sum(nb, nt, "int32", load_barrier=True, step_barriers=False), a, o)


def test_divergent_barriers_raise():
    O = Buffer("O", (8,), "int32")
    t = Var("t")
    half = IfThenElse(t < 4, Barrier())
    kernel = _kernel("div1", (O,), For(t, 8, seq(half, Store(O, (t,), t)), "threadIdx.x"))
    with pytest.raises(ExecutionError, match=r"diverge.*0-3 wait at barrier #1.*4-7 finished"):
        run(kernel, np.zeros(8, np.int32))
    two = IfThenElse(t < 4, Barrier(), Barrier())
    kernel = _kernel("div2", (O,), For(t, 8, seq(two, Store(O, (t,), t)), "threadIdx.x"))
    with pytest.raises(ExecutionError, match=r"barrier #1.*barrier #2"):
        run(kernel, np.zeros(8, np.int32))
    # a barrier inside a loop guarded below the launch dimension: threads past the extent skip it
    guarded = _kernel("div3", (O,), For(t, 6, seq(Barrier(), Store(O, (t,), t)), "threadIdx.x"),
                      launch=Launch((1, 1, 1), (8, 1, 1)))
    with pytest.raises(ExecutionError, match="diverge"):
        run(guarded, np.zeros(8, np.int32))


def test_thread_and_block_indices_and_guards():
    O = Buffer("O", (2, 3, 4, 5), "int32")
    by, bx, ty, tx = Var("by"), Var("bx"), Var("ty"), Var("tx")
    value = ((by * 3 + bx) * 4 + ty) * 5 + tx
    body = For(by, 2, For(bx, 3, For(ty, 4, For(tx, 5, Store(O, (by, bx, ty, tx), value), "threadIdx.x"),
                                     "threadIdx.y"), "blockIdx.x"), "blockIdx.y")
    o = np.full((2, 3, 4, 5), -1, np.int32)
    run(_kernel("ids", (O,), body), o)
    assert np.array_equal(o.reshape(-1), np.arange(120))
    # a launch wider than the loop: the extra threads do nothing
    o[...] = -1
    run(_kernel("ids", (O,), body, launch=Launch((4, 2, 1), (8, 4, 1))), o)
    assert np.array_equal(o.reshape(-1), np.arange(120))
    with pytest.raises(VerifyError, match="extent 5 but the launch has only 4"):
        run(_kernel("ids", (O,), body, launch=Launch((3, 2, 1), (4, 4, 1))), o)


def test_shared_memory_is_per_block_and_local_per_thread():
    O = Buffer("O", (2, 4), "float32")
    S = Buffer("S", (1,), "float32", "shared")
    L = Buffer("L", (1,), "float32", "local")
    b, t = Var("b"), Var("t")
    # thread 0 of each block reads S before writing it: block 1 must see poison, not block 0's
    # value; every thread reads its local L after writing it.
    body = seq(IfThenElse(t.eq(0), seq(Store(O, (b, t), S[0]), Store(S, (0,), _c(5.0)))),
               Allocate(L, seq(Store(L, (0,), Cast("float32", t * 10)),
                               IfThenElse(t > 0, Store(O, (b, t), L[0])))))
    kernel = _kernel("scopes", (O,), For(b, 2, Allocate(S, For(t, 4, body, "threadIdx.x")), "blockIdx.x"))
    o = np.zeros((2, 4), np.float32)
    run(kernel, o)
    assert np.isnan(o[:, 0]).all()
    assert np.array_equal(o[:, 1:], np.array([[10, 20, 30]] * 2, np.float32))


def test_gpu_out_of_bounds_names_block_and_thread():
    O = Buffer("O", (7,), "int32")
    b, t = Var("b"), Var("t")
    kernel = _kernel("g", (O,), For(b, 2, For(t, 4, Store(O, (b * 4 + t,), t), "threadIdx.x"), "blockIdx.x"))
    with pytest.raises(ExecutionError, match=r"index \(7,\).*block \(1, 0, 0\), thread \(3, 0, 0\)"):
        run(kernel, np.zeros(7, np.int32))


def _warp_sum(lanes):
    total = sum(int(v) for v, _ in lanes)
    for _, out in lanes:
        out.region((1,))[0] = total


def test_warp_collective_intrinsic():
    n = 64
    A, O = Buffer("A", (n,), "int32"), Buffer("O", (n,), "int32")
    t = Var("t")
    call = Intrinsic("warp_sum", (A[t], BufferRef(O, (t,))))
    kernel = _kernel("ws", (A, O), For(t, n, seq(Barrier(), call), "threadIdx.x"))
    a = np.random.default_rng(14).integers(-50, 50, n).astype(np.int32)
    o = np.zeros(n, np.int32)
    Interpreter({"warp_sum": IntrinsicImpl(_warp_sum, "warp")}).run(kernel, a, o)
    assert np.array_equal(o, np.repeat(a.reshape(2, 32).sum(axis=1), 32))
    # lanes of the second warp that never reach the collective: divergence
    partial = _kernel("ws", (A, O), For(t, 40, call, "threadIdx.x"), launch=Launch((1, 1, 1), (64, 1, 1)))
    with pytest.raises(ExecutionError, match="warp_sum #1"):
        Interpreter({"warp_sum": IntrinsicImpl(_warp_sum, "warp")}).run(partial, a, o)


def test_thread_intrinsic_and_unknown_intrinsic():
    A, O = Buffer("A", (4,), "float32"), Buffer("O", (4,), "float32")
    i = Var("i")
    kernel = _kernel("ti", (A, O), For(i, 4, Intrinsic("twice", (A[i], BufferRef(O, (i,))))))
    a = np.arange(4, dtype=np.float32)
    o = np.zeros(4, np.float32)

    def twice(x, ref):
        ref.region((1,))[0] = 2 * x

    Interpreter({"twice": twice}).run(kernel, a, o)
    assert np.array_equal(o, 2 * a)
    with pytest.raises(TesselError, match="unknown intrinsic 'twice'"):
        run(kernel, a, o)
    bad_region = _kernel("ti", (A, O), For(i, 4, Intrinsic("twice2", (A[i], BufferRef(O, (i,))))))
    with pytest.raises(ExecutionError, match="leaves its shape"):
        Interpreter({"twice2": lambda x, ref: ref.region((2,))}).run(bad_region, a, o)


def test_barrier_inside_a_deep_nest_in_a_threaded_kernel():
    S = Buffer("S", (4,), "float32", "shared")
    A, O = Buffer("A", (4,), "float32"), Buffer("O", (4,), "float32")
    t = Var("t")
    inner = seq(Store(S, (t,), A[t]), Barrier(), Store(O, (t,), S[(t + 1) % 4]))
    for d in range(20):
        inner = For(Var(f"d{d}"), 1, inner)
    kernel = _kernel("deepbar", (A, O), Allocate(S, For(t, 4, inner, "threadIdx.x")))
    a = np.random.default_rng(15).standard_normal(4).astype(np.float32)
    o = np.zeros(4, np.float32)
    run(kernel, a, o)
    assert np.array_equal(o, np.roll(a, -1))


def test_intrinsics_with_context_can_defer_work_until_a_wait():
    # an asynchronous copy in the style of cp.async: it lands at the wait, not before
    def cp_async(ctx: Context, src, dst):
        ctx.state.setdefault(ctx.threads[0], []).append((src, dst))

    def wait_all(ctx: Context):
        for src, dst in ctx.state.pop(ctx.threads[0], []):
            dst.region((1,))[0] = src.region((1,))[0]

    impls = {"cp_async": IntrinsicImpl(cp_async, with_context=True),
             "wait_all": IntrinsicImpl(wait_all, with_context=True)}
    S = Buffer("S", (4,), "float32", "shared")
    A, O = Buffer("A", (4,), "float32"), Buffer("O", (4,), "float32")
    t = Var("t")
    a = np.random.default_rng(16).standard_normal(4).astype(np.float32)
    for wait in (True, False):
        body = seq(Intrinsic("cp_async", (BufferRef(A, (t,)), BufferRef(S, (t,)))),
                   Intrinsic("wait_all", ()) if wait else None, Barrier(), Store(O, (t,), S[(t + 1) % 4]))
        o = np.zeros(4, np.float32)
        Interpreter(impls).run(_kernel("async", (A, O), Allocate(S, For(t, 4, body, "threadIdx.x"))), a, o)
        assert np.array_equal(o, np.roll(a, -1)) if wait else np.isnan(o).all()
