"""The proof that a tensorized nest computes what the nest it replaces computed.

`prove_same(kernel, path, old, new, lane, samples)` builds two one-warp kernels around the old
and the new statement — the enclosing loop variables fixed by lets at sampled values (all zeros,
all maxima, two random points), every buffer the statements read or write from outside them
passed in (shared and global buffers as arrays, local ones per lane, copied in and out) — runs
both in the reference interpreter on the same random inputs and raises ScheduleError when the
outputs differ beyond float32 rounding of a reassociated sum.

Large kernels are proved on a scaled-down copy, never skipped: when the global buffers hold more
than MAX_PROOF_ELEMENTS elements, the enclosing loops' extents are cut (largest first, to 2) and
each global buffer shrinks to the part the statements can touch within the cut loops (interval
bounds of every index, over the statements' own loops and lets); the statements keep their loop
structure and index expressions, and the sampled points are drawn from the cut extents.

Example:
    >>> A, i, j, t = Buffer("A", (4096, 4096)), Var("i"), Var("j"), Var("t")
    >>> stmt = Store(A, (i, j * 32 + t), Load(A, (i, j * 32 + t)) * 2.0)   # t: the 32 lanes
    >>> loops = [For(i, Const(4096), stmt), For(j, Const(128), stmt)]     # the enclosing loops
    >>> bufs, cut = scaled_down([stmt], [A], loops, t)
    >>> [b.shape for b in bufs], {v.name: e for v, e in cut.items()}
    ([(2, 4096)], {'i': 2})
"""

from __future__ import annotations

import numpy as np

from tessel.errors import ScheduleError
from tessel.ir.bounds import interval
from tessel.ir.dtypes import is_float, numpy_dtype
from tessel.ir.nodes import (
    Allocate, Buffer, BufferRef, Const, For, Kernel, Load, LetStmt, Node, Store, Var, free_vars, seq, substitute,
    walk,
)

MAX_PROOF_ELEMENTS = 1 << 22


def _outside_buffers(stmt) -> list[Buffer]:
    inside = {n.buffer.name for n in walk(stmt) if isinstance(n, Allocate)}
    seen: dict[str, Buffer] = {}
    for n in walk(stmt):
        if isinstance(n, (Load, Store, BufferRef)) and n.buffer.name not in inside:
            seen.setdefault(n.buffer.name, n.buffer)
    return [seen[k] for k in sorted(seen)]


def _proof_kernel(name: str, stmt, lane: Var, env: dict, bufs: list[Buffer]) -> tuple[Kernel, list]:
    params, locals_ = [], []
    for b in bufs:
        if b.scope == "local":
            locals_.append(b)
        else:
            params.append(b)
    body = stmt
    for v, value in sorted(env.items(), key=lambda kv: kv[0].name):
        body = LetStmt(v, Const(value, v.dtype), body)
    extra = []
    for b in locals_:
        src = Buffer(f"{b.name}__in", (32,) + b.shape, b.dtype)
        dst = Buffer(f"{b.name}__out", (32,) + b.shape, b.dtype)
        extra += [src, dst]
        idx = [Var(f"{b.name}__i{d}") for d in range(b.ndim)]
        idx2 = [Var(f"{b.name}__o{d}") for d in range(b.ndim)]
        copy_in = Store(b, tuple(idx), Load(src, (lane, *idx)))
        copy_out = Store(dst, (lane, *idx2), Load(b, tuple(idx2)))
        for v, e in reversed(list(zip(idx, b.shape))):
            copy_in = For(v, Const(e), copy_in)
        for v, e in reversed(list(zip(idx2, b.shape))):
            copy_out = For(v, Const(e), copy_out)
        body = Allocate(b, seq(copy_in, body, copy_out))
    kernel = Kernel(name, tuple(params + extra), For(lane, Const(32), body, "threadIdx.x"), target="cuda")
    return kernel, params + extra


def _accesses(node: Node, ranges: dict, out: list) -> None:
    """(buffer name, index exprs, whether through a BufferRef, ranges in scope) of every access
    under `node`, with the ranges of the loops and lets that enclose it."""
    if isinstance(node, For):
        inner = dict(ranges)
        ext = node.extent.value if isinstance(node.extent, Const) else None
        if isinstance(ext, int) and ext > 0:
            inner[node.var] = (0, ext - 1)
        else:
            inner.pop(node.var, None)
        _accesses(node.body, inner, out)
        return
    if isinstance(node, LetStmt):
        _accesses(node.value, ranges, out)
        inner = dict(ranges)
        got = interval(node.value, ranges)
        if got is None:
            inner.pop(node.var, None)
        else:
            inner[node.var] = got
        _accesses(node.body, inner, out)
        return
    if isinstance(node, (Load, Store, BufferRef)):
        out.append((node.buffer.name, node.indices, isinstance(node, BufferRef), ranges))
    for child in node.children():
        _accesses(child, ranges, out)


def _touched_shape(b: Buffer, accesses: list, outer_ranges: dict):
    """The smallest shape that holds every element of `b` the accesses can touch (a dimension
    whose bound is unknown keeps its extent; the last one too under a BufferRef, whose
    intrinsic reads a run along it)."""
    shape = [0] * b.ndim
    for name, idx, ref, ranges in accesses:
        if name != b.name:
            continue
        env = {**outer_ranges, **ranges}
        for d, e in enumerate(idx):
            got = interval(e, env)
            if got is None or got[0] < 0 or (ref and d == b.ndim - 1):
                shape[d] = b.shape[d]
            else:
                shape[d] = max(shape[d], min(got[1] + 1, b.shape[d]))
    return tuple(max(s, 1) for s in shape)


def scaled_down(stmts: list, bufs: list[Buffer], outer: list[For], lane: Var):
    """The buffers of a scaled-down copy of the statements' context and the cut loop extents.

    Enclosing loops are cut to extent 2, largest first, until the global buffers (shrunk to what
    the statements touch within the cut loops) hold at most MAX_PROOF_ELEMENTS elements or no
    loop is left to cut. Returns (buffers, {loop var: cut extent}) with the buffers in order."""
    accesses: list = []
    for s in stmts:
        _accesses(s, {lane: (0, 31)}, accesses)
    extents = {lp.var: int(lp.extent.value) for lp in outer if isinstance(lp.extent, Const) and lp.var != lane}

    def shrunk():
        ranges = {v: (0, e - 1) for v, e in extents.items()}
        return [Buffer(b.name, _touched_shape(b, accesses, ranges), b.dtype, b.scope) if b.scope == "global" else b
                for b in bufs]

    out = shrunk()
    while sum(b.size for b in out if b.scope != "local") > MAX_PROOF_ELEMENTS:
        big = [v for v, e in sorted(extents.items(), key=lambda kv: (-kv[1], kv[0].name)) if e > 2]
        if not big:
            break
        extents[big[0]] = 2
        out = shrunk()
    cut = {v: e for v, e in extents.items() if e != next(int(lp.extent.value) for lp in outer if lp.var == v)}
    return out, cut


def _cut_samples(samples: list[dict], cut: dict) -> list[dict]:
    """The sampled points, with every cut loop's value drawn again within its cut extent."""
    rng = np.random.default_rng(0)
    out = []
    for k, env in enumerate(samples):
        env = dict(env)
        for v, e in cut.items():
            env[v] = 0 if k == 0 else e - 1 if k == 1 else int(rng.integers(0, e))
        out.append(env)
    return out


def _distinct(samples: list[dict]) -> list[dict]:
    """The sampled points (all zeros, all maxima, random ones), each once."""
    out, seen = [], set()
    for env in samples:
        key = tuple(sorted((v.name, int(x)) for v, x in env.items()))
        if key not in seen:
            seen.add(key)
            out.append(env)
    return out


def prove_same(kernel: Kernel, path: list, old, new, lane: Var, samples: list[dict]) -> None:
    """Raise ScheduleError unless `new` computes what `old` computes (see the module docstring)."""
    from tessel.ir.interp import run

    bufs = {b.name: b for b in _outside_buffers(old) + _outside_buffers(new)}
    bufs = [bufs[k] for k in sorted(bufs)]
    if sum(b.size for b in bufs if b.scope != "local") > MAX_PROOF_ELEMENTS:
        small, cut = scaled_down([old, new], bufs, path[:-1], lane)
        swap = {b: s for b, s in zip(bufs, small) if s.shape != b.shape}
        old, new, bufs = substitute(old, swap), substitute(new, swap), small
        samples = _cut_samples(samples, cut)
    free = (free_vars(old) | free_vars(new)) - {lane}
    rng = np.random.default_rng(1234)
    for env in _distinct(samples):
        env = {v: int(env.get(v, 0)) for v in free}
        missing = [v.name for v in free if not isinstance(v, Var) or v not in env]
        if missing:
            raise ScheduleError(f"tensorize proof: no value for {missing}")
        k_old, params = _proof_kernel(f"{kernel.name}_before", old, lane, env, bufs)
        k_new, _ = _proof_kernel(f"{kernel.name}_after", new, lane, env, bufs)
        arrays = []
        for p in params:
            a = rng.standard_normal(p.shape) if is_float(p.dtype) else rng.integers(-8, 8, p.shape)
            arrays.append(a.astype(numpy_dtype(p.dtype)))
        a_old = [a.copy() for a in arrays]
        a_new = [a.copy() for a in arrays]
        try:
            run(k_old, *a_old)
            run(k_new, *a_new)
        except Exception as e:  # an interpreter error in either version is a failed proof
            raise ScheduleError(f"tensorize: the interpreter could not run the proof kernels: {e}") from e
        for p, x, y in zip(params, a_old, a_new):
            xf, yf = x.astype(np.float64), y.astype(np.float64)
            if not np.allclose(yf, xf, rtol=1e-4, atol=1e-4, equal_nan=True):
                worst = float(np.nanmax(np.abs(yf - xf)))
                raise ScheduleError(f"tensorize in kernel '{kernel.name}': the replacement differs from the "
                                    f"original nest on random inputs (buffer '{p.name}', max difference {worst:g} "
                                    f"at {env and {v.name: x for v, x in env.items()}})")


__all__ = ["MAX_PROOF_ELEMENTS", "prove_same", "scaled_down"]
