"""The floor of a CPU kernel: its arithmetic and its compulsory memory traffic against the host's
measured peaks, so a profile can say how far each kernel is from what the machine allows.

* `kernel_cost(ir)`: floating-point operations (each arithmetic node of a stored value, times the
  iterations of the loops around the store; a multiply-add counts 2) and compulsory bytes (every
  parameter buffer read or written once).
* `host_peaks()`: FLOP/s of a float32 512^3 GEMM through numpy's BLAS (the best this machine's
  library reaches: the "measured GEMM peak"), bytes/s of a 32 MiB copy (read + write: memory) and
  of a 256 KiB copy (cache), each the best of a few runs, measured once per process (about 0.1 s).
* `floor_seconds(cost, peaks)`: the larger of flops / peak and bytes / bandwidth, the cache's
  bandwidth for kernels whose arrays fit in `CACHE_BYTES` (they stay cached between calls).

Example:
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Load, Store, Var
    >>> A, B = Buffer("A", (8,)), Buffer("B", (8,))
    >>> i = Var("i")
    >>> kernel_cost(Kernel("k", (A, B), For(i, 8, Store(B, (i,), A[i] * 2.0 + 1.0))))
    (16, 64)
"""

from __future__ import annotations

import functools
import time

from tessel.ir.dtypes import bits, is_float
from tessel.ir.nodes import Allocate, Binary, Call, Const, For, IfThenElse, Kernel, LetStmt, Seq, Store, walk

_ARITH = {"add", "sub", "mul", "div", "min", "max"}


def kernel_cost(ir: Kernel) -> tuple[int, int]:
    """(floating-point operations, compulsory bytes) of a kernel (see the module docstring)."""
    flops = _flops(ir.body, 1)
    nbytes = sum(p.size * max(1, bits(p.dtype) // 8) for p in ir.params)
    return flops, nbytes


def _flops(s, trips: int) -> int:
    if isinstance(s, For):
        extent = s.extent.value if isinstance(s.extent, Const) else 1
        return _flops(s.body, trips * extent)
    if isinstance(s, Seq):
        return sum(_flops(x, trips) for x in s.stmts)
    if isinstance(s, (Allocate, LetStmt)):
        return _flops(s.body, trips)
    if isinstance(s, IfThenElse):  # an init guard or a bounds guard: count the larger branch
        return max(_flops(s.then, trips), _flops(s.else_, trips) if s.else_ is not None else 0)
    if isinstance(s, Store):
        ops = sum(1 for n in walk(s.value) if (isinstance(n, Binary) and n.op in _ARITH and is_float(n.dtype))
                  or isinstance(n, Call))
        return ops * trips
    return 0


CACHE_BYTES = 1 << 20


@functools.cache  # the machine's peaks do not change while we run
def host_peaks() -> tuple[float, float, float]:
    """(FLOP/s of numpy's float32 512^3 GEMM, bytes/s of a 32 MiB copy, of a 256 KiB copy)."""
    import numpy as np

    n = 512
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    best = min(_timed(lambda: a @ a) for _ in range(5))
    src = np.ones(8 << 20, np.float32)
    dst = np.empty_like(src)
    copy = min(_timed(lambda: np.copyto(dst, src)) for _ in range(5))
    small, small_dst = src[: 32 << 10], dst[: 32 << 10]
    cached = min(_timed(lambda: [np.copyto(small_dst, small) for _ in range(16)]) for _ in range(5)) / 16
    return 2.0 * n ** 3 / best, 2.0 * src.nbytes / copy, 2.0 * small.nbytes / cached


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def floor_seconds(cost: tuple[int, int], peaks: tuple) -> tuple[float, str]:
    """The time a kernel of `cost` cannot beat on a machine of `peaks`, and what bounds it.

    >>> floor_seconds((2e9, 1e6), (1e11, 1e10, 1e11))
    (0.02, 'compute')
    >>> floor_seconds((1e3, 1e9), (1e11, 1e10, 1e11))
    (0.1, 'memory')
    """
    flops, nbytes = cost
    compute = flops / peaks[0]
    memory = nbytes / (peaks[2] if nbytes <= CACHE_BYTES and len(peaks) > 2 else peaks[1])
    return (compute, "compute") if compute >= memory else (memory, "memory" if nbytes > CACHE_BYTES else "cache")
