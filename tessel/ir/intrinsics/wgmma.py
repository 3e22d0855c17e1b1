"""wgmma.mma_async m64nNk16 (f16 / bf16 inputs, f32 accumulators) and shared-memory descriptors.

A warpgroup (128 threads, 4 consecutive warps starting at a multiple of 4) computes
D (64 x N) = A (64 x 16) . B (16 x N) + (scale_d ? D : 0), N = 8, 16, ..., 256.

IR forms (`wgmma_name(n, dtype, a_regs)`):
- SS: `(d, a_desc, b_desc, scale_d, tnsp_a, tnsp_b)`: `d` the lane's N/2 float32 accumulators
  (a local buffer region), `a_desc` / `b_desc` int64 shared-memory descriptors (values),
  `scale_d` 0 or 1 (an expression), `tnsp_a` / `tnsp_b` constants: 0 = K-major (the operand's
  K index is contiguous: A as [m][k], B as [n][k]), 1 = MN-major (A as [k][m], B as [k][n]).
- RS: `(d, a, b_desc, scale_d, tnsp_b)`: A from registers, 8 values per lane (`A_FRAGMENT`).
- `wgmma.fence.sync.aligned`, `wgmma.commit_group.sync.aligned`, `wgmma.wait_group.sync.aligned N`.

Descriptors (`tessel.smem_desc (out, tile, lbo, sbo, swizzle)` writes one into a local int64):
bits 0-13 start address >> 4, 16-29 leading byte offset >> 4, 32-45 stride byte offset >> 4,
62-63 layout (0 none, 1 128B, 2 64B, 3 32B swizzle). `desc + (bytes >> 4)` moves the start (the
k-step inside a swizzle atom). Canonical layouts (CUTLASS's GMMA layouts; T = 16 bytes):
- K-major, swizzle S: row r (of M or N), k: byte (r % 8) * S + (r // 8) * SBO + 2k, then
  swizzled (tma.swizzle_offset on the address); no swizzle: (r % 8) * 16 + (r // 8) * SBO +
  (k // 8) * LBO + 2 (k % 8).
- MN-major, swizzle S (W = S / 2 elements along MN): byte (r % W) * 2 + (k % 8) * S +
  (r // W) * LBO + (k // 8) * SBO, then swizzled. (MN-major without swizzle: not supported.)
So a 64 x 64 bf16 tile loaded by TMA with a 128B swizzle is K-major with SBO = 1024.

Accumulator fragment (`acc_layout(n)`): thread l of the warpgroup, w = l // 32, g = (l % 32) // 4,
t = l % 4; element i (0 .. N/2-1) is D[16w + g + 8 ((i // 2) % 2)][8 (i // 4) + 2t + i % 2]:
per warp 16 rows; each 8-column chunk holds rows g, g+8 and columns 2t, 2t+1.
A from registers (`A_FRAGMENT`): element i at row 16w + g + 8 ((i // 2) % 2), column
2t + i % 2 + 8 (i // 4) (mma.m16n8k16's A layout per warp).

Asynchrony in the interpreter: at issue the operands are read (shared memory by the issuing
warpgroup's copy-engine actor), the accumulators are poisoned (NaN) and the result lands at the
wait_group that retires its group; wgmmas chained on the same accumulators see the pending value
(as the hardware orders them). Reading the accumulators before the wait reads NaN; overwriting
the shared operands before the wait races with the engine's reads.

Example:
    >>> acc_layout(128).coords(37, 5)  # warp 1, g = 1, t = 1, element 5: chunk 1
    (17, 11)
    >>> decode_desc(encode_desc(0x2400, 16, 1024, 128))
    (9216, 16, 1024, 128)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tessel.errors import TesselError
from tessel.ir.interp.runtime import ExecutionError
from tessel.ir.intrinsics import hb
from tessel.ir.intrinsics.defs import Cost, IntrinsicDef, Operand, ref_values
from tessel.ir.intrinsics.tma import swizzle_offset

NS = tuple(range(8, 257, 8))
DESC = "tessel.smem_desc"
FENCE = "wgmma.fence.sync.aligned"
COMMIT = "wgmma.commit_group.sync.aligned"
WAIT = "wgmma.wait_group.sync.aligned"
_LAYOUT_CODE = {0: 0, 128: 1, 64: 2, 32: 3}
_CODE_LAYOUT = {v: k for k, v in _LAYOUT_CODE.items()}
_SHORT = {"float16": "f16", "bfloat16": "bf16"}
_CTYPE = {"float16": "__half", "bfloat16": "__nv_bfloat16"}


def encode_desc(addr: int, lbo: int, sbo: int, swizzle: int) -> int:
    """The 64-bit descriptor (as a signed int64 value) of a shared tile at byte address `addr`."""
    if swizzle not in _LAYOUT_CODE:
        raise TesselError(f"descriptor swizzle {swizzle} is not one of {tuple(_LAYOUT_CODE)}")
    v = ((addr & 0x3FFFF) >> 4) | (((lbo >> 4) & 0x3FFF) << 16) | (((sbo >> 4) & 0x3FFF) << 32)
    v |= _LAYOUT_CODE[swizzle] << 62
    return v - (1 << 64) if v >> 63 else v


def decode_desc(desc: int) -> tuple[int, int, int, int]:
    """(start address, LBO, SBO, swizzle bytes) of a descriptor."""
    v = int(desc) & ((1 << 64) - 1)
    return ((v & 0x3FFF) << 4, ((v >> 16) & 0x3FFF) << 4, ((v >> 32) & 0x3FFF) << 4, _CODE_LAYOUT[v >> 62])


def operand_offsets(rows: int, desc: int, mn_major: bool, itemsize: int = 2) -> tuple[int, np.ndarray]:
    """(start address, byte addresses of shape (rows, 16)): where element (r, k) of a wgmma
    operand described by `desc` sits (r along M or N, k along K)."""
    start, lbo, sbo, swz = decode_desc(desc)
    r = np.arange(rows, dtype=np.int64)[:, None]
    k = np.arange(16, dtype=np.int64)[None, :]
    if not mn_major:
        if swz:
            off = (r % 8) * swz + (r // 8) * sbo + k * itemsize
        else:
            off = (r % 8) * 16 + (r // 8) * sbo + (k // 8) * lbo + (k % 8) * itemsize
    else:
        if not swz:
            raise ExecutionError("wgmma: an MN-major operand without swizzle is not supported")
        w = swz // itemsize
        off = (r % w) * itemsize + (k % 8) * swz + (r // w) * lbo + (k // 8) * sbo
    addr = start + off
    return start, swizzle_offset(addr, swz) if swz else addr


@dataclass(frozen=True)
class WgmmaLayout:
    """Which of the warpgroup's 128 threads holds which element of a 64 x cols tile (the
    accumulator, kind "acc", or the register A operand, kind "a"); API as mma.FragmentLayout."""

    name: str
    rows: int
    cols: int
    elems: int
    kind: str
    lanes: int = 128

    def coords(self, lane, i):
        w, g, t = lane // 32, (lane % 32) // 4, lane % 4
        if self.kind == "a":
            return 16 * w + g + 8 * ((i // 2) % 2), 2 * t + i % 2 + 8 * (i // 4)
        return 16 * w + g + 8 * ((i // 2) % 2), 8 * (i // 4) + 2 * t + i % 2

    def owner(self, row, col):
        w, rr = row // 16, row % 16
        if self.kind == "a":
            return 32 * w + (rr % 8) * 4 + (col % 8) // 2, (col // 8) * 4 + (rr // 8) * 2 + col % 2
        return 32 * w + (rr % 8) * 4 + (col % 8) // 2, (col // 8) * 4 + (rr // 8) * 2 + col % 2

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) index arrays of shape (128, elems)."""
        lane = np.arange(128)[:, None]
        i = np.arange(self.elems)[None, :]
        r, c = self.coords(lane, i)
        return np.broadcast_to(r, (128, self.elems)), np.broadcast_to(c, (128, self.elems))


def acc_layout(n: int) -> WgmmaLayout:
    """The accumulator layout of m64nNk16 (N/2 floats per thread)."""
    if n not in NS:
        raise TesselError(f"wgmma: N = {n} is not one of 8, 16, ..., 256")
    return WgmmaLayout(f"wgmma.m64n{n}.acc", 64, n, n // 2, "acc")


A_FRAGMENT = WgmmaLayout("wgmma.m64k16.a", 64, 16, 8, "a")


def fence_acc_name(n: int) -> str:
    """`tessel.fence_acc.m64n{N}`: keeps the compiler from moving accumulator reads or writes
    across a wgmma or its wait (an empty asm with "+f" on each register; nothing in the
    interpreter). Call it on the accumulators after wgmma.wait_group, before using them."""
    return f"tessel.fence_acc.m64n{n}"


def wgmma_name(n: int, dtype: str, a_regs: bool = False) -> str:
    s = _SHORT[dtype]
    return f"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{s}.{s}{'.rs' if a_regs else ''}"


def _state(ctx) -> dict:
    return ctx.state.setdefault(("wgmma", ctx.threads[0]), {"open": [], "groups": [], "pending": {}})


def _uniform(lanes, pos: int, what: str):
    vals = {int(la[pos]) for la in lanes}
    if len(vals) != 1:
        raise ExecutionError(f"wgmma: {what} differs between the threads of the warpgroup ({len(vals)} values)")
    return vals.pop()


def _gather(ctx, t, engine, desc: int, rows: int, mn_major: bool, dtype, what: str) -> np.ndarray:
    start, addr = operand_offsets(rows, desc, mn_major)
    ref0, first = hb.resolve(ctx, start, what)
    if ref0.array.dtype != dtype:
        raise ExecutionError(f"{what}: descriptor points into '{ref0.buffer.name}' of {ref0.buffer.dtype}")
    off = addr - (start - first)
    if off.min() < 0 or off.max() + 2 > ref0.array.size * ref0.array.dtype.itemsize:
        raise ExecutionError(f"{what}: the operand runs outside shared buffer '{ref0.buffer.name}'")
    idx = off // 2
    t.read_at(engine, ref0, idx.reshape(-1))
    return ref0.array.reshape(-1)[idx].astype(np.float64)


def issue(ctx, d_refs, a, b, scale_d, n: int, engine) -> None:
    """Start one warpgroup MMA: D = A (64 x k) . B (k x n) + (scale_d ? D : 0), in float64, the
    accumulator registers `d_refs` (one per lane, laid out as acc_layout(n)) poisoned until the
    group's wait delivers D. A pending D of an earlier, unwaited MMA on the same registers is the
    addend, as the hardware chains them. Shared by every wgmma entry (f16/bf16, tf32)."""
    cr, cc = acc_layout(n).table()
    st = _state(ctx)
    key = (id(d_refs[0].array), d_refs[0].start)
    d_op = Operand("d", "readwrite", elems=n // 2)
    if scale_d:
        prev = st["pending"].get(key)
        if prev is not None:
            c = prev[1]
        else:
            c = np.empty((64, n))
            c[cr, cc] = np.stack([ref_values(r, d_op) for r in d_refs]).astype(np.float64)
    else:
        c = np.zeros((64, n))
    d = a @ b + c
    for r in d_refs:
        ref_values(r, d_op)[:] = np.nan  # in flight: the registers hold no value until the wait
    entry = (d_refs, d, engine)
    st["pending"][key] = entry
    st["open"].append((key, entry))


def _semantics(n: int, dtype: str, a_regs: bool):
    name = wgmma_name(n, dtype, a_regs)
    ar, ac = A_FRAGMENT.table()

    def mma(ctx, lanes):
        if len(lanes) != 128:
            raise ExecutionError(f"{name} needs a warpgroup of 128 threads, got {len(lanes)}")
        t = hb.track(ctx)
        engine = _engine(t, len(lanes))
        d_refs = [la[0] for la in lanes]
        if a_regs:
            a = np.empty((64, 16))
            a[ar, ac] = np.stack([ref_values(la[1], _A_OP) for la in lanes]).astype(np.float64)
            b_desc, scale_d, tnsp_b = (_uniform(lanes, i, w) for i, w in ((2, "b_desc"), (3, "scale_d"),
                                                                           (4, "tnsp_b")))
        else:
            a_desc, b_desc, scale_d, tnsp_a, tnsp_b = (_uniform(lanes, i, w) for i, w in (
                (1, "a_desc"), (2, "b_desc"), (3, "scale_d"), (4, "tnsp_a"), (5, "tnsp_b")))
            a = _gather(ctx, t, engine, a_desc, 64, bool(tnsp_a), _elem(dtype), f"{name} operand A")
        b = _gather(ctx, t, engine, b_desc, n, bool(tnsp_b), _elem(dtype), f"{name} operand B").T  # (16, n)
        issue(ctx, d_refs, a, b, scale_d, n, engine)

    return hb.impl(mma, "warpgroup")


def _engine(t, lanes: int):
    """The tensor-core actor of a warpgroup's wgmma: it happens-after what every one of the
    issuing threads did (each releases to it), without ordering the threads among themselves
    (a warpgroup collective is no memory barrier)."""
    engine = t.async_actor(0)
    key = ("wgmma.issue", engine, object())
    for lane in range(1, lanes):
        t.release(t.actor(lane), key)
    t.acquire(engine, key)
    return engine


def _elem(dtype):
    from tessel.ir.dtypes import numpy_dtype

    return numpy_dtype(dtype)


_A_OP = Operand("a", "read", elems=8)


def _fence_acc(ctx, d):
    return None


def _fence(ctx, lanes):
    return None


def _commit(ctx, lanes):
    st = _state(ctx)
    st["groups"].append(st["open"])
    st["open"] = []


def _wait(ctx, lanes):
    n = _uniform(lanes, 0, "wait_group N")
    st = _state(ctx)
    t = hb.track(ctx)
    while len(st["groups"]) > n:
        for key, (d_refs, d, engine) in st["groups"].pop(0):
            if st["pending"].get(key) is not None and st["pending"][key][1] is d:
                del st["pending"][key]
            n_el = d.shape[1] // 2
            lay = acc_layout(d.shape[1])
            cr, cc = lay.table()
            op = Operand("d", "write", elems=n_el)
            for lane, r in enumerate(d_refs):
                ref_values(r, op)[:] = d[cr[lane], cc[lane]].astype(np.float32)
            sync = ("wgmma.done", id(d))
            t.release(engine, sync)
            for lane in range(len(lanes)):
                t.acquire(t.actor(lane), sync)


def _desc(ctx, out, tile, lbo, sbo, swizzle):
    addr = hb.address(ctx, tile)
    swizzle = int(swizzle)
    if swizzle and (addr % swizzle):
        raise ExecutionError(f"{DESC}: tile '{tile.buffer.name}'{list(tile.start)} is not {swizzle}-byte aligned")
    ref_values(out, Operand("out", "write", elems=1))[0] = encode_desc(addr, int(lbo), int(sbo), swizzle)


def _operand_list(n: int, dtype: str, a_regs: bool) -> tuple:
    d = Operand("d", "readwrite", elems=n // 2, scopes=("local",), dtypes=("float32",))
    desc = ("int64",)
    flag = Operand("scale_d", "value", dtypes=("int32", "bool"))
    if a_regs:
        return (d, Operand("a", "read", elems=8, scopes=("local",), dtypes=(dtype,)),
                Operand("b_desc", "value", dtypes=desc), flag,
                Operand("tnsp_b", "value", dtypes=("int32",), const=True))
    return (d, Operand("a_desc", "value", dtypes=desc), Operand("b_desc", "value", dtypes=desc), flag,
            Operand("tnsp_a", "value", dtypes=("int32",), const=True),
            Operand("tnsp_b", "value", dtypes=("int32",), const=True))


def _header(n: int, dtype: str, a_regs: bool) -> str:
    s = _SHORT[dtype]
    fn = f"wgmma_m64n{n}k16_f32_{s}_{'rs' if a_regs else 'ss'}"
    m = n // 2
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(m))
    regs = ", ".join(f"%{i}" for i in range(m))
    if a_regs:
        a_in = ", ".join(f'"r"(a{i})' for i in range(4))
        pack = ("  const unsigned a0 = pack2(a[0], a[1]), a1 = pack2(a[2], a[3]), a2 = pack2(a[4], a[5]), "
                "a3 = pack2(a[6], a[7]);\n")
        ops = f"{{%{m}, %{m + 1}, %{m + 2}, %{m + 3}}}, %{m + 4}, p, 1, 1, %{m + 6}"
        ins = f'{a_in}, "l"(b_desc), "r"(scale_d), "n"(TB)'
        setp = f"%{m + 5}"
        sig = f"template <int TB> __device__ __forceinline__ void {fn}(float* d, const {_CTYPE[dtype]}* a, " \
              f"long long b_desc, int scale_d)"
    else:
        pack = ""
        ops = f"%{m}, %{m + 1}, p, 1, 1, %{m + 3}, %{m + 4}"
        ins = '"l"(a_desc), "l"(b_desc), "r"(scale_d), "n"(TA), "n"(TB)'
        setp = f"%{m + 2}"
        sig = f"template <int TA, int TB> __device__ __forceinline__ void {fn}(float* d, long long a_desc, " \
              f"long long b_desc, int scale_d)"
    ptx = f"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{s}.{s}"
    return f"""namespace tessel {{
// {ptx}{' (A from registers)' if a_regs else ''}: d (N/2 floats per thread) += A x B.
{sig} {{
{pack}  asm volatile("{{\\n .reg .pred p;\\n setp.ne.b32 p, {setp}, 0;\\n"
               " {ptx} {{{regs}}}, {ops};\\n}}\\n"
               : {outs}
               : {ins});
}}
}}  // namespace tessel
"""


GROUP_HEADER = r"""namespace tessel {
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit_group() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void wgmma_wait_group() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory");
}
template <int M> __device__ __forceinline__ void fence_acc(float* d) {
#pragma unroll
  for (int i = 0; i < M; ++i) asm volatile("" : "+f"(d[i]) :: "memory");
}
// A shared-memory matrix descriptor (see tessel/ir/intrinsics/wgmma.py for the fields).
__device__ __forceinline__ void smem_desc(long long* out, const void* tile, int lbo, int sbo, int swizzle) {
  const unsigned long long layout = swizzle == 128 ? 1ull : swizzle == 64 ? 2ull : swizzle == 32 ? 3ull : 0ull;
  unsigned long long d = (unsigned long long)((smem_addr(tile) & 0x3FFFF) >> 4);
  d |= (unsigned long long)((lbo >> 4) & 0x3FFF) << 16;
  d |= (unsigned long long)((sbo >> 4) & 0x3FFF) << 32;
  d |= layout << 62;
  *out = (long long)d;
}
}  // namespace tessel
"""


def entries() -> list[IntrinsicDef]:
    doc = "\n\n".join(__doc__.split("\n\n")[1:5])
    desc = IntrinsicDef(DESC, "thread", (Operand("out", "write", elems=1, scopes=("local",), dtypes=("int64",)),
                                      Operand("tile", "read", elems=1, scopes=("shared",)),
                                      Operand("lbo", "value", dtypes=("int32",)),
                                      Operand("sbo", "value", dtypes=("int32",)),
                                      Operand("swizzle", "value", dtypes=("int32",), const=True)),
                     hb.impl(_desc), lambda o, t, lbo, sbo, sw: f"tessel::smem_desc({o}, {t}, {lbo}, {sbo}, {sw});",
                     GROUP_HEADER, Cost(cycles=2.0), doc)
    object.__setattr__(desc, "shared_align", hb.SMEM_ALIGN)  # swizzle atoms need 1024-byte aligned buffers
    out = [
        desc,
        IntrinsicDef(FENCE, "warpgroup", (), hb.impl(_fence, "warpgroup"), lambda: "tessel::wgmma_fence();",
                     GROUP_HEADER, Cost(cycles=1.0), doc),
        IntrinsicDef(COMMIT, "warpgroup", (), hb.impl(_commit, "warpgroup"), lambda: "tessel::wgmma_commit_group();",
                     GROUP_HEADER, Cost(cycles=1.0), doc),
        IntrinsicDef(WAIT, "warpgroup", (Operand("n", "value", dtypes=("int32",), const=True),),
                     hb.impl(_wait, "warpgroup"), lambda n: f"tessel::wgmma_wait_group<{n}>();", GROUP_HEADER,
                     Cost(cycles=1.0), doc),
    ]
    for n in NS:
        out.append(IntrinsicDef(fence_acc_name(n), "thread",
                                (Operand("d", "readwrite", elems=n // 2, scopes=("local",), dtypes=("float32",)),),
                                hb.impl(_fence_acc), lambda d, n=n: f"tessel::fence_acc<{n // 2}>({d});",
                                GROUP_HEADER, Cost(cycles=0.0), fence_acc_name.__doc__))
    for dtype in ("float16", "bfloat16"):
        for n in NS:
            for a_regs in (False, True):
                fn = f"tessel::wgmma_m64n{n}k16_f32_{_SHORT[dtype]}_{'rs' if a_regs else 'ss'}"
                if a_regs:
                    def cuda(d, a, b, s, tb, fn=fn):
                        return f"{fn}<{tb}>({d}, {a}, {b}, {s});"
                else:
                    def cuda(d, a, b, s, ta, tb, fn=fn):
                        return f"{fn}<{ta}, {tb}>({d}, {a}, {b}, {s});"
                entry = IntrinsicDef(wgmma_name(n, dtype, a_regs), "warpgroup", _operand_list(n, dtype, a_regs),
                                     _semantics(n, dtype, a_regs), cuda, GROUP_HEADER + _header(n, dtype, a_regs),
                                     Cost(flops=2 * 64 * n * 16, cycles=n / 2.0), doc)  # ~1024 FLOP/clk/sub-partition
                out.append(entry)
    return out


__all__ = ["A_FRAGMENT", "COMMIT", "DESC", "FENCE", "NS", "WAIT", "WgmmaLayout", "acc_layout", "decode_desc",
           "encode_desc", "entries", "fence_acc_name", "operand_offsets", "wgmma_name"]
