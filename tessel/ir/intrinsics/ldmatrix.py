"""ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16: a warp loads one, two or four 8x8
matrices of 16-bit values from shared memory, spread over its lanes in the mma fragment layout.

Each of the first 8 * num lanes supplies the address of one matrix row (8 consecutive 16-bit
values, 16 bytes, 16-byte aligned): lanes 8m .. 8m+7 give rows 0..7 of matrix m; the other
lanes' addresses are ignored (the race checker records the rows the first 8 * num lanes
read). Lane l then receives two values of each matrix m, in its
destination elements 2m and 2m+1: without .trans, row l // 4, columns 2 (l % 4) and 2 (l % 4) + 1
of matrix m; with .trans, the same positions of the transposed matrix, i.e. rows 2 (l % 4) and
2 (l % 4) + 1 of column l // 4.

IR form: `Intrinsic(name, (BufferRef(dst, ...), BufferRef(src_shared, row_start)))`, dst a local
buffer covering 2 * num elements, src covering the 8 elements of the row this lane addresses.
With A a 16x16 row-major tile in shared memory, lane l addressing row l % 16, column 8 (l // 16),
ldmatrix.x4 yields exactly mma's A fragment; a 16x8 (k x n) B tile with lanes 0-15 addressing
row l, ldmatrix.x2.trans yields mma's B fragment.

Example:
    >>> [e.name for e in entries()][:2]
    ['ldmatrix.sync.aligned.m8n8.x1.shared.b16', 'ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16']
"""

from __future__ import annotations

import numpy as np

from tessel.ir.interp.intrinsics import IntrinsicImpl
from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand, ref_values

_B16 = ("float16", "bfloat16")


def ldmatrix_name(num: int, trans: bool) -> str:
    """The registry name of ldmatrix with `num` (1, 2, 4) matrices, transposed or not."""
    return f"ldmatrix.sync.aligned.m8n8.x{num}{'.trans' if trans else ''}.shared.b16"


def _operands(num: int) -> tuple:
    return (Operand("dst", "write", elems=2 * num, scopes=("local",), dtypes=_B16),
            Operand("src", "read", elems=8, scopes=("shared",), dtypes=_B16))


def _flat_start(ref) -> int:
    flat = 0
    for s, d in zip(ref.start, ref.buffer.shape):
        flat = flat * d + int(s)
    return flat


def _semantics(name: str, num: int, trans: bool):
    dst_op, src_op = _operands(num)
    lane = np.arange(32)
    rows, cols = lane // 4, 2 * (lane % 4)

    def ldmatrix(ctx, lanes):
        if len(lanes) != 32:
            raise ExecutionError(f"{name} needs a full warp of 32 lanes, got {len(lanes)}")
        # the race checker: lanes 0 .. 8 num - 1 read their row of shared memory
        ctx.read_lanes([src if ln < 8 * num else None for ln, (_, src) in enumerate(lanes)],
                       src_op.region(lanes[0][1].buffer))
        mats = np.empty((num, 8, 8), dtype=lanes[0][1].array.dtype)
        for m in range(num):
            for r in range(8):
                src = lanes[8 * m + r][1]
                if _flat_start(src) % 8:
                    raise ExecutionError(f"{name}: lane {8 * m + r} addresses row {src.start} of buffer "
                                         f"'{src.buffer.name}', which is not 16-byte aligned")
                if src.buffer.dtype != lanes[0][0].buffer.dtype:
                    raise ExecutionError(f"{name}: source '{src.buffer.name}' ({src.buffer.dtype}) and "
                                         f"destination '{lanes[0][0].buffer.name}' differ in dtype")
                mats[m, r] = ref_values(src, src_op)
        if trans:
            mats = mats.transpose(0, 2, 1)
        for ln, (dst, _) in enumerate(lanes):
            out = ref_values(dst, dst_op)
            for m in range(num):
                out[2 * m] = mats[m, rows[ln], cols[ln]]
                out[2 * m + 1] = mats[m, rows[ln], cols[ln] + 1]

    return IntrinsicImpl(ldmatrix, "warp", with_context=True)


def _header(num: int, trans: bool) -> str:
    fn = f"ldmatrix_x{num}{'_trans' if trans else ''}"
    regs = ", ".join(f"%{i}" for i in range(num))
    outs = ", ".join(f'"=r"(r[{i}])' for i in range(num))
    unpack = " ".join(f"unpack2(r[{i}], d + {2 * i});" for i in range(num))
    return f"""namespace tessel {{
// {ldmatrix_name(num, trans)}: d receives {2 * num} values; s is this lane's row (16 bytes, shared).
template <typename T> __device__ __forceinline__ void {fn}(T* d, const T* s) {{
  unsigned r[{num}];
  asm volatile("{ldmatrix_name(num, trans)} {{{regs}}}, [%{num}];\\n" : {outs} : "r"(smem_addr(s)));
  {unpack}
}}
}}  // namespace tessel
"""


def entries() -> list[IntrinsicDef]:
    out = []
    for num in (1, 2, 4):
        for trans in (False, True):
            name = ldmatrix_name(num, trans)
            fn = f"tessel::ldmatrix_x{num}{'_trans' if trans else ''}"
            out.append(IntrinsicDef(
                name=name, scope="warp", operands=_operands(num), semantics=_semantics(name, num, trans),
                cuda=lambda d, s, fn=fn: f"{fn}({d}, {s});", header=_header(num, trans),
                cost=Cost(bytes=128 * num, cycles=float(num)), doc=__doc__.split("\n\n")[1]))
    return out


__all__ = ["entries", "ldmatrix_name"]
