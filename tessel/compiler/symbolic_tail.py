"""Peel the guarded tail of loops split by a factor over a symbolic extent.

A schedule that splits a loop of symbolic extent E by f gives `for o in (E + f - 1) // f` with
guards `o * f + i < E` around the work (i < f). The guards sit in the innermost loops (a GEMM's
register tile), where they keep LLVM from keeping the tile in vector registers. `peel_tails`
rewrites such a loop into the full tiles, without the guards (there `o < E // f`, so
`o * f + i <= E - 1`), then the tail tile with them:

    for o in E // f { body, guards true }
    for o_tail in (E + f - 1) // f - E // f { body[o := o_tail + E // f], inner names suffixed }

Loops whose extent is a constant, and loops that are vectorized or unrolled, are left alone; so are
guards of any other form. The copy's loop variables and allocations are renamed (`_tail`), so names
stay unique in the kernel.

Example:
    >>> from tessel.ir.nodes import Buffer, For, IfThenElse, Kernel, Store, Var
    >>> from tessel.ir.text import to_text
    >>> n, o, t = Var("n"), Var("o"), Var("t")
    >>> A = Buffer("A", (n,))
    >>> loop = For(o, (n + 7) // 8, For(t, 8, IfThenElse(o * 8 + t < n, Store(A, (o * 8 + t,), 1.0))))
    >>> print(to_text(peel_tails(loop)).splitlines()[0])
    for o in (n // 8) {
"""

from __future__ import annotations

import dataclasses

from tessel.ir.nodes import Allocate, Binary, Const, Expr, For, IfThenElse, LetStmt, Node, Seq, Var

SUFFIX = "_tail"


def peel_tails(tree):
    """`tree` (a Kernel or statement) with every guarded split loop of symbolic extent peeled."""
    return _map(tree, _peel)


def _split_of(loop: For):
    """(E, f) when `loop`'s extent is `(E + (f - 1)) // f` with E symbolic and f > 1, else None."""
    e = loop.extent
    if not (isinstance(e, Binary) and e.op == "floordiv" and isinstance(e.b, Const) and e.b.value > 1):
        return None
    f = e.b.value
    num = e.a
    if not (isinstance(num, Binary) and num.op == "add" and isinstance(num.b, Const) and num.b.value == f - 1):
        return None
    if isinstance(num.a, Const):
        return None
    return num.a, f


def _peel(node):
    if not isinstance(node, For) or node.kind not in ("serial", "parallel") or node.thread_axis is not None:
        return None
    split = _split_of(node)
    if split is None:
        return None
    extent, f = split
    found = [False]
    full_body = _drop_guards(node.body, node.var, f, extent, {}, found)
    if not found[0]:
        return None
    full = Binary("floordiv", extent, Const(f, extent.dtype))
    o_tail = Var(node.var.name + SUFFIX, node.var.dtype)
    names = _bound_names(node.body)
    tail_body = _map(node.body, lambda x: _rename(x, node.var, Binary("add", o_tail, full), names))
    tail = For(o_tail, Binary("sub", node.extent, full), tail_body, node.kind)
    return Seq((dataclasses.replace(node, extent=full, body=full_body), tail))


def _drop_guards(s, o: Var, f: int, extent: Expr, ranges: dict, found: list):
    """`s` with each guard `o * f + x < extent` (x in [0, f - 1] over the loops inside) made true."""
    if isinstance(s, IfThenElse):
        if _is_guard(s.cond, o, f, extent, ranges):
            found[0] = True
            return _drop_guards(s.then, o, f, extent, ranges, found)
        return dataclasses.replace(s, then=_drop_guards(s.then, o, f, extent, ranges, found),
                                   else_=None if s.else_ is None else _drop_guards(s.else_, o, f, extent, ranges,
                                                                                     found))
    if isinstance(s, For):
        inner = dict(ranges)
        if isinstance(s.extent, Const):
            inner[s.var] = (0, s.extent.value - 1)
        return dataclasses.replace(s, body=_drop_guards(s.body, o, f, extent, inner, found))
    if isinstance(s, Seq):
        return Seq(tuple(_drop_guards(x, o, f, extent, ranges, found) for x in s.stmts))
    if isinstance(s, (LetStmt, Allocate)):
        return dataclasses.replace(s, body=_drop_guards(s.body, o, f, extent, ranges, found))
    return s


def _is_guard(cond, o: Var, f: int, extent: Expr, ranges: dict) -> bool:
    if not (isinstance(cond, Binary) and cond.op == "lt" and cond.b == extent):
        return False
    a = cond.a
    if not (isinstance(a, Binary) and a.op == "add"):
        return False
    head = a.a
    if not (isinstance(head, Binary) and head.op == "mul" and head.a == o and head.b == Const(f, o.dtype)):
        return False
    from tessel.ir.bounds import interval

    span = interval(a.b, ranges)
    return span is not None and span[0] >= 0 and span[1] <= f - 1


def _bound_names(s) -> tuple:
    """(loop and let variable names, allocated buffer names) inside `s`."""
    from tessel.ir.nodes import walk

    vars_, bufs = set(), set()
    for x in walk(s):
        if isinstance(x, (For, LetStmt)):
            vars_.add(x.var.name)
        elif isinstance(x, Allocate):
            bufs.add(x.buffer.name)
    return vars_, bufs


def _rename(x, o: Var, value: Expr, names: tuple):
    from tessel.ir.nodes import Buffer

    if isinstance(x, Var):
        if x == o:
            return value
        if x.name in names[0]:
            return Var(x.name + SUFFIX, x.dtype)
    if isinstance(x, Buffer) and x.name in names[1]:
        return dataclasses.replace(x, name=x.name + SUFFIX)
    return None


def _map(x, fn):
    """Rebuild the tree bottom-up, replacing each node where `fn` returns something (top-down: a
    replaced node's children are not visited again)."""
    memo: dict = {}

    def go(y):
        if isinstance(y, (tuple, list)):
            out = [go(z) for z in y]
            return y if all(a is b for a, b in zip(out, y)) else type(y)(out)
        if not (isinstance(y, Node) and dataclasses.is_dataclass(y)):
            return y
        hit = memo.get(id(y))
        if hit is not None and hit[0] is y:
            return hit[1]
        fields = {f.name: go(getattr(y, f.name)) for f in dataclasses.fields(y) if f.init}
        z = y if all(fields[k] is getattr(y, k) for k in fields) else type(y)(**fields)
        r = fn(z)
        out = z if r is None else r
        memo[id(y)] = (y, out)
        return out

    return go(x)
