"""mbarrier: barrier objects in shared memory, with phases, arrival counts and transaction bytes.

A barrier is one element of a shared `int64` buffer (printed `long long`; PTX's `.b64` object).
IR forms (every `bar` operand is `BufferRef(shared int64 buffer, index)`):

- `mbarrier.init.shared.b64 (bar, count)`: one thread makes the barrier expect `count` arrivals
  per phase. Other threads may use it only after a barrier (`__syncthreads`) orders them after
  the init (the init is a plain write of the element; every later use is an atomic access).
- `mbarrier.arrive.shared.b64 (bar)`: one arrival on the current phase (a *release*: what the
  thread did before is visible to whoever waits for this phase).
- `mbarrier.arrive.expect_tx.shared.b64 (bar, nbytes)`: add `nbytes` to the phase's pending
  transaction count, then arrive (the TMA producer's call before or after it issues copies).
- `mbarrier.expect_tx.shared.b64 (bar, nbytes)`: add transaction bytes without arriving.
- `mbarrier.try_wait.parity.shared.b64 (bar, parity)`: block until the phase of parity `parity`
  has completed (an *acquire*). A phase completes when all `count` arrivals came and its
  transaction count is back to zero (asynchronous copies complete bytes: tma.py). The barrier
  starts in phase 0, so waiting on parity 1 of a fresh barrier returns at once (the usual start
  of a producer waiting on an "empty" barrier). The CUDA text is a spin loop on try_wait.
- `mbarrier.try_wait.parity.acquire.cluster.shared.b64 (bar, parity)`: the same wait with
  cluster-scope acquire semantics: it pairs with other CTAs' `arrive.release.cluster` (remote
  arrives), so what those CTAs wrote to global or shared memory before arriving is visible after it.
  (The interpreter orders both alike: a waiter acquires every arrival of the phase.)
- `mbarrier.arrive.cluster.shared.b64 (bar, cta)`: arrive on the barrier at the same place in
  CTA `cta` of the cluster (mapa + arrive.release.cluster), as consumers of a multicast load do.
- `fence.mbarrier_init.release.cluster`: makes inits visible to the cluster (no-op here).

In the interpreter, copies that complete on a barrier are delivered lazily: their bytes land in
shared memory only when some thread checks the phase (a wait) or uses the barrier again, so a
thread that reads the destination without waiting reads poison (and, with race checking, the
read races with the copy engine's write).

Example:
    >>> [e.name for e in entries()][:2]
    ['mbarrier.init.shared.b64', 'mbarrier.arrive.shared.b64']
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.intrinsics import hb
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand

INIT = "mbarrier.init.shared.b64"
ARRIVE = "mbarrier.arrive.shared.b64"
ARRIVE_TX = "mbarrier.arrive.expect_tx.shared.b64"
EXPECT_TX = "mbarrier.expect_tx.shared.b64"
WAIT = "mbarrier.try_wait.parity.shared.b64"
WAIT_CLUSTER = "mbarrier.try_wait.parity.acquire.cluster.shared.b64"
ARRIVE_CLUSTER = "mbarrier.arrive.cluster.shared.b64"
FENCE_INIT = "fence.mbarrier_init.release.cluster"

BAR = Operand("bar", "readwrite", elems=1, scopes=("shared",), dtypes=("int64",))
INT = ("int32", "int64")


@dataclass
class Barrier:
    """One barrier's state: expected arrivals per phase, arrivals still missing, transaction
    bytes still missing (before the copies in `transfers` are delivered), completed phases."""

    name: str
    count: int
    missing: int
    tx: int = 0
    phase: int = 0
    transfers: list = field(default_factory=list)  # (nbytes, deliver(ctx) -> None)

    def completable(self) -> bool:
        return self.missing == 0 and self.tx == sum(n for n, _ in self.transfers)


def _key(ref) -> tuple:
    return ("mbarrier", id(ref.array), hb.flat_start(ref))


def phase_key(ref, phase: int) -> tuple:
    """The sync object of phase `phase` of the barrier at `ref` (release/acquire key)."""
    return _key(ref) + (phase,)


def state(ctx, ref, what: str) -> Barrier:
    """The barrier at `ref`; ExecutionError when it was never initialised."""
    bar = hb.cluster_state(ctx).get(_key(ref))
    if bar is None:
        raise ExecutionError(f"{what}: mbarrier '{ref.buffer.name}'{list(ref.start)} is used before "
                             f"mbarrier.init")
    return bar


def _complete(ctx, ref, bar: Barrier) -> None:
    """Deliver the pending copies and close the phase, if everything it waits for is in."""
    if bar.missing == 0 and bar.tx < sum(n for n, _ in bar.transfers):
        raise ExecutionError(f"mbarrier '{bar.name}' phase {bar.phase}: copies complete "
                             f"{sum(n for n, _ in bar.transfers)} bytes but only {bar.tx} were expected "
                             f"(expect_tx too small)")
    if not bar.completable():
        return
    t = hb.track(ctx)
    key = phase_key(ref, bar.phase)
    for _, deliver in bar.transfers:
        actor = deliver(ctx)
        t.release(actor, key)
    bar.transfers = []
    bar.phase += 1
    bar.missing, bar.tx = bar.count, 0


def add_transfer(ctx, ref, nbytes: int, deliver, actor) -> None:
    """An asynchronous copy of `nbytes` by `actor` (a copy engine) that completes on the barrier
    at `ref` (TMA's complete_tx): `deliver(ctx)` writes the data and returns the writing actor;
    it runs when the phase completes."""
    bar = state(ctx, ref, "complete_tx")
    _touch(ctx, ref, actor)  # the engine updates the barrier word (ordered after its init?)
    bar.transfers.append((int(nbytes), deliver))


def _touch(ctx, ref, actor) -> None:
    hb.track(ctx).write(actor, ref, (1,) * ref.buffer.ndim, atomic=True)


def _init(ctx, ref, count):
    count = int(count)
    if count < 1:
        raise ExecutionError(f"{INIT}: arrival count {count} must be positive")
    t = hb.track(ctx)
    t.write(t.actor(0), ref, (1,) * ref.buffer.ndim)
    hb.cluster_state(ctx)[_key(ref)] = Barrier(f"{ref.buffer.name}{list(ref.start)}", count, count)


def arrive_on(ctx, ref, actor, nbytes: int = 0, arrive: bool = True) -> None:
    """Arrive (and/or expect `nbytes`) on the barrier at `ref` as `actor` (also used by tma.py)."""
    bar = state(ctx, ref, ARRIVE)
    _complete(ctx, ref, bar)  # a completable phase closes before the barrier is used again
    _touch(ctx, ref, actor)
    bar.tx += int(nbytes)
    if arrive:
        if bar.missing == 0:
            raise ExecutionError(f"mbarrier '{bar.name}': more arrivals than its count {bar.count} in phase "
                                 f"{bar.phase}")
        hb.track(ctx).release(actor, phase_key(ref, bar.phase))
        bar.missing -= 1
    if bar.missing == 0 and not bar.transfers:
        _complete(ctx, ref, bar)


def _arrive(ctx, ref):
    t = hb.track(ctx)
    arrive_on(ctx, ref, t.actor(0))


def _arrive_tx(ctx, ref, nbytes):
    t = hb.track(ctx)
    arrive_on(ctx, ref, t.actor(0), int(nbytes))


def _expect_tx(ctx, ref, nbytes):
    t = hb.track(ctx)
    arrive_on(ctx, ref, t.actor(0), int(nbytes), arrive=False)


def _arrive_cluster(ctx, ref, cta):
    t = hb.track(ctx)
    arrive_on(ctx, hb.peer_ref(ctx, ref, int(cta)), t.actor(0))


def _wait_ready(ctx, ref, parity) -> bool:
    bar = state(ctx, ref, WAIT)
    _complete(ctx, ref, bar)
    return bar.phase % 2 != int(parity) % 2


def _wait(ctx, ref, parity):
    bar = state(ctx, ref, WAIT)
    t = hb.track(ctx)
    me = t.actor(0)
    _touch(ctx, ref, me)
    done = bar.phase - 1 if (bar.phase - 1) % 2 == int(parity) % 2 else bar.phase - 2
    if done >= 0:  # (waiting on parity 1 of a fresh barrier acquires nothing)
        t.acquire(me, phase_key(ref, done))


def _fence_init(ctx):
    return None


HEADER = r"""namespace tessel {
// mbarrier objects: one 64-bit word of shared memory each (printed long long, PTX .b64).
__device__ __forceinline__ void mbar_init(long long* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(long long* bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" :: "r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(long long* bar, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;\n"
               :: "r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(long long* bar, int bytes) {
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n"
               :: "r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(unsigned addr, int parity) {
  unsigned ok;
  asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 p, [%1], %2;\n"
               " selp.u32 %0, 1, 0, p;\n}\n" : "=r"(ok) : "r"(addr), "r"(parity) : "memory");
  return ok != 0;
}
// Blocks until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(long long* bar, int parity) {
  const unsigned addr = smem_addr(bar);
  while (!mbar_try_wait(addr, parity)) {
  }
}
__device__ __forceinline__ bool mbar_try_wait_cluster(unsigned addr, int parity) {
  unsigned ok;
  asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
               " selp.u32 %0, 1, 0, p;\n}\n" : "=r"(ok) : "r"(addr), "r"(parity) : "memory");
  return ok != 0;
}
// The same wait, acquiring at cluster scope (pairs with remote arrive.release.cluster).
__device__ __forceinline__ void mbar_wait_cluster(long long* bar, int parity) {
  const unsigned addr = smem_addr(bar);
  while (!mbar_try_wait_cluster(addr, parity)) {
  }
}
// Arrive on the barrier at the same shared offset in CTA `cta` of the cluster.
__device__ __forceinline__ void mbar_arrive_cluster(long long* bar, int cta) {
  asm volatile("{\n .reg .b32 ra;\n mapa.shared::cluster.u32 ra, %0, %1;\n"
               " mbarrier.arrive.release.cluster.shared::cluster.b64 _, [ra];\n}\n"
               :: "r"(smem_addr(bar)), "r"(cta) : "memory");
}
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
}  // namespace tessel
"""


def _value(name, const=False):
    return Operand(name, "value", dtypes=INT, const=const)


def entries() -> list[IntrinsicDef]:
    doc = __doc__.split("\n\n")[1] + "\n\n" + __doc__.split("\n\n")[2]
    cheap = Cost(cycles=1.0)
    return [
        IntrinsicDef(INIT, "thread", (BAR, _value("count")), hb.impl(_init),
                     lambda b, n: f"tessel::mbar_init({b}, {n});", HEADER, cheap, doc),
        IntrinsicDef(ARRIVE, "thread", (BAR,), hb.impl(_arrive), lambda b: f"tessel::mbar_arrive({b});", HEADER,
                     cheap, doc),
        IntrinsicDef(ARRIVE_TX, "thread", (BAR, _value("nbytes")), hb.impl(_arrive_tx),
                     lambda b, n: f"tessel::mbar_arrive_expect_tx({b}, {n});", HEADER, cheap, doc),
        IntrinsicDef(EXPECT_TX, "thread", (BAR, _value("nbytes")), hb.impl(_expect_tx),
                     lambda b, n: f"tessel::mbar_expect_tx({b}, {n});", HEADER, cheap, doc),
        IntrinsicDef(WAIT, "thread", (BAR, _value("parity")), hb.impl(_wait, ready=_wait_ready),
                     lambda b, p: f"tessel::mbar_wait({b}, {p});", HEADER, Cost(cycles=20.0), doc),
        IntrinsicDef(WAIT_CLUSTER, "thread", (BAR, _value("parity")), hb.impl(_wait, ready=_wait_ready),
                     lambda b, p: f"tessel::mbar_wait_cluster({b}, {p});", HEADER, Cost(cycles=20.0), doc),
        IntrinsicDef(ARRIVE_CLUSTER, "thread", (BAR, _value("cta")), hb.impl(_arrive_cluster),
                     lambda b, c: f"tessel::mbar_arrive_cluster({b}, {c});", HEADER, Cost(cycles=4.0), doc),
        IntrinsicDef(FENCE_INIT, "thread", (), hb.impl(_fence_init), lambda: "tessel::fence_mbarrier_init();",
                     HEADER, cheap, doc),
    ]


__all__ = ["ARRIVE", "ARRIVE_CLUSTER", "ARRIVE_TX", "EXPECT_TX", "FENCE_INIT", "INIT", "WAIT", "WAIT_CLUSTER",
           "Barrier", "add_transfer", "arrive_on", "entries", "phase_key", "state"]
