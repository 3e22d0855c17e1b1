"""cp.async with a source size: a 16-byte copy global -> shared that reads only `src_bytes` bytes
of the source and fills the rest of the destination with zeros (0 reads nothing: a predicated-off
edge copy that still lands zeros). It joins the thread's cp.async groups (cp_async.py): commit,
wait_group and wait_all treat it as any other cp.async.

IR form: `cp.async.cg.shared.global.16.zfill (dst, src, src_bytes)`: dst / src as for
`cp.async.cg.shared.global.16`, src_bytes an int32 expression in 0..16, a multiple of the element
size. With src_bytes 0 the source address is never read, so it may point past the tensor (the
interpreter checks only the bytes that are read).

Example:
    >>> entries()[0].name
    'cp.async.cg.shared.global.16.zfill'
"""

from __future__ import annotations

import numpy as np

from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.intrinsics import cp_async, hb
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand, ref_values

NAME = "cp.async.cg.shared.global.16.zfill"
_DST = Operand("dst", "write", bytes=16, scopes=("shared",))


def _zfill(ctx, dst, src, src_bytes):
    n = int(src_bytes)
    size = dst.array.dtype.itemsize
    if dst.buffer.dtype != src.buffer.dtype:
        raise ExecutionError(f"{NAME}: source '{src.buffer.name}' and destination '{dst.buffer.name}' differ in dtype")
    if not 0 <= n <= 16 or n % size:
        raise ExecutionError(f"{NAME}: source size {n} must be in 0..16 and a multiple of {size} bytes")
    if (hb.flat_start(dst) * size) % 16:
        raise ExecutionError(f"{NAME}: destination '{dst.buffer.name}' at {dst.start} is not 16-byte aligned")
    t = hb.track(ctx)
    proxy = t.async_actor(0)
    data = np.zeros(16 // size, dst.array.dtype)
    if n:
        if (hb.flat_start(src) * size) % 16:
            raise ExecutionError(f"{NAME}: source '{src.buffer.name}' at {src.start} is not 16-byte aligned")
        shape = (1,) * (src.buffer.ndim - 1) + (n // size,)
        values = src.region(shape).reshape(-1)  # the bounds check, with its message, before the report
        t.read(proxy, src, shape)
        data[:n // size] = values
    t.write(proxy, dst, _DST.region(dst.buffer))
    cp_async._state(ctx)["open"].append((ref_values(dst, _DST), data))


HEADER = r"""namespace tessel {
// cp.async.cg.shared.global with a source size: reads src_bytes (0..16) bytes, zero-fills the rest of 16.
template <typename T> __device__ __forceinline__ void cp_async_cg_16_zfill(T* dst, const T* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
               :: "r"(smem_addr(dst)), "l"(__cvta_generic_to_global(src)), "r"(src_bytes) : "memory");
}
}  // namespace tessel
"""


def entries() -> list[IntrinsicDef]:
    ops = (_DST, Operand("src", "read", elems=1, scopes=("global",)), Operand("src_bytes", "value", dtypes=("int32",)))
    return [IntrinsicDef(NAME, "thread", ops, hb.impl(_zfill, writes=(0,)),
                         lambda d, s, n: f"tessel::cp_async_cg_16_zfill({d}, {s}, {n});", HEADER,
                         Cost(bytes=16, cycles=1.0), __doc__.split("\n\n")[1])]


__all__ = ["NAME", "entries"]
