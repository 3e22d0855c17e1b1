"""Dead-code removal: stores nobody reads, and what they leave behind.

`remove_dead_code(kernel)` repeats two steps until nothing changes:

1. Remove every Store into a buffer the kernel allocates (never a parameter: the caller reads
   those) when no statement that can run after it reads that buffer. "After" follows the
   program order: the rest of every enclosing Seq, and the whole body of every enclosing loop
   (the next iteration). This walk carries the set of buffers read later, which no context-free
   rewrite rule can see, so it is a small recursion of its own.
2. With the rewrite engine, drop what became useless: Allocates of buffers no longer used, loops
   and ifs with empty bodies, lets whose variable is unused, and nested or empty Seqs.

Expressions have no side effects in this IR (a load only reads), so removing a store, an if
condition or a let value never removes an effect. Intrinsics are kept, and every buffer they
name counts as read, since what they read and write is the intrinsic's business.

Example:
    >>> from tessel.ir.nodes import Allocate, Buffer, For, Kernel, Seq, Store, Var
    >>> A, T, i = Buffer("A", (4,)), Buffer("T", (4,)), Var("i")
    >>> k = Kernel("k", (A,), Allocate(T, For(i, 4, Seq((Store(T, (i,), A[i]), Store(A, (i,), A[i] * 2.0))))))
    >>> print(remove_dead_code(k).body)
    for i in 4 {
      A[i] = (A[i] * 2.0f32)
    }
"""

from __future__ import annotations

import dataclasses

from tessel.ir.nodes import (
    Allocate, BufferRef, For, IfThenElse, Kernel, LetStmt, Load, Node, Pat, Rule, Seq, Stmt, Store, Var, rewrite, walk,
)
from tessel.passes.simplify import EMPTY, flatten_seq


def remove_dead_code(kernel: Kernel) -> Kernel:
    """The kernel without dead stores, unused allocations and lets, and empty statements.

    >>> from tessel.ir.nodes import Buffer, Kernel, LetStmt, Store, Var
    >>> A, x = Buffer("A", (1,)), Var("x")
    >>> remove_dead_code(Kernel("k", (A,), LetStmt(x, 3, Store(A, (0,), 1.0)))).body == Store(A, (0,), 1.0)
    True
    """
    params = {p.name for p in kernel.params}
    body = kernel.body
    while True:
        local = {a.buffer.name for a in walk(body) if isinstance(a, Allocate)} - params
        new = _Stores(local).drop(body, frozenset())
        new = rewrite(new, _CLEANUP)
        if new == body:
            break
        body = new
    return kernel if body is kernel.body else dataclasses.replace(kernel, body=body)


class _Stores:
    """Step 1: the backward walk that removes stores read by nothing later."""

    def __init__(self, local: set[str]):
        self.local = local  # buffers whose stores may go (allocated here, not parameters)
        self._reads: dict[Node, frozenset] = {}

    def reads(self, s: Node) -> frozenset:
        """Names of the buffers `s` may read: loads anywhere in it, and every intrinsic operand."""
        r = self._reads.get(s)
        if r is None:
            r = frozenset(n.buffer.name for n in walk(s) if isinstance(n, (Load, BufferRef)))
            self._reads[s] = r
        return r

    def drop(self, s: Stmt, later: frozenset) -> Stmt:
        """`s` without the stores whose buffer nothing in `later` (read after `s`) or later in
        `s` itself reads."""
        if isinstance(s, Store):
            return EMPTY if s.buffer.name in self.local and s.buffer.name not in later else s
        if isinstance(s, Seq):
            out = []
            for x in reversed(s.stmts):
                out.append(self.drop(x, later))
                later = later | self.reads(x)
            new = tuple(reversed(out))
            return s if all(a is b for a, b in zip(new, s.stmts)) else Seq(new)
        if isinstance(s, For):
            # The next iteration runs after this one: the whole body counts as later.
            return _with(s, body=self.drop(s.body, later | self.reads(s.body)))
        if isinstance(s, IfThenElse):
            then = self.drop(s.then, later)
            other = None if s.else_ is None else self.drop(s.else_, later)
            return _with(s, then=then, else_=other)
        if isinstance(s, (LetStmt, Allocate)):
            return _with(s, body=self.drop(s.body, later))
        return s  # Barrier, Intrinsic: kept


def _with(node: Node, **fields) -> Node:
    return node if all(getattr(node, k) is v for k, v in fields.items()) else dataclasses.replace(node, **fields)


def _is_empty(s) -> bool:
    return isinstance(s, Seq) and not s.stmts


def _uses_buffer(s: Stmt, name: str) -> bool:
    return any(isinstance(n, (Load, Store, BufferRef)) and n.buffer.name == name for n in walk(s))


def _uses_var(s: Stmt, var: Var) -> bool:
    return any(isinstance(n, Var) and n.name == var.name for n in walk(s))


def _if(node: IfThenElse):
    if node.else_ is not None and _is_empty(node.else_):
        return IfThenElse(node.cond, node.then, None)
    if _is_empty(node.then) and node.else_ is None:
        return EMPTY
    return None


# Step 2: the cleanup rules.
_CLEANUP = [
    Rule(Pat(Allocate), lambda node: None if _uses_buffer(node.body, node.buffer.name) else node.body),
    Rule(Pat(For, body=Pat(Seq, stmts=())), lambda node: EMPTY),
    Rule(Pat(IfThenElse), _if),
    Rule(Pat(LetStmt), lambda node: None if _uses_var(node.body, node.var) else node.body),
    Rule(Pat(Seq), flatten_seq),
]

__all__ = ["remove_dead_code"]
