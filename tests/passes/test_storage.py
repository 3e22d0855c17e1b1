"""Storage rewriting: allocations sink to their uses; buffers of one scope and dtype allocated by
different statements share one allocation (flattened when their shapes differ); shared buffers
only when barriers order the accesses (both ways inside a loop); buffers that asynchronous
intrinsics name never. Kernels give the same bits after it."""

from __future__ import annotations

import numpy as np

from tessel.ir.interp import run
from tessel.ir.nodes import (
    Allocate, Barrier, Buffer, BufferRef, Const, For, IfThenElse, Intrinsic, Kernel, Seq, Store, Var, walk,
)
from tessel.ir.verify import verify
from tessel.passes.storage import rewrite_storage

OUT = Buffer("OUT", (64,), "float32")
t, r = Var("t"), Var("r")


def allocs(k):
    return [n.buffer for n in walk(k.body) if isinstance(n, Allocate)]


def gpu(body):
    return Kernel("k", (OUT,), For(t, 32, body, "threadIdx.x"), "cuda")


def run_out(k):
    y = np.full(64, 7.0, np.float32)
    run(k, y)
    return y


def f(v):
    return Const(v, "float32")


def uses(buf, slot, value, out_index):
    """Write `value` into buf[slot], then copy it to OUT[out_index]."""
    value = f(value) if isinstance(value, float) else value
    return Seq((Store(buf, slot, value), Store(OUT, (out_index,), buf[slot])))


def test_local_buffers_with_disjoint_lifetimes_share_one_flat_allocation():
    T = Buffer("T", (4,), "float32", "local")
    U = Buffer("U", (2, 3), "float32", "local")
    body = Allocate(T, Allocate(U, Seq((uses(T, (3,), t.astype("float32"), t),
                                        uses(U, (1, 2), t.astype("float32") * 2.0, t + 32)))))
    k = gpu(body)
    out = rewrite_storage(k)
    verify(out)
    (m,) = allocs(out)
    assert m.name == "T" and m.shape == (6,)  # the larger size, one flat dimension
    assert any(isinstance(n, Store) and n.buffer == m and n.indices[0].value == 5 for n in walk(out.body))
    assert run_out(k).tobytes() == run_out(out).tobytes()


def test_overlapping_lifetimes_do_not_merge_and_allocations_sink():
    T = Buffer("T", (1,), "float32", "local")
    U = Buffer("U", (1,), "float32", "local")
    both = Seq((Store(T, (0,), f(1.0)), Store(U, (0,), f(2.0)), Store(OUT, (t,), T[0] + U[0])))
    assert len(allocs(rewrite_storage(gpu(Allocate(T, Allocate(U, both)))))) == 2
    # an allocation used by one statement of a Seq moves into it
    k = gpu(Allocate(T, Seq((Store(OUT, (t + 32,), f(0.5)), uses(T, (0,), 3.0, t)))))
    out = rewrite_storage(k)
    assert isinstance(out.body.body, Seq) and isinstance(out.body.body.stmts[1], Allocate)
    # never into a serial loop: the value carried between iterations would be lost
    carried = Allocate(T, Seq((Store(T, (0,), f(0.0)), For(r, 4, Store(T, (0,), T[0] + 1.0)), Store(OUT, (t,), T[0]))))
    (loop,) = [n for n in walk(rewrite_storage(gpu(carried)).body) if isinstance(n, For) and n.var == r]
    assert not any(isinstance(n, Allocate) for n in walk(loop))


def _shared_pair(with_barrier: bool, in_loop: bool, barrier_after: bool = False):
    S1 = Buffer("S1", (32,), "float32", "shared")
    S2 = Buffer("S2", (32,), "float32", "shared")
    # each thread writes its element and reads its neighbour's: only a barrier makes that safe
    first = Allocate(S1, Seq((Store(S1, (t,), t.astype("float32")), Barrier(),
                              Store(OUT, (t,), S1[(t + 1) % 32]))))
    second = Allocate(S2, Seq((Store(S2, (t,), t.astype("float32") * 3.0), Barrier(),
                               Store(OUT, (t + 32,), OUT[t + 32] + S2[(t + 5) % 32]))))
    stmts = (first,) + ((Barrier(),) if with_barrier else ()) + (second,) + ((Barrier(),) if barrier_after else ())
    body: object = Seq(stmts)
    if in_loop:
        body = For(r, 2, body)
    out = Kernel("k", (OUT,), For(t, 32, Seq((Store(OUT, (t + 32,), f(0.0)), body)), "threadIdx.x"), "cuda")
    return out


def test_shared_buffers_merge_only_across_barriers():
    for with_barrier, in_loop, after, merged in [(True, False, False, True), (False, False, False, False),
                                                 (True, True, False, False), (True, True, True, True)]:
        k = _shared_pair(with_barrier, in_loop, after)
        out = rewrite_storage(k)
        verify(out)
        n = len([b for b in allocs(out) if b.scope == "shared"])
        assert n == (1 if merged else 2), (with_barrier, in_loop, after)
        assert run_out(k).tobytes() == run_out(out).tobytes()
    assert len(allocs(rewrite_storage(_shared_pair(True, False), shared=False))) == 2


def test_buffers_of_asynchronous_intrinsics_keep_their_storage():
    G = Buffer("G", (64,), "float32")
    S1 = Buffer("S1", (4,), "float32", "shared")
    S2 = Buffer("S2", (4,), "float32", "shared")
    L1 = Buffer("L1", (4,), "float32", "local")
    L2 = Buffer("L2", (4,), "float32", "local")

    def step(buf, intr):
        return Allocate(buf, Seq((Intrinsic(intr, (BufferRef(buf, (0,)), BufferRef(G, (0,)))), Barrier())))

    body = Seq((step(S1, "cp.async.cg.shared.global.16"), Barrier(), step(S2, "cp.async.cg.shared.global.16"),
                step(L1, "wgmma.fake"), step(L2, "wgmma.fake")))
    out = rewrite_storage(Kernel("k", (G,), For(t, 32, body, "threadIdx.x"), "cuda"))
    assert len(allocs(out)) == 4
    # a synchronous one (shuffle) may share: same shape
    sh = Seq((Allocate(L1, Intrinsic("shfl.sync.bfly.b32", (BufferRef(L1, (0,)), G[0], 1))),
              Allocate(L2, Intrinsic("shfl.sync.bfly.b32", (BufferRef(L2, (0,)), G[1], 1)))))
    assert len(allocs(rewrite_storage(Kernel("k", (G,), For(t, 32, sh, "threadIdx.x"), "cuda")))) == 1


def test_ifs_and_parameters():
    T = Buffer("T", (1,), "float32", "local")
    k = gpu(Allocate(T, IfThenElse(t < 16, uses(T, (0,), 1.0, t), Store(OUT, (t,), f(0.0)))))
    out = rewrite_storage(k)
    assert isinstance(out.body.body, IfThenElse) and isinstance(out.body.body.then, Allocate)  # sunk into the branch
    assert run_out(k).tobytes() == run_out(out).tobytes()
    assert rewrite_storage(Kernel("k", (OUT,), Store(OUT, (0,), f(1.0)), "cuda")).body == Store(OUT, (0,), f(1.0))


def test_a_name_allocated_twice_is_left_alone():
    T = Buffer("T", (2,), "float32", "local")
    U = Buffer("U", (3,), "float32", "local")
    k = gpu(Seq((Allocate(T, uses(T, (1,), 1.0, t)), Allocate(U, uses(U, (2,), 2.0, t + 32)),
                 Allocate(T, uses(T, (0,), 3.0, t + 32)))))
    out = rewrite_storage(k)
    verify(out)
    assert sorted(b.name for b in allocs(out)) == ["T", "T", "U"]
    assert run_out(k).tobytes() == run_out(out).tobytes()
