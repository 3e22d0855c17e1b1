"""Integer index analyses on tessel IR that the TVM translator (tvm_tir.py) needs; no TVM here.

- `fold_nested_mod`: `((x % m) + c) % m` -> `(x + c) % m`;
- `offset_divmods`: the floordiv / floormod terms of one access whose dividends differ by a
  constant (TVM 0.27's iter-map simplification merges them as if equal, so they are emitted
  truncated);
- `divides`: whether an expression divides integers by something that may be zero or -1;
- `interval`: (min, max) of an integer expression over known variable ranges.

Example:
    >>> from tessel.ir.nodes import Binary, Const, Var
    >>> i = Var("i")
    >>> e = Binary("floormod", Binary("add", Binary("floormod", i, Const(2)), Const(1)), Const(2))
    >>> str(fold_nested_mod(e)) == str(Binary("floormod", Binary("add", i, Const(1)), Const(2)))
    True
    >>> interval(Binary("mul", i, Const(3)), {"i": (0, 4)})
    (0, 12)
"""

from __future__ import annotations

from tessel.ir.dtypes import is_int
from tessel.ir.nodes import Binary, Const, Expr, Var, walk
from tessel.ir.rewrite import rewrite


def positive_const(e: Expr) -> bool:
    return isinstance(e, Const) and isinstance(e.value, int) and not isinstance(e.value, bool) and e.value > 0


def split_constant(e: Expr) -> tuple[Expr, int]:
    """`e` as (rest, integer constant) with `e == rest + constant`: `(x + 1) + 2` -> (x, 3)."""
    if isinstance(e, Binary) and e.op in ("add", "sub") and isinstance(e.b, Const) and type(e.b.value) is int:
        rest, c = split_constant(e.a)
        return rest, c + (e.b.value if e.op == "add" else -e.b.value)
    if isinstance(e, Binary) and e.op == "add" and isinstance(e.a, Const) and type(e.a.value) is int:
        rest, c = split_constant(e.b)
        return rest, c + e.a.value
    return e, 0


def fold_nested_mod(e: Expr) -> Expr:
    """`((x % m) + c) % m` -> `(x + c) % m` and `(x % m) % m` -> `x % m` for a constant m > 0
    (equal for every integer x)."""
    def fn(n):
        if not (isinstance(n, Binary) and n.op == "floormod" and is_int(n.dtype) and positive_const(n.b)):
            return None
        rest, c = split_constant(n.a)
        if isinstance(rest, Binary) and rest.op == "floormod" and rest.b == n.b:
            inner = rest.a if c == 0 else Binary("add", rest.a, Const(c, rest.a.dtype))
            return Binary("floormod", inner, n.b)
        return None

    return rewrite(e, fn)


def offset_divmods(idx: tuple) -> frozenset:
    """The floordiv / floormod-by-a-positive-constant nodes of one access's indices whose dividend
    is another one's plus a different constant (TVM's iter-map analysis merges those)."""
    groups: dict = {}
    for i in idx:
        for n in walk(i):
            if isinstance(n, Binary) and n.op in ("floordiv", "floormod") and is_int(n.dtype) and positive_const(n.b):
                rest, c = split_constant(n.a)
                groups.setdefault(rest, []).append((c, n))
    return frozenset(n for found in groups.values() if len({c for c, _ in found}) > 1 for _, n in found)


def divides(e: Expr) -> bool:
    """Whether `e` divides integers by something that may be zero (or -1: MIN // -1 traps)."""
    return any(isinstance(n, Binary) and n.op in ("div", "floordiv", "floormod") and is_int(n.dtype)
               and not (isinstance(n.b, Const) and n.b.value not in (0, -1)) for n in walk(e))


def interval(e: Expr, ranges: dict):
    """(min, max) of an integer expression over the known variable ranges, or None."""
    if isinstance(e, Const):
        return (e.value, e.value) if isinstance(e.value, int) and not isinstance(e.value, bool) else None
    if isinstance(e, Var):
        return ranges.get(e.name)
    if not isinstance(e, Binary) or not is_int(e.dtype):
        return None
    a = interval(e.a, ranges)
    b = interval(e.b, ranges)
    if a is None or b is None:
        return None
    if e.op == "add":
        return (a[0] + b[0], a[1] + b[1])
    if e.op == "sub":
        return (a[0] - b[1], a[1] - b[0])
    if e.op == "mul":
        c = [x * y for x in a for y in b]
        return (min(c), max(c))
    if e.op == "min":
        return (min(a[0], b[0]), min(a[1], b[1]))
    if e.op == "max":
        return (max(a[0], b[0]), max(a[1], b[1]))
    if e.op in ("floordiv", "floormod") and b[0] == b[1] and b[0] > 0:
        if e.op == "floordiv":
            return (a[0] // b[0], a[1] // b[0])
        return (a[0] % b[0], a[1] % b[0]) if a[0] // b[0] == a[1] // b[0] else (0, b[0] - 1)
    return None
