"""stmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16: a warp stores one, two or four 8x8
matrices of 16-bit values from its lanes' registers to shared memory (ldmatrix's inverse).

Lane l holds two values of each matrix m, in its source elements 2m and 2m+1: row l // 4,
columns 2 (l % 4) and 2 (l % 4) + 1 of matrix m (with .trans: the same positions of the
transposed matrix, i.e. they land in rows 2 (l % 4), 2 (l % 4) + 1 at column l // 4). Lanes
8m .. 8m+7 each supply the address of one row (8 consecutive values, 16-byte aligned) of matrix
m: lane 8m + r addresses row r. Other lanes' addresses are ignored.

IR form: `(dst, src)`: dst `BufferRef(shared, row start)` covering 8 elements (this lane's row),
src a local region of 2 * num elements. An m16n8 accumulator tile converted to 16-bit values is
exactly stmatrix's fragment (rows g, g + 8 = matrices 0, 1), which is the epilogue's use.

Example:
    >>> stmatrix_name(4, True)
    'stmatrix.sync.aligned.m8n8.x4.trans.shared.b16'
"""

from __future__ import annotations

import numpy as np

from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.intrinsics import hb
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand, ref_values

_B16 = ("float16", "bfloat16")


def stmatrix_name(num: int, trans: bool) -> str:
    return f"stmatrix.sync.aligned.m8n8.x{num}{'.trans' if trans else ''}.shared.b16"


def _operands(num: int) -> tuple:
    return (Operand("dst", "write", elems=8, scopes=("shared",), dtypes=_B16),
            Operand("src", "read", elems=2 * num, scopes=("local",), dtypes=_B16))


def _semantics(name: str, num: int, trans: bool):
    dst_op, src_op = _operands(num)
    lane = np.arange(32)
    rows, cols = lane // 4, 2 * (lane % 4)

    def stmatrix(ctx, lanes):
        if len(lanes) != 32:
            raise ExecutionError(f"{name} needs a full warp of 32 lanes, got {len(lanes)}")
        mats = np.empty((num, 8, 8), dtype=lanes[0][1].array.dtype)
        for ln, (_, src) in enumerate(lanes):
            vals = ref_values(src, src_op)
            for m in range(num):
                mats[m, rows[ln], cols[ln]] = vals[2 * m]
                mats[m, rows[ln], cols[ln] + 1] = vals[2 * m + 1]
        if trans:
            mats = mats.transpose(0, 2, 1)
        hb.track(ctx).write_lanes([dst if ln < 8 * num else None for ln, (dst, _) in enumerate(lanes)],
                                  dst_op.region(lanes[0][0].buffer))
        for m in range(num):
            for r in range(8):
                dst = lanes[8 * m + r][0]
                if hb.flat_start(dst) % 8:
                    raise ExecutionError(f"{name}: lane {8 * m + r} addresses row {dst.start} of buffer "
                                         f"'{dst.buffer.name}', which is not 16-byte aligned")
                ref_values(dst, dst_op)[:] = mats[m, r]

    return hb.impl(stmatrix, "warp", writes=(0,))


def _header(num: int, trans: bool) -> str:
    fn = f"stmatrix_x{num}{'_trans' if trans else ''}"
    regs = ", ".join(f"%{i + 1}" for i in range(num))
    ins = ", ".join(f'"r"(pack2(s[{2 * i}], s[{2 * i + 1}]))' for i in range(num))
    return f"""namespace tessel {{
// {stmatrix_name(num, trans)}: s holds {2 * num} values; d is this lane's row (16 bytes, shared).
template <typename T> __device__ __forceinline__ void {fn}(T* d, const T* s) {{
  asm volatile("{stmatrix_name(num, trans)} [%0], {{{regs}}};\\n" :: "r"(smem_addr(d)), {ins} : "memory");
}}
}}  // namespace tessel
"""


def entries() -> list[IntrinsicDef]:
    out = []
    for num in (1, 2, 4):
        for trans in (False, True):
            fn = f"tessel::stmatrix_x{num}{'_trans' if trans else ''}"
            out.append(IntrinsicDef(stmatrix_name(num, trans), "warp", _operands(num),
                                    _semantics(stmatrix_name(num, trans), num, trans),
                                    lambda d, s, fn=fn: f"{fn}({d}, {s});", _header(num, trans),
                                    Cost(bytes=128 * num, cycles=float(num)), __doc__.split("\n\n")[1]))
    return out


__all__ = ["entries", "stmatrix_name"]
