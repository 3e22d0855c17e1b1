"""mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32: a warp multiplies a 16x16 tile
of A by a 16x8 tile of B and adds a 16x8 float32 tile C, each tile spread over the 32 lanes.

Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"), with g = lane // 4 (the group)
and t = lane % 4 (the thread in the group); each lane holds its elements in this order:

- A (16x16, row-major, 8 halves a0..a7): a_i is at row g + 8 * ((i // 2) % 2), column
  2t + (i % 2) + 8 * (i // 4): a0 a1 = (g, 2t..2t+1), a2 a3 = (g+8, 2t..), a4 a5 = (g, 2t+8..),
  a6 a7 = (g+8, 2t+8..).
- B (16x8, k x n, 4 halves b0..b3): b_i is at k = 2t + (i % 2) + 8 * (i // 2), n = g.
- C and D (16x8 float32, 4 floats c0..c3): c_i is at row g + 8 * (i // 2), column 2t + (i % 2).

The products are exact and the sums are computed in float64 then rounded once to float32 (the
hardware's accumulation order and rounding are not specified; tests compare with a tolerance).
D may be the same fragment as C: every input is read before D is written.

Example:
    >>> ACC.coords(5, 3)  # lane 5 (g=1, t=1), element c3
    (9, 3)
    >>> ACC.owner(9, 3)
    (5, 3)
"""

from __future__ import annotations

import numpy as np

from tessel.errors import TesselError
from tessel.ir.interp.intrinsics import IntrinsicImpl
from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand
from tessel.ir.intrinsics.fragments import M16N8K16_A, M16N8K16_ACC, M16N8K16_B, FragmentLayout


# The layouts are the general ones of fragments.py (one definition for every shape).
A_LAYOUT, B_LAYOUT, ACC = M16N8K16_A, M16N8K16_B, M16N8K16_ACC
LAYOUTS = {lay.name: lay for lay in (A_LAYOUT, B_LAYOUT, ACC)}

_CTYPE = {"float16": "__half", "bfloat16": "__nv_bfloat16"}
_SHORT = {"float16": "f16", "bfloat16": "bf16"}


def mma_name(in_dtype: str) -> str:
    """The registry name of the m16n8k16 mma with `in_dtype` inputs and float32 accumulation."""
    s = _SHORT[in_dtype]
    return f"mma.sync.aligned.m16n8k16.row.col.f32.{s}.{s}.f32"


def _semantics(name: str):
    ar, ac = A_LAYOUT.table()
    br, bc = B_LAYOUT.table()
    cr, cc = ACC.table()
    d_op, a_op, b_op, c_op = _operands(name.split(".")[-3])

    def mma(ctx, lanes):
        if len(lanes) != 32:
            raise ExecutionError(f"{name} needs a full warp of 32 lanes, got {len(lanes)}")
        # each operand's region shape, once per call (every lane's fragment lives in the same buffer)
        shapes = [op.region(lanes[0][k].buffer) for k, op in enumerate((d_op, a_op, b_op, c_op))]
        for k in (1, 2, 3):  # fragments outside registers are race-checked
            if lanes[0][k].buffer.scope != "local":
                ctx.read_lanes([lr[k] for lr in lanes], shapes[k])
        if lanes[0][0].buffer.scope != "local":
            ctx.write_lanes([lr[0] for lr in lanes], shapes[0])
        a = np.empty((16, 16))
        b = np.empty((16, 8))
        c = np.empty((16, 8))
        a[ar, ac] = np.stack([lr[1].region(shapes[1]).reshape(-1) for lr in lanes]).astype(np.float64)
        b[br, bc] = np.stack([lr[2].region(shapes[2]).reshape(-1) for lr in lanes]).astype(np.float64)
        c[cr, cc] = np.stack([lr[3].region(shapes[3]).reshape(-1) for lr in lanes]).astype(np.float64)
        d = (a @ b + c).astype(np.float32)
        out = d[cr, cc]  # (32, 4): lane by lane
        for lane, lr in enumerate(lanes):
            lr[0].region(shapes[0]).reshape(-1)[:] = out[lane]

    return IntrinsicImpl(mma, "warp", with_context=True)


def _operands(short: str) -> tuple:
    dt = {"f16": "float16", "bf16": "bfloat16"}[short]
    return (Operand("d", "write", elems=4, dtypes=("float32",)),
            Operand("a", "read", elems=8, dtypes=(dt,)),
            Operand("b", "read", elems=4, dtypes=(dt,)),
            Operand("c", "read", elems=4, dtypes=("float32",)))


def _header(in_dtype: str) -> str:
    fn, ct, ptx = f"mma_m16n8k16_f32_{_SHORT[in_dtype]}", _CTYPE[in_dtype], mma_name(in_dtype)
    return f"""namespace tessel {{
// {ptx}: d (4 floats) = a (8 values) x b (4 values) + c (4 floats), per lane; d may alias c.
__device__ __forceinline__ void {fn}(float* d, const {ct}* a, const {ct}* b, const float* c) {{
  unsigned a0 = pack2(a[0], a[1]), a1 = pack2(a[2], a[3]), a2 = pack2(a[4], a[5]), a3 = pack2(a[6], a[7]);
  unsigned b0 = pack2(b[0], b[1]), b1 = pack2(b[2], b[3]);
  float c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
  asm volatile("{ptx} {{%0, %1, %2, %3}}, {{%4, %5, %6, %7}}, {{%8, %9}}, {{%10, %11, %12, %13}};\\n"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(c0), "f"(c1), "f"(c2), "f"(c3));
}}
}}  // namespace tessel
"""


def entries() -> list[IntrinsicDef]:
    out = []
    for dt in ("float16", "bfloat16"):
        name = mma_name(dt)
        fn = f"tessel::mma_m16n8k16_f32_{_SHORT[dt]}"
        out.append(IntrinsicDef(
            name=name, scope="warp", operands=_operands(_SHORT[dt]), semantics=_semantics(name),
            cuda=lambda d, a, b, c, fn=fn: f"{fn}({d}, {a}, {b}, {c});",
            header=_header(dt), cost=Cost(flops=2 * 16 * 8 * 16, bytes=0, cycles=4.0),
            doc=__doc__.split("\n\n")[1] + "\n\n" + __doc__.split("\n\n")[2]))
    return out


def layout(name: str) -> FragmentLayout:
    """A fragment layout by name ('m16n8k16.a', 'm16n8k16.b', 'm16n8k16.acc')."""
    if name not in LAYOUTS:
        raise TesselError(f"unknown fragment layout {name!r}; known: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


__all__ = ["ACC", "A_LAYOUT", "B_LAYOUT", "LAYOUTS", "FragmentLayout", "entries", "layout", "mma_name"]
