"""Features of a scheduled kernel for the cost model, read statically from its IR.

One walk over the IR counts, for every statement, how often it runs (the product of the extents
of the loops around it; a guard counts as taken), and from that:

- loop-nest shape: depth, loop count, parallel / vectorised / unrolled extents, innermost extent;
- tile volume: elements of local (register) buffers, bytes of shared buffers;
- bytes moved per memory level: loads and stores of global, shared and local buffers;
- flops (arithmetic of stored values) and arithmetic intensity (flops per global byte);
- GPU launch: threads per block, blocks, estimated occupancy (blocks per SM from threads and
  shared memory) and waves over the target's SMs; CPU: parallel work per core;
- intrinsics: the table's `Cost` (flops, bytes, cycles) times the executions.

Names are fixed (`FEATURE_NAMES`), so models trained on one kernel read another.

Example:
    >>> import tessel as ts
    >>> A = ts.placeholder((8, 4), name="A")
    >>> k = ts.reduce_axis(4, name="k")
    >>> S = ts.compute((8,), lambda i: ts.sum(A[i, k], axis=k), name="S")
    >>> f = ir_features(ts.lower([A, S]), "cpu")
    >>> f["bytes.global.load"], f["loop.depth"]
    (256.0, 2.0)
"""

from __future__ import annotations

import math

from tessel.ir.nodes import (
    Allocate, Binary, Call, Const, For, IfThenElse, Intrinsic, LetStmt, Load, Seq, Store, walk,
)

FEATURE_NAMES = (
    "loop.depth", "loop.count", "loop.parallel", "loop.vector", "loop.unroll", "loop.inner",
    "tile.local_elems", "tile.shared_bytes",
    "bytes.global.load", "bytes.global.store", "bytes.shared.load", "bytes.shared.store",
    "bytes.local.load", "bytes.local.store",
    "flops", "intensity", "log.flops", "log.global_bytes",
    "gpu.threads", "gpu.blocks", "gpu.occupancy", "gpu.waves", "cpu.work_per_core",
    "intrin.flops", "intrin.bytes", "intrin.cycles",
)


def _itemsize(dtype: str) -> int:
    from tessel.ir.dtypes import bits

    return max(bits(dtype) // 8, 1)


def _extent(e) -> int:
    return int(e.value) if isinstance(e, Const) else 1


class _Walk:
    def __init__(self):
        self.f = dict.fromkeys(FEATURE_NAMES, 0.0)
        self.depth = 0

    def stmt(self, s, mult: float, depth: int) -> None:
        f = self.f
        if isinstance(s, For):
            n = _extent(s.extent)
            f["loop.count"] += 1
            self.depth = max(self.depth, depth + 1)
            if s.kind == "parallel":
                f["loop.parallel"] = max(f["loop.parallel"], n)
            elif s.kind == "vectorized":
                f["loop.vector"] = max(f["loop.vector"], n)
            elif s.kind == "unrolled":
                f["loop.unroll"] = max(f["loop.unroll"], n)
            if not any(isinstance(x, For) for x in walk(s.body)):
                f["loop.inner"] = max(f["loop.inner"], n)
            self.stmt(s.body, mult * n, depth + 1)
        elif isinstance(s, Seq):
            for x in s.stmts:
                self.stmt(x, mult, depth)
        elif isinstance(s, Allocate):
            b = s.buffer
            size = math.prod(b.shape)
            if b.scope == "local":
                f["tile.local_elems"] += size
            elif b.scope == "shared":
                f["tile.shared_bytes"] += size * _itemsize(b.dtype)
            self.stmt(s.body, mult, depth)
        elif isinstance(s, IfThenElse):
            self.expr(s.cond, mult)
            self.stmt(s.then, mult, depth)
            if s.else_ is not None:
                self.stmt(s.else_, mult, depth)
        elif isinstance(s, LetStmt):
            self.expr(s.value, mult)
            self.stmt(s.body, mult, depth)
        elif isinstance(s, Store):
            scope = s.buffer.scope if s.buffer.scope in ("global", "shared", "local") else "global"
            f[f"bytes.{scope}.store"] += mult * _itemsize(s.buffer.dtype)
            self.expr(s.value, mult)
        elif isinstance(s, Intrinsic):
            self.intrinsic(s, mult)

    def expr(self, e, mult: float) -> None:
        f = self.f
        for n in walk(e):
            if isinstance(n, Load):
                scope = n.buffer.scope if n.buffer.scope in ("global", "shared", "local") else "global"
                f[f"bytes.{scope}.load"] += mult * _itemsize(n.buffer.dtype)
            elif isinstance(n, Binary) and not n.dtype.startswith(("int", "uint", "bool")):
                f["flops"] += mult
            elif isinstance(n, Call):
                f["flops"] += 4 * mult  # a transcendental costs a few operations

    def intrinsic(self, s, mult: float) -> None:
        try:
            from tessel.ir.intrinsics import lookup

            cost = lookup(s.name).cost
        except Exception:  # noqa: BLE001 - an intrinsic the table lacks simply has no cost figure
            return
        self.f["intrin.flops"] += mult * getattr(cost, "flops", 0)
        self.f["intrin.bytes"] += mult * getattr(cost, "bytes", 0)
        self.f["intrin.cycles"] += mult * getattr(cost, "cycles", 0)


def ir_features(kernel, target) -> dict:
    """The features of a scheduled `kernel` on `target` ("cpu", "cuda:sm_90a"), by FEATURE_NAMES."""
    w = _Walk()
    launch = getattr(kernel, "launch", None)
    threads = math.prod(launch.block) if launch is not None else 1
    blocks = math.prod(launch.grid) if launch is not None else 1
    # a GPU kernel's body runs once per thread of every block: loops bound to thread axes are
    # part of the launch (their For nodes stay in the IR with extent = the axis size)
    w.stmt(kernel.body, 1.0, 0)
    f = w.f
    f["loop.depth"] = float(w.depth)
    f["flops"] += f["intrin.flops"]
    gbytes = f["bytes.global.load"] + f["bytes.global.store"] + f["intrin.bytes"]
    f["intensity"] = f["flops"] / gbytes if gbytes else 0.0
    f["log.flops"] = math.log2(1 + f["flops"])
    f["log.global_bytes"] = math.log2(1 + gbytes)
    try:
        from tessel.schedules.target_limits import limits_of

        lim = limits_of(target)
    except Exception:  # noqa: BLE001 - unknown target: launch features stay 0
        lim = None
    if launch is not None and lim is not None and lim.kind == "cuda":
        f["gpu.threads"], f["gpu.blocks"] = float(threads), float(blocks)
        per_sm = max(1, min(lim.threads_per_sm // max(threads, 1) if lim.threads_per_sm else 1,
                            lim.shared_bytes_per_sm // launch.shared_bytes if launch.shared_bytes else 32, 32))
        f["gpu.occupancy"] = min(1.0, per_sm * threads / lim.threads_per_sm) if lim.threads_per_sm else 0.0
        f["gpu.waves"] = blocks / (per_sm * max(lim.sm_count, 1))
    elif lim is not None:
        cores = max(lim.sm_count, 1)
        f["cpu.work_per_core"] = (f["loop.parallel"] / cores) if f["loop.parallel"] else 0.0
    return {k: float(v) for k, v in f.items()}


def feature_vector(kernel, target) -> list:
    """`ir_features` as a list in FEATURE_NAMES order."""
    f = ir_features(kernel, target)
    return [f[n] for n in FEATURE_NAMES]


__all__ = ["FEATURE_NAMES", "feature_vector", "ir_features"]
