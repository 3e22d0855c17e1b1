"""Loop-invariant hoisting of index arithmetic: lets outside the loop.

`hoist_invariants(kernel, min_ops=2)` looks, for every loop, for integer expressions in its body
that do not depend on the loop's variable or on anything bound inside the loop, and computes them
once before the loop, as `let` variables:

- a whole invariant expression with at least `min_ops` operations is bound to a let;
- in a sum whose terms are partly invariant (`i_0 * 64 + it * 32 + j_1 * 8`, loop `it`), the
  invariant terms are gathered into one let (`t = i_0 * 64 + j_1 * 8`, then `t + it * 32`).
  Integer addition wraps modulo 2**bits, so regrouping the terms gives the same value;
- a let inside the loop whose value is invariant moves out of the loop.

Only pure index arithmetic moves: integer expressions without loads (a load may read what the
loop stores), whose only divisions are floordiv/floormod by positive constants (so evaluating them
where the loop would not have run cannot fail). Statements never move, so barriers and intrinsics
stay where they are. Loops are processed innermost first (the rewrite engine's bottom-up order),
so an expression invariant in several loops climbs out of each in turn. Vectorized loops are left
alone, inside and out: the CUDA printer proves their accesses contiguous and aligned from the
structure of their indices, which a let would hide. A let costs a register; nvcc hoists too, so
what this buys is mostly smaller, readable CUDA and fewer operations in the interpreter.

Example:
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, i, j = Buffer("A", (64,), "int32"), Var("i"), Var("j")
    >>> body = For(i, 4, For(j, 4, Store(A, (i * 16 + j * 2 + i * 4,), j)))
    >>> print(hoist_invariants(Kernel("k", (A,), body)).body)
    for i in 4 {
      let j_inv1: int32 = ((i * 16) + (i * 4)) {
        for j in 4 {
          A[(j_inv1 + (j * 2))] = j
        }
      }
    }
"""

from __future__ import annotations

import dataclasses

from tessel.ir.dtypes import is_int
from tessel.ir.nodes import (
    Binary, Buffer, Call, Cast, Const, Expr, For, Kernel, LetStmt, Load, Node, Not, Select, Var, rewrite, substitute,
    walk,
)


def hoist_invariants(kernel: Kernel, min_ops: int = 2) -> Kernel:
    """The kernel with loop-invariant index arithmetic bound to lets before each loop.

    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, i = Buffer("A", (8,)), Var("i")
    >>> k = Kernel("k", (A,), For(i, 8, Store(A, (i,), 1.0)))
    >>> hoist_invariants(k) is k
    True
    """
    taken = {n.name for n in walk(kernel) if isinstance(n, (Var, Buffer))}
    counter = [0]

    def fresh(base: str) -> str:
        while True:
            counter[0] += 1
            name = f"{base}_inv{counter[0]}"
            if name not in taken:
                taken.add(name)
                return name

    def loop(node):
        # Loops bound to GPU axes run their body once per thread: nothing to gain there.
        if not isinstance(node, For) or node.kind not in ("serial", "unrolled", "parallel"):
            return None
        return _Loop(node, fresh, min_ops).hoist()

    body = rewrite(kernel.body, loop, fixpoint=False)
    return kernel if body == kernel.body else dataclasses.replace(kernel, body=body)


def _ops(e: Expr) -> int:
    return sum(1 for n in walk(e) if isinstance(n, (Binary, Cast, Select, Not, Call)))


class _Loop:
    """Hoisting out of one loop."""

    def __init__(self, loop: For, fresh, min_ops: int):
        self.loop = loop
        self.fresh = fresh
        self.min_ops = min_ops
        self.bound = {loop.var.name} | {n.var.name for n in walk(loop.body) if isinstance(n, (For, LetStmt))}
        self.lets: list[tuple[Var, Expr]] = []  # in binding order, outermost first
        self.by_value: dict[Expr, Var] = {}
        self.alias: dict[Var, Var] = {}  # moved lets whose value an earlier let already holds

    def invariant(self, e: Expr) -> bool:
        if not is_int(e.dtype):
            return False
        for n in walk(e):
            if isinstance(n, Load):
                return False
            if isinstance(n, Var) and n.name in self.bound:
                return False
            if isinstance(n, Binary) and n.op in ("floordiv", "floormod", "div"):
                if not (isinstance(n.b, Const) and is_int(n.b.dtype) and n.b.value > 0):
                    return False
        return True

    def bind(self, value: Expr) -> Var:
        var = self.by_value.get(value)
        if var is None:
            var = Var(self.fresh(self.loop.var.name), value.dtype)
            self.by_value[value] = var
            self.lets.append((var, value))
        return var

    def hoist(self):
        body = self.float_lets(self.loop.body)
        if self.alias:  # before `stmt`: the lets it makes must name the kept variables
            body = substitute(body, self.alias)
        body = self.stmt(body)
        if not self.lets:
            return None
        out = dataclasses.replace(self.loop, body=body)
        for var, value in reversed(self.lets):
            out = LetStmt(var, value, out)
        return out

    def float_lets(self, body):
        """Lets inside the loop (outside vectorized loops) whose values are invariant move out;
        repeated, since a moved let makes lets that use it invariant too."""
        while True:
            moving = [n for n in _lets(body) if is_int(n.var.dtype) and self.invariant(n.value)]
            if not moving:
                return body
            for n in moving:
                self.bound.discard(n.var.name)
                value = substitute(n.value, self.alias) if self.alias else n.value
                if value in self.by_value:
                    self.alias[n.var] = self.by_value[value]
                else:
                    self.lets.append((n.var, value))
                    self.by_value[value] = n.var
            gone = {n.var.name for n in moving}
            body = rewrite(body, lambda x: x.body if isinstance(x, LetStmt) and x.var.name in gone else None,
                           fixpoint=False)

    def stmt(self, s: Node) -> Node:
        if isinstance(s, For) and s.kind == "vectorized":
            return s
        if isinstance(s, Expr):
            return self.expr(s)
        kids = s.children()
        if not kids:
            return s
        new = [self.stmt(k) for k in kids]
        return s.with_children(new) if any(a is not b for a, b in zip(new, kids)) else s

    def expr(self, e: Expr) -> Expr:
        if isinstance(e, (Var, Const)):
            return e
        if isinstance(e, Binary) and e.op in ("add", "sub") and is_int(e.dtype):
            # Constant terms stay in place, so `t + 8` and `t + 16` share one let t.
            terms = _terms(e, 1)
            inv = [(t, s) for t, s in terms if not isinstance(t, Const) and self.invariant(t)]
            cost = len(inv) - 1 + sum(_ops(t) for t, _ in inv)
            if inv and cost >= self.min_ops and any(s > 0 for _, s in inv):
                rest = [(t if isinstance(t, Const) else self.expr(t), s) for t, s in terms
                        if isinstance(t, Const) or not self.invariant(t)]
                return _sum([(self.bind(_sum(inv)), 1)] + rest)
        elif is_int(e.dtype) and self.invariant(e):
            return self.bind(e) if _ops(e) >= self.min_ops else e
        kids = e.children()
        new = [self.expr(k) if isinstance(k, Expr) else k for k in kids]
        return e.with_children(new) if any(a is not b for a, b in zip(new, kids)) else e


def _lets(s: Node) -> list:
    out, stack = [], [s]
    while stack:
        n = stack.pop()
        if isinstance(n, For) and n.kind == "vectorized":
            continue
        if isinstance(n, LetStmt):
            out.append(n)
        stack.extend(c for c in n.children() if not isinstance(c, Expr))
    return out


def _terms(e: Expr, sign: int) -> list:
    """A sum of integer terms as [(term, +1 or -1)]."""
    if isinstance(e, Binary) and e.op in ("add", "sub") and e.a.dtype == e.b.dtype == e.dtype:
        return _terms(e.a, sign) + _terms(e.b, sign if e.op == "add" else -sign)
    return [(e, sign)]


def _sum(terms: list) -> Expr:
    """The expression of signed terms; the first positive term leads."""
    terms = sorted(terms, key=lambda ts: ts[1] < 0)  # stable: positive terms first, in order
    out = terms[0][0] if terms[0][1] > 0 else Binary("sub", Const(0, terms[0][0].dtype), terms[0][0])
    for t, s in terms[1:]:
        out = Binary("add" if s > 0 else "sub", out, t)
    return out


__all__ = ["hoist_invariants"]
