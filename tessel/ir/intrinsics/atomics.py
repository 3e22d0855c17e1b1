"""Atomic read-modify-writes on global or shared memory: add (f32, s32, f16x2, bf16x2), max (s32),
compare-and-swap (b32). Atomic accesses never race with each other; with a plain access they do.

IR forms (`addr` is `BufferRef(buffer, index)` of a global or shared buffer):
- `red.add.f32 (addr, v)`, `red.add.s32 (addr, v)`, `red.max.s32 (addr, v)`: *addr op= v, no result.
- `red.add.noftz.f16x2 (addr, v)`, `red.add.noftz.bf16x2 (addr, v)`: two 16-bit elements at addr
  (4-byte aligned) each add the matching element of `v` (a 2-element local region); each sum
  is rounded once to the element type.
- `atom.add.f32 (old, addr, v)`: as red, also writing the previous value into `old` (local).
- `atom.cas.b32 (old, addr, compare, v)`: int32: old = *addr; if old == compare: *addr = v.

Float adds round once to the element type (float32 sums computed exactly, then rounded), which is
what the hardware does for each atomic; the order of the atomics of different threads is the
interpreter's schedule (so float results may differ from the GPU's in the last bits).

Example:
    >>> [e.name for e in entries()][:2]
    ['red.add.f32', 'red.add.s32']
"""

from __future__ import annotations

import numpy as np

from tessel.ir.interp.runtime import ExecutionError, to_bfloat16
from tessel.ir.intrinsics import hb
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand, ref_values

MEM = ("global", "shared")


def _cell(ref, n=1):
    return ref.region((1,) * (ref.buffer.ndim - 1) + (n,)).reshape(-1)


def _report(ctx, ref, n=1):
    t = hb.track(ctx)
    t.write(t.actor(0), ref, (1,) * (ref.buffer.ndim - 1) + (n,), atomic=True)


def _wrap32(v: int) -> int:
    return ((int(v) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _add_f32(ctx, addr, v):
    _report(ctx, addr)
    cell = _cell(addr)
    cell[0] = np.float32(float(cell[0]) + float(v))


def _add_s32(ctx, addr, v):
    _report(ctx, addr)
    cell = _cell(addr)
    cell[0] = _wrap32(int(cell[0]) + int(v))


def _max_s32(ctx, addr, v):
    _report(ctx, addr)
    cell = _cell(addr)
    cell[0] = max(int(cell[0]), int(v))


def _pair(name, rnd):
    def add2(ctx, addr, v):
        if hb.flat_start(addr) % 2:
            raise ExecutionError(f"{name}: '{addr.buffer.name}'{list(addr.start)} is not 4-byte aligned")
        _report(ctx, addr, 2)
        cell = _cell(addr, 2)
        vals = ref_values(v, Operand("v", "read", elems=2))
        for i in range(2):
            cell[i] = rnd(float(cell[i]) + float(vals[i]))

    return add2


def _atom_add_f32(ctx, old, addr, v):
    _report(ctx, addr)
    cell = _cell(addr)
    ref_values(old, Operand("old", "write", elems=1))[0] = cell[0]
    cell[0] = np.float32(float(cell[0]) + float(v))


def _cas(ctx, old, addr, compare, v):
    _report(ctx, addr)
    cell = _cell(addr)
    prev = int(cell[0])
    ref_values(old, Operand("old", "write", elems=1))[0] = prev
    if prev == _wrap32(int(compare)):
        cell[0] = _wrap32(int(v))


HEADER = r"""namespace tessel {
// Atomics: the CUDA built-ins (RED / ATOM in SASS); a result that is not used becomes RED.
__device__ __forceinline__ void red_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void red_add(int* p, int v) { atomicAdd(p, v); }
__device__ __forceinline__ void red_max(int* p, int v) { atomicMax(p, v); }
__device__ __forceinline__ void red_add2(__half* p, const __half* v) {
  atomicAdd(reinterpret_cast<__half2*>(p), __halves2half2(v[0], v[1]));
}
__device__ __forceinline__ void red_add2(__nv_bfloat16* p, const __nv_bfloat16* v) {
  atomicAdd(reinterpret_cast<__nv_bfloat162*>(p), __halves2bfloat162(v[0], v[1]));
}
__device__ __forceinline__ void atom_add(float* old, float* p, float v) { *old = atomicAdd(p, v); }
__device__ __forceinline__ void atom_cas(int* old, int* p, int compare, int v) { *old = atomicCAS(p, compare, v); }
}  // namespace tessel
"""


def entries() -> list[IntrinsicDef]:
    doc = __doc__.split("\n\n")[1] + "\n\n" + __doc__.split("\n\n")[2]
    cost = Cost(bytes=4, cycles=4.0)

    def addr(dt, n=1):
        return Operand("addr", "readwrite", elems=n, scopes=MEM, dtypes=(dt,))

    def val(dt):
        return Operand("v", "value", dtypes=(dt,))

    def local(name, dt, n=1, role="write"):
        return Operand(name, role, elems=n, scopes=("local",), dtypes=(dt,))

    return [
        IntrinsicDef("red.add.f32", "thread", (addr("float32"), val("float32")), hb.impl(_add_f32, writes=(0,)),
                     lambda p, v: f"tessel::red_add({p}, {v});", HEADER, cost, doc),
        IntrinsicDef("red.add.s32", "thread", (addr("int32"), val("int32")), hb.impl(_add_s32, writes=(0,)),
                     lambda p, v: f"tessel::red_add({p}, {v});", HEADER, cost, doc),
        IntrinsicDef("red.max.s32", "thread", (addr("int32"), val("int32")), hb.impl(_max_s32, writes=(0,)),
                     lambda p, v: f"tessel::red_max({p}, {v});", HEADER, cost, doc),
        IntrinsicDef("red.add.noftz.f16x2", "thread", (addr("float16", 2), local("v", "float16", 2, "read")),
                     hb.impl(_pair("red.add.noftz.f16x2", np.float16), writes=(0,)),
                     lambda p, v: f"tessel::red_add2({p}, {v});", HEADER, cost, doc),
        IntrinsicDef("red.add.noftz.bf16x2", "thread", (addr("bfloat16", 2), local("v", "bfloat16", 2, "read")),
                     hb.impl(_pair("red.add.noftz.bf16x2", to_bfloat16), writes=(0,)),
                     lambda p, v: f"tessel::red_add2({p}, {v});", HEADER, cost, doc),
        IntrinsicDef("atom.add.f32", "thread", (local("old", "float32"), addr("float32"), val("float32")),
                     hb.impl(_atom_add_f32, writes=(0, 1)), lambda o, p, v: f"tessel::atom_add({o}, {p}, {v});",
                     HEADER, cost, doc),
        IntrinsicDef("atom.cas.b32", "thread", (local("old", "int32"), addr("int32"), val("int32"), val("int32")),
                     hb.impl(_cas, writes=(0, 1)), lambda o, p, c, v: f"tessel::atom_cas({o}, {p}, {c}, {v});",
                     HEADER, cost, doc),
    ]


__all__ = ["entries"]
