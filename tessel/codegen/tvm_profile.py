"""The floor of a CPU kernel: its arithmetic and its compulsory memory traffic against the host's
measured peaks, so a profile can say how far each kernel is from what the machine allows.

* `kernel_cost(ir)`: floating-point operations (each arithmetic node of a stored value, times the
  iterations of the loops around the store; a multiply-add counts 2) and compulsory bytes (every
  parameter buffer read or written once).
* `host_peaks()`: FLOP/s of a float32 512^3 GEMM through numpy's BLAS (the best this machine's
  library reaches: the "measured GEMM peak"; one BLAS thread in a child process, by CPU time, times
  tessel's threads), bytes/s of a 32 MiB copy (read + write: memory) and of a 256 KiB copy (cache),
  each the best of a few runs by CPU time, measured once per process (about 0.5 s).
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
    """(FLOP/s of numpy's float32 512^3 GEMM, bytes/s of a 32 MiB copy, of a 256 KiB copy).

    Each is timed by the thread's CPU time, so a loaded machine (other jobs holding the cores) does not
    shrink it: the GEMM in a child process with one BLAS thread and without the environment's OpenBLAS
    overrides (FACTS.md), scaled by tessel's thread count; timed in this process by wall clock only when
    the child fails. (Wall clock with numpy's two BLAS threads measured 5-13 GFLOP/s at load 7-9, one
    core's CPU time about 140.)"""
    import numpy as np

    from tessel.codegen.tvm_runtime import num_threads

    per_core = _gemm_seconds_one_thread()
    if per_core is not None:
        flops = 2.0 * 512 ** 3 / per_core * max(1, num_threads())
    else:
        n = 512
        a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
        flops = 2.0 * n ** 3 / min(_timed(lambda: a @ a) for _ in range(5))
    src = np.ones(8 << 20, np.float32)
    dst = np.empty_like(src)
    copy = min(_timed(lambda: np.copyto(dst, src), time.thread_time) for _ in range(5))
    small, small_dst = src[: 32 << 10], dst[: 32 << 10]
    cached = min(_timed(lambda: [np.copyto(small_dst, small) for _ in range(16)], time.thread_time)
                 for _ in range(5)) / 16
    return flops, 2.0 * src.nbytes / copy, 2.0 * small.nbytes / cached


_GEMM_CHILD = """
import time, numpy as np
a = np.random.default_rng(0).standard_normal((512, 512), dtype=np.float32)
a @ a
best = 1e9
for _ in range(7):
    t = time.thread_time(); a @ a; best = min(best, time.thread_time() - t)
print(best)
"""


def _gemm_seconds_one_thread() -> float | None:
    """Thread CPU seconds of one float32 512^3 numpy GEMM on one BLAS thread (a child process), or None."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        out = subprocess.run([sys.executable, "-c", _GEMM_CHILD], env=env, capture_output=True, text=True,
                             timeout=120, check=True)
        seconds = float(out.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None
    return seconds if seconds > 0 else None


def _timed(fn, clock=time.perf_counter) -> float:
    t = clock()
    fn()
    return max(clock() - t, 1e-9)


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
