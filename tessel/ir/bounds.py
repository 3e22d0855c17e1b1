"""Integer interval analysis of index expressions.

`interval(expr, ranges)` gives the inclusive range [lo, hi] an integer expression takes when each
variable in `ranges` runs over its own inclusive range, or None when it cannot tell (an unknown
variable, a non-integer expression, a product of two ranges of unknown sign is still handled).
The DSL uses it to reject out-of-bounds indices and the verifier to catch constant
out-of-bounds accesses.

Example:
    >>> from tessel.ir.nodes import Var
    >>> i, j = Var("i"), Var("j")
    >>> interval(i * 4 + j % 4, {i: (0, 7), j: (0, 100)})
    (0, 31)
"""

from __future__ import annotations

from tessel.ir.dtypes import is_int
from tessel.ir.nodes import Binary, Cast, Const, Expr, Select, Var


def interval(expr: Expr, ranges: dict) -> tuple[int, int] | None:
    """Inclusive integer bounds of `expr` over `ranges` ({Var: (lo, hi)}), or None if unknown."""
    if isinstance(expr, Const):
        if isinstance(expr.value, bool) or not isinstance(expr.value, int):
            return None
        return expr.value, expr.value
    if isinstance(expr, Var):
        return ranges.get(expr)
    if isinstance(expr, Cast):
        return interval(expr.value, ranges) if is_int(expr.dtype) else None
    if isinstance(expr, Select):
        decided = _decide(expr.cond, ranges)
        if decided is not None:  # e.g. `where(i < 0, i + n, i)` with i known to be >= 0
            return interval(expr.t if decided else expr.f, ranges)
        t, f = interval(expr.t, ranges), interval(expr.f, ranges)
        if t is None or f is None:
            return None
        return min(t[0], f[0]), max(t[1], f[1])
    if not isinstance(expr, Binary):
        return None
    a = interval(expr.a, ranges)
    b = interval(expr.b, ranges)
    if a is None or b is None:
        return None
    return binop_range(expr.op, a, b)


def binop_range(op: str, a: tuple, b: tuple) -> tuple[int, int] | None:
    """Inclusive range of the integer `a op b` when a and b run over their inclusive ranges
    (values as true integers: no wrap-around), or None when it is not bounded this simply.

    >>> binop_range("floordiv", (-7, 9), (2, 4))
    (-4, 4)
    """
    (al, ah), (bl, bh) = a, b
    if op == "add":
        return al + bl, ah + bh
    if op == "sub":
        return al - bh, ah - bl
    if op == "mul":
        corners = (al * bl, al * bh, ah * bl, ah * bh)
        return min(corners), max(corners)
    if op == "min":
        return min(al, bl), min(ah, bh)
    if op == "max":
        return max(al, bl), max(ah, bh)
    if op == "floordiv" and (bl > 0 or bh < 0):  # the divisor keeps one sign: extremes at corners
        corners = [x // y for x in (al, ah) for y in (bl, bh)]
        return min(corners), max(corners)
    if op == "floormod" and bl > 0:
        return (al, ah) if 0 <= al and ah < bl else (0, bh - 1)
    if op == "floormod" and bh < 0:
        return bl + 1, 0
    return None

def _decide(cond: Expr, ranges: dict) -> bool | None:
    """True or False when the intervals of a comparison's operands decide it, else None."""
    if not isinstance(cond, Binary) or cond.op not in ("lt", "le", "gt", "ge"):
        return None
    a, b = interval(cond.a, ranges), interval(cond.b, ranges)
    if a is None or b is None:
        return None
    (al, ah), (bl, bh) = a, b
    if cond.op in ("gt", "ge"):
        (al, ah), (bl, bh) = (bl, bh), (al, ah)  # a > b  is  b < a
    strict = cond.op in ("lt", "gt")
    if (ah < bl) if strict else (ah <= bl):
        return True
    if (al >= bh) if strict else (al > bh):
        return False
    return None
