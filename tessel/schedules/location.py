"""Where a producer is computed: compute_at (inside a consumer's loop, just the region needed)
and compute_inline (into every use).

Both take the producer in the form the DSL lowers it to: one loop nest whose outer loops run over
the producer's dimensions, in order, with the store indexed by exactly those loop variables.

Example:
    >>> from tessel.ir.dsl import placeholder, compute, lower
    >>> A = placeholder((8,), name="A")
    >>> T = compute((8,), lambda i: A[i] * 2.0, name="T")
    >>> kern = lower([A, compute((8,), lambda j: T[j] + 1.0, name="B")])
    >>> kern, _ = compute_inline(kern, "T")
    >>> sorted(b.name for b in kern.params)
    ['A', 'B']
"""

from __future__ import annotations

from tessel.errors import ScheduleError
from tessel.ir.nodes import (
    Allocate, Const, For, Kernel, Load, Seq, Store, rewrite, seq, substitute, walk,
)
from tessel.schedules.caching import copy_nest, inner_extents, outer_ranges
from tessel.schedules.nest import find_buffer, find_loop, init_guards, loads_of, perfect_chain, stores_to, used_names
from tessel.schedules.region import touched_box


def producer_nest(kernel: Kernel, producer: str) -> tuple[For, list[For]]:
    """The outermost loop that holds every store of `producer` and nothing else, and its
    `ndim` spatial loops; raises ScheduleError when the producer is not in DSL form."""
    buf = find_buffer(kernel, producer)
    stores = stores_to(kernel.body, producer)
    if not stores:
        raise ScheduleError(f"'{producer}' is never written in kernel '{kernel.name}'")
    candidates = [n for n in walk(kernel.body) if isinstance(n, For)
                  and len(stores_to(n, producer)) == len(stores)]
    if not candidates:
        raise ScheduleError(f"'{producer}' is written outside any loop")
    nest = candidates[0]  # walk is pre-order: the outermost comes first
    if any(isinstance(n, Store) and n.buffer.name != producer for n in walk(nest)):
        raise ScheduleError(f"the loop nest of '{producer}' also writes other buffers; it must be a "
                            f"nest of its own")
    chain = perfect_chain(nest)
    spatial = chain[: buf.ndim]
    want = tuple(lp.var for lp in spatial)
    if len(spatial) < buf.ndim or any(tuple(s.indices) != want for s in stores) or any(
            not isinstance(lp.extent, Const) or lp.extent.value != d for lp, d in zip(spatial, buf.shape)):
        raise ScheduleError(f"'{producer}' is no longer in its original loop nest form (was it already "
                            f"scheduled?); compute_at/compute_inline need the producer unscheduled")
    return nest, spatial


def compute_at(kernel: Kernel, producer: str, at: str) -> tuple[Kernel, list[str]]:
    """Move the producer's nest into loop `at`, computing only the region that loop's body reads
    in each iteration."""
    buf = find_buffer(kernel, producer)
    if any(p.name == producer for p in kernel.params):
        raise ScheduleError(f"compute_at: '{producer}' is a kernel parameter; only temporaries can move")
    nest, spatial = producer_nest(kernel, producer)
    loop = find_loop(kernel.body, at)
    if any(lp.var.name == at for lp in walk(nest) if isinstance(lp, For)):
        raise ScheduleError(f"compute_at: loop '{at}' belongs to the producer '{producer}' itself")
    # a reduction producer reads itself inside its own nest: those reads move with it
    all_loads = len(loads_of(kernel.body, producer)) - len(loads_of(nest, producer))
    inside = loads_of(loop.body, producer)
    if not inside:
        raise ScheduleError(f"compute_at: loop '{at}' does not read '{producer}'")
    if len(inside) != all_loads:
        raise ScheduleError(f"compute_at: '{producer}' is also read outside loop '{at}'")
    if not _comes_before(kernel, nest, loop):
        raise ScheduleError(f"compute_at: the nest of '{producer}' does not come before loop '{at}'")
    box = touched_box(inside, buf.shape, inner_extents(loop))
    # Under the spatial loops sits what computes one element; a 0-d producer has none, so its whole
    # nest moves (indexing the chain with -1 took the innermost body and left its loops' variables free).
    inner_body = perfect_chain(nest)[len(spatial) - 1].body if spatial else nest
    taken = used_names(kernel)
    ranges = outer_ranges(kernel, at)

    def make(glob, loc):
        return substitute(inner_body, {lp.var: g for lp, g in zip(spatial, glob)})

    moved = copy_nest(taken, producer, box, buf.shape, ranges, make)
    # Keep the producer's own loop names for the region loops (they are free again once the
    # original nest is gone), so users keep addressing them as before.
    renames = {}
    for lp, new in zip(spatial, _chain_vars(moved, buf.ndim)):
        renames[new] = lp.var
    moved = substitute(moved, renames)

    def fn(n):
        if n == nest:
            return Seq(())
        if isinstance(n, For) and n.var.name == at:
            return For(n.var, n.extent, seq(moved, n.body), n.kind)
        return None

    out = rewrite(kernel, fn, fixpoint=False)
    return _drop_empty(out), [lp.var.name for lp in spatial]


def _chain_vars(stmt, n: int):
    out = []
    while isinstance(stmt, For) and len(out) < n:
        out.append(stmt.var)
        stmt = stmt.body
    return out


def _comes_before(kernel: Kernel, first, second) -> bool:
    order = [n for n in walk(kernel.body) if isinstance(n, For)]
    try:
        return order.index(first) < order.index(second) and not any(
            x is second or x == second for x in walk(first))
    except ValueError:
        return False


def _drop_empty(kernel: Kernel) -> Kernel:
    def fn(n):
        if isinstance(n, Seq):
            kept = tuple(s for s in n.stmts if not (isinstance(s, Seq) and not s.stmts))
            if len(kept) != len(n.stmts):
                return Seq(kept) if len(kept) != 1 else kept[0]
        return None

    return rewrite(kernel, fn, fixpoint=False)


def compute_inline(kernel: Kernel, producer: str) -> tuple[Kernel, list[str]]:
    """Replace every read of an elementwise producer by its defining expression and drop it."""
    if any(p.name == producer for p in kernel.params):
        raise ScheduleError(f"compute_inline: '{producer}' is a kernel parameter; only temporaries can be inlined")
    nest, spatial = producer_nest(kernel, producer)
    if init_guards(nest) or not isinstance(perfect_chain(nest)[len(spatial) - 1].body, Store):
        raise ScheduleError(f"compute_inline: '{producer}' is a reduction or has loops of its own; "
                            f"only elementwise producers can be inlined")
    store = perfect_chain(nest)[len(spatial) - 1].body
    if loads_of(store.value, producer):
        raise ScheduleError(f"compute_inline: '{producer}' reads itself")
    loop_vars = [lp.var for lp in spatial]

    def fn(n):
        if n == nest:
            return Seq(())
        if isinstance(n, Load) and n.buffer.name == producer:
            return substitute(store.value, dict(zip(loop_vars, n.indices)))
        if isinstance(n, Allocate) and n.buffer.name == producer:
            return n.body
        return None

    out = _drop_empty(rewrite(kernel, fn, fixpoint=False))
    return out, []


__all__ = ["compute_at", "compute_inline", "producer_nest"]
