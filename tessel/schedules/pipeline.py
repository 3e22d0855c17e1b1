"""pipeline: software pipelining of a loop's shared-memory copies with cp.async.

`pipeline(loop, stages)` takes a loop whose body is what cache_shared leaves in a loop that
iterates — `barrier; cooperative copies into shared buffers; barrier; compute` — and overlaps
the copies of later iterations with the computation of the current one:

    prologue: for s in 0 .. stages-2: copies of iteration s into buffer s; commit
    for L in n:
        cp.async.wait_group stages-2      (iteration L's copies, this thread's part, have landed)
        barrier                           (everyone's part is visible; everyone left iteration L-1)
        copies of iteration L+stages-1 into buffer (L+stages-1) % stages   (if it exists)
        commit
        compute, reading buffer L % stages
    cp.async.wait_all

Each shared buffer gets a leading dimension of `stages`. Every element copy becomes one
`cp.async` of 4, 8 or 16 bytes (the copy's vector width times the element size; 16-byte copies
use the L2-only `.cg` form), so copies must be unguarded (tile sizes dividing the buffer) and
vectorised to one of those sizes. The iteration whose buffer is overwritten was finished by
every thread before the barrier of the iteration that overwrites it, so one barrier per
iteration suffices.

Example:
    >>> "wait_group" in __doc__
    True
"""

from __future__ import annotations

import dataclasses

from tessel.errors import ScheduleError
from tessel.ir.dtypes import bits
from tessel.ir.intrinsics import COMMIT, WAIT_ALL, WAIT_GROUP, copy_name
from tessel.ir.nodes import (
    Allocate, Barrier, Binary, BufferRef, Const, For, IfThenElse, Intrinsic, Kernel, LetStmt, Load, Seq, Store, Var,
    rewrite, seq, substitute, walk,
)
from tessel.schedules.gpu import with_launch
from tessel.schedules.nest import const_extent, find_loop, fresh_name, replace_loop, used_names


def pipeline(kernel: Kernel, loop: str, stages: int) -> tuple[Kernel, list[str]]:
    """Overlap the shared-memory copies of `loop` with its computation over `stages` buffers;
    returns []."""
    if isinstance(stages, bool) or not isinstance(stages, int) or not 2 <= stages <= 8:
        raise ScheduleError(f"pipeline '{loop}': stages must be an integer from 2 to 8, got {stages!r}")
    target = find_loop(kernel.body, loop)
    n = const_extent(target)
    if target.kind != "serial" and target.kind != "unrolled":
        raise ScheduleError(f"pipeline '{loop}': the loop is {target.kind}; only a sequential loop can be pipelined")
    stmts = list(target.body.stmts) if isinstance(target.body, Seq) else [target.body]
    bars = [k for k, s in enumerate(stmts) if isinstance(s, Barrier)]
    if len(bars) < 2 or bars[0] != 0 or bars[1] < 2:
        raise ScheduleError(f"pipeline '{loop}': its body must start `barrier; copies; barrier` (cache_shared "
                            f"at this loop makes that)")
    copies, compute = stmts[1:bars[1]], stmts[bars[1] + 1:]
    shared = {}
    for c in copies:
        written = {st.buffer.name: st.buffer for st in walk(c) if isinstance(st, Store)}
        if not written or any(b.scope != "shared" for b in written.values()):
            raise ScheduleError(f"pipeline '{loop}': a statement between the barriers is not a copy into shared "
                                f"memory")
        shared.update(written)
    for name in shared:
        if any(isinstance(x, Store) and x.buffer.name == name for s in compute for x in walk(s)):
            raise ScheduleError(f"pipeline '{loop}': the computation writes the shared buffer '{name}'")
        outside = [x for x in walk(kernel.body) if isinstance(x, (Load, Store, BufferRef)) and x.buffer.name == name]
        inside = [x for x in walk(target) if isinstance(x, (Load, Store, BufferRef)) and x.buffer.name == name]
        if len(outside) != len(inside):
            raise ScheduleError(f"pipeline '{loop}': shared buffer '{name}' is also used outside the loop")
    async_copies = [_to_cp_async(c, loop) for c in copies]
    staged = {name: dataclasses.replace(b, shape=(stages,) + b.shape) for name, b in shared.items()}
    L = target.var

    def stage_of(expr):
        return Binary("floormod", expr, Const(stages))

    def restage(stmt, it):
        """`stmt` for iteration `it`, with every shared buffer indexed by it % stages."""
        stmt = substitute(stmt, {L: it}) if it is not L else stmt

        def fn(x):
            if isinstance(x, (Load, Store, BufferRef)) and x.buffer.name in staged:
                return dataclasses.replace(x, buffer=staged[x.buffer.name], indices=(stage_of(it),) + x.indices)
            return None

        return rewrite(stmt, fn, fixpoint=False)

    commit = Intrinsic(COMMIT, ())
    prologue = []
    taken = used_names(kernel)
    for s in range(stages - 1):
        body = seq(*[_rename_bound(restage(c, Const(s)), taken) for c in async_copies])
        prologue += [body if s < n else None, commit]
    ahead = Binary("add", L, Const(stages - 1))
    prefetch = seq(*[restage(c, ahead) for c in async_copies])
    if n > stages - 1:
        prefetch = IfThenElse(Binary("lt", ahead, Const(n)), prefetch)
    else:
        prefetch = None
    new_body = seq(Intrinsic(WAIT_GROUP, (Const(stages - 2),)), Barrier(), prefetch, commit,
                   *[restage(c, L) for c in compute])
    piped = seq(*prologue, For(L, target.extent, new_body, target.kind), Intrinsic(WAIT_ALL, ()))
    out = replace_loop(kernel, loop, lambda _: piped)

    def realloc(x):
        if isinstance(x, Allocate) and x.buffer.name in staged:
            return Allocate(staged[x.buffer.name], x.body)
        return None

    out = rewrite(out, realloc, fixpoint=False)
    return with_launch(out), []


def _rename_bound(stmt, taken: set):
    """`stmt` with the variables of its loops and lets renamed to fresh names (a copy of a
    statement placed next to the original must not bind the same names)."""
    mapping = {}
    for x in walk(stmt):
        if isinstance(x, (For, LetStmt)) and x.var not in mapping:
            mapping[x.var] = Var(fresh_name(taken, x.var.name), x.var.dtype)
    return substitute(stmt, mapping)


def _to_cp_async(copy, loop: str):
    """The cooperative copy with each element copy (or vector of them) as one cp.async."""
    found = []

    def fn(x):
        if isinstance(x, For) and isinstance(x.body, Store) and x.kind == "vectorized":
            found.append(x)
            return _cp_async(x.body, x.var, const_extent(x), loop)
        if isinstance(x, Store) and x.buffer.scope == "shared":
            found.append(x)
            return _cp_async(x, None, 1, loop)
        return None

    out = _rewrite_outer_first(copy, fn)
    if not found:
        raise ScheduleError(f"pipeline '{loop}': found no element copy in {copy}")
    if any(isinstance(x, Store) for x in walk(out)):
        raise ScheduleError(f"pipeline '{loop}': a copy into shared memory is guarded or not a plain vector copy; "
                            f"cp.async needs unguarded copies (choose tiles that divide the buffers)")
    return out


def _rewrite_outer_first(node, fn):
    """Replace the outermost nodes `fn` maps (a top-down rewrite: inner matches of a replaced
    node are not visited)."""
    new = fn(node)
    if new is not None:
        return new
    kids = node.children()
    if not kids:
        return node
    out = [_rewrite_outer_first(k, fn) if isinstance(k, (For, Seq, IfThenElse, Store, Allocate)) else k
           for k in kids]
    return node.with_children(out) if any(a is not b for a, b in zip(out, kids)) else node


def _cp_async(store: Store, v: Var | None, vec: int, loop: str):
    if not isinstance(store.value, Load) or store.value.buffer.scope != "global":
        return store
    src = store.value
    nbytes = vec * bits(store.buffer.dtype) // 8
    if nbytes not in (4, 8, 16) or src.buffer.dtype != store.buffer.dtype:
        raise ScheduleError(f"pipeline '{loop}': the copy into '{store.buffer.name}' moves {nbytes} bytes per "
                            f"thread and step; cp.async moves 4, 8 or 16 (choose the copy's vector width)")
    zero = {v: Const(0)} if v is not None else {}
    dst = BufferRef(store.buffer, tuple(substitute(i, zero) for i in store.indices))
    srcref = BufferRef(src.buffer, tuple(substitute(i, zero) for i in src.indices))
    return Intrinsic(copy_name("cg" if nbytes == 16 else "ca", nbytes), (dst, srcref))


__all__ = ["pipeline"]
