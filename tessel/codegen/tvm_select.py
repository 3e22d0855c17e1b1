"""Which tessel selects may become TVM's eager `Select`, and how a select's loads are made safe.

tessel's `select(c, t, f)` evaluates only the chosen side. TVM's `Select` evaluates both (and
vectorizes); its `if_then_else` evaluates one (and runs a vectorized loop lane by lane). tvm_tir
takes the eager form where neither side can fault, and where TVM's simplifier cannot move a side's
load out of its buffer.

Example:
    >>> from tessel.ir.nodes import Buffer, Load, Select, Var
    >>> i = Var("i"); b = Buffer("b", (3,), "float32")
    >>> constraint_may_move_a_load(Select(Binary("eq", i, Const(2)), Load(b, (i % 3,)), Load(b, (Const(0),))))
    True
"""

from __future__ import annotations

from tessel.ir.dtypes import is_int
from tessel.ir.nodes import Binary, Const, Expr, Load, Select, Var, rewrite, walk


def may_fault(e: Expr, in_bounds) -> bool:
    """Whether evaluating `e` when its select does not choose it could fault: it loads memory at
    indices `in_bounds(load)` cannot prove inside the buffer, or divides integers by a possible zero.
    A masked attention score `select(mask[i, j], s[i, j] * scale, -inf)` reads in bounds, so it stays
    an eager select that vectorizes (as a lazy `if_then_else` the vectorized loop ran lane by lane,
    10x slower)."""
    return any((isinstance(n, Load) and not in_bounds(n))
               or (isinstance(n, Binary) and n.op in ("div", "floordiv", "floormod") and is_int(n.dtype)
                   and not (isinstance(n.b, Const) and n.b.value not in (0, -1))) for n in walk(e))


def clampable(e: Select) -> bool:
    """Whether every load of the select's sides has a static shape (so its indices can be clamped)."""
    return all(all(isinstance(d, int) for d in n.buffer.shape) for b in (e.t, e.f) for n in walk(b)
               if isinstance(n, Load))


def clamped(e: Expr, in_bounds) -> Expr:
    """`e` with the indices of each load `in_bounds` cannot prove clamped into the buffer, so no load
    can fault."""

    def fn(n):
        if isinstance(n, Load) and not in_bounds(n):
            idx = tuple(Binary("max", Binary("min", i, Const(d - 1, i.dtype)), Const(0, i.dtype))
                        for i, d in zip(n.indices, n.buffer.shape))
            return Load(n.buffer, idx)
        return None

    return rewrite(e, fn, fixpoint=False)


def constraint_may_move_a_load(e: Select) -> bool:
    """Whether TVM's simplifier could move a load of an eager Select's side out of its buffer. It
    simplifies each side assuming the condition (IRMutatorWithAnalyzer), which is sound for a lazy
    if_then_else only: under `i == 2`, `buf[i % 3]` became `buf[i]`, which the eager Select then
    loaded for every i, past the buffer's end (an unrolled float16 kernel crashed: fuzz case
    tvm_select_branch_simplified_under_its_condition). Only indices with div/mod/min/max change
    that way; then the select stays lazy."""
    constrained = {n for n in _walk_outside_loads(e.cond) if isinstance(n, Var)}
    if not constrained:
        return False
    for side in (e.t, e.f):
        for n in walk(side):
            if isinstance(n, Load):
                for idx in n.indices:
                    nodes = list(walk(idx))
                    if any(isinstance(m, Binary) and m.op in ("floordiv", "floormod", "min", "max") for m in nodes) \
                            and any(isinstance(m, Var) and m in constrained for m in nodes):
                        return True
    return False


def _walk_outside_loads(e):
    """The nodes of `e`, not descending into loads (a loaded value constrains no index)."""
    stack = [e]
    while stack:
        n = stack.pop()
        yield n
        if not isinstance(n, Load):
            stack.extend(n.children())


__all__ = ["clampable", "clamped", "constraint_may_move_a_load", "may_fault"]
