"""More mma.sync shapes: m16n8k8 (f16, bf16, tf32 -> f32) and m16n8k32 (s8, u8 -> s32; e4m3,
e5m2 -> f32). A warp multiplies an m x k tile of A by a k x n tile of B and adds an m x n tile C,
each spread over the 32 lanes in the PTX layouts of fragments.py (A row-major, B column-major:
`.row.col`). D may be the same fragment as C: every input is read before D is written.

Operand dtypes (tessel has no uint8 or fp8 dtype):
- f16 / bf16: float16 / bfloat16 buffers; tf32: float32 buffers, rounded to tf32 (10 mantissa
  bits, round to nearest, ties away from zero: PTX `cvt.rna.tf32.f32`) by the wrapper and by the
  interpreter alike.
- s8: int8 buffers. u8, e4m3, e5m2: int8 buffers holding the bit patterns (the byte is read as
  an unsigned 8-bit integer, or decoded as OCP FP8 E4M3 (no infinities) / E5M2, as ml_dtypes'
  float8_e4m3fn / float8_e5m2 do).

Integer buffers cannot hold a poison marker (the interpreter's int poison is a number), so an
unloaded int8 fragment shows up as a wrong result rather than as NaN.

Meaning: products are exact; the sum is formed in float64 and rounded once to float32 (floats;
the hardware's order and rounding are unspecified, so tests compare with a tolerance), or
exactly and wrapped to 32 bits (integers: no .satfinite). The e4m3 / e5m2 shapes need sm_89 or
newer; compiled for an older target their wrapper traps.

Example:
    >>> [e.name for e in entries()][-1]
    'mma.sync.aligned.m16n8k32.row.col.f32.e5m2.e5m2.f32'
    >>> lookup_shape("mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32").a.name
    'm16n8k32.a'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tessel.errors import TesselError
from tessel.ir.interp.intrinsics import IntrinsicImpl
from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.intrinsics import fragments as fr
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand, ref_values
from tessel.ir.intrinsics.fragments import FragmentLayout

_BUFFER_DTYPE = {"f16": "float16", "bf16": "bfloat16", "tf32": "float32", "s8": "int8", "u8": "int8",
                 "e4m3": "int8", "e5m2": "int8"}
_CTYPE = {"float16": "__half", "bfloat16": "__nv_bfloat16", "float32": "float", "int8": "signed char", "int32": "int"}


@dataclass(frozen=True)
class MmaShape:
    """One mma.sync variant: its PTX name, the wrapper's name, the tile sizes, the three
    fragment layouts, the input kind (f16 bf16 tf32 s8 u8 e4m3 e5m2) and the accumulator dtype."""

    name: str
    fn: str
    m: int
    n: int
    k: int
    a: FragmentLayout
    b: FragmentLayout
    c: FragmentLayout
    kind: str
    acc: str  # "float32" or "int32"
    min_sm: int

    @property
    def in_dtype(self) -> str:
        return _BUFFER_DTYPE[self.kind]


def mma_shape_name(shape: str, kind: str) -> str:
    """The registry name of mma.sync `shape` ('m16n8k8', 'm16n8k32') with `kind` inputs.

    >>> mma_shape_name("m16n8k8", "tf32")
    'mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32'
    """
    acc = "s32" if kind in ("s8", "u8") else "f32"
    return f"mma.sync.aligned.{shape}.row.col.{acc}.{kind}.{kind}.{acc}"


def _shape(shape: str, kind: str, a, b, c, min_sm: int) -> MmaShape:
    m, n, k = (int(x) for x in shape[1:].replace("n", " ").replace("k", " ").split())
    acc = "int32" if kind in ("s8", "u8") else "float32"
    fn = f"mma_{shape}_{'s32' if acc == 'int32' else 'f32'}_{kind}"
    return MmaShape(mma_shape_name(shape, kind), fn, m, n, k, a, b, c, kind, acc, min_sm)


SHAPES = (
    _shape("m16n8k8", "f16", fr.M16N8K8_A, fr.M16N8K8_B, fr.M16N8K8_ACC, 80),
    _shape("m16n8k8", "bf16", fr.M16N8K8_A, fr.M16N8K8_B, fr.M16N8K8_ACC, 80),
    _shape("m16n8k8", "tf32", fr.M16N8K8_TF32_A, fr.M16N8K8_TF32_B, fr.M16N8K8_ACC, 80),
    _shape("m16n8k32", "s8", fr.M16N8K32_A, fr.M16N8K32_B, fr.M16N8K32_ACC, 80),
    _shape("m16n8k32", "u8", fr.M16N8K32_A, fr.M16N8K32_B, fr.M16N8K32_ACC, 80),
    _shape("m16n8k32", "e4m3", fr.M16N8K32_A, fr.M16N8K32_B, fr.M16N8K32_ACC, 89),
    _shape("m16n8k32", "e5m2", fr.M16N8K32_A, fr.M16N8K32_B, fr.M16N8K32_ACC, 89),
)
_BY_NAME = {s.name: s for s in SHAPES}


def lookup_shape(name: str) -> MmaShape:
    """The MmaShape of registry name `name`."""
    if name not in _BY_NAME:
        raise TesselError(f"unknown mma shape {name!r}; known: {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def round_tf32(x) -> np.ndarray:
    """float32 values rounded to tf32 (10 mantissa bits), to nearest with ties away from zero,
    as `cvt.rna.tf32.f32` does; infinities and NaN pass through.

    >>> float(round_tf32(np.float32(1 + 2 ** -11)))  # a tie: away from zero
    1.0009765625
    """
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x1000) & 0xFFFFE000).astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(x), rounded, x)


def decode(kind: str, values) -> np.ndarray:
    """Operand values of input `kind` as the numbers the tensor core multiplies (float64, or
    int64 for the integer kinds).

    >>> decode("e4m3", np.array([0x38, -0x48], np.int8)).tolist()  # 0x38 = 1.0, 0xb8 = -1.0
    [1.0, -1.0]
    """
    v = np.asarray(values)
    if kind in ("f16", "bf16"):
        return v.astype(np.float64)
    if kind == "tf32":
        return round_tf32(v).astype(np.float64)
    if kind == "s8":
        return v.astype(np.int8).astype(np.int64)
    raw = v.astype(np.int8).view(np.uint8)
    if kind == "u8":
        return raw.astype(np.int64)
    import ml_dtypes

    fp8 = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}[kind]
    return raw.view(fp8).astype(np.float64)


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Exact integers wrapped to 32-bit two's complement (mma's s32 result without .satfinite)."""
    return ((np.asarray(x, dtype=np.int64) + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)


def reference(shape: MmaShape, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """D = A @ B + C on whole tiles (A m x k and B k x n as stored in the buffers, C m x n), with
    the meaning stated in the module docstring."""
    da, db = decode(shape.kind, a), decode(shape.kind, b)
    if shape.acc == "int32":
        return wrap_int32(da @ db + np.asarray(c, dtype=np.int64))
    return (da @ db + np.asarray(c, dtype=np.float64)).astype(np.float32)


def _operands(shape: MmaShape) -> tuple:
    return (Operand("d", "write", elems=shape.c.elems, dtypes=(shape.acc,)),
            Operand("a", "read", elems=shape.a.elems, dtypes=(shape.in_dtype,)),
            Operand("b", "read", elems=shape.b.elems, dtypes=(shape.in_dtype,)),
            Operand("c", "read", elems=shape.c.elems, dtypes=(shape.acc,)))


def _semantics(shape: MmaShape) -> IntrinsicImpl:
    d_op, a_op, b_op, c_op = _operands(shape)

    def mma(ctx, lanes):
        if len(lanes) != 32:
            raise ExecutionError(f"{shape.name} needs a full warp of 32 lanes, got {len(lanes)}")
        for k, op in ((1, a_op), (2, b_op), (3, c_op)):  # fragments outside registers are race-checked
            ctx.read_lanes([lr[k] for lr in lanes], op.region(lanes[0][k].buffer))
        ctx.write_lanes([lr[0] for lr in lanes], d_op.region(lanes[0][0].buffer))
        a = shape.a.scatter(np.stack([ref_values(lr[1], a_op) for lr in lanes]))
        b = shape.b.scatter(np.stack([ref_values(lr[2], b_op) for lr in lanes]))
        c = shape.c.scatter(np.stack([ref_values(lr[3], c_op) for lr in lanes]))
        d = shape.c.gather(reference(shape, a, b, c))
        for lane, lr in enumerate(lanes):  # after every read: d may alias c
            ref_values(lr[0], d_op)[:] = d[lane]

    return IntrinsicImpl(mma, "warp", with_context=True)


# Guarded inside the namespace block: the header assembler keeps each block once, and the guard
# keeps a second copy harmless where it does not.
_HELPERS = r"""namespace tessel {
#ifndef TESSEL_MMA_SHAPES_HELPERS
#define TESSEL_MMA_SHAPES_HELPERS
// Four 8-bit values in one 32-bit register, p[0] in bits 0-7 (the lower-numbered element).
__device__ __forceinline__ unsigned pack4(const signed char* p) {
  return (unsigned)(unsigned char)p[0] | ((unsigned)(unsigned char)p[1] << 8) |
         ((unsigned)(unsigned char)p[2] << 16) | ((unsigned)(unsigned char)p[3] << 24);
}
// float -> tf32 bits, to nearest, ties away from zero.
__device__ __forceinline__ unsigned to_tf32(float x) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}
#endif
}  // namespace tessel"""


def _header(shape: MmaShape) -> str:
    it, ct = _CTYPE[shape.in_dtype], _CTYPE[shape.acc]
    if shape.kind in ("f16", "bf16"):
        na, nb = shape.a.elems // 2, shape.b.elems // 2
        regs = [f"pack2(a[{2 * i}], a[{2 * i + 1}])" for i in range(na)] + \
               [f"pack2(b[{2 * i}], b[{2 * i + 1}])" for i in range(nb)]
    elif shape.kind == "tf32":
        na, nb = shape.a.elems, shape.b.elems
        regs = [f"to_tf32(a[{i}])" for i in range(na)] + [f"to_tf32(b[{i}])" for i in range(nb)]
    else:
        na, nb = shape.a.elems // 4, shape.b.elems // 4
        regs = [f"pack4(a + {4 * i})" for i in range(na)] + [f"pack4(b + {4 * i})" for i in range(nb)]
    cr = "r" if shape.acc == "int32" else "f"
    nc = shape.c.elems
    ops = ", ".join(f"%{i}" for i in range(nc))
    aops = ", ".join(f"%{nc + i}" for i in range(na))
    bops = ", ".join(f"%{nc + na + i}" for i in range(nb))
    cops = ", ".join(f"%{nc + na + nb + i}" for i in range(nc))
    decl = "\n".join(f"  unsigned r{i} = {r};" for i, r in enumerate(regs))
    outs = ", ".join(f'"={cr}"(d[{i}])' for i in range(nc))
    ins = ", ".join([f'"r"(r{i})' for i in range(len(regs))] + [f'"{cr}"(c{i})' for i in range(nc)])
    body = f"""{decl}
  {ct} {', '.join(f'c{i} = c[{i}]' for i in range(nc))};
  asm volatile("{shape.name} {{{ops}}}, {{{aops}}}, {{{bops}}}, {{{cops}}};\\n"
               : {outs}
               : {ins});"""
    if shape.min_sm > 80:
        body = f"""#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= {shape.min_sm}0
{body}
#else
  __trap();  // {shape.name} needs sm_{shape.min_sm} or newer
#endif"""
    return f"""{_HELPERS}
namespace tessel {{
// {shape.name}: d ({nc}) = a ({shape.a.elems}) x b ({shape.b.elems}) + c ({nc}), per lane; d may alias c.
__device__ __forceinline__ void {shape.fn}({ct}* d, const {it}* a, const {it}* b, const {ct}* c) {{
{body}
}}
}}  // namespace tessel
"""


def entries() -> list[IntrinsicDef]:
    """The registry entries, one per MmaShape."""
    out = []
    doc = __doc__.split("\n\nExample:")[0]
    for s in SHAPES:
        fn = f"tessel::{s.fn}"
        out.append(IntrinsicDef(
            name=s.name, scope="warp", operands=_operands(s), semantics=_semantics(s),
            cuda=lambda d, a, b, c, fn=fn: f"{fn}({d}, {a}, {b}, {c});", header=_header(s),
            cost=Cost(flops=2 * s.m * s.n * s.k, bytes=0, cycles=2.0 if s.k == 8 else 4.0), doc=doc))
    return out


__all__ = ["SHAPES", "MmaShape", "decode", "entries", "lookup_shape", "mma_shape_name", "reference", "round_tf32",
           "wrap_int32"]
