"""transform_layout: permute the dimensions of a kernel-local buffer.

`transform_layout(T, order)` gives temporary T the shape `[shape[d] for d in order]`; every load and
store of T is re-indexed to match (`T[i0, i1, i2, i3]` with order (0, 3, 1, 2) becomes
`T'[i0, i3, i1, i2]`), and the loop nest that produces T in DSL form (its store indices are its
outer loop variables in order) gets those loops in the new order too, so it stays in DSL form and
the default schedules still recognise it. The values computed do not change, only where they live.
A buffer that an intrinsic takes as an operand (an mma fragment) is refused: its layout is the
intrinsic's.

Used by cpu.conv_nchw: a pointwise convolution lowered channels-last (`acl[n, y, x, f]`, read back
transposed by its epilogue) computed in NCHW order instead, so its epilogue reads it at its own
index and fuses into the register tile's write-back.

Example:
    >>> import tessel as ts
    >>> A = ts.placeholder((2, 3), name="A")
    >>> T = ts.compute((2, 3), lambda i, j: A[i, j] * 2.0, name="T")
    >>> B = ts.compute((3, 2), lambda j, i: T[i, j] + 1.0, name="B")
    >>> kern, _ = transform_layout(ts.lower([A, B]), "T", [1, 0])
    >>> next(b.shape for b in _allocs(kern) if b.name == "T")
    (3, 2)
"""

from __future__ import annotations

from tessel.errors import ScheduleError
from tessel.ir.nodes import Allocate, Buffer, BufferRef, For, Kernel, Load, Store, rewrite, walk
from tessel.schedules.nest import perfect_chain, rebuild_chain


def _allocs(kernel: Kernel) -> list:
    return [n.buffer for n in walk(kernel.body) if isinstance(n, Allocate)]


def transform_layout(kernel: Kernel, buffer: str, order) -> tuple[Kernel, list[str]]:
    """`kernel` with temporary `buffer`'s dimensions permuted by `order` (see the module docstring)."""
    order = [int(d) for d in order]
    old = next((b for b in _allocs(kernel) if b.name == buffer), None)
    if old is None:
        raise ScheduleError(f"transform_layout: '{buffer}' is not a temporary allocated in kernel '{kernel.name}'")
    if sorted(order) != list(range(old.ndim)):
        raise ScheduleError(f"transform_layout '{buffer}': order {order} is not a permutation of its {old.ndim} "
                            f"dimensions")
    if any(isinstance(n, BufferRef) and n.buffer.name == buffer for n in walk(kernel.body)):
        # an intrinsic's operand covers a region its definition lays out (an mma accumulator
        # fragment, a TMA box): a permuted buffer would no longer be that region
        raise ScheduleError(f"transform_layout '{buffer}': an intrinsic accesses it as an operand, whose layout "
                            f"the intrinsic fixes")
    new = Buffer(old.name, tuple(old.shape[d] for d in order), old.dtype, old.scope)

    def reindex(idx):
        return tuple(idx[d] for d in order)

    def producer(n):
        if not isinstance(n, For):
            return None
        stores = [s for s in walk(n) if isinstance(s, Store)]
        if not stores or any(s.buffer.name != buffer for s in stores):
            return None
        chain = perfect_chain(n)
        lead = chain[: old.ndim]
        if len(lead) < old.ndim or any(tuple(s.indices) != tuple(lp.var for lp in lead) for s in stores):
            return None
        loops = [lead[d] for d in order] + chain[old.ndim:]
        return rebuild_chain(loops, chain[-1].body)

    def fn(n):
        if isinstance(n, Load) and n.buffer.name == buffer:
            return Load(new, reindex(n.indices))
        if isinstance(n, Store) and n.buffer.name == buffer:
            return Store(new, reindex(n.indices), n.value)
        if isinstance(n, Allocate) and n.buffer.name == buffer:
            return Allocate(new, n.body)
        return None

    out = rewrite(kernel, lambda n: producer(n), fixpoint=False)
    out = rewrite(out, fn, fixpoint=False)
    return out, [buffer]


__all__ = ["transform_layout"]
