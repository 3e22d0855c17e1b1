"""How the interpreter executes intrinsics: who executes each one, and the registry it looks in.

An `Intrinsic(name, args)` statement is looked up by name in a registry, a plain dict from name
to an `IntrinsicImpl` (or to a bare callable, which means a per-thread intrinsic). The scope says
who executes it together:

- "thread": each thread on its own, as soon as it reaches the call: `fn(*args)`;
- "warp" (32 lanes), "warpgroup" (128 lanes), "block" (all threads of the block), "cluster" (all
  threads of the cluster): the threads of the group wait until every one of them has reached the
  same call, then the interpreter calls `fn(lanes)` once, `lanes` being the list of each
  participant's argument tuple in lane order (as a warp-wide `mma.sync` or a block-wide
  collective behaves). Warp and warpgroup collectives order no memory; block and cluster ones
  synchronise their participants (`IntrinsicImpl.syncs` overrides);
- a thread-scope intrinsic with `ready` blocks its thread until `ready(ctx, *args)` is True.

Arguments arrive evaluated: expressions as numpy scalars / Python ints, BufferRefs as `Ref`s
(runtime.py) whose `region(shape)` is a writable, bounds-checked numpy view of the buffer.

An intrinsic declared `with_context=True` receives a `Context` first: the block index, the
participating threads' indices, a dict private to the intrinsics of the block (and one for the
cluster). That is where asynchronous copies (cp.async, TMA) keep what they owe until their wait
intrinsic performs it, so a schedule that forgets the wait reads poison. The Context is also how
an intrinsic reports its shared / global accesses and synchronisation to the race checker
(`read`, `write`, `read_lanes`, `release`, `acquire`, `sync`, `async_actor`; RACE_API.md).

`INTRINSICS` is the default registry: the meaning of every entry of the intrinsic table
(tessel.ir.intrinsics), where each intrinsic's meaning sits next to its CUDA text and cost
(DESIGN.md, "Intrinsics are registry entries").

Example:
    >>> def warp_sum(lanes):  # every lane's Ref receives the sum of all lanes' values
    ...     total = sum(float(v) for v, _ in lanes)
    ...     for _, out in lanes:
    ...         out.region((1,))[0] = total
    >>> impl = IntrinsicImpl(warp_sum, "warp")
    >>> as_impl(impl).scope, as_impl(print).scope
    ('warp', 'thread')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tessel.errors import TesselError

SCOPE_LANES = {"thread": 1, "warp": 32, "warpgroup": 128, "block": None, "cluster": None}  # None: all threads


class Context:
    """What an intrinsic declared `with_context` learns about where it runs, and how it reports
    its memory accesses and synchronisation to the race checker (RACE_API.md).

    block, threads, state: blockIdx, the participants' threadIdx in lane order, a dict private to
    the intrinsics of the block. cluster_state / cluster_rank / cluster_size: the same for the
    cluster (one block: rank 0, size 1). site: the statement site of this call, for messages.
    Actors are ints; `actor(lane)` is participant `lane`'s thread, `async_actor(lane)` its async
    proxy. Without race checking the access and sync methods do nothing.

    >>> ctx = Context((0, 0, 0), ((3, 0, 0),), {})
    >>> ctx.cluster_size, ctx.actor(0) == ctx.actor(0), ctx.site
    (1, True, '?')
    """

    __slots__ = ("_actors", "_run", "block", "cluster_rank", "cluster_size", "cluster_state", "site", "state",
                 "threads")

    def __init__(self, block: tuple, threads: tuple, state: dict, *, cluster_state: dict | None = None,
                 cluster_rank: int = 0, cluster_size: int = 1, site: str = "?", actors=None, run=None):
        self.block, self.threads, self.state = block, threads, state
        self.cluster_state = state if cluster_state is None else cluster_state
        self.cluster_rank, self.cluster_size, self.site = cluster_rank, cluster_size, site
        self._actors = tuple(range(len(threads))) if actors is None else actors
        self._run = run  # the scheduler's unit (gpu.py), None for a stub context

    def actor(self, lane: int) -> int:
        """The actor of participant `lane` (its thread)."""
        return self._actors[lane]

    def async_actor(self, lane: int) -> int:
        """The async proxy of participant `lane`, forked now: it happens-after everything the
        thread did so far (call it when the asynchronous operation is issued)."""
        if self._run is None:
            return self._actors[lane] + 1_000_000
        return self._run.async_actor(self._actors[lane])

    def read(self, actor: int, ref, shape) -> None:
        """Check and record a read of `ref.region(shape)` by `actor`; raises RaceError."""
        if self._run is not None:
            self._run.region(self, actor, ref, shape, False, False)

    def write(self, actor: int, ref, shape, atomic: bool = False) -> None:
        """Check and record a write of `ref.region(shape)` by `actor`; raises RaceError."""
        if self._run is not None:
            self._run.region(self, actor, ref, shape, True, atomic)

    def read_at(self, actor, ref, flat_indices) -> None:
        """As `read`, for flat element indices into `ref.buffer` (actor: int or int array)."""
        if self._run is not None:
            self._run.elements(self, actor, ref, flat_indices, False, False)

    def write_at(self, actor, ref, flat_indices, atomic: bool = False) -> None:
        """As `write`, for flat element indices into `ref.buffer` (actor: int or int array)."""
        if self._run is not None:
            self._run.elements(self, actor, ref, flat_indices, True, atomic)

    def read_lanes(self, refs, shape) -> None:
        """A read of `ref.region(shape)` by each participant, `refs[lane]` for lane 0, 1, ...
        (one vectorised check for a whole warp's operands; None entries are skipped)."""
        if self._run is not None:
            self._run.lanes(self, refs, shape, False)

    def write_lanes(self, refs, shape, atomic: bool = False) -> None:
        """As `read_lanes`, for writes."""
        if self._run is not None:
            self._run.lanes(self, refs, shape, True, atomic)

    def release(self, actor: int, key) -> None:
        """Publish `actor`'s history to sync object `key` (any hashable); then its clock ticks."""
        if self._run is not None:
            self._run.release(actor, key)

    def acquire(self, actor: int, key) -> None:
        """`actor` happens-after everything released to `key` so far."""
        if self._run is not None:
            self._run.acquire(actor, key)

    def sync(self, actors) -> None:
        """A group barrier: every actor happens-after all of them."""
        if self._run is not None:
            self._run.sync(actors)

    def peer_ref(self, ref, rank: int):
        """The same shared buffer (same Allocate) in CTA `rank` of the cluster, at the same start."""
        if self._run is None:
            if rank != 0:
                raise TesselError(f"peer_ref: cluster rank {rank} of a stub context of one block")
            return ref
        return self._run.peer_ref(self, ref, rank)

    def __repr__(self) -> str:
        return f"Context(block={self.block}, lanes={len(self.threads)}, site={self.site!r})"


@dataclass(frozen=True)
class IntrinsicImpl:
    """An intrinsic's meaning for the interpreter: `fn`, the scope that executes it together,
    whether `fn` takes a Context first, and for a thread-scope intrinsic that may block, `ready`:
    `ready(ctx, *args)` is asked before `fn` runs; while it is False the thread waits there.
    `writes`: positions of the buffer operands it may write (None: any buffer operand), which
    decides which global parameters the race checker tracks. `syncs`: whether a collective also
    orders memory between its participants (None: block and cluster scopes do, as barriers;
    warp and warpgroup ones, mma.sync, ldmatrix, shuffles, are only a rendezvous, as on the GPU,
    where lanes of one warp need a barrier or __syncwarp to see each other's shared-memory
    writes; declare a __syncwarp `syncs=True`)."""

    def orders_memory(self) -> bool:
        return self.syncs if self.syncs is not None else self.scope in ("block", "cluster")

    fn: Callable
    scope: str = "thread"
    with_context: bool = False
    ready: Callable | None = None
    writes: tuple | None = None
    syncs: bool | None = None

    def __post_init__(self):
        if self.scope not in SCOPE_LANES:
            raise TesselError(f"intrinsic scope {self.scope!r} is not one of {', '.join(SCOPE_LANES)}")
        if self.ready is not None and self.scope != "thread":
            raise TesselError("only thread-scope intrinsics may block (ready=...)")


def as_impl(entry) -> IntrinsicImpl:
    """A registry entry as an IntrinsicImpl: a bare callable is a per-thread intrinsic, and any
    object with `fn` and `scope` attributes is taken as it is."""
    if isinstance(entry, IntrinsicImpl):
        return entry
    if hasattr(entry, "fn") and hasattr(entry, "scope"):
        return IntrinsicImpl(entry.fn, entry.scope, bool(getattr(entry, "with_context", False)),
                             getattr(entry, "ready", None), getattr(entry, "writes", None),
                             getattr(entry, "syncs", None))
    if callable(entry):
        return IntrinsicImpl(entry, "thread")
    raise TesselError(f"intrinsic registry entry {entry!r} is neither callable nor an IntrinsicImpl")


class _DefaultRegistry(Mapping):
    """The default registry: the intrinsic table's entries (tessel.ir.intrinsics), loaded on
    first use, because that package imports this module (a lazy import avoids the cycle)."""

    def __init__(self):
        self._data: dict | None = None

    def _load(self) -> dict:
        if self._data is None:
            from tessel.ir.intrinsics import interp_registry

            self._data = interp_registry()
        return self._data

    def __getitem__(self, name):
        return self._load()[name]

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


# The default registry (name -> IntrinsicImpl): every entry of the intrinsic table.
INTRINSICS: Mapping = _DefaultRegistry()
