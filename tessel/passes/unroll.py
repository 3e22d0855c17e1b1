"""Full unrolling of small constant loops, in the IR.

`unroll(kernel, max_extent, max_stmts, serial)` replaces a loop of kind "unrolled" (and, with
`serial=True`, a serial loop) whose extent is a constant of at most `max_extent` by one copy of
its body per iteration, the loop variable replaced by the iteration's constant. A simplify pass
after it folds what became constant: on the GPU that turns register-array indices such as
`C_local[i * 16 + j * 4 + e]` into constants, which is what keeps those arrays in registers.

Decided here (the CUDA pipeline's choice): small loops are unrolled in the IR, so the index
arithmetic of every copy is folded by our simplifier and the interpreter runs what nvcc receives;
a loop that is too long (`max_extent`), whose copies would exceed `max_stmts` statements, or whose
body allocates a buffer (copies would allocate it again) stays a loop, which the printer emits with
`#pragma unroll` when it is marked unrolled. Vectorized loops and loops bound to GPU axes are never
unrolled. Names stay unique: the variables of loops and lets inside a copy get the suffix `_u<k>`
(and more if that is taken).

Loops are rewritten bottom-up with the rewrite engine, so inner loops are unrolled first and an
outer loop sees their copies when it counts statements.

Example:
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, i = Buffer("A", (3,)), Var("i")
    >>> k = Kernel("k", (A,), For(i, 3, Store(A, (i,), A[i] * 2.0), "unrolled"))
    >>> print(unroll(k).body)
    A[0] = (A[0] * 2.0f32)
    A[1] = (A[1] * 2.0f32)
    A[2] = (A[2] * 2.0f32)
"""

from __future__ import annotations

import dataclasses

from tessel.ir.nodes import (
    Allocate, Buffer, Const, For, Kernel, LetStmt, Seq, Stmt, Var, rewrite, seq, substitute, walk,
)


def unroll(kernel: Kernel, max_extent: int = 8, max_stmts: int = 256, serial: bool = False) -> Kernel:
    """The kernel with its small constant unrolled loops expanded (see the module docstring).

    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, i = Buffer("A", (16,)), Var("i")
    >>> k = Kernel("k", (A,), For(i, 16, Store(A, (i,), 1.0), "unrolled"))
    >>> unroll(k, max_extent=8) == k     # too long: left to the printer's #pragma unroll
    True
    """
    taken = {n.name for n in walk(kernel) if isinstance(n, (Var, Buffer))}
    kinds = ("unrolled", "serial") if serial else ("unrolled",)

    def fresh(base: str, k: int) -> str:
        name, n = f"{base}_u{k}", 0
        while name in taken:
            n += 1
            name = f"{base}_u{k}_{n}"
        taken.add(name)
        return name

    def expand(node):
        if not isinstance(node, For) or node.kind not in kinds or not isinstance(node.extent, Const):
            return None
        n = int(node.extent.value)
        if not 1 <= n <= max_extent:
            return None
        inner = [x for x in walk(node.body) if isinstance(x, Stmt)]
        if any(isinstance(x, Allocate) for x in inner) or n * _count(inner) > max_stmts:
            return None
        bound = [x.var for x in inner if isinstance(x, (For, LetStmt))]
        copies = []
        for k in range(n):
            mapping = {node.var: Const(k, node.var.dtype)}
            mapping.update({v: Var(fresh(v.name, k), v.dtype) for v in bound})
            copies.append(substitute(node.body, mapping))
        return seq(*copies)

    body = rewrite(kernel.body, expand, fixpoint=False)
    return kernel if body is kernel.body else dataclasses.replace(kernel, body=body)


def _count(stmts: list) -> int:
    """Statements that print as code (Seqs only group them)."""
    return sum(1 for s in stmts if not isinstance(s, Seq)) or 1


__all__ = ["unroll"]
