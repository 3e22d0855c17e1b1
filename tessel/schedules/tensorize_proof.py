"""The proof that a tensorized nest computes what the nest it replaces computed.

`prove_same(kernel, path, old, new, lane, samples)` builds two one-warp kernels around the old
and the new statement — the enclosing loop variables fixed by lets at sampled values, every
buffer the statements read or write from outside them passed in (shared and global buffers as
arrays, local ones per lane, copied in and out) — runs both in the reference interpreter on the
same random inputs and raises ScheduleError when the outputs differ beyond float32 rounding of
a reassociated sum. Buffers too large to fill with random data skip the proof (the tests of
the schedules cover those cases at small sizes).

Example:
    >>> MAX_PROOF_ELEMENTS >= 1 << 20
    True
"""

from __future__ import annotations

import numpy as np

from tessel.errors import ScheduleError
from tessel.ir.dtypes import is_float, numpy_dtype
from tessel.ir.nodes import (
    Allocate, Buffer, BufferRef, Const, For, Kernel, Load, LetStmt, Store, Var, free_vars, seq, walk,
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


def prove_same(kernel: Kernel, path: list, old, new, lane: Var, samples: list[dict]) -> None:
    """Raise ScheduleError unless `new` computes what `old` computes (see the module docstring)."""
    from tessel.ir.interp import run

    bufs = {b.name: b for b in _outside_buffers(old) + _outside_buffers(new)}
    bufs = [bufs[k] for k in sorted(bufs)]
    if sum(b.size for b in bufs if b.scope != "local") > MAX_PROOF_ELEMENTS:
        return
    free = (free_vars(old) | free_vars(new)) - {lane}
    rng = np.random.default_rng(1234)
    for env in samples[-2:]:
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


__all__ = ["MAX_PROOF_ELEMENTS", "prove_same"]
