"""Storage rewriting: allocations sunk to their uses, and buffers with disjoint lifetimes merged.

`rewrite_storage(kernel, shared=True, local=True)` does two things to the `local` (registers) and
`shared` buffers a kernel allocates (global temporaries and parameters are never touched):

1. Sinking. An Allocate moves down to the smallest statement holding every use of its buffer:
   into the one statement of a Seq that uses it (or around the run of statements that do), and
   through lets, other allocations, ifs (one branch) and loops bound to GPU axes (each thread runs
   those once). Never into a serial, unrolled or vectorized loop: there the allocation would be
   made again each iteration, and a value carried from one iteration to the next would be lost.
2. Merging. In a Seq, buffers allocated by different statements (found through the allocations,
   lets and GPU-axis loops that wrap each statement) live at disjoint times, so buffers of one
   scope and dtype share one allocation around the Seq: the first one's name, its shape when all
   shapes are equal, else one flat dimension as large as the largest (accesses are flattened,
   row-major). A buffer that an intrinsic names keeps its shape (the intrinsic's operand layout
   follows it), so it only merges with buffers of the same shape, and only for intrinsics that
   complete before the next statement (shuffles, ldmatrix, mma.sync, stmatrix): an asynchronous
   copy or wgmma could still be writing when the next buffer starts. Shared buffers are seen by
   every thread of the block, so two of them merge only when a barrier orders every access to
   the first before every access to the second (a barrier statement between them, or the
   statement's own barrier after its last access / before its first one); inside a loop, also
   from the second back to the first across the next iteration. Shared buffers named by any
   intrinsic are not merged.

What it buys: less shared memory per block (more blocks per SM) and fewer register arrays live at
once. The merged buffer starts with the previous buffer's leftovers instead of fresh (poisoned)
contents; a kernel that never reads a buffer before writing it computes the same.

The sinking and the merging need the context of a statement (which statements of a Seq use a
buffer, whether a loop encloses it), which no context-free rewrite rule sees, so both are small
recursions of their own; renaming and flattening accesses use the rewrite engine.

Example:
    >>> from tessel.ir.nodes import Allocate, Buffer, For, Kernel, Seq, Store, Var
    >>> A, T, U = Buffer("A", (4,), "int32"), Buffer("T", (4,), "int32", "local"), Buffer("U", (2, 2), "int32", "local")
    >>> body = Allocate(T, Allocate(U, Seq((Store(T, (0,), 1), Store(A, (0,), T[0]),
    ...                                     Store(U, (1, 1), 2), Store(A, (1,), U[1, 1])))))
    >>> print(rewrite_storage(Kernel("k", (A,), body, "cuda")).body)
    alloc T: int32[4] local {
      T[0] = 1
      A[0] = T[0]
      T[3] = 2
      A[1] = T[3]
    }
"""

from __future__ import annotations

import dataclasses

from tessel.ir.nodes import (
    THREAD_AXES, Allocate, Barrier, Buffer, BufferRef, Const, Expr, For, IfThenElse, Intrinsic, Kernel, LetStmt,
    Load, Node, Pat, Rule, Seq, Stmt, Store, rewrite, walk,
)
from tessel.passes.simplify import flatten_seq, simplify

# Intrinsics that have read and written their operands when the statement after them starts.
_SYNC_INTRINSICS = ("shfl.", "ldmatrix", "mma.sync", "stmatrix")


def rewrite_storage(kernel: Kernel, shared: bool = True, local: bool = True) -> Kernel:
    """The kernel with allocations sunk and disjoint-lifetime buffers merged (module docstring).

    >>> from tessel.ir.nodes import Buffer, Kernel, Store
    >>> A = Buffer("A", (1,))
    >>> k = Kernel("k", (A,), Store(A, (0,), 1.0), "cuda")
    >>> rewrite_storage(k) is k
    True
    """
    scopes = tuple(s for s, on in (("shared", shared), ("local", local)) if on)
    if not scopes:
        return kernel
    intrinsic_refs: dict[str, bool] = {}  # buffer name -> all its intrinsics complete synchronously
    for n in walk(kernel.body):
        if isinstance(n, Intrinsic):
            sync = n.name.startswith(_SYNC_INTRINSICS)
            for a in n.args:
                if isinstance(a, BufferRef):
                    intrinsic_refs[a.buffer.name] = intrinsic_refs.get(a.buffer.name, True) and sync
    params = {p.name for p in kernel.params}
    seen: set = set()
    for n in walk(kernel.body):  # a name allocated twice (in disjoint scopes) is left alone: renames go by name
        if isinstance(n, Allocate):
            (params if n.buffer.name in seen else seen).add(n.buffer.name)
    body = _sink(kernel.body, scopes, params)
    body = _Merger(scopes, intrinsic_refs, params).stmt(body, False)
    body = rewrite(body, [Rule(Pat(Seq), flatten_seq)])  # unwrapped allocations leave nested Seqs
    return kernel if body == kernel.body else dataclasses.replace(kernel, body=body)


def _uses(s: Node, name: str) -> bool:
    return any(isinstance(n, (Load, Store, BufferRef)) and n.buffer.name == name for n in walk(s))


# ---------------------------------------------------------------------------------------------
# 1. Sinking
# ---------------------------------------------------------------------------------------------


def _sink(s: Stmt, scopes: tuple, params: set) -> Stmt:
    if isinstance(s, Allocate):
        chain = []
        while isinstance(s, Allocate):
            chain.append(s.buffer)
            s = s.body
        s = _sink(s, scopes, params)
        for buf in reversed(chain):  # the innermost allocation first: outer ones pass through it
            s = _place(buf, s) if buf.scope in scopes and buf.name not in params else Allocate(buf, s)
        return s
    kids = s.children()
    new = [_sink(k, scopes, params) if isinstance(k, Stmt) else k for k in kids]
    return s.with_children(new) if any(a is not b for a, b in zip(new, kids)) else s


def _place(buf: Buffer, s: Stmt) -> Stmt:
    """`Allocate(buf, s)` with the allocation as deep inside `s` as its uses allow."""
    name = buf.name
    if isinstance(s, Seq):
        idx = [i for i, x in enumerate(s.stmts) if _uses(x, name)]
        if idx and idx[0] == idx[-1]:
            i = idx[0]
            return Seq(s.stmts[:i] + (_place(buf, s.stmts[i]),) + s.stmts[i + 1:])
        if idx and (idx[0] > 0 or idx[-1] < len(s.stmts) - 1):
            i, j = idx[0], idx[-1]
            return Seq(s.stmts[:i] + (Allocate(buf, Seq(s.stmts[i:j + 1])),) + s.stmts[j + 1:])
    elif isinstance(s, For) and s.kind in THREAD_AXES and not _uses(s.extent, name):
        return dataclasses.replace(s, body=_place(buf, s.body))
    elif isinstance(s, LetStmt) and not _uses(s.value, name):
        return dataclasses.replace(s, body=_place(buf, s.body))
    elif isinstance(s, Allocate):
        return dataclasses.replace(s, body=_place(buf, s.body))
    elif isinstance(s, IfThenElse) and not _uses(s.cond, name):
        then, other = _uses(s.then, name), s.else_ is not None and _uses(s.else_, name)
        if then and not other:
            return dataclasses.replace(s, then=_place(buf, s.then))
        if other and not then:
            return dataclasses.replace(s, else_=_place(buf, s.else_))
    return Allocate(buf, s)


# ---------------------------------------------------------------------------------------------
# 2. Merging
# ---------------------------------------------------------------------------------------------


def _fenced(s: Stmt, name: str, after: bool) -> bool:
    """Whether a barrier that every thread passes separates every access to `name` in `s` from
    the end of `s` (after=True) or from its start (after=False)."""
    if not _uses(s, name):
        return True
    if isinstance(s, Seq):
        items = s.stmts if after else tuple(reversed(s.stmts))
        last = max(i for i, x in enumerate(items) if _uses(x, name))
        return any(isinstance(x, Barrier) for x in items[last + 1:]) or _fenced(items[last], name, after)
    if isinstance(s, For):  # every iteration (every thread) passes the barrier
        return not _uses(s.extent, name) and _fenced(s.body, name, after)
    if isinstance(s, (Allocate, LetStmt)):
        return not (isinstance(s, LetStmt) and _uses(s.value, name)) and _fenced(s.body, name, after)
    return False


class _Merger:
    def __init__(self, scopes: tuple, intrinsic_refs: dict, params: set):
        self.scopes = scopes
        self.refs = intrinsic_refs
        self.params = params

    def stmt(self, s: Stmt, in_loop: bool) -> Stmt:
        """`s` with the buffers of every Seq inside it merged, innermost Seqs first."""
        if isinstance(s, For):
            body = self.stmt(s.body, in_loop or s.kind not in THREAD_AXES)
            return s if body is s.body else dataclasses.replace(s, body=body)
        kids = s.children()
        new = [self.stmt(k, in_loop) if isinstance(k, Stmt) else k for k in kids]
        if any(a is not b for a, b in zip(new, kids)):
            s = s.with_children(new)
        return self.merge(s, in_loop) if isinstance(s, Seq) else s

    def mergeable(self, buf: Buffer) -> bool:
        if buf.scope not in self.scopes or buf.name in self.params:
            return False
        if buf.name in self.refs:  # named by an intrinsic
            return buf.scope == "local" and self.refs[buf.name]
        return True

    def merge(self, seq: Seq, in_loop: bool) -> Stmt:
        # Buffers each statement allocates in its wrapper chain, in order.
        found = [[b for b in _wrapped_allocs(x) if self.mergeable(b)] for x in seq.stmts]
        slots: list[list] = []  # each: [(stmt index, buffer), ...] in statement order
        for i, bufs in enumerate(found):
            for b in bufs:
                for slot in slots:
                    if self.fits(seq, slot, i, b, in_loop):
                        slot.append((i, b))
                        break
                else:
                    slots.append([(i, b)])
        slots = [s for s in slots if len(s) > 1]
        if not slots:
            return seq
        stmts = list(seq.stmts)
        merged = []
        for slot in slots:
            bufs = [b for _, b in slot]
            same = all(b.shape == bufs[0].shape for b in bufs)
            target = bufs[0] if same else dataclasses.replace(bufs[0], shape=(max(b.size for b in bufs),))
            for i, b in slot:
                stmts[i] = _unwrap(stmts[i], b.name)
            mapping = {b.name: (b, target, not same) for b in bufs}
            stmts = [_rename(x, mapping) for x in stmts]
            merged.append(target)
        out: Stmt = Seq(tuple(stmts))
        for buf in reversed(merged):
            out = Allocate(buf, out)
        return out

    def fits(self, seq: Seq, slot: list, i: int, b: Buffer, in_loop: bool) -> bool:
        first = slot[0][1]
        if any(j == i for j, _ in slot) or b.dtype != first.dtype or b.scope != first.scope:
            return False
        if any(x.name in self.refs for _, x in slot + [(i, b)]):
            if any(x.shape != b.shape for _, x in slot):
                return False
        if b.scope != "shared":
            return True
        j, prev = slot[-1]
        if not _ordered(seq, j, prev.name, i, b.name):
            return False
        k, head = slot[0]
        return not in_loop or _ordered_back(seq, i, b.name, k, head.name)


def _ordered(seq: Seq, p: int, a: str, q: int, b: str) -> bool:
    """A barrier separates the accesses to `a` in statement p from those to `b` in q > p."""
    return (any(isinstance(x, Barrier) for x in seq.stmts[p + 1:q]) or _fenced(seq.stmts[p], a, True)
            or _fenced(seq.stmts[q], b, False))


def _ordered_back(seq: Seq, q: int, b: str, p: int, a: str) -> bool:
    """A barrier separates the accesses to `b` in statement q from those to `a` in p < q in the
    next run of the Seq (the next loop iteration)."""
    return (any(isinstance(x, Barrier) for x in seq.stmts[q + 1:] + seq.stmts[:p])
            or _fenced(seq.stmts[q], b, True) or _fenced(seq.stmts[p], a, False))


def _liftable(s: Stmt) -> bool:
    return isinstance(s, (Allocate, LetStmt, Seq)) or (isinstance(s, For) and s.kind in THREAD_AXES)


def _wrapped_allocs(s: Stmt) -> list:
    """Buffers allocated in `s` that can be allocated around `s` instead: reached through
    allocations, lets, Seqs and GPU-axis loops (run once per thread), never through a serial loop
    (allocated each iteration) or an if."""
    out = []
    if isinstance(s, Allocate):
        out.append(s.buffer)
    if isinstance(s, Seq):
        for x in s.stmts:
            out.extend(_wrapped_allocs(x))
    elif _liftable(s):
        out.extend(_wrapped_allocs(s.body))
    return out


def _unwrap(s: Stmt, name: str) -> Stmt:
    """`s` without the Allocate of `name` that `_wrapped_allocs` found."""
    if isinstance(s, Allocate) and s.buffer.name == name:
        return s.body
    if isinstance(s, Seq):
        return Seq(tuple(_unwrap(x, name) for x in s.stmts))
    if _liftable(s):
        return dataclasses.replace(s, body=_unwrap(s.body, name))
    return s


def _flat(indices: tuple, shape: tuple) -> tuple:
    out: Expr | None = None
    stride = 1
    for idx, n in reversed(list(zip(indices, shape))):
        term = idx if stride == 1 else idx * Const(stride, idx.dtype)
        out = term if out is None else term + out
        stride *= n
    return (simplify(out) if out is not None else Const(0),)


def _rename(s: Stmt, mapping: dict) -> Stmt:
    """Accesses to the buffers of `mapping` (name -> (old, new, flatten)) go to the new buffer."""

    def fn(n):
        if isinstance(n, (Load, Store, BufferRef)) and n.buffer.name in mapping:
            old, new, flatten = mapping[n.buffer.name]
            if n.buffer is new or (n.buffer == new and not flatten):
                return None
            idx = _flat(n.indices, old.shape) if flatten else n.indices
            return dataclasses.replace(n, buffer=new, indices=idx)
        return None

    return rewrite(s, fn, fixpoint=False)


__all__ = ["rewrite_storage"]
