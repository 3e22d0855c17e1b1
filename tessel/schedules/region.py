"""Which part of a buffer a loop body touches: the bounds inference behind cache_read,
cache_write and compute_at.

An index expression is split into an affine part over the loop variables bound inside the loop
(the "inner" variables, each running over [0, extent)) plus a rest that depends only on variables
fixed for one iteration of the loop. The touched box of one dimension is then
[rest + min, rest + max] with a constant extent. Where an index is not affine in the inner
variables (floordiv/floormod of them, products of two of them), the whole dimension is assumed.

Example:
    >>> from tessel.ir.nodes import Var
    >>> io, ii = Var("io"), Var("ii")
    >>> form = affine_form(io * 32 + ii * 2, {ii})
    >>> form[0], str(form[1])
    ({Var(name='ii', dtype='int32'): 2}, '(io * 32)')
"""

from __future__ import annotations

from dataclasses import dataclass

from tessel.ir.nodes import Binary, Const, Expr, Load, Node, Store, Var, walk


def affine_form(e: Expr, inner: set) -> tuple[dict, Expr] | None:
    """Write `e` as sum(coeff * v for inner v) + rest, rest free of inner variables; None if `e`
    is not affine in the inner variables with constant integer coefficients."""
    if not any(isinstance(n, Var) and n in inner for n in walk(e)):
        return {}, e
    if isinstance(e, Var):
        return {e: 1}, Const(0)
    if not isinstance(e, Binary):
        return None
    if e.op in ("add", "sub"):
        a, b = affine_form(e.a, inner), affine_form(e.b, inner)
        if a is None or b is None:
            return None
        sign = 1 if e.op == "add" else -1
        coeffs = dict(a[0])
        for v, c in b[0].items():
            coeffs[v] = coeffs.get(v, 0) + sign * c
        return {v: c for v, c in coeffs.items() if c != 0}, _combine(a[1], b[1], e.op)
    if e.op == "mul":
        for x, y in ((e.a, e.b), (e.b, e.a)):
            if isinstance(y, Const) and isinstance(y.value, int):
                f = affine_form(x, inner)
                if f is None:
                    return None
                return {v: c * y.value for v, c in f[0].items() if c * y.value != 0}, _combine(f[1], y, "mul")
    return None


def split_offset(e: Expr) -> tuple[Expr, int]:
    """`e` as (symbolic part, integer constant): `(x * 4 + 1) + 2` -> (x * 4, 3)."""
    if isinstance(e, Const) and isinstance(e.value, int) and not isinstance(e.value, bool):
        return Const(0), e.value
    if isinstance(e, Binary) and e.op in ("add", "sub"):
        a, ca = split_offset(e.a)
        b, cb = split_offset(e.b)
        sign = 1 if e.op == "add" else -1
        return _combine(a, b, e.op), ca + sign * cb
    return e, 0


def _combine(a: Expr, b: Expr, op: str) -> Expr:
    if isinstance(b, Const) and b.value == 0 and op in ("add", "sub"):
        return a
    if isinstance(a, Const) and a.value == 0 and op == "add":
        return b
    if isinstance(a, Const) and a.value == 0 and op == "mul":
        return a
    return Binary(op, a, b)


@dataclass(frozen=True)
class Box:
    """A box of buffer elements: per dimension a base expression and a constant extent."""

    bases: tuple
    extents: tuple


def touched_box(accesses: list, shape: tuple, inner_extents: dict) -> Box:
    """The smallest box (as far as affine analysis can tell) holding every access in `accesses`
    (Loads or Stores of one buffer of `shape`) when the inner variables run over their extents."""
    inner = set(inner_extents)
    bases, extents = [], []
    for d, dim in enumerate(shape):
        forms = []
        for acc in accesses:
            f = affine_form(acc.indices[d], inner)
            if f is None:
                forms = None
                break
            coeffs, rest = f
            rest, offset = split_offset(rest)
            lo = offset + sum(min(0, c * (inner_extents[v] - 1)) for v, c in coeffs.items())
            hi = offset + sum(max(0, c * (inner_extents[v] - 1)) for v, c in coeffs.items())
            forms.append((rest, lo, hi))
        if forms and all(f[0] == forms[0][0] for f in forms):
            rest = forms[0][0]
            lo = min(f[1] for f in forms)
            hi = max(f[2] for f in forms)
            base = _combine(rest, Const(lo), "add")
            extent = hi - lo + 1
            if extent >= dim and _is_zero_const(base):
                base, extent = Const(0), dim
            bases.append(base)
            extents.append(min(extent, dim) if _is_zero_const(base) else extent)
        else:
            bases.append(Const(0))
            extents.append(dim)
    return Box(tuple(bases), tuple(extents))


def is_dense_write(stores: list[Store], inner_extents: dict) -> bool:
    """True when each store index dimension is rest + v (one inner variable, coefficient 1, each
    variable used in one dimension): then the stores cover their box without holes."""
    inner = set(inner_extents)
    for st in stores:
        used = set()
        for idx in st.indices:
            f = affine_form(idx, inner)
            if f is None:
                return False
            coeffs = f[0]
            if len(coeffs) > 1 or any(c != 1 for c in coeffs.values()):
                return False
            for v in coeffs:
                if v in used:
                    return False
                used.add(v)
    return True


def _is_zero_const(e: Node) -> bool:
    return isinstance(e, Const) and e.value == 0


def accesses(node: Node, buffer: str) -> list:
    return [n for n in walk(node) if isinstance(n, (Load, Store)) and n.buffer.name == buffer]
