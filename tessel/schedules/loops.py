"""Loop primitives: split, reorder, fuse, and the loop kinds (parallel, vectorize, unroll, bind).

Each primitive is a pure function `(kernel, ...) -> (kernel, results)`; `Schedule` records the
calls in its trace. New loop variables get names derived from the old one (`i_0`, `i_1`, ...,
`i_j_fused`), made unique within the kernel, so replaying a trace gives the same names.

Example:
    >>> from tessel.ir.dsl import placeholder, compute, lower
    >>> A = placeholder((8, 6), name="A")
    >>> k = lower([A, compute((8, 6), lambda i, j: A[i, j] * 2.0, name="B")])
    >>> k, (io, ii) = split(k, "i", [None, 4])
    >>> k, _ = reorder(k, [ii, "j", io])
    >>> k, (f,) = fuse(k, [ii, "j"])
    >>> f
    'i_1_j_fused'
"""

from __future__ import annotations

from tessel.errors import ScheduleError
from tessel.ir.nodes import Binary, Const, For, IfThenElse, Kernel, THREAD_AXES, Var, substitute, walk
from tessel.schedules.nest import (
    and_all, const_extent, find_loop, fresh_name, guard_misses_first_iteration, init_guards, is_data_parallel,
    leaf_of_chain, loop_path, perfect_chain, rebuild_chain, replace_loop, used_names,
)


def split(kernel: Kernel, loop: str, factors: list) -> tuple[Kernel, list[str]]:
    """Split `loop` into len(factors) nested loops; one factor may be None (inferred). When the
    product exceeds the extent, the innermost body is guarded so no extra iteration runs."""
    target = find_loop(kernel.body, loop)
    if target.kind in THREAD_AXES:
        # The pieces would all keep the axis and run on the same threads: split before bind.
        raise ScheduleError(f"split '{loop}': the loop is bound to {target.kind}; split it before binding")
    extent = const_extent(target)
    factors = list(factors)
    if len(factors) < 2:
        raise ScheduleError(f"split '{loop}': give at least two factors, got {factors}")
    if sum(f is None for f in factors) > 1:
        raise ScheduleError(f"split '{loop}': at most one factor may be None, got {factors}")
    for f in factors:
        if f is not None and (isinstance(f, bool) or not isinstance(f, int) or f <= 0):
            raise ScheduleError(f"split '{loop}': factors must be positive integers, got {factors}")
    known = 1
    for f in factors:
        known *= f or 1
    if None in factors:
        factors[factors.index(None)] = -(-extent // known)
    product = 1
    for f in factors:
        product *= f
    if product < extent:
        raise ScheduleError(f"split '{loop}': factors {factors} cover {product} < extent {extent}")
    taken = used_names(kernel)
    new_vars = [Var(fresh_name(taken, f"{loop}_{n}")) for n in range(len(factors))]
    combined = None
    for v, f in zip(new_vars, factors):
        combined = v if combined is None else Binary("add", Binary("mul", combined, Const(f)), v)

    def rebuild(old: For):
        body = substitute(old.body, {old.var: combined})
        if product != extent:
            body = _guard_leaf(body, Binary("lt", combined, Const(extent)))
        for v, f in reversed(list(zip(new_vars, factors))):
            body = For(v, Const(f), body, "serial")
        return body

    return replace_loop(kernel, loop, rebuild), [v.name for v in new_vars]


def _guard_leaf(body, cond):
    """Put `cond` around the leaf of the perfect nest starting at `body` (keeps the nest perfect)."""
    if isinstance(body, For):
        chain = perfect_chain(body)
        return rebuild_chain(chain, IfThenElse(cond, chain[-1].body))
    return IfThenElse(cond, body)


def reorder(kernel: Kernel, loops: list[str]) -> tuple[Kernel, list[str]]:
    """Reorder loops of one perfect nest: the positions they occupy get them in the given order;
    other loops of the nest stay where they are."""
    if len(set(loops)) != len(loops):
        raise ScheduleError(f"reorder: a loop is named twice in {loops}")
    for name in loops:
        find_loop(kernel.body, name)
    outer_name = _outermost(kernel, loops)
    outer = find_loop(kernel.body, outer_name)
    chain = perfect_chain(outer)
    names = [lp.var.name for lp in chain]
    missing = [n for n in loops if n not in names]
    if missing:
        inner = names[-1]
        raise ScheduleError(f"reorder {loops}: loop(s) {missing} are not perfectly nested under '{outer_name}' "
                            f"(the nest ends at '{inner}', whose body is not a single loop: a reduction init or "
                            f"another statement sits in between)")
    last = max(names.index(n) for n in loops)
    chain = chain[: last + 1]
    by_name = {lp.var.name: lp for lp in chain}
    for lp in chain:
        if not isinstance(lp.extent, Const):
            raise ScheduleError(f"reorder: loop '{lp.var.name}' has a non-constant extent")
    slots = [i for i, lp in enumerate(chain) if lp.var.name in loops]
    new_chain = list(chain)
    for slot, name in zip(slots, loops):
        new_chain[slot] = by_name[name]
    body = chain[-1].body
    _check_reduction_order(kernel, chain, new_chain, body)
    return replace_loop(kernel, outer_name, lambda _: rebuild_chain(new_chain, body)), list(loops)


def _check_reduction_order(kernel: Kernel, chain: list, new_chain: list, body) -> None:
    """Reordering the reduction loops of a guarded reduction keeps its result only if its init runs
    once, at the first iteration of all of them (fuzz case reorder_reduction_loops_with_partial_init_guard:
    under `if r1 == 0` the init runs again for every r2, so swapping r1 and r2 changes the sum).
    Reduction loops of the chain are those whose variable the update's indices do not use."""
    for guard, update in init_guards(body):
        used = {v for idx in update.indices for v in walk(idx) if isinstance(v, Var)}
        red = [lp for lp in chain if lp.var not in used]
        if [lp for lp in new_chain if lp in red] == red:
            continue  # their relative order is unchanged
        outer = {v: 0 for v in walk(guard.cond) if isinstance(v, Var) and v not in {lp.var for lp in chain}}
        where = guard_misses_first_iteration(guard.cond, {lp.var: lp.extent.value for lp in red}, outer)
        if where:
            raise ScheduleError(f"reorder: the reduction into '{update.buffer.name}' re-initialises under "
                                f"{guard.cond} ({where}), so its loops {[lp.var.name for lp in red]} cannot change "
                                f"order; decompose_reduction first, or keep their order")


def _outermost(kernel: Kernel, loops: list[str]) -> str:
    best, depth = None, None
    for name in loops:
        d = len(loop_path(kernel.body, name))
        if depth is None or d < depth:
            best, depth = name, d
    return best


def fuse(kernel: Kernel, loops: list[str]) -> tuple[Kernel, list[str]]:
    """Fuse consecutive perfectly nested loops (outermost first) into one loop."""
    if len(loops) < 2:
        raise ScheduleError(f"fuse: give at least two loops, got {loops}")
    outer = find_loop(kernel.body, loops[0])
    chain = perfect_chain(outer)[: len(loops)]
    if [lp.var.name for lp in chain] != list(loops):
        raise ScheduleError(f"fuse {loops}: the loops must be consecutive and perfectly nested, outermost first "
                            f"(found the nest {[lp.var.name for lp in perfect_chain(outer)]})")
    bound = [lp.var.name for lp in chain if lp.kind in THREAD_AXES]
    if bound:
        # one fused loop cannot keep two GPU axes: its threads would race (fuzz case gpu_fuse_of_bound_loops_races)
        raise ScheduleError(f"fuse {loops}: loop(s) {bound} are bound to GPU axes; fuse before binding")
    extents = [const_extent(lp) for lp in chain]
    # a loop of extent <= 0 never runs its body, so neither does the fused loop (a product of two
    # negative extents would be positive: fuzz case fuse_of_negative_extent_loops_runs_once)
    runs = min(extents) > 0
    if not runs:
        extents = [1] * len(extents)
    taken = used_names(kernel)
    fused = Var(fresh_name(taken, "_".join(loops) + "_fused"))
    mapping, stride = {}, 1
    for lp, ext in reversed(list(zip(chain, extents))):
        term = fused if stride == 1 else Binary("floordiv", fused, Const(stride))
        mapping[lp.var] = term if lp is chain[0] else Binary("floormod", term, Const(ext))
        stride *= ext
    body = substitute(chain[-1].body, mapping)
    return replace_loop(kernel, loops[0], lambda _: For(fused, Const(stride if runs else 0), body)), [fused.name]


def annotate(kernel: Kernel, loop: str, kind: str) -> tuple[Kernel, list[str]]:
    """Set how `loop` runs: "parallel", "vectorized", "unrolled", "serial" or a GPU axis. Once the
    kernel has a launch shape (after `bind`), GPU axes go through `bind`, which keeps it in step."""
    target = find_loop(kernel.body, loop)
    if target.kind in THREAD_AXES and kind != target.kind:
        # the launch keeps the axis' extent: every block/thread would then run the whole loop
        # (fuzz case annotate_unbinds_block_bound_loop_races)
        raise ScheduleError(f"annotate '{loop}': the loop is bound to {target.kind}; re-annotating it as {kind!r} "
                            f"would leave the launch shape running it once per {target.kind.split('.')[0]}")
    if kind in THREAD_AXES and kernel.launch is not None:
        raise ScheduleError(f"annotate '{loop}': kind {kind!r} is a GPU axis and the kernel has a launch shape; use "
                            f"bind('{loop}', {kind!r}), which updates it")
    if kind in ("parallel", "vectorized") or kind in THREAD_AXES:
        const_extent(target)
        ok, why = is_data_parallel(target)
        if not ok:
            raise ScheduleError(f"cannot make loop '{loop}' {kind}: {why}")
    if kind == "parallel":
        for lp in loop_path(kernel.body, loop)[:-1] + [x for x in _inner_loops(target)]:
            if lp.kind == "parallel":
                raise ScheduleError(f"cannot make loop '{loop}' parallel: loop '{lp.var.name}' around or "
                                    f"inside it is already parallel")
    if kind == "vectorized" and any(True for _ in _inner_loops(target)):
        raise ScheduleError(f"cannot vectorize loop '{loop}': only innermost loops can be vectorized")
    if kind == "unrolled":
        const_extent(target)
    out = replace_loop(kernel, loop, lambda old: For(old.var, old.extent, old.body, kind))
    if kind in THREAD_AXES and out.target == "cpu":
        # a GPU-bound loop makes it a GPU kernel (bind does the same; the build derives the launch):
        # fuzz case annotate_gpu_axis_in_cpu_kernel_of_gpu_case
        import dataclasses

        out = dataclasses.replace(out, target="cuda")
    if kind in THREAD_AXES:
        # as in bind: code outside the loop now runs on every thread along the axis
        # (fuzz case annotate_thread_axis_makes_sibling_stores_race)
        from tessel.schedules.gpu import redundancy_problems

        problems = redundancy_problems(out)
        if problems:
            raise ScheduleError(f"cannot make loop '{loop}' {kind}: " + "; ".join(problems[:3]))
    return out, [loop]


def _inner_loops(loop: For):
    from tessel.ir.nodes import walk

    for n in walk(loop.body):
        if isinstance(n, For):
            yield n


__all__ = ["annotate", "and_all", "fuse", "leaf_of_chain", "reorder", "split"]


def peel(kernel: Kernel, loop: str, factor: int) -> tuple[Kernel, list[str]]:
    """Split innermost loop `loop` of extent E into whole pieces of `factor` and a remainder loop:
    `for o in E // factor: for i in factor: body(o * factor + i)` then `for t in E % factor:
    body(E // factor * factor + t)`, no guard (what `split` would need); returns [o, i, t] (t only when
    factor does not divide E). The body is copied, so it must hold no loops, allocations or lets
    (names stay unique).

    >>> import tessel as ts
    >>> A = ts.placeholder((10,), name="A")
    >>> k, names = peel(ts.lower([A, ts.compute((10,), lambda i: A[i] + 1.0, name="B")]), "i", 4)
    >>> names
    ['i_0', 'i_1', 'i_2']
    """
    from tessel.ir.nodes import Allocate, LetStmt, Seq, walk

    target = find_loop(kernel.body, loop)
    if target.kind != "serial":
        raise ScheduleError(f"peel '{loop}': the loop is {target.kind}; peel a serial loop")
    extent = const_extent(target)
    if isinstance(factor, bool) or not isinstance(factor, int) or not 0 < factor <= extent:
        raise ScheduleError(f"peel '{loop}': factor must be an integer in 1..{extent}, got {factor!r}")
    if any(isinstance(n, (For, Allocate, LetStmt)) for n in walk(target.body)):
        raise ScheduleError(f"peel '{loop}': its body holds loops, allocations or lets; peel an innermost loop")
    whole, rem = divmod(extent, factor)
    taken = used_names(kernel)
    vo, vi = (Var(fresh_name(taken, f"{loop}_{n}")) for n in range(2))
    vt = Var(fresh_name(taken, f"{loop}_2")) if rem else None

    def rebuild(old: For):
        main = For(vo, Const(whole), For(vi, Const(factor), substitute(old.body, {old.var: vo * factor + vi})))
        if vt is None:
            return main
        return Seq((main, For(vt, Const(rem), substitute(old.body, {old.var: Const(whole * factor) + vt}))))

    return replace_loop(kernel, loop, rebuild), [v.name for v in (vo, vi, vt) if v is not None]
