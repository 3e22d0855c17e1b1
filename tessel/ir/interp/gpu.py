"""Running a translated kernel as a grid of GPU threads: blocks one after the other, the threads
of a block interleaved at barriers and collective intrinsics.

Each thread runs the kernel's function with its own `blockIdx` / `threadIdx`. Without barriers
or intrinsics the function is plain and each thread simply runs to the end, in linear thread
order. With them the function is a generator that yields at each Barrier and Intrinsic; the
block scheduler then:

1. steps every ready thread until it yields or finishes (a per-thread intrinsic runs on the
   spot and the thread goes on);
2. releases a group (warp, warpgroup or block) once all its threads wait at the same collective
   intrinsic, calling the intrinsic once with every lane's arguments;
3. otherwise releases the block once every thread waits at the same barrier;
4. otherwise raises an ExecutionError naming what each thread is doing (divergent barriers or
   collectives, or threads that finished while others wait: a deadlock or undefined behaviour
   on a GPU).

Threads of one block run in linear order between barriers, so a thread that reads shared
memory that another thread writes before the barrier which would make it valid reads the
poisoned contents (for at least the first thread) instead of passing by luck. Blocks run one
after the other, so races between blocks are not detected.

Example (what `tessel.ir.interp.run` does for a threaded kernel):
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var, Cast
    >>> t = Var("t"); B = Buffer("B", (4,), "int32")
    >>> k = Kernel("ids", (B,), For(t, 4, Store(B, (t,), t), "threadIdx.x"))
    >>> import numpy as np
    >>> from tessel.ir.interp import run
    >>> b = np.zeros(4, "int32"); run(k, b); b.tolist()
    [0, 1, 2, 3]
"""

from __future__ import annotations

from tessel.ir.interp.intrinsics import SCOPE_LANES, Context, IntrinsicImpl
from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.interp.translate import BARRIER, INTRINSIC, Translation

_DONE = ("done",)


def _located(e: ExecutionError, bid: tuple, tid: tuple) -> ExecutionError:
    return type(e)(f"{e} (block {bid}, thread {tid})")


def run_grid(t: Translation, bufs: list, impls: dict[str, IntrinsicImpl], kernel: str) -> None:
    """Run every block of the launch, one after the other."""
    gx, gy, gz = t.grid
    bx, by, bz = t.block
    tids = [(x, y, z) for z in range(bz) for y in range(by) for x in range(bx)]
    glob: dict = {}  # global-scope buffers the kernel allocates: one per launch
    for bid in ((x, y, z) for z in range(gz) for y in range(gy) for x in range(gx)):
        blk: dict = {}  # shared buffers: one per block
        if t.generator:
            _run_block(t, bufs, bid, tids, blk, glob, impls, kernel)
            continue
        for tid in tids:
            try:
                t.fn(bufs, bid, tid, blk, glob)
            except ExecutionError as e:
                raise _located(e, bid, tid) from None


def _call(impl: IntrinsicImpl, args: tuple, bid: tuple, threads: tuple, state: dict) -> None:
    if impl.with_context:
        impl.fn(Context(bid, threads, state), *args)
    else:
        impl.fn(*args)


def _advance(gen, impls, bid, tid, state):
    """Run one thread until it waits at a barrier or collective, or finishes."""
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration:
                return _DONE
            if event[0] == INTRINSIC and impls[event[2]].scope == "thread":
                _call(impls[event[2]], event[3], bid, (tid,), state)
                continue
            return event
    except ExecutionError as e:
        raise _located(e, bid, tid) from None


def _run_block(t, bufs, bid, tids, blk, glob, impls, kernel) -> None:
    gens = [t.fn(bufs, bid, tid, blk, glob) for tid in tids]
    waits: list = [None] * len(gens)
    state: dict = {}  # the intrinsics' own per-block state (pending asynchronous copies, ...)
    ready = range(len(gens))
    while ready:
        for i in ready:
            waits[i] = _advance(gens[i], impls, bid, tids[i], state)
        ready = _release(waits, impls, bid, tids, kernel, state)


def _release(waits: list, impls, bid, tids, kernel, state) -> list:
    """Perform the collectives / barrier the waiting threads agree on; return who may go on."""
    n = len(waits)
    live = [i for i, w in enumerate(waits) if w is not _DONE]
    if not live:
        return []
    groups: dict = {}
    for i in live:
        w = waits[i]
        if w[0] == INTRINSIC:
            size = SCOPE_LANES[impls[w[2]].scope] or n
            groups.setdefault((size, i // size), []).append(i)
    released = []
    for (size, g), members in groups.items():
        expected = list(range(g * size, min(n, (g + 1) * size)))
        if members == expected and len({waits[i][1] for i in members}) == 1:
            threads = tuple(tids[i] for i in members)
            _call(impls[waits[members[0]][2]], ([waits[i][3] for i in members],), bid, threads, state)
            released.extend(members)
    if released:
        return released
    if len(live) == n and all(waits[i][0] == BARRIER for i in live) and len({waits[i][1] for i in live}) == 1:
        return live
    raise ExecutionError(f"kernel '{kernel}', block {bid}: threads diverge at barriers or collectives: "
                         f"{_describe(waits, tids)}; every thread of a block must reach the same barrier, and "
                         f"every lane of a group the same collective intrinsic")


def _describe(waits: list, tids: list) -> str:
    states: dict[str, list[int]] = {}
    for i, w in enumerate(waits):
        label = "finished" if w is _DONE else f"wait at {w[1]}"
        states.setdefault(label, []).append(i)
    parts = []
    for label, ids in states.items():
        parts.append(f"threads {_spans(ids)} {label}" if len(ids) > 1 else f"thread {tids[ids[0]]} {label}")
    return "; ".join(parts)


def _spans(ids: list[int]) -> str:
    """Linear thread ids as compact spans: [0, 1, 2, 5] -> '0-2, 5'."""
    out, start = [], ids[0]
    for a, b in zip(ids, ids[1:] + [None]):
        if b != a + 1:
            out.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return "(linear) " + ", ".join(out)
