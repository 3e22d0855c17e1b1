"""Epilogue fusion for CPU contractions: an elementwise stage that reads a register-tiled
contraction's result at its own index (bias, batch norm, activation, residual add) is computed in the
contraction's write-back loop, from the register tile, and the intermediate buffer disappears.

Before: the tile is stored to a temporary `t0`, and a second pass reads `t0` back to apply the
epilogue and store the output. After: the write-back stores `out[g] = f(tile[l])` directly, so the
temporary never touches memory (measured on the MobileNet-like model of bench/cpu_models.py, whose
kernels are memory-bound: see the commit message).

Applies when (else the stages stay as they are):
  * the consumer is one perfect loop nest with a single store `out[v0..vn] = f(...)` whose loops
    cover exactly `t0`'s shape (and `out` has that shape), every load of `t0` in `f` at `[v0..vn]`;
  * `t0` is a kernel-local buffer read by no other stage;
  * the contraction's nest stores `t0` only in its write-back (a store of a local tile's load).

Example:
    >>> import tessel as ts
    >>> from tessel.schedules.generic import default_schedule
    >>> from tessel.ir.nodes import Allocate, walk
    >>> A = ts.placeholder((16, 32), name="A"); B = ts.placeholder((32, 32), name="B")
    >>> k = ts.reduce_axis(32, name="k")
    >>> T = ts.compute((16, 32), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="T")
    >>> C = ts.compute((16, 32), lambda i, j: ts.maximum(T[i, j], 0.0), name="C")
    >>> kern = default_schedule(ts.lower([A, B, C])).kernel
    >>> [n.buffer.name for n in walk(kern.body) if isinstance(n, Allocate) and n.buffer.scope == "global"]
    []
"""

from __future__ import annotations

from tessel.ir.nodes import Allocate, Const, For, Kernel, Load, Seq, Store, rewrite, substitute, walk
from tessel.schedules.nest import perfect_chain


def fuse_epilogue(kernel: Kernel, producer: str, consumer: str, consumer_nest: For, ndim: int,
                  computed: bool = False) -> Kernel | None:
    """`kernel` with stage `consumer` computed in `producer`'s write-back, or None when the
    conditions of the module docstring do not hold. `computed=True` (cpu_winograd's output
    transform) also takes several write-backs storing computed values (each element stored once, none
    reading `producer`), and a consumer that reads `producer` at a permutation of its own index (the
    transposed read of a channels-last result)."""
    if producer in {p.name for p in kernel.params}:
        return None
    chain = perfect_chain(consumer_nest)
    if len(chain) < ndim or not isinstance(chain[ndim - 1].body, Store):
        return None
    store = chain[ndim - 1].body
    index = tuple(lp.var for lp in chain[:ndim])
    if store.buffer.name != consumer or tuple(store.indices) != index:
        return None
    reads = [n for n in walk(store.value) if isinstance(n, Load) and n.buffer.name == producer]
    if not reads or any(tuple(n.indices) != tuple(reads[0].indices) for n in reads):
        return None
    at = tuple(reads[0].indices)
    if at != index and not (computed and sorted(at, key=str) == sorted(index, key=str) and len(set(at)) == ndim):
        return None
    shape = tuple(reads[0].buffer.shape)
    extents = tuple(lp.extent.value if isinstance(lp.extent, Const) else None for lp in chain[:ndim])
    size = dict(zip(index, extents))
    if tuple(store.buffer.shape) != extents or tuple(size[v] for v in at) != shape:
        return None  # the consumer must cover exactly the producer's domain (the write-back covers all of it)
    write_backs = _write_backs(kernel, producer, consumer_nest, computed)
    if write_backs is None or not write_backs or (len(write_backs) != 1 and not computed):
        return None
    fused = {}
    for wb in write_backs:
        env = dict(zip(at, wb.indices))
        value = substitute(substitute(store.value, {reads[0]: wb.value}), env)
        fused[wb] = Store(store.buffer, tuple(env[v] for v in index), value)

    def rule(n):
        if isinstance(n, Store) and n in fused:
            return fused[n]
        if isinstance(n, Allocate) and n.buffer.name == producer:
            return n.body
        if isinstance(n, Seq) and any(s == consumer_nest for s in n.stmts):
            rest = tuple(s for s in n.stmts if s != consumer_nest)
            return rest[0] if len(rest) == 1 else Seq(rest)
        return None

    out = rewrite(kernel, rule, fixpoint=False)
    if any(isinstance(n, (Load, Store)) and n.buffer.name == producer for n in walk(out.body)):
        return None  # something else still used the temporary: keep the stages as they were
    return out


def _write_backs(kernel: Kernel, producer: str, consumer_nest: For, computed: bool = False):
    """The stores of `producer` outside `consumer_nest`, if every one copies a local tile (`computed`:
    stores a value that does not read `producer`), and no other stage reads `producer`; else None."""
    found = []
    for top in _top_stmts(kernel):
        if top == consumer_nest:
            continue
        for n in walk(top):
            if isinstance(n, Store) and n.buffer.name == producer:
                if computed and any(isinstance(m, Load) and m.buffer.name == producer for m in walk(n.value)):
                    return None
                if not computed and not (isinstance(n.value, Load) and n.value.buffer.scope == "local"):
                    return None
                found.append(n)
        stores_here = any(isinstance(n, Store) and n.buffer.name == producer for n in walk(top))
        reads_here = any(isinstance(n, Load) and n.buffer.name == producer for n in walk(top))
        if reads_here and not stores_here:
            return None  # another stage reads the temporary
    return found


def _top_stmts(kernel: Kernel) -> list:
    body = kernel.body
    while isinstance(body, Allocate):
        body = body.body
    return list(body.stmts) if isinstance(body, Seq) else [body]


def right_after(kernel: Kernel, producer: str, nest: For) -> bool:
    """Whether `nest` is the top-level statement right after the one that writes `producer` (an
    epilogue computed in the producer's write-back must not skip a statement between them)."""
    body = kernel.body
    while isinstance(body, Allocate):
        body = body.body
    items = body.stmts if isinstance(body, Seq) else (body,)
    for i, st in enumerate(items):
        if st is nest:
            return i > 0 and producer in _writes(items[i - 1])
    return False


def _writes(stmt) -> set:
    return {n.buffer.name for n in walk(stmt) if isinstance(n, Store)}
