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


def _const_true(cond) -> bool:
    if isinstance(cond, Binary) and cond.op == "and":
        return _const_true(cond.a) and _const_true(cond.b)
    if isinstance(cond, Binary) and cond.op == "eq":
        a, b = interval(cond.a, {}), interval(cond.b, {})
        return a is not None and b is not None and a[0] == a[1] == b[0] == b[1]
    return False


__all__ = ["decompose_reduction"]
