"""Named barriers, cluster barriers and register reallocation.

- `bar.sync (id, count)`: the thread arrives at hardware barrier `id` (0..15) and waits until
  `count` threads (a multiple of 32) have arrived in this generation (`bar.sync` or
  `bar.arrive`), then the barrier resets. Arrive = release, the wait's return = acquire: each
  waiter happens-after everything the arrivers did before arriving. Barrier 0 is the one
  `__syncthreads` uses: pick ids from 1 when mixing them.
- `bar.arrive (id, count)`: arrive without waiting (a producer signalling consumers).
- `barrier.cluster.arrive` / `barrier.cluster.wait`: every thread of the cluster arrives, then
  waits for all (release / acquire at cluster scope). The interpreter runs each as a cluster-wide
  rendezvous, which orders a little more than the hardware does between the two.
- `setmaxnreg.inc.sync.aligned.u32 N` / `.dec`: the warpgroup's threads raise / lower their
  register allocation to N (24..256, a multiple of 8). It has no meaning in the interpreter; on
  the GPU the kernel needs `__launch_bounds__(threads, 1)` for it to take effect.

Example:
    >>> [e.name for e in entries()][:2]
    ['bar.sync', 'bar.arrive']
"""

from __future__ import annotations

from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.intrinsics import hb
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand


def _bar(ctx, bid: int) -> dict:
    return ctx.state.setdefault(("named-barrier", bid), {"gen": 0, "arrived": 0, "count": None})


def _check(bid, count):
    bid, count = int(bid), int(count)
    if not 0 <= bid < 16:
        raise ExecutionError(f"named barrier id {bid} is not in 0..15")
    if count < 32 or count % 32:
        raise ExecutionError(f"named barrier {bid}: thread count {count} must be a positive multiple of 32")
    return bid, count


def _arrive_at(ctx, bid, count) -> int:
    """Arrive at barrier `bid` (this generation); returns the generation arrived in."""
    st = _bar(ctx, bid)
    if st["count"] is not None and st["count"] != count:
        raise ExecutionError(f"named barrier {bid}: threads arrive with counts {st['count']} and {count}")
    st["count"] = count
    gen = st["gen"]
    t = hb.track(ctx)
    t.release(t.actor(0), ("named-barrier", ctx.block, bid, gen))  # per block (keys are per cluster)
    st["arrived"] += 1
    if st["arrived"] == count:
        st["gen"], st["arrived"], st["count"] = gen + 1, 0, None
    return gen


def _mine(ctx, bid):
    return ("named-barrier-waiter", bid, ctx.threads[0])


def _sync_ready(ctx, bid, count) -> bool:
    bid, count = _check(bid, count)
    me = _mine(ctx, bid)
    if me not in ctx.state:
        ctx.state[me] = _arrive_at(ctx, bid, count)
    return _bar(ctx, bid)["gen"] > ctx.state[me]


def _sync(ctx, bid, count):
    bid, count = _check(bid, count)
    gen = ctx.state.pop(_mine(ctx, int(bid)))
    t = hb.track(ctx)
    t.acquire(t.actor(0), ("named-barrier", ctx.block, bid, gen))


def _arrive(ctx, bid, count):
    bid, count = _check(bid, count)
    _arrive_at(ctx, bid, count)


def _nothing(ctx, lanes):
    return None


def _setmaxnreg(ctx, lanes):
    n = {int(a[0]) for a in lanes}
    if len(n) != 1 or not (24 <= next(iter(n)) <= 256 and next(iter(n)) % 8 == 0):
        raise ExecutionError(f"setmaxnreg: register count {sorted(n)} must be one value in 24..256, a multiple of 8")


HEADER = r"""namespace tessel {
__device__ __forceinline__ void bar_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" :: "r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void bar_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;\n" :: "r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" :: "n"(N));
}
template <int N> __device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" :: "n"(N));
}
}  // namespace tessel
"""


def entries() -> list[IntrinsicDef]:
    doc = __doc__.split("\n\n")[1]
    two = (Operand("id", "value", dtypes=("int32",)), Operand("count", "value", dtypes=("int32",)))
    n_op = (Operand("n", "value", dtypes=("int32",), const=True),)
    return [
        IntrinsicDef("bar.sync", "thread", two, hb.impl(_sync, ready=_sync_ready),
                     lambda i, c: f"tessel::bar_sync({i}, {c});", HEADER, Cost(cycles=20.0), doc),
        IntrinsicDef("bar.arrive", "thread", two, hb.impl(_arrive), lambda i, c: f"tessel::bar_arrive({i}, {c});",
                     HEADER, Cost(cycles=4.0), doc),
        IntrinsicDef("barrier.cluster.arrive", "cluster", (), hb.impl(_nothing, "cluster"),
                     lambda: "tessel::cluster_arrive();", HEADER, Cost(cycles=10.0), doc),
        IntrinsicDef("barrier.cluster.wait", "cluster", (), hb.impl(_nothing, "cluster"),
                     lambda: "tessel::cluster_wait();", HEADER, Cost(cycles=50.0), doc),
        IntrinsicDef("setmaxnreg.inc.sync.aligned.u32", "warpgroup", n_op, hb.impl(_setmaxnreg, "warpgroup"),
                     lambda n: f"tessel::setmaxnreg_inc<{n}>();", HEADER, Cost(cycles=1.0), doc),
        IntrinsicDef("setmaxnreg.dec.sync.aligned.u32", "warpgroup", n_op, hb.impl(_setmaxnreg, "warpgroup"),
                     lambda n: f"tessel::setmaxnreg_dec<{n}>();", HEADER, Cost(cycles=1.0), doc),
    ]


__all__ = ["entries"]
