"""Running a translated kernel as a grid of GPU threads, with a seeded random scheduler.

Blocks are grouped into units: one block, or every block of a thread-block cluster
(`Launch.cluster`). Units run one after another in a seeded random order; the threads of a unit
are co-scheduled. Each thread runs the kernel's function with its own `blockIdx` / `threadIdx`.
Without barriers or intrinsics the function is plain and each thread runs to the end, threads in
a seeded random order. With them the function is a generator that yields at each Barrier and
Intrinsic, and the scheduler repeatedly picks a random runnable thread and runs it to its next
yield:

- a thread-scope intrinsic runs at once; one with `ready` (a blocking wait: mbarrier, named
  barrier, ...) runs once `ready(ctx, *args)` is True, else the thread blocks there and is asked
  again when no thread is runnable;
- a warp / warpgroup / block / cluster collective waits until every lane of its group waits at a
  collective of that scope; if they all wait at the same call, the intrinsic runs once with every
  lane's arguments (otherwise the lanes diverge: ExecutionError). It is a rendezvous, not a memory
  barrier (mma.sync, ldmatrix, shuffles order nothing, as on the GPU) unless it orders memory
  (`IntrinsicImpl.syncs`; by default block and cluster collectives do): then its participants,
  and only they, are synchronised;
- a Barrier (__syncthreads) releases the block once every thread of the block waits at it (all
  at the same barrier, none finished: otherwise ExecutionError); it synchronises the block's
  threads, not their async proxies and not other blocks of a cluster;
- when nothing can go on while threads remain, ExecutionError "deadlock" names each thread's wait.

Threads of different roles (producer warps blocked on an mbarrier while consumer warps compute)
make progress independently: only a Barrier needs the whole block. With race checking (race.py)
every shared / tracked global access is checked against the happens-before order these
synchronisations build; the seed (printed in every RaceError and deadlock message) reproduces a
run.

Example (what `tessel.ir.interp.run` does for a threaded kernel):
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var, Cast
    >>> t = Var("t"); B = Buffer("B", (4,), "int32")
    >>> k = Kernel("ids", (B,), For(t, 4, Store(B, (t,), t), "threadIdx.x"))
    >>> import numpy as np
    >>> from tessel.ir.interp import run
    >>> b = np.zeros(4, "int32"); run(k, b, seed=3); b.tolist()
    [0, 1, 2, 3]
"""

from __future__ import annotations

import random

import numpy as np

from tessel.errors import VerifyError
from tessel.ir.interp.intrinsics import SCOPE_LANES, Context, IntrinsicImpl
from tessel.ir.interp.race import RaceError, Tracker
from tessel.ir.interp.runtime import ExecutionError, Ref, shared_alloc
from tessel.ir.interp.translate import BARRIER, Translation

_DONE = ("done",)


def _located(e: ExecutionError, bid: tuple, tid: tuple) -> ExecutionError:
    if isinstance(e, RaceError):
        return e
    return type(e)(f"{e} (block {bid}, thread {tid})")


def _units(grid: tuple, cluster: tuple, kernel: str) -> list[list]:
    """The blocks of each cluster, in cluster-rank order (x fastest)."""
    for g, c, a in zip(grid, cluster, "xyz"):
        if c < 1 or g % c:
            raise VerifyError(f"kernel '{kernel}': cluster {cluster} does not divide the grid {grid} along {a}")
    cx, cy, cz = cluster
    out = []
    for z0 in range(0, grid[2], cz):
        for y0 in range(0, grid[1], cy):
            for x0 in range(0, grid[0], cx):
                out.append([(x0 + x, y0 + y, z0 + z) for z in range(cz) for y in range(cy) for x in range(cx)])
    return out


def run_grid(t: Translation, bufs: list, impls: dict[str, IntrinsicImpl], kernel: str, seed: int | None = None,
             grid: tuple | None = None) -> None:
    """Run every unit of the launch (one block or a cluster), in a seeded random order; race
    checking is on when the translation carries its hooks. `grid`: the launch grid evaluated for
    this run's scalar parameters (default: the translation's, which must then be ints)."""
    if seed is None:
        seed = random.randrange(2**31)
    rng = random.Random(seed)
    bx, by, bz = t.block
    tids = [(x, y, z) for z in range(bz) for y in range(by) for x in range(bx)]
    units = _units(t.grid if grid is None else grid, t.cluster, kernel)
    rng.shuffle(units)
    tracker = Tracker(kernel, seed, t.sites) if t.race else None
    glob: dict = {}  # global-scope buffers the kernel allocates: one per launch
    for bids in units:
        _Unit(t, bufs, impls, kernel, bids, tids, glob, tracker, rng, seed).run()


class _Unit:
    """The co-scheduled threads of one block or cluster; the Context methods land here."""

    def __init__(self, t, bufs, impls, kernel, bids, tids, glob, tracker, rng, seed):
        self.t, self.impls, self.kernel, self.bids, self.tids = t, impls, kernel, bids, tids
        self.rng, self.seed, self.tracker = rng, seed, tracker
        self.nt, self.nb = len(tids), len(bids)
        self.n = self.nt * self.nb
        self.blks = [{} for _ in bids]  # shared buffers, per block
        self.states = [{} for _ in bids]  # intrinsics' private state, per block
        self.cluster_state: dict = {}
        self.race = tracker.unit(bids, tids) if tracker is not None else None
        if tracker is not None:
            unit = self.race
            self.hook_factory = lambda array, buffer: tracker.hooks(unit, array, buffer)
        self.bufs, self.glob = bufs, glob
        self.group_cache: dict = {}

    def hooks(self, i: int):
        """What the generated code of thread `i` gets as `_rc`: (hook factory, its actor id)."""
        if self.race is None:
            return None
        return self.hook_factory, i

    def run(self) -> None:
        t, nt = self.t, self.nt
        try:
            if not t.generator:
                order = list(range(self.n))
                self.rng.shuffle(order)
                for i in order:
                    b, k = divmod(i, nt)
                    try:
                        t.fn(self.bufs, self.bids[b], self.tids[k], self.blks[b], self.glob, self.hooks(i))
                    except ExecutionError as e:
                        raise _located(e, self.bids[b], self.tids[k]) from None
                return
            self.schedule()
        finally:
            if self.tracker is not None:
                self.tracker.end_unit(self.race)

    # -- the scheduler -------------------------------------------------------------------------

    def schedule(self) -> None:
        t, nt, n = self.t, self.nt, self.n
        self.gens = [t.fn(self.bufs, self.bids[i // nt], self.tids[i % nt], self.blks[i // nt], self.glob,
                          self.hooks(i)) for i in range(n)]
        self.waits: list = [None] * n
        self.bar = [0] * self.nb  # threads of each block waiting at a barrier
        self.done = [0] * self.nb
        self.groups: dict = {}  # collective group -> lanes waiting
        self.blocked: list[int] = []
        runnable = self.runnable = list(range(n))
        rng = self.rng
        while True:
            while runnable:
                k = rng.randrange(len(runnable))
                runnable[k], runnable[-1] = runnable[-1], runnable[k]
                self.step(runnable.pop())
            if self.blocked and self.unblock():
                continue
            if sum(self.done) == n:
                return
            raise self.stuck()

    def step(self, i: int) -> None:
        b = i // self.nt
        try:
            event = next(self.gens[i])
        except StopIteration:
            self.waits[i] = _DONE
            self.done[b] += 1
            self.check_block(b)
            return
        except ExecutionError as e:
            raise _located(e, self.bids[b], self.tids[i % self.nt]) from None
        if event[0] == BARRIER:
            self.waits[i] = event
            self.bar[b] += 1
            self.check_block(b)
            return
        impl = self.impls[event[2]]
        if impl.scope == "thread":
            if impl.ready is not None:
                self.waits[i] = event
                self.blocked.append(i)
                return
            self.call(impl, (i,), event[1], event[3], i)
            self.runnable.append(i)
            return
        key, members = self.group(impl.scope, i)
        self.waits[i] = event
        count = self.groups[key] = self.groups.get(key, 0) + 1
        if count == len(members):
            self.groups[key] = 0
            self.collective(impl, members)

    def call(self, impl: IntrinsicImpl, members: tuple, site: str, args: tuple, who: int | None) -> None:
        try:
            if impl.with_context:
                impl.fn(self.context(members, site), *args)
            else:
                impl.fn(*args)
        except ExecutionError as e:
            if who is None:
                raise
            raise _located(e, self.bids[who // self.nt], self.tids[who % self.nt]) from None

    def unblock(self) -> bool:
        """Ask every blocked thread (random order) whether its wait is over; run those that are."""
        progressed = False
        blocked, self.blocked = self.blocked, []
        self.rng.shuffle(blocked)
        for i in blocked:
            event = self.waits[i]
            impl = self.impls[event[2]]
            ctx = self.context((i,), event[1])
            try:
                ok = impl.ready(ctx, *event[3])
            except ExecutionError as e:
                raise _located(e, self.bids[i // self.nt], self.tids[i % self.nt]) from None
            if ok:
                self.waits[i] = None
                self.call(impl, (i,), event[1], event[3], i)
                self.runnable.append(i)
                progressed = True
            else:
                self.blocked.append(i)
        return progressed

    def group(self, scope: str, i: int) -> tuple:
        """The collective group of thread `i` for `scope`: (key, member ids)."""
        out = self.group_cache.get((scope, i))
        if out is None:
            out = self.group_cache[(scope, i)] = self.make_group(scope, i)
        return out

    def make_group(self, scope: str, i: int) -> tuple:
        nt = self.nt
        b, k = divmod(i, nt)
        if scope == "cluster":
            return ("cluster",), range(self.n)
        size = SCOPE_LANES[scope] or nt
        g = k // size
        return (scope, b, g), range(b * nt + g * size, b * nt + min(nt, (g + 1) * size))

    def collective(self, impl: IntrinsicImpl, members) -> None:
        waits = self.waits
        site = waits[members[0]][1]
        if any(waits[m][1] != site for m in members):
            raise self.diverged(members, "every lane of a group must reach the same collective intrinsic")
        if self.race is not None and impl.orders_memory():  # else a rendezvous only: no memory ordering
            self.race.sync(members)
        members = tuple(members)
        self.call(impl, members, site, ([waits[m][3] for m in members],), None)
        for m in members:
            waits[m] = None
        self.runnable.extend(members)

    def check_block(self, b: int) -> None:
        """Release block `b`'s barrier once all its threads wait at it; raise when they diverge."""
        nt = self.nt
        if not self.bar[b] or self.bar[b] + self.done[b] < nt:
            return
        members = range(b * nt, (b + 1) * nt)
        sites = {self.waits[m][1] for m in members if self.waits[m] is not _DONE}
        if self.done[b] or len(sites) > 1:
            raise self.diverged(members, "every thread of a block must reach the same barrier")
        if self.race is not None:
            self.race.sync(members)
        self.bar[b] = 0
        for m in members:
            self.waits[m] = None
        self.runnable.extend(members)

    # -- errors ----------------------------------------------------------------------------------

    def where(self) -> str:
        return f"block {self.bids[0]}" if self.nb == 1 else f"cluster of blocks {self.bids}"

    def diverged(self, members, rule: str) -> ExecutionError:
        return ExecutionError(f"kernel '{self.kernel}', {self.where()}: threads diverge at barriers or collectives: "
                              f"{self.describe(members)}; {rule} (seed {self.seed})")

    def stuck(self) -> ExecutionError:
        live = [i for i in range(self.n) if self.waits[i] is not _DONE]
        return ExecutionError(
            f"kernel '{self.kernel}', {self.where()}: deadlock, threads diverge at barriers or collectives: "
            f"{self.describe(range(self.n))}; no thread can go on ({len(live)} waiting); every thread of a block "
            f"must reach the same barrier, every lane of a group the same collective intrinsic, and every "
            f"blocking wait must be satisfied (seed {self.seed})")

    def describe(self, members) -> str:
        states: dict[str, list[int]] = {}
        blocked = set(self.blocked)
        for i in members:
            w = self.waits[i]
            if w is _DONE:
                label = "finished"
            elif w is None:
                label = "running"
            else:
                label = f"{'blocked' if i in blocked else 'wait'} at {w[1]}"
            states.setdefault(label, []).append(i)
        parts = []
        for label, ids in states.items():
            if len(ids) > 1:
                parts.append(f"threads {_spans(ids)} {label}")
            else:
                b, k = divmod(ids[0], self.nt)
                who = f"thread {self.tids[k]}" if self.nb == 1 else f"block {self.bids[b]} thread {self.tids[k]}"
                parts.append(f"{who} {label}")
        return "; ".join(parts)

    # -- what Context calls ----------------------------------------------------------------------

    def context(self, members: tuple, site: str) -> Context:
        b = members[0] // self.nt
        return Context(self.bids[b], tuple(self.tids[m % self.nt] for m in members), self.states[b],
                       cluster_state=self.cluster_state, cluster_rank=b, cluster_size=self.nb, site=site,
                       actors=members, run=self)

    def async_actor(self, actor: int) -> int:
        a = actor % self.n + self.n
        if self.race is not None:
            self.race.fork(a, actor % self.n)
        return a

    def region(self, ctx: Context, actor: int, ref: Ref, shape, write: bool, atomic: bool) -> None:
        if self.tracker is None:
            return
        s = self.tracker.lookup(ref.array)
        if s is None:
            return
        ref.region(shape)  # bounds check, with its message
        self.tracker.access(self.race, s, actor, _flat(ref.start, tuple(shape), ref.buffer.shape),
                            self.tracker.site(ctx.site), write, atomic)

    def elements(self, ctx: Context, actor, ref: Ref, flat, write: bool, atomic: bool) -> None:
        if self.tracker is None:
            return
        s = self.tracker.lookup(ref.array)
        if s is None:
            return
        flat = np.asarray(flat, np.int64).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= ref.buffer.size):
            raise ExecutionError(f"kernel '{self.kernel}': {ctx.site} accesses buffer '{ref.buffer.name}' at flat "
                                 f"index {int(flat.max() if flat.max() >= ref.buffer.size else flat.min())}, "
                                 f"outside its {ref.buffer.size} elements")
        self.tracker.access(self.race, s, actor, flat, self.tracker.site(ctx.site), write, atomic)

    def lanes(self, ctx: Context, refs, shape, write: bool, atomic: bool = False) -> None:
        if self.tracker is None:
            return
        shape = tuple(shape)
        by_shadow: dict = {}
        lookup = self.tracker.by_array.get
        for lane, ref in enumerate(refs):
            if ref is None:
                continue
            s = lookup(id(ref.array))
            if s is None:
                continue
            start = 0
            for i, d in zip(ref.start, ref.buffer.shape):
                start = start * d + int(i)
            entry = by_shadow.get(id(s))
            if entry is None:
                entry = by_shadow[id(s)] = (s, [], [], ref.buffer.shape)
            entry[1].append(start)
            entry[2].append(ctx.actor(lane))
        if not by_shadow:
            return
        site = self.tracker.site(ctx.site)
        for s, starts, actors, full in by_shadow.values():
            off = _flat((0,) * len(shape), shape, full)
            flat = (np.asarray(starts, np.int64)[:, None] + off[None, :]).reshape(-1)
            self.tracker.access(self.race, s, np.repeat(np.asarray(actors, np.int64), off.size), flat, site, write,
                                atomic)

    def release(self, actor: int, key) -> None:
        if self.race is not None:
            self.race.release(actor, key)

    def acquire(self, actor: int, key) -> None:
        if self.race is not None:
            self.race.acquire(actor, key)

    def sync(self, actors) -> None:
        if self.race is not None:
            self.race.sync(list(actors))

    def peer_ref(self, ctx: Context, ref: Ref, rank: int) -> Ref:
        if not 0 <= rank < self.nb:
            raise ExecutionError(f"kernel '{self.kernel}': {ctx.site} asks for cluster rank {rank}; the cluster has "
                                 f"{self.nb} block(s)")
        mine = self.blks[ctx.cluster_rank]
        for key, arr in mine.items():
            if arr is ref.array:
                other = shared_alloc(self.blks[rank], key, ref.buffer.size, ref.buffer.dtype)
                return Ref(ref.buffer, other, ref.start, ref.kernel)
        raise ExecutionError(f"kernel '{self.kernel}': {ctx.site}: buffer '{ref.buffer.name}' is not a shared buffer "
                             f"of this block, so it has no peer in the cluster")


_OFFSETS: dict = {}


def _flat(start: tuple, shape: tuple, full: tuple) -> np.ndarray:
    """Flat indices of the region `shape` at `start` of a buffer of shape `full`."""
    key = (shape, full)
    off = _OFFSETS.get(key)
    if off is None:
        grids = np.indices(shape).reshape(len(shape), -1)
        off = _OFFSETS[key] = np.ravel_multi_index(grids, full) if len(shape) else np.zeros(1, np.int64)
        if len(_OFFSETS) > 4096:
            _OFFSETS.clear()
    base = 0
    for s, d in zip(start, full):
        base = base * d + int(s)
    return off + base


def _spans(ids: list[int]) -> str:
    """Linear thread ids as compact spans: [0, 1, 2, 5] -> '0-2, 5'."""
    out, start = [], ids[0]
    for a, b in zip(ids, ids[1:] + [None]):
        if b != a + 1:
            out.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return "(linear) " + ", ".join(out)
