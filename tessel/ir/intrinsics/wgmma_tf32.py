"""wgmma.mma_async m64nNk8 with tf32 inputs (float32 buffers) and f32 accumulators (sm_90a).

A warpgroup computes D (64 x N) = A (64 x 8) . B (8 x N) + (scale_d ? D : 0), N = 8, 16, .., 256,
both operands from shared-memory descriptors and both K-major (PTX has no transpose immediates for
tf32): A as [m][k], B as [n][k], float32 elements, so a 128-byte swizzle atom row holds 32 of K
(a TMA box of 32 float32 columns with the 128B swizzle is K-major with SBO = 1024, as for 16-bit
types; a k-step of 8 moves the descriptor by 32 bytes, as a k16 step of a 16-bit type does).

IR form (`wgmma_tf32_name(n)`): `(d, a_desc, b_desc, scale_d)`: `d` the lane's N/2 float32
accumulators (wgmma.acc_layout(n)), `a_desc` / `b_desc` int64 descriptors (values), `scale_d` 0 or 1.
Fence / commit / wait are wgmma.py's and see these groups too (the same per-warpgroup state).

Numerics: the tensor cores read the float32 bit patterns and use tf32's 10-bit mantissa; the
interpreter truncates each operand to it (the low 13 bits cleared: what reading the top 19 bits
does), multiplies exactly and adds in float64, rounding the accumulator to float32 at the wait.
So the result differs from a float32 GEMM by up to about 2^-10 of each product's magnitude.

Example:
    >>> wgmma_tf32_name(128)
    'wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32'
    >>> float(truncate_tf32(np.float32(1 + 2 ** -12)))  # below tf32's last mantissa bit: dropped
    1.0
"""

from __future__ import annotations

import numpy as np

from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.intrinsics import hb, wgmma
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand
from tessel.ir.intrinsics.tma import swizzle_offset


def wgmma_tf32_name(n: int) -> str:
    return f"wgmma.mma_async.sync.aligned.m64n{n}k8.f32.tf32.tf32"


def truncate_tf32(x) -> np.ndarray:
    """float32 values with the 13 low mantissa bits cleared (tf32's 10-bit mantissa, toward zero)."""
    bits = np.asarray(x, np.float32).view(np.uint32) & np.uint32(0xFFFFE000)
    return bits.view(np.float32)


def operand_addresses(rows: int, desc: int) -> tuple[int, np.ndarray]:
    """(start address, byte addresses of shape (rows, 8)) of a K-major float32 operand."""
    start, lbo, sbo, swz = wgmma.decode_desc(desc)
    r = np.arange(rows, dtype=np.int64)[:, None]
    k = np.arange(8, dtype=np.int64)[None, :]
    if swz:
        off = (r % 8) * swz + (r // 8) * sbo + k * 4
    else:  # core matrices of 8 rows x 16 bytes (4 elements), the next 4 of K at LBO
        off = (r % 8) * 16 + (r // 8) * sbo + (k // 4) * lbo + (k % 4) * 4
    addr = start + off
    return start, swizzle_offset(addr, swz) if swz else addr


def _gather(ctx, t, engine, desc: int, rows: int, what: str) -> np.ndarray:
    start, addr = operand_addresses(rows, desc)
    ref0, first = hb.resolve(ctx, start, what)
    if ref0.array.dtype != np.float32:
        raise ExecutionError(f"{what}: descriptor points into '{ref0.buffer.name}' of {ref0.buffer.dtype}")
    off = addr - (start - first)
    if off.min() < 0 or off.max() + 4 > ref0.array.size * 4:
        raise ExecutionError(f"{what}: the operand runs outside shared buffer '{ref0.buffer.name}'")
    if (off % 4).any():
        raise ExecutionError(f"{what}: float32 operand addresses are not 4-byte aligned")
    idx = off // 4
    t.read_at(engine, ref0, idx.reshape(-1))
    return truncate_tf32(ref0.array.reshape(-1)[idx]).astype(np.float64)


def _semantics(n: int):
    name = wgmma_tf32_name(n)

    def mma(ctx, lanes):
        if len(lanes) != 128:
            raise ExecutionError(f"{name} needs a warpgroup of 128 threads, got {len(lanes)}")
        t = hb.track(ctx)
        engine = wgmma._engine(t, len(lanes))
        d_refs = [la[0] for la in lanes]
        a_desc, b_desc, scale_d = (wgmma._uniform(lanes, i, w) for i, w in ((1, "a_desc"), (2, "b_desc"),
                                                                             (3, "scale_d")))
        a = _gather(ctx, t, engine, a_desc, 64, f"{name} operand A")  # (64, 8)
        b = _gather(ctx, t, engine, b_desc, n, f"{name} operand B").T  # (8, n)
        wgmma.issue(ctx, d_refs, a, b, scale_d, n, engine)

    return hb.impl(mma, "warpgroup")


def _header(n: int) -> str:
    m = n // 2
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(m))
    regs = ", ".join(f"%{i}" for i in range(m))
    ptx = wgmma_tf32_name(n)
    return f"""namespace tessel {{
// {ptx}: d (N/2 floats per thread) += A x B, both K-major float32 (tf32) tiles.
__device__ __forceinline__ void wgmma_m64n{n}k8_f32_tf32(float* d, long long a_desc, long long b_desc, int scale_d) {{
  asm volatile("{{\\n .reg .pred p;\\n setp.ne.b32 p, %{m + 2}, 0;\\n"
               " {ptx} {{{regs}}}, %{m}, %{m + 1}, p, 1, 1;\\n}}\\n"
               : {outs}
               : "l"(a_desc), "l"(b_desc), "r"(scale_d));
}}
}}  // namespace tessel
"""


def entries() -> list[IntrinsicDef]:
    doc = "\n\n".join(__doc__.split("\n\n")[1:4])
    out = []
    for n in wgmma.NS:
        ops = (Operand("d", "readwrite", elems=n // 2, scopes=("local",), dtypes=("float32",)),
               Operand("a_desc", "value", dtypes=("int64",)), Operand("b_desc", "value", dtypes=("int64",)),
               Operand("scale_d", "value", dtypes=("int32", "bool")))
        fn = f"tessel::wgmma_m64n{n}k8_f32_tf32"
        out.append(IntrinsicDef(wgmma_tf32_name(n), "warpgroup", ops, _semantics(n),
                                lambda d, a, b, s, fn=fn: f"{fn}({d}, {a}, {b}, {s});",
                                wgmma.GROUP_HEADER + _header(n),
                                Cost(flops=2 * 64 * n * 8, cycles=n / 2.0), doc))  # half the bf16 k16 rate
    return out


__all__ = ["entries", "operand_addresses", "truncate_tf32", "wgmma_tf32_name"]
