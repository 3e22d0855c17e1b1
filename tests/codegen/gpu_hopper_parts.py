"""Per-intrinsic test kernels (tessel IR) shared by the interpreter tests and the H200 tests:
stmatrix from one warp, TMA boxes of any rank (and stores), atomics from many blocks, and wgmma
from shared images laid out by CUTLASS's canonical GMMA layouts (written out here from their
definitions, independently of tessel.ir.intrinsics.wgmma)."""

from __future__ import annotations

import numpy as np

from tessel.ir.intrinsics import mbarrier, tma, wgmma
from tessel.ir.nodes import (
    Allocate, Barrier, Buffer, BufferRef, Const, For, IfThenElse, Intrinsic, Kernel, Launch, Store, Var, seq,
)


def c(v, dt="int32"):
    return Const(v, dt)


def _ref(buf, *idx):
    return BufferRef(buf, tuple(idx))


def stmatrix_warp(num=4, trans=False):
    """One warp: lane l loads its 2 * num values from In[l], stmatrix stores them (lane l addressing
    row l % 8 of matrix l // 8 of a shared array of num 8x8 matrices), then lane l copies shared
    row l out. Reference: the fragment rule written out in `reference`."""
    from tessel.ir.intrinsics.stmatrix import stmatrix_name

    In = Buffer("In", (32, 2 * num), "float16")
    Out = Buffer("Out", (num * 8, 8), "float16")
    S = Buffer("S_mat", (num * 64,), "float16", "shared")
    frag = Buffer("frag", (2 * num,), "float16", "local")
    ln, e = Var("ln"), Var("e")
    rows = num * 8
    body = seq(For(e, 2 * num, Store(frag, (e,), In[ln, e]), "unrolled"),
               Intrinsic(stmatrix_name(num, trans), (_ref(S, ((ln // 8) % num) * 64 + (ln % 8) * 8), _ref(frag, 0))),
               Barrier(),
               IfThenElse(ln < rows, For(e, 8, Store(Out, (ln, e), S[ln * 8 + e]))))
    kern = Kernel(f"stmatrix_x{num}{'_t' if trans else ''}", (In, Out),
                  Allocate(S, For(ln, 32, Allocate(frag, body), "threadIdx.x")), target="cuda",
                  launch=Launch((1, 1, 1), (32, 1, 1)))

    def inputs(rng):
        return [rng.standard_normal((32, 2 * num)).astype(np.float16), np.full((rows, 8), 7, np.float16)]

    def reference(arrays):
        src = arrays[0]
        mats = np.zeros((num, 8, 8), np.float16)
        for lane in range(32):  # PTX ISA: lane l holds row l/4, columns 2(l%4), 2(l%4)+1 of each matrix
            for m in range(num):
                r, col = lane // 4, 2 * (lane % 4)
                if trans:
                    mats[m, col, r], mats[m, col + 1, r] = src[lane, 2 * m], src[lane, 2 * m + 1]
                else:
                    mats[m, r, col], mats[m, r, col + 1] = src[lane, 2 * m], src[lane, 2 * m + 1]
        return [None, mats.reshape(num * 8, 8)]

    return kern, inputs, reference


def tma_box_kernel(shape, dtype, start, box, swizzle, store_at=None, wait=True):
    """Thread 0 loads the box at `start` into shared memory; everyone waits; then either all
    threads copy the raw shared image to O, or (store_at) thread 0 stores the box to O at
    `store_at` with a TMA store."""
    d = len(shape)
    A = Buffer("A", shape, dtype)
    n = int(np.prod(box))
    O = Buffer("O", shape if store_at is not None else (n,), dtype)
    S = Buffer("S", (max(n, 1024 // np.dtype(np.float32).itemsize),), dtype, "shared")
    bar = Buffer("bar", (1,), "int64", "shared")
    t, e = Var("t"), Var("e")
    isz = 2 if dtype in ("bfloat16", "float16") else 4
    load = seq(Intrinsic(mbarrier.ARRIVE_TX, (_ref(bar, 0), c(n * isz))),
               Intrinsic(tma.tma_load_name(d), (_ref(S, 0), _ref(bar, 0), _ref(A, *[c(s) for s in start]),
                                                *[c(b) for b in box], c(swizzle))))
    body = [IfThenElse(t.eq(0), Intrinsic(mbarrier.INIT, (_ref(bar, 0), c(1)))), Barrier(), IfThenElse(t.eq(0), load),
            Intrinsic(mbarrier.WAIT, (_ref(bar, 0), c(0)))]
    if store_at is None:
        body.append(For(e, n // 32, Store(O, (t * (n // 32) + e,), S[t * (n // 32) + e])))
    else:
        st = [Intrinsic(tma.FENCE, ()),
              Intrinsic(tma.tma_store_name(d), (_ref(O, *[c(s) for s in store_at]), _ref(S, 0), *[c(b) for b in box],
                                                c(swizzle))),
              Intrinsic(tma.COMMIT, ())]
        if wait:
            st.append(Intrinsic(tma.WAIT, (c(0),)))
        body.append(IfThenElse(t.eq(0), seq(*st)))
    return Kernel("tma", (A, O), Allocate(S, Allocate(bar, For(t, 32, seq(*body), "threadIdx.x"))), target="cuda",
                  launch=Launch((1, 1, 1), (32, 1, 1)))


def atomic_kernel(name, dtype, cells, n=96, pair=False):
    A = Buffer("A", (n, 2) if pair else (n,), dtype)
    Y = Buffer("Y", (cells * 2,) if pair else (cells,), dtype)
    v = Buffer("v", (2,), dtype, "local")
    b, t = Var("b"), Var("t")
    i = b * 32 + t
    if pair:
        body = Allocate(v, seq(Store(v, (c(0),), A[i, 0]), Store(v, (c(1),), A[i, 1]),
                               Intrinsic(name, (_ref(Y, (i % cells) * 2), _ref(v, 0)))))
    else:
        body = Intrinsic(name, (_ref(Y, i % cells), A[i]))
    return Kernel("atom", (A, Y), For(b, n // 32, For(t, 32, body, "threadIdx.x"), "blockIdx.x"), target="cuda")


def _cute_swizzle(off: int, bbits: int) -> int:
    """CUTLASS Swizzle<B, 4, 3> on a byte offset: off ^ ((off & (((1 << B) - 1) << 7)) >> 3)."""
    return off ^ ((off & (((1 << bbits) - 1) << 7)) >> 3)


def k_major_offsets(rows, swizzle, lbo, sbo):
    """Byte offsets of element (r, k), k < 16, of a K-major operand: CUTLASS's GMMA layouts
    (in 16-byte units T): INTERLEAVE ((8,m),(T,2)):((1T,SBO),(1,LBO)); 32/64/128B
    ((8,m),(T,2)):((2T|4T|8T,SBO),(1,T)) then Swizzle<1|2|3,4,3>."""
    out = np.zeros((rows, 16), np.int64)
    for r in range(rows):
        for k in range(16):
            if swizzle == 0:
                b = (r % 8) * 16 + (r // 8) * sbo + (k // 8) * lbo + (k % 8) * 2
            else:
                b = (r % 8) * swizzle + (r // 8) * sbo + (k // 8) * 16 + (k % 8) * 2
                b = _cute_swizzle(b, {32: 1, 64: 2, 128: 3}[swizzle])
            out[r, k] = b
    return out


def mn_major_offsets(rows, swizzle, lbo, sbo):
    """MN-major: ((T, S/16, m), (8, k)) : ((1, T, LBO), (S, SBO)) in bytes, then the swizzle."""
    per = swizzle // 2  # elements along MN in one swizzle row
    out = np.zeros((rows, 16), np.int64)
    for r in range(rows):
        for k in range(16):
            b = (r % per) * 2 + (r // per) * lbo + (k % 8) * swizzle + (k // 8) * sbo
            out[r, k] = _cute_swizzle(b, {32: 1, 64: 2, 128: 3}[swizzle])
    return out


def wgmma_image_kernel(n, dtype, a_mode, b_mode, a_regs=False, barrier=True):
    """A / B images given as global arrays are copied into shared memory, descriptors built,
    one wgmma, the accumulators stored by the PTX ISA layout (written out here)."""
    (a_sw, a_lbo, a_sbo, a_mn), (b_sw, b_lbo, b_sbo, b_mn) = a_mode, b_mode
    IA, IB = Buffer("IA", (4096,), dtype), Buffer("IB", (8192,), dtype)
    FA = Buffer("FA", (128, 8), dtype)
    O = Buffer("O", (64, n), "float32")
    SA, SB = Buffer("SA", (4096,), dtype, "shared"), Buffer("SB", (8192,), dtype, "shared")
    acc, af = Buffer("acc", (n // 2,), "float32", "local"), Buffer("af", (8,), dtype, "local")
    da, db = Buffer("da", (1,), "int64", "local"), Buffer("db", (1,), "int64", "local")
    t, e, i = Var("t"), Var("e"), Var("i")
    w, g, tt = t // 32, (t % 32) // 4, t % 4
    fill = seq(For(e, 32, Store(SA, (t * 32 + e,), IA[t * 32 + e])),
               For(e, 64, Store(SB, (t * 64 + e,), IB[t * 64 + e])))
    if a_regs:
        mma = Intrinsic(wgmma.wgmma_name(n, dtype, True), (_ref(acc, 0), _ref(af, 0), db[0], c(0), c(b_mn)))
    else:
        mma = Intrinsic(wgmma.wgmma_name(n, dtype), (_ref(acc, 0), da[0], db[0], c(0), c(a_mn), c(b_mn)))
    body = seq(fill, For(e, 8, Store(af, (e,), FA[t, e])), Intrinsic(tma.FENCE, ()), *([Barrier()] if barrier else []),
               Intrinsic(wgmma.DESC, (_ref(da, 0), _ref(SA, 0), c(a_lbo), c(a_sbo), c(a_sw))),
               Intrinsic(wgmma.DESC, (_ref(db, 0), _ref(SB, 0), c(b_lbo), c(b_sbo), c(b_sw))),
               Intrinsic(wgmma.FENCE, ()), mma, Intrinsic(wgmma.COMMIT, ()), Intrinsic(wgmma.WAIT, (c(0),)),
               For(i, n // 2, Store(O, (w * 16 + g + ((i // 2) % 2) * 8, (i // 4) * 8 + tt * 2 + i % 2), acc[i])))
    inner = Allocate(acc, Allocate(af, Allocate(da, Allocate(db, body))))
    return Kernel("wg", (IA, IB, FA, O), Allocate(SA, Allocate(SB, For(t, 128, inner, "threadIdx.x"))),
                  target="cuda", launch=Launch((1, 1, 1), (128, 1, 1)))


def place(mat, offsets, size):
    img = np.zeros(size, mat.dtype)
    img[(offsets // 2).reshape(-1)] = mat.reshape(-1)
    return img


MODES = {  # (swizzle, LBO, SBO, MN-major) for a 64-row A and an n-row B
    "k128": lambda rows: (128, 16, 1024, 0),
    "k64": lambda rows: (64, 16, 512, 0),
    "k32": lambda rows: (32, 16, 256, 0),
    "k_none": lambda rows: (0, rows * 16, 128, 0),  # core matrices: 8 rows x 16 B; K halves `rows * 16` apart
    "mn128": lambda rows: (128, 2048, 1024, 1),
    "mn64": lambda rows: (64, 2048, 512, 1),
}


def zfill_kernel(sizes=None):
    """Thread t copies 16 bytes of row t of G into S with a source size of sizes[t] bytes (threads
    past G's rows pass 0 and an out-of-range source), waits, and copies S out."""
    from tessel.ir.intrinsics.cp_async_zfill import NAME

    G, O = Buffer("G", (6, 8), "float16"), Buffer("O", (8, 8), "float16")
    Z = Buffer("Z", (8,), "int32")
    S = Buffer("S", (8, 8), "float16", "shared")
    t, e = Var("t"), Var("e")
    body = seq(Intrinsic(NAME, (_ref(S, t, c(0)), _ref(G, t, c(0)), Z[t])), Intrinsic("cp.async.wait_all", ()),
               Barrier(),
               For(e, 8, Store(O, (t, e), S[t, e])))
    return Kernel("zfill", (G, Z, O), Allocate(S, For(t, 8, body, "threadIdx.x")), target="cuda")


def bulk_load_kernel(n=256, off=64, dtype="float32"):
    """Thread 0 bulk-copies G[off:off+n] (no tensor map) into S completing on an mbarrier; all wait,
    then copy S out."""
    G, O = Buffer("G", (off + n + 32,), dtype), Buffer("O", (n,), dtype)
    S = Buffer("S_bulk", (n,), dtype, "shared")
    bar = Buffer("bar", (1,), "int64", "shared")
    t, e = Var("t"), Var("e")
    isz = 2 if dtype in ("float16", "bfloat16") else 4
    issue = seq(Intrinsic(mbarrier.ARRIVE_TX, (_ref(bar, 0), c(n * isz))),
                Intrinsic(tma.BULK_LOAD, (_ref(S, 0), _ref(bar, 0), _ref(G, c(off)), c(n * isz))))
    body = seq(IfThenElse(t.eq(0), Intrinsic(mbarrier.INIT, (_ref(bar, 0), c(1)))), Barrier(),
               IfThenElse(t.eq(0), issue), Intrinsic(mbarrier.WAIT, (_ref(bar, 0), c(0))),
               For(e, n // 32, Store(O, (t * (n // 32) + e,), S[t * (n // 32) + e])))
    return Kernel("bulk_load", (G, O), Allocate(S, Allocate(bar, For(t, 32, body, "threadIdx.x"))), target="cuda",
                  launch=Launch((1, 1, 1), (32, 1, 1)))
