"""cross_thread_reduce: spread a reduction loop over the threads of a block.

`cross_thread_reduce(S, loop, axis)` takes a reduction into buffer S in the DSL's guarded form
(`if k == 0: S[i] = init; S[i] = S[i] op v`, op one of add, mul, max, min, with init its
identity) whose outermost reduction loop is `loop`. The loop becomes bound to `axis`
(threadIdx.x): each thread accumulates its share in a register starting from the identity, then
the threads combine their partial results — within a warp by a butterfly of `shfl.sync.bfly`
(every lane ends with the warp's total), across warps through a small shared buffer (one
partial per warp, a barrier, every thread combines them, a barrier) — and the result is stored:
by thread 0 into a kernel parameter, by every thread (they all hold it) into a temporary, so a
later cache_write can keep it in registers.

The loop's extent must be a multiple of 32 and equal to the block's extent along the axis (all
lanes of every warp take part in the shuffles). Float sums are reassociated (the usual result of
a parallel reduction).

Example:
    >>> import tessel as ts
    >>> from tessel.schedules.schedule import Schedule
    >>> X = ts.placeholder((4, 64), name="X"); k = ts.reduce_axis(64, name="k")
    >>> sch = Schedule(ts.lower([X, ts.compute((4,), lambda i: ts.sum(X[i, k], axis=k), name="S")]))
    >>> ko, kt = sch.split("k", [None, 32]); sch.reorder(kt, ko)
    >>> sch.bind("i", "blockIdx.x")
    'i'
    >>> sch.cross_thread_reduce("S", kt)
    ['S_acc']
"""

from __future__ import annotations

import math

from tessel.errors import ScheduleError
from tessel.ir.dtypes import is_float, max_value, min_value
from tessel.ir.intrinsics import shfl_name
from tessel.ir.nodes import (
    Allocate, Barrier, Binary, Buffer, BufferRef, Const, For, IfThenElse, Intrinsic, Kernel, Load, Seq, Store, Var,
    rewrite, seq, walk,
)
from tessel.schedules.gpu import _allocate_at_block_level, block_dims, with_launch
from tessel.schedules.nest import (
    bound_vars, const_extent, find_loop, fresh_name, guard_misses_first_iteration, init_guards, loop_path,
    replace_loop, used_names,
)

_OPS = ("add", "mul", "max", "min")


def _identity(op: str, dtype: str):
    if op == "add":
        return 0
    if op == "mul":
        return 1
    return min_value(dtype) if op == "max" else max_value(dtype)


def _combine(op: str, a, b):
    return Binary(op, a, b)


def cross_thread_reduce(kernel: Kernel, buffer: str, loop: str, axis: str = "threadIdx.x") -> tuple[Kernel, list]:
    """Bind reduction loop `loop` of the reduction into `buffer` to `axis` and combine the
    threads' partial results; returns the new buffers' names (the accumulator, and the shared
    buffer of per-warp partials when there is more than one warp)."""
    if axis != "threadIdx.x":
        raise ScheduleError(f"cross_thread_reduce '{buffer}': only threadIdx.x is supported (warps are "
                            f"consecutive threadIdx.x), got {axis!r}")
    target = find_loop(kernel.body, loop)
    extent = const_extent(target)
    if target.kind != "serial":
        raise ScheduleError(f"cross_thread_reduce: loop '{loop}' is already {target.kind}")
    pairs = [(g, u) for g, u in init_guards(target) if g.then.buffer.name == buffer]
    if len(pairs) != 1:
        raise ScheduleError(f"cross_thread_reduce: no guarded reduction into '{buffer}' inside loop '{loop}' "
                            f"(not a reduction, already decomposed, or not under this loop)")
    guard, update = pairs[0]
    red_vars = {v for v in walk(guard.cond) if isinstance(v, Var)}
    inside = bound_vars(target.body) | {target.var}
    if target.var not in red_vars or not red_vars <= inside:
        raise ScheduleError(f"cross_thread_reduce: loop '{loop}' must be the outermost reduction loop of "
                            f"'{buffer}' (the init runs when {guard.cond})")
    if any(isinstance(v, Var) and v in inside for idx in update.indices for v in walk(idx)):
        raise ScheduleError(f"cross_thread_reduce: the element of '{buffer}' updated depends on loops inside "
                            f"'{loop}' (spatial loops must be outside it)")
    _check_guard_is_first_iteration(target, guard.cond, red_vars, buffer)
    op, value = _split_update(update, buffer)
    init = guard.then.value
    ident = _identity(op, update.buffer.dtype)
    if not (isinstance(init, Const) and init.value == ident):
        raise ScheduleError(f"cross_thread_reduce '{buffer}': the init {init} is not the identity of '{op}'")
    dtype = update.buffer.dtype
    if extent % 32:
        raise ScheduleError(f"cross_thread_reduce: loop '{loop}' has extent {extent}; it must be a multiple of 32 "
                            f"(whole warps)")
    taken = used_names(kernel)
    acc = Buffer(fresh_name(taken, f"{buffer}_acc"), (1,), dtype, "local")
    tmp = Buffer(fresh_name(taken, f"{buffer}_shfl"), (1,), dtype, "local")
    nwarps = extent // 32
    path = loop_path(kernel.body, loop)
    others = [lp for lp in path if lp.kind in ("threadIdx.y", "threadIdx.z")]
    red = None
    if nwarps > 1:
        rows = math.prod(const_extent(lp) for lp in others)
        red = Buffer(fresh_name(taken, f"{buffer}_warps"), (rows, nwarps), dtype, "shared")
    a0 = Load(acc, (Const(0),))

    def leaf(n):
        # structural equality, not identity: rewrite memoises equal subtrees, so a rebuilt parent
        # may hold an equal copy of the guard or update
        if n == guard:
            return Seq(())
        if n == update:
            return Store(acc, (Const(0),), _combine(op, a0, value))
        return None

    body = rewrite(target.body, leaf, fixpoint=False)
    steps = []
    if dtype not in ("float32", "int32"):
        raise ScheduleError(f"cross_thread_reduce '{buffer}': warp shuffles move float32 or int32, not {dtype}")
    for off in (16, 8, 4, 2, 1):
        steps.append(Intrinsic(shfl_name("bfly"), (BufferRef(tmp, (Const(0),)), a0, Const(off))))
        steps.append(Store(acc, (Const(0),), _combine(op, a0, Load(tmp, (Const(0),)))))
    warp_sum = Allocate(tmp, seq(*steps))
    across = None
    if red is not None:
        row = Const(0)
        stride = 1
        for lp in others:
            row = lp.var if stride == 1 and isinstance(row, Const) else Binary("add", row, Binary(
                "mul", lp.var, Const(stride)))
            stride *= const_extent(lp)
        lane0 = Binary("eq", Binary("floormod", target.var, Const(32)), Const(0))
        gather = [Store(acc, (Const(0),), Load(red, (row, Const(0))))]
        for w in range(1, nwarps):
            gather.append(Store(acc, (Const(0),), _combine(op, a0, Load(red, (row, Const(w))))))
        across = seq(IfThenElse(lane0, Store(red, (row, Binary("floordiv", target.var, Const(32))), a0)), Barrier(),
                     *gather, Barrier())
    is_param = any(p.name == buffer for p in kernel.params)
    final = Store(update.buffer, update.indices, a0)
    if is_param:
        final = IfThenElse(Binary("eq", target.var, Const(0)), final)
    for cond in reversed(_guards_of(target.body, update)):
        if not any(isinstance(v, Var) and v in inside for v in walk(cond)):
            final = IfThenElse(cond, final)  # a bounds guard of the element (from a split of a spatial loop)
    init_acc = Store(acc, (Const(0),), Const(ident, dtype) if is_float(dtype) else Const(int(ident), dtype))
    new_body = Allocate(acc, seq(init_acc, body, warp_sum, across, final))
    out = replace_loop(kernel, loop, lambda old: For(old.var, old.extent, new_body, axis))
    if red is not None:
        block = [lp for lp in path if lp.kind.startswith("blockIdx")]
        out = _allocate_at_block_level(out, block[-1].var.name if block else None, red)
    out = with_launch(out)
    if block_dims(out)[axis] != extent:
        raise ScheduleError(f"cross_thread_reduce: loop '{loop}' has extent {extent} but the block has "
                            f"{block_dims(out)[axis]} threads along {axis}; they must be equal (whole warps shuffle)")
    return out, [acc.name] + ([red.name] if red is not None else [])


def _check_guard_is_first_iteration(target: For, cond, red_vars: set, buffer: str) -> None:
    """The combined reduction starts from the identity once per element, so the init guard must hold
    exactly at the first iteration of the reduction loops: a guard such as `k == 1` (never true for
    extent 1, or true mid-way) would start from the output's old value or restart mid-way (fuzz case
    reduce_inner_ignores_init_guard_value)."""
    loops = {n.var: n for n in walk(target) if isinstance(n, For) and n.var in red_vars}
    if any(v not in loops or not isinstance(loops[v].extent, Const) for v in red_vars):
        raise ScheduleError(f"cross_thread_reduce '{buffer}': the init guard {cond} uses loops of unknown extent")
    empty = sorted(v.name for v in red_vars if loops[v].extent.value == 0)
    if empty:
        # no iteration: the original leaves the element as it was, the combined one would store the
        # identity (fuzz case reduce_inner_of_an_empty_reduction_writes_the_identity)
        raise ScheduleError(f"cross_thread_reduce '{buffer}': the reduction is empty (loop(s) {empty} of extent 0)")
    where = guard_misses_first_iteration(cond, {v: loops[v].extent.value for v in red_vars})
    if where:
        raise ScheduleError(f"cross_thread_reduce '{buffer}': the init guard {cond} is not exactly the first "
                            f"iteration of the reduction ({where})")


def _guards_of(node, target) -> list:
    """Conditions of the IfThenElse statements around `target` inside `node`, outermost first."""
    path: list = []

    def go(n) -> bool:
        if n is target:
            return True
        for c in n.children():
            if isinstance(c, (For, IfThenElse, Seq, Allocate, Store)) and go(c):
                if isinstance(n, IfThenElse) and c is n.then:
                    path.append(n.cond)
                return True
        return False

    go(node)
    return list(reversed(path))


def _split_update(update: Store, buffer: str):
    """(op, v) of an update `S[i] = S[i] op v` (or `v op S[i]`)."""
    val = update.value
    if not (isinstance(val, Binary) and val.op in _OPS):
        raise ScheduleError(f"cross_thread_reduce '{buffer}': the update {val} is not an add/mul/max/min of "
                            f"'{buffer}' and a value")
    me = Load(update.buffer, update.indices)
    for mine, other in ((val.a, val.b), (val.b, val.a)):
        if mine == me and not any(isinstance(n, Load) and n.buffer.name == buffer for n in walk(other)):
            return val.op, other
    raise ScheduleError(f"cross_thread_reduce '{buffer}': the update {val} does not combine '{buffer}' at the "
                        f"stored element with a value")


__all__ = ["cross_thread_reduce"]
