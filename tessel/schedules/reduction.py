"""decompose_reduction: hoist a reduction's initialisation out of its reduction loops.

The DSL lowers a reduction to one perfect nest with a guarded init (`if k == 0: C[i] = 0`).
`decompose_reduction(C, at=L)` replaces loop L by two nests: an init nest over the spatial loops
from L inwards, then the update nest without the guard. Loops of the update nest keep their
names; the init nest's loops get `_init` names.

Example:
    >>> from tessel.ir.dsl import placeholder, compute, lower, reduce_axis, sum
    >>> A = placeholder((4, 8), name="A")
    >>> k = reduce_axis(8, name="k")
    >>> kern = lower([A, compute((4,), lambda i: sum(A[i, k], axis=k), name="S")])
    >>> kern, names = decompose_reduction(kern, "S", "i")
    >>> names
    ['i_init']
"""

from __future__ import annotations

from tessel.errors import ScheduleError
from tessel.ir.bounds import interval
from tessel.ir.nodes import Binary, Const, For, IfThenElse, Kernel, Seq, Var, rewrite, substitute, walk
from tessel.schedules.nest import find_loop, fresh_name, init_guards, perfect_chain, rebuild_chain, used_names


def decompose_reduction(kernel: Kernel, buffer: str, at: str) -> tuple[Kernel, list[str]]:
    """Hoist the guarded initialisation of a reduction into `buffer` out of loop `at`: an init
    nest over the spatial loops from `at` inwards runs before the update nest."""
    loop = find_loop(kernel.body, at)
    guards = [(g, u) for g, u in init_guards(loop) if g.then.buffer.name == buffer]
    if not guards:
        raise ScheduleError(f"decompose_reduction: no guarded init of '{buffer}' inside loop '{at}' "
                            f"(not a reduction, or already decomposed)")
    guard, update = guards[0]
    chain = perfect_chain(loop)
    leaf = chain[-1].body
    bound_conds = []
    while isinstance(leaf, IfThenElse) and leaf.else_ is None:  # bounds guards left by split
        bound_conds.append(leaf.cond)
        leaf = leaf.then
    if not (isinstance(leaf, Seq) and leaf.stmts == (guard, update)):
        raise ScheduleError(f"decompose_reduction: the reduction of '{buffer}' is not perfectly nested under "
                            f"loop '{at}'")
    red = {v for v in walk(guard.cond) if isinstance(v, Var)}
    _check_first_iteration(kernel, at, guard.cond, chain, red)
    index_vars = {v for idx in update.indices for v in walk(idx)}
    spatial, zero, red_extents = [], {}, []
    for lp in chain:
        if lp.var in red:
            if lp.var in index_vars:
                raise ScheduleError(f"decompose_reduction: loop '{lp.var.name}' mixes reduction and spatial "
                                    f"iterations (fused?)")
            zero[lp.var] = Const(0)
            red_extents.append(lp.extent)
        else:
            if lp.var not in index_vars and interval(lp.extent, {}) != (1, 1):
                # the guard re-runs the init on every iteration of such a loop: not hoistable
                raise ScheduleError(f"decompose_reduction: loop '{lp.var.name}' neither indexes '{buffer}' nor "
                                    f"takes part in its init guard")
            spatial.append(lp)
    taken = used_names(kernel)
    fresh = {lp.var: Var(fresh_name(taken, f"{lp.var.name}_init")) for lp in spatial}
    init = guard.then
    for c in reversed(bound_conds):
        init = IfThenElse(substitute(c, zero), init)
    outer_cond = substitute(guard.cond, zero)
    for lp in reversed(spatial):
        init = For(lp.var, lp.extent, init, lp.kind)
    init = substitute(init, fresh)
    if any(isinstance(v, Var) for v in walk(outer_cond)):
        init = IfThenElse(outer_cond, init)
    elif not _const_true(outer_cond):
        raise ScheduleError(f"decompose_reduction: cannot decide the init condition {outer_cond}")
    for ext in reversed(red_extents):  # a reduction loop without iterations never ran the init either
        span = interval(ext, {})
        if span is None or span[0] < 1:
            init = IfThenElse(Binary("gt", ext, Const(0)), init)
    update_leaf = update
    for c in reversed(bound_conds):
        update_leaf = IfThenElse(c, update_leaf)
    update_nest = rebuild_chain(chain, update_leaf)
    out = rewrite(kernel, lambda n: Seq((init, update_nest)) if isinstance(n, For) and n.var.name == at else None,
                  fixpoint=False)
    return out, [fresh[lp.var].name for lp in spatial]


def _check_first_iteration(kernel: Kernel, at: str, cond, chain: list, red: set) -> None:
    """The hoisted init runs once before loop `at` when `cond` holds with the loops from `at` inwards at 0;
    that is the original only if, within one run of those loops, `cond` holds exactly at their first
    iteration (fuzz case decompose_reduction_or_in_init_guard: `(r0 == 0 || r1 == 1) && r2 == 0`
    re-initialises mid-reduction). Checked on every point of the guard's variables (corners and 256
    random points when there are more than 512); a guard that cannot be evaluated is not checked."""
    import itertools
    import random

    from tessel.ir.verify_witness import evaluate
    from tessel.schedules.nest import loop_path

    loops = {lp.var: lp for lp in loop_path(kernel.body, at)[:-1] + list(chain)}
    names = sorted(red, key=lambda v: v.name)
    if any(v not in loops or not isinstance(loops[v].extent, Const) for v in names):
        return
    inner = {lp.var for lp in chain}
    extents = [max(0, int(loops[v].extent.value)) for v in names]
    total = 1
    for e in extents:
        total *= e
    if total == 0:
        return
    if total <= 512:  # (evaluating costs ~10 us a point: this runs for every scheduled reduction)
        points = itertools.product(*(range(e) for e in extents))
    else:
        rng = random.Random(0)
        corners = [tuple((e - 1 if k == d else 0) for k, e in enumerate(extents)) for d in range(len(extents))]
        points = [tuple(0 for _ in extents)] + corners + [tuple(rng.randrange(e) for e in extents) for _ in range(256)]
    for pt in points:
        env = dict(zip(names, pt))
        first = {v: (0 if v in inner else x) for v, x in env.items()}
        got, at_first = evaluate(cond, env), evaluate(cond, first)
        if got is None or at_first is None:
            return
        is_first = all(x == 0 for v, x in env.items() if v in inner)
        if bool(got) != (bool(at_first) and is_first):
            where = ", ".join(f"{v.name}={x}" for v, x in env.items())
            raise ScheduleError(f"decompose_reduction: the init guard {cond} of loop '{at}' holds at {where}, not only "
                                f"at the first iteration of the loops it would be hoisted out of")


def _const_true(cond) -> bool:
    if isinstance(cond, Binary) and cond.op == "and":
        return _const_true(cond.a) and _const_true(cond.b)
    if isinstance(cond, Binary) and cond.op == "eq":
        a, b = interval(cond.a, {}), interval(cond.b, {})
        return a is not None and b is not None and a[0] == a[1] == b[0] == b[1]
    return False


__all__ = ["decompose_reduction"]
