"""The race checker: small hand-built kernels that race (a missing barrier, a write-after-read
across loop iterations, two writes, warps around ldmatrix / mma, blocks on global memory, a read
before its cp.async wait) raise RaceError naming the kernel, the buffer, the element, both
threads and both statements; the same kernels with the synchronisation present run and match
numpy. The scheduler's order is seeded: not linear, varied by the seed, reproduced by it."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tessel.ir.interp import Context, ExecutionError, Interpreter, IntrinsicImpl, RaceError, run
from tessel.ir.intrinsics import copy_name, interp_registry, ldmatrix_name, mma_name
from tessel.ir.nodes import (
    Allocate, Barrier, Buffer, BufferRef, Cast, Const, For, IfThenElse, Intrinsic, Kernel, Launch, Store, Var, seq,
)

WAIT0 = Intrinsic("cp.async.wait_group", (Const(0, "int32"),))
COMMIT = Intrinsic("cp.async.commit_group", ())


def _rotate(n: int, barrier: bool) -> Kernel:
    """O[t] = A[(t + 1) % n] through shared memory: a read-after-write between threads."""
    A, O, S = Buffer("A", (n,)), Buffer("O", (n,)), Buffer("S", (n,), "float32", "shared")
    t = Var("t")
    body = seq(Store(S, (t,), A[t]), Barrier() if barrier else None, Store(O, (t,), S[(t + 1) % n]))
    return Kernel("rotate", (A, O), Allocate(S, For(t, n, body, "threadIdx.x")), target="cuda")


def test_missing_barrier_read_after_write_names_everything():
    a = np.random.default_rng(1).standard_normal(8).astype(np.float32)
    o = np.zeros(8, np.float32)
    with pytest.raises(RaceError) as e:
        run(_rotate(8, False), a, o, seed=5)
    msg = str(e.value)
    assert "kernel 'rotate'" in msg and "shared buffer 'S'" in msg
    m = re.search(r"element \((\d),\): (read|write) by \(block \(0, 0, 0\), thread \((\d), 0, 0\)\) at '(.*?)' "
                  r"and earlier (read|write) by \(block \(0, 0, 0\), thread \((\d), 0, 0\)\) at '(.*?)'", msg)
    assert m, msg
    elem, k1, t1, site1, k0, t0, site0 = m.groups()
    assert {k1, k0} == {"read", "write"} and t1 != t0
    reader, writer = (t1, t0) if k1 == "read" else (t0, t1)
    assert (int(reader) + 1) % 8 == int(elem) == int(writer)  # the reader of S[t + 1] and its writer
    assert {site1.split(" ")[0], site0.split(" ")[0]} == {"load", "store"}
    assert "seed 5" in msg
    run(_rotate(8, True), a, o)
    np.testing.assert_array_equal(o, np.roll(a, -1))


def _accumulate(n: int, steps: int, end_barrier: bool) -> Kernel:
    """Per step k: S[t] = A[k, t]; barrier; O[k, t] = S[(t + 1) % n]; [barrier]. Without the last
    barrier, step k + 1's write of S races with step k's read by the neighbour (WAR)."""
    A, O, S = Buffer("A", (steps, n)), Buffer("O", (steps, n)), Buffer("S", (n,), "float32", "shared")
    t, k = Var("t"), Var("k")
    step = seq(Store(S, (t,), A[k, t]), Barrier(), Store(O, (k, t), S[(t + 1) % n]),
               Barrier() if end_barrier else None)
    return Kernel("acc", (A, O), Allocate(S, For(t, n, For(k, steps, step), "threadIdx.x")), target="cuda")


def test_write_after_read_across_loop_iterations():
    a = np.random.default_rng(2).standard_normal((3, 16)).astype(np.float32)
    o = np.zeros((3, 16), np.float32)
    for seed in range(4):  # whichever of the write-after-read or the read-after-write is met first
        with pytest.raises(RaceError) as e:
            run(_accumulate(16, 3, False), a, o, seed=seed)
        m = re.search(r"'S' element \(\d+,\): (read|write) by .* at '(.*?) \(access \d\)' and earlier (read|write) "
                      r"by .* at '(.*?) \(access \d\)'", str(e.value))
        assert m and {m[1], m[3]} == {"read", "write"}, str(e.value)
        assert {m[2], m[4]} == {"store S[t]", "load S[((t + 1) % 16)]"}
    run(_accumulate(16, 3, True), a, o)
    np.testing.assert_array_equal(o, np.roll(a, -1, axis=1))


def test_two_threads_writing_one_element():
    O, S = Buffer("O", (1,), "int32"), Buffer("S", (1,), "int32", "shared")
    t = Var("t")
    for guard, racy in ((t < 2, True), (t.eq(1), False)):
        body = seq(IfThenElse(guard, Store(S, (0,), t)), Barrier(), IfThenElse(t.eq(0), Store(O, (0,), S[0])))
        k = Kernel("waw", (O,), Allocate(S, For(t, 4, body, "threadIdx.x")), target="cuda")
        o = np.zeros(1, np.int32)
        if racy:
            with pytest.raises(RaceError, match=r"'S' element \(0,\): write by .*thread \([01], 0, 0\).* earlier "
                                                r"write by .*thread \([01], 0, 0\)"):
                run(k, o)
        else:
            run(k, o)
            assert o[0] == 1


def _warps_ldmatrix_mma(barrier: bool) -> Kernel:
    """Warp 1 writes a 16x16 A and a 16x8 B tile to shared memory; warp 0 loads them with ldmatrix
    and multiplies with mma.sync: without a barrier between, warp 0 races with warp 1."""
    dt = "float16"
    GA, GB, D = Buffer("GA", (16, 16), dt), Buffer("GB", (16, 8), dt), Buffer("D", (32, 4), "float32")
    SA, SB = Buffer("SA", (16, 16), dt, "shared"), Buffer("SB", (16, 8), dt, "shared")
    FA, FB = Buffer("FA", (8,), dt, "local"), Buffer("FB", (4,), dt, "local")
    FC = Buffer("FC", (4,), "float32", "local")
    t, e, r = Var("t"), Var("e"), Var("r")
    lane = t - 32
    fill = seq(For(e, 8, Store(SA, ((lane * 8 + e) // 16, (lane * 8 + e) % 16), GA[(lane * 8 + e) // 16,
                                                                                     (lane * 8 + e) % 16])),
               For(e, 4, Store(SB, ((lane * 4 + e) // 8, (lane * 4 + e) % 8), GB[(lane * 4 + e) // 8,
                                                                                (lane * 4 + e) % 8])))
    compute = Allocate(FA, Allocate(FB, Allocate(FC, seq(
        For(r, 4, Store(FC, (r,), Const(0.0, "float32"))),
        Intrinsic(ldmatrix_name(4, False), (BufferRef(FA, (0,)), BufferRef(SA, (t % 16, (t // 16) * 8)))),
        Intrinsic(ldmatrix_name(2, True), (BufferRef(FB, (0,)), BufferRef(SB, (t % 16, 0)))),
        Intrinsic(mma_name(dt), (BufferRef(FC, (0,)), BufferRef(FA, (0,)), BufferRef(FB, (0,)), BufferRef(FC, (0,)))),
        For(r, 4, Store(D, (t, r), FC[r]))))))
    body = seq(IfThenElse(t >= 32, fill), Barrier() if barrier else None, IfThenElse(t < 32, compute))
    return Kernel("warps", (GA, GB, D), Allocate(SA, Allocate(SB, For(t, 64, body, "threadIdx.x"))), target="cuda")


def test_race_between_warps_around_ldmatrix_and_mma():
    from tessel.ir.intrinsics import ACC

    rng = np.random.default_rng(3)
    ga, gb = rng.standard_normal((16, 16)).astype(np.float16), rng.standard_normal((16, 8)).astype(np.float16)
    d = np.zeros((32, 4), np.float32)
    with pytest.raises(RaceError, match=r"shared buffer 'S[AB]' .*: read by \(block \(0, 0, 0\), thread "
                                        r"\(\d+, 0, 0\)\) at 'ldmatrix.* earlier write by .*thread "
                                        r"\((3[2-9]|[4-6]\d), 0, 0\)\) at 'store S[AB]"):
        run(_warps_ldmatrix_mma(False), ga, gb, d)
    run(_warps_ldmatrix_mma(True), ga, gb, d)
    want = ga.astype(np.float64) @ gb.astype(np.float64)
    rows, cols = ACC.table()
    np.testing.assert_allclose(d, want[rows, cols], rtol=1e-5, atol=1e-5)


def test_blocks_racing_on_global_memory():
    """Block b writes O[b] and reads O[b + 1]: the blocks are unordered, whatever order they run in."""
    O, A = Buffer("O", (5,)), Buffer("A", (4,))
    b = Var("b")
    k = Kernel("neighbours", (A, O), For(b, 4, seq(Store(O, (b,), A[b]), Store(O, (b + 1,), O[b + 1] + 1.0)),
                                          "blockIdx.x"), target="cuda")
    with pytest.raises(RaceError, match=r"global buffer 'O' element \(\d,\): .* by \(block \(\d, 0, 0\), .*"
                                        r"different blocks of a grid are unordered"):
        run(k, np.ones(4, np.float32), np.zeros(5, np.float32))
    fine = Kernel("own", (A, O), For(b, 4, seq(Store(O, (b,), A[b]), Store(O, (b,), O[b] + 1.0)), "blockIdx.x"),
                  target="cuda")
    a, o = np.random.default_rng(4).standard_normal(4).astype(np.float32), np.zeros(5, np.float32)
    run(fine, a, o)
    np.testing.assert_array_equal(o[:4], a + 1)


def _atomic_add(ctx: Context, ref, value):
    ctx.write(ctx.actor(0), ref, (1,), atomic=True)
    ref.region((1,))[0] += value


def _plain_add(ctx: Context, ref, value):
    ctx.write(ctx.actor(0), ref, (1,))
    ref.region((1,))[0] += value


def test_atomics_from_different_blocks_do_not_race():
    O, A = Buffer("O", (1,)), Buffer("A", (6,))
    b = Var("b")
    impls = {"add": IntrinsicImpl(_atomic_add, with_context=True),
             "plain": IntrinsicImpl(_plain_add, with_context=True)}
    a = np.random.default_rng(5).standard_normal(6).astype(np.float32)
    for name in ("add", "plain"):
        k = Kernel("red", (A, O), For(b, 6, Intrinsic(name, (BufferRef(O, (0,)), A[b])), "blockIdx.x"), target="cuda")
        o = np.zeros(1, np.float32)
        if name == "add":
            Interpreter(impls).run(k, a, o)
            np.testing.assert_allclose(o[0], a.sum(), rtol=1e-5)
        else:
            with pytest.raises(RaceError, match="different blocks"):
                Interpreter(impls).run(k, a, o)


def _cp_async_kernel(wait: bool, barrier: bool, neighbour: bool) -> Kernel:
    """Each thread cp.asyncs 4 floats of G into S, [waits], [barrier], reads its own (or the next
    thread's) 4 floats back into O."""
    n = 8
    G, O, S = Buffer("G", (n, 4)), Buffer("O", (n, 4)), Buffer("S", (n, 4), "float32", "shared")
    t, e = Var("t"), Var("e")
    src = (t + 1) % n if neighbour else t
    body = seq(Intrinsic(copy_name("cg", 16), (BufferRef(S, (t, 0)), BufferRef(G, (t, 0)))), COMMIT,
               WAIT0 if wait else None, Barrier() if barrier else None, For(e, 4, Store(O, (t, e), S[src, e])))
    return Kernel("cpa", (G, O), Allocate(S, For(t, n, body, "threadIdx.x")), target="cuda")


def test_read_before_its_cp_async_wait():
    g = np.random.default_rng(6).standard_normal((8, 4)).astype(np.float32)
    o = np.zeros((8, 4), np.float32)
    with pytest.raises(RaceError, match=r"read by \(block \(0, 0, 0\), thread \((\d), 0, 0\)\) at 'load S.*earlier "
                                        r"write by async proxy of \(block \(0, 0, 0\), thread \(\1, 0, 0\)\) at "
                                        r"'cp.async.cg.shared.global.16 #1': read before its cp.async wait"):
        run(_cp_async_kernel(wait=False, barrier=True, neighbour=False), g, o)
    # its own copy after the wait: fine without a barrier; the neighbour's needs the barrier too
    run(_cp_async_kernel(wait=True, barrier=False, neighbour=False), g, o)
    np.testing.assert_array_equal(o, g)
    for seed in range(4):  # met from either side: the neighbour reads first, or its copy is issued first
        with pytest.raises(RaceError, match=r"(cp.async.*load S|load S.*cp.async).*(without a wait for the "
                                            r"cp.async then a barrier|no barrier orders them)"):
            run(_cp_async_kernel(wait=True, barrier=False, neighbour=True), g, o, seed=seed)
    run(_cp_async_kernel(wait=True, barrier=True, neighbour=True), g, o)
    np.testing.assert_array_equal(o, np.roll(g, -1, axis=0))
    # without race checking the early read sees the poison the fresh shared buffer holds
    run(_cp_async_kernel(wait=False, barrier=True, neighbour=False), g, o, race_check=False)
    assert np.isnan(o).all()


def _last_writer(n: int, barrier: bool) -> Kernel:
    O, t = Buffer("O", (1,), "int32"), Var("t")
    return Kernel("last", (O,), For(t, n, seq(Barrier() if barrier else None, Store(O, (0,), t)), "threadIdx.x"),
                  target="cuda")


@pytest.mark.parametrize("barrier", [False, True])
def test_seeds_vary_the_order_and_reproduce_it(barrier):
    """Every thread stores its id to O[0] (a race, so unchecked): the survivor is the thread that
    ran last. Linear order would always leave 63."""
    k = _last_writer(64, barrier)
    last = {}
    for seed in range(8):
        o = np.zeros(1, np.int32)
        run(k, o, seed=seed, race_check=False)
        last[seed] = int(o[0])
        again = np.zeros(1, np.int32)
        run(k, again, seed=seed, race_check=False)
        assert again[0] == o[0]
    assert len(set(last.values())) > 2 and set(last.values()) != {63}
    with pytest.raises(RaceError, match="'O' element \\(0,\\)"):
        run(k, np.zeros(1, np.int32))


def _flag_impls():
    """A producer's `signal` and a consumer's blocking `wait_flag`, on release / acquire."""
    def signal(ctx: Context):
        ctx.release(ctx.actor(0), "flag")
        ctx.state["flag"] = True

    def ready(ctx: Context):
        return ctx.state.get("flag", False)

    def wait(ctx: Context):
        ctx.acquire(ctx.actor(0), "flag")

    def no_acquire(ctx: Context):
        pass

    return {"signal": IntrinsicImpl(signal, with_context=True),
            "wait_flag": IntrinsicImpl(wait, with_context=True, ready=ready),
            "wait_blind": IntrinsicImpl(no_acquire, with_context=True, ready=ready),
            "never": IntrinsicImpl(no_acquire, with_context=True, ready=lambda ctx: False)}


def _producer_consumer(wait: str) -> Kernel:
    """Warp 1 (producer) fills S and signals; warp 0 (consumer) first does its own work, then waits
    for the flag and reads S; no block barrier at all (warp specialisation)."""
    A, O, P, S = Buffer("A", (32,)), Buffer("O", (32,)), Buffer("P", (32,)), Buffer("S", (32,), "float32", "shared")
    t = Var("t")
    producer = seq(Store(S, (t - 32,), A[t - 32] * 2.0), Intrinsic("signal", ()))
    consumer = seq(Store(P, (t,), A[t] + 1.0), Intrinsic(wait, ()), Store(O, (t,), S[(t + 3) % 32]))
    body = IfThenElse(t >= 32, producer, consumer)
    return Kernel("ws", (A, O, P), Allocate(S, For(t, 64, body, "threadIdx.x")), target="cuda")


def test_warp_specialised_producer_and_consumer():
    a = np.random.default_rng(7).standard_normal(32).astype(np.float32)
    o, p = np.zeros(32, np.float32), np.zeros(32, np.float32)
    interp = Interpreter(_flag_impls())
    for seed in range(3):
        interp.run(_producer_consumer("wait_flag"), a, o, p, seed=seed)
        np.testing.assert_array_equal(o, np.roll(a * 2, -3))
        np.testing.assert_array_equal(p, a + 1)
    # a wait that blocks but does not acquire orders nothing: the read races with the producer
    with pytest.raises(RaceError, match=r"'S' element .* read by .* earlier write by"):
        interp.run(_producer_consumer("wait_blind"), a, o, p)


def test_deadlock_names_each_wait():
    O, t = Buffer("O", (64,)), Var("t")
    body = seq(IfThenElse(t < 32, Intrinsic("never", ()), Barrier()), Store(O, (t,), Const(1.0, "float32")))
    k = Kernel("stuck", (O,), For(t, 64, body, "threadIdx.x"), target="cuda")
    with pytest.raises(ExecutionError, match=r"deadlock.*threads \(linear\) 0-31 blocked at never #1; "
                                             r"threads \(linear\) 32-63 wait at barrier #2.*seed 9"):
        Interpreter(_flag_impls()).run(k, np.zeros(64, np.float32), seed=9)


def _syncwarp(ctx: Context, lanes):
    pass  # declared syncs=True: the scheduler orders the warp's lanes


def test_collectives_are_a_rendezvous_and_only_a_syncing_one_orders_memory():
    """Lanes of a warp reading each other's shared-memory writes after a shuffle race (as on the
    GPU: a shuffle is no memory barrier); after a __syncwarp-like collective (syncs=True) they do
    not, but the other warp's writes are still unordered."""
    from tessel.ir.intrinsics import shfl_name

    O, S, L = Buffer("O", (64,)), Buffer("S", (64,), "float32", "shared"), Buffer("L", (1,), "float32", "local")
    t = Var("t")
    impls = {"syncwarp": IntrinsicImpl(_syncwarp, "warp", with_context=True, syncs=True),
             shfl_name("bfly"): interp_registry()[shfl_name("bfly")]}

    def kernel(sync: str, other_warp: bool) -> Kernel:
        shfl = Intrinsic(shfl_name("bfly"), (BufferRef(L, (0,)), Const(1.0, "float32"), Const(1, "int32")))
        call = Intrinsic("syncwarp", ()) if sync == "syncwarp" else Allocate(L, shfl)
        src = (t + 32) % 64 if other_warp else (t // 32) * 32 + (t + 1) % 32
        body = seq(Store(S, (t,), Cast("float32", t)), call, Store(O, (t,), S[src]))
        return Kernel("sh", (O,), Allocate(S, For(t, 64, body, "threadIdx.x")), target="cuda")

    o = np.zeros(64, np.float32)
    Interpreter(impls).run(kernel("syncwarp", False), o)
    np.testing.assert_array_equal(o, (np.arange(64) // 32) * 32 + (np.arange(64) + 1) % 32)
    for sync, other in (("shfl", False), ("syncwarp", True)):
        with pytest.raises(RaceError, match="'S' element"):
            Interpreter(impls).run(kernel(sync, other), o)


def test_blocks_run_in_a_seeded_order():
    """Each block stores its index to O[0] (a race between blocks, so unchecked): the survivor is
    the block that ran last, which varies with the seed and repeats with it."""
    O, b = Buffer("O", (1,), "int32"), Var("b")
    k = Kernel("grid", (O,), For(b, 16, Store(O, (0,), b), "blockIdx.x"), target="cuda")
    last = []
    for seed in (0, 1, 2, 3, 0):
        o = np.zeros(1, np.int32)
        run(k, o, seed=seed, race_check=False)
        last.append(int(o[0]))
    assert last[0] == last[4] and len(set(last)) > 1


def _peer_load(ctx: Context, dst, src, rank):
    peer = ctx.peer_ref(src, int(rank))
    ctx.read(ctx.actor(0), peer, (1,))
    dst.region((1,))[0] = peer.region((1,))[0]


def _cluster_sync(ctx: Context, lanes):
    assert len(lanes) == ctx.cluster_size * 8  # every thread of the cluster, synchronised by the scheduler


CLUSTER_IMPLS = {"peer_load": IntrinsicImpl(_peer_load, with_context=True),
                 "cluster_sync": IntrinsicImpl(_cluster_sync, "cluster", with_context=True, syncs=True)}


def _cluster_swap(sync: str | None) -> Kernel:
    """Blocks of a 2-block cluster swap their halves through distributed shared memory: each
    thread writes S[t], [syncs], then reads S[t] of the other block of its cluster."""
    A, O = Buffer("A", (32,)), Buffer("O", (32,))
    S, L = Buffer("S", (8,), "float32", "shared"), Buffer("L", (1,), "float32", "local")
    b, t = Var("b"), Var("t")
    step = {"cluster": Intrinsic("cluster_sync", ()), "block": Barrier(), None: None}[sync]
    body = seq(Store(S, (t,), A[b * 8 + t]), step,
               Allocate(L, seq(Intrinsic("peer_load", (BufferRef(L, (0,)), BufferRef(S, (t,)), 1 - b % 2)),
                               Store(O, (b * 8 + t,), L[0]))))
    return Kernel("swap", (A, O), For(b, 4, Allocate(S, For(t, 8, body, "threadIdx.x")), "blockIdx.x"),
                  target="cuda", launch=Launch((4, 1, 1), (8, 1, 1), 0, (2, 1, 1)))


def test_cluster_blocks_share_memory_through_peer_refs():
    a = np.random.default_rng(8).standard_normal(32).astype(np.float32)
    o = np.zeros(32, np.float32)
    interp = Interpreter(CLUSTER_IMPLS)
    for seed in range(3):
        interp.run(_cluster_swap("cluster"), a, o, seed=seed)
        np.testing.assert_array_equal(o, a.reshape(2, 2, 8)[:, ::-1].reshape(-1))
    # a block barrier orders one block only: reading the peer's shared memory still races
    for sync in ("block", None):
        with pytest.raises(RaceError, match=r"shared buffer 'S' element \(\d,\): .*block \((\d), 0, 0\).*block "
                                            r"\((?!\1)\d, 0, 0\).*no barrier orders them"):
            interp.run(_cluster_swap(sync), a, o)


def _shared_atomic(ctx: Context, ref):
    ctx.write(ctx.actor(0), ref, (1,), atomic=True)
    ref.region((1,))[0] += 1


def test_atomics_race_with_plain_accesses_but_not_with_each_other():
    """Thread 0 initialises S[0] (a plain write) and then adds to it atomically; the other threads
    add atomically too. Without a barrier after the init their atomics race with the init (even
    though thread 0's own atomic came last); with it they do not race with each other, but a plain
    read concurrent with them does."""
    O, S, t = Buffer("O", (1,)), Buffer("S", (1,), "float32", "shared"), Var("t")
    impls = {"atom": IntrinsicImpl(_shared_atomic, with_context=True)}

    def kernel(barrier: bool, plain_read: bool) -> Kernel:
        add = Intrinsic("atom", (BufferRef(S, (0,)),))
        body = seq(IfThenElse(t.eq(0), seq(Store(S, (0,), Const(0.0, "float32")), add)),
                   Barrier() if barrier else None, IfThenElse(t > 0, add),
                   IfThenElse(t.eq(1), Store(O, (0,), S[0])) if plain_read else None,
                   Barrier(), IfThenElse(t.eq(0), Store(O, (0,), S[0])))
        return Kernel("atomics", (O,), Allocate(S, For(t, 8, body, "threadIdx.x")), target="cuda")

    o = np.zeros(1, np.float32)
    for seed in range(3):
        Interpreter(impls).run(kernel(True, False), o, seed=seed)
        assert o[0] == 8
        with pytest.raises(RaceError, match=r"'S' element \(0,\): (atomic write by .* earlier write by \(block "
                                            r"\(0, 0, 0\), thread \(0, 0, 0\)\) at 'store S\[0\]|write by \(block "
                                            r"\(0, 0, 0\), thread \(0, 0, 0\)\) at 'store S\[0\].* earlier atomic)"):
            Interpreter(impls).run(kernel(False, False), o, seed=seed)
        with pytest.raises(RaceError, match=r"'S' element \(0,\): (read by .* earlier atomic write|atomic write by .*"
                                            r"earlier read)"):
            Interpreter(impls).run(kernel(True, True), o, seed=seed)


def _replay(ops, vectorised: bool, threads: int = 4):
    """Run a list of accesses / syncs against a fresh tracker; the index of the op that raised
    (or None). `vectorised`: regions go through Tracker.access with per-element actor arrays (the
    numpy path), else element by element through the scalar hooks."""
    from tessel.ir.interp.race import Tracker

    tr = Tracker("k", 0, ["site"])
    unit = tr.unit([(0, 0, 0)], [(t, 0, 0) for t in range(threads)])
    buf = Buffer("S", (6,), "float32", "shared")
    s = tr.shadow(np.zeros(6, np.float32), buf, unit)
    rd, wr = tr.shadow_hooks(unit, s)
    for n, (op, actor, elems) in enumerate(ops):
        try:
            if op == "sync":
                unit.sync(list(elems))
            elif op == "release":
                unit.release(actor, "key")
            elif op == "acquire":
                unit.acquire(actor, "key")
            elif vectorised:
                flat = np.array(elems)
                tr.access(unit, s, np.full(flat.size, actor), flat, 0, op != "read", op == "atomic")
            else:
                for i in elems:
                    rd(i, 0, actor) if op == "read" else wr(i, 0, actor, op == "atomic")
        except RaceError:
            return n
    return None


def test_vectorised_and_scalar_checks_agree_on_random_histories():
    rng = np.random.default_rng(9)
    outcomes = set()
    for _ in range(300):
        ops = []
        for _ in range(int(rng.integers(2, 14))):
            kind = rng.choice(["read", "read", "write", "atomic", "sync", "release", "acquire"])
            actor = int(rng.integers(0, 4))
            if kind == "sync":
                elems = tuple(sorted(set(rng.integers(0, 4, 3).tolist())))
            else:
                elems = tuple(sorted(set(rng.integers(0, 6, int(rng.integers(1, 4))).tolist())))
            ops.append((str(kind), actor, elems))
        got = _replay(ops, True), _replay(ops, False)
        assert got[0] == got[1], ops
        outcomes.add(got[0] is None)
    assert outcomes == {True, False}  # both racy and race-free histories were drawn


def _oracle(ops, threads: int):
    """The first op that races with any earlier access (brute force over the whole history, with
    the same vector clocks), or None: what FastTrack's epochs and slots must reproduce."""
    from tessel.ir.interp.race import Unit

    unit = Unit(0, [(0, 0, 0)], [(t, 0, 0) for t in range(threads)])
    history = []  # (element, actor, epoch clock, kind)
    for n, (op, actor, elems) in enumerate(ops):
        if op == "sync":
            unit.sync(list(elems))
            continue
        if op in ("release", "acquire"):
            getattr(unit, op)(actor, "key")
            continue
        for i in elems:
            for j, a, c, kind in history:
                conflict = "write" in (kind, op) or {kind, op} == {"read", "atomic"}
                if j == i and a != actor and conflict and unit.clock[actor, a] < c:
                    return n
        history.extend((i, actor, int(unit.clock[actor, actor]), op) for i in elems)
    return None


@pytest.mark.parametrize("threads", [4, 8])  # 8 threads overflow the read slots into the spill dict
def test_the_checker_reports_exactly_the_first_racing_access(threads):
    rng = np.random.default_rng(10 + threads)
    found = set()
    for _ in range(400):
        ops = []
        for _ in range(int(rng.integers(2, 20))):
            kind = str(rng.choice(["read", "read", "read", "read", "write", "atomic", "atomic", "sync", "release",
                                   "acquire"]))
            actor = int(rng.integers(0, threads))
            if kind == "sync":
                elems = tuple(sorted(set(rng.integers(0, threads, threads // 2 + 1).tolist())))
            else:
                elems = tuple(sorted(set(rng.integers(0, 3, int(rng.integers(1, 3))).tolist())))
            ops.append((kind, actor, elems))
        want = _oracle(ops, threads)
        assert _replay(ops, False, threads) == want, ops
        assert _replay(ops, True, threads) == want, ops
        found.add(want is None)
    assert found == {True, False}
