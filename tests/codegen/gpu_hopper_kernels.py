"""Hand-written Hopper hello-world kernels as tessel IR, shared by the interpreter tests and the
H200 tests: each maker returns `(kernel, make_inputs, reference)`, where `make_inputs(rng)` gives
one numpy array per parameter (outputs filled with a sentinel) and `reference(inputs)` the
expected outputs computed with numpy, independently of the intrinsics' implementation.

`drop` removes the synchronisation a test wants to see fail ("wait", "barrier", ...).

(a) tma_swizzle: a TMA load of a 64x64 bf16 box into 128B-swizzled shared memory, completing on an
    mbarrier; every thread copies its part of the raw shared bytes out (so the output is the
    swizzled image).
(b) wgmma_tile: TMA loads of A (64x16) and B^T (128x16), then one wgmma m64n128k16 from descriptors.
(c) pipeline_ring: a producer warpgroup feeds a consumer warpgroup through a 2-stage mbarrier ring.
(d) cluster_multicast: a cluster of 2 CTAs, one multicast TMA load seen by both.
(e) atomic_splitk: split-K GEMV whose blocks reduce with red.global.add.f32.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from tessel.ir.intrinsics import mbarrier, tma, wgmma
from tessel.ir.nodes import (
    Allocate, Barrier, Buffer, BufferRef, Const, For, IfThenElse, Intrinsic, Kernel, Launch, Select, Store, Var, seq,
)

BF16 = ml_dtypes.bfloat16


def c(v, dt="int32"):
    return Const(v, dt)


def _ref(buf, *idx):
    return BufferRef(buf, tuple(idx))


def swizzled_image(tile: np.ndarray, swizzle: int) -> np.ndarray:
    """The shared-memory image of a row-major tile after the TMA swizzle, by the CUTLASS
    definition Swizzle<B,4,3> on byte offsets written out here: the 16-byte chunk index
    (bits 4..4+B) of each byte offset XORs with bits 7..7+B."""
    flat = tile.reshape(-1)
    isz = flat.dtype.itemsize
    out = np.empty_like(flat)
    bbits = {0: 0, 32: 1, 64: 2, 128: 3}[swizzle]
    for e in range(flat.size):
        off = e * isz
        row128, chunk = off >> 7, (off >> 4) & 7
        new_chunk = chunk ^ (row128 & ((1 << bbits) - 1)) if bbits else chunk
        new = (off & ~0x70) | (new_chunk << 4)
        out[new // isz] = flat[e]
    return out


def tma_swizzle(rows=64, cols=64, row0=8, col0=0, total_rows=100, drop=(), symbolic=False):
    """(a): one thread inits the barrier, expects the box's bytes and issues the TMA load of
    rows row0.. of A (rows past `total_rows` are out of bounds: zero-filled); all wait on parity
    0, then copy the raw shared image to O. `symbolic`: A's row count is a scalar parameter `n`
    (the first parameter; its value is `total_rows`), so one binary serves every n."""
    n = Var("n")
    A = Buffer("A", (n if symbolic else total_rows, cols), "bfloat16")
    O = Buffer("O", (rows * cols,), "bfloat16")
    S = Buffer("S_tile", (rows * cols,), "bfloat16", "shared")
    bar = Buffer("S_bar", (1,), "int64", "shared")
    t = Var("t")
    nt = 128
    per = rows * cols // nt
    e = Var("e")
    nbytes = rows * cols * 2
    issue = seq(Intrinsic(mbarrier.ARRIVE_TX, (_ref(bar, 0), c(nbytes))),
                Intrinsic(tma.tma_load_name(2), (_ref(S, 0), _ref(bar, 0), _ref(A, c(row0), c(col0)),
                                                  c(rows), c(cols), c(128))))
    body = [IfThenElse(t.eq(0), Intrinsic(mbarrier.INIT, (_ref(bar, 0), c(1))))]
    if "barrier" not in drop:
        body.append(Barrier())
    body.append(IfThenElse(t.eq(0), issue))
    if "wait" not in drop:
        body.append(Intrinsic(mbarrier.WAIT, (_ref(bar, 0), c(0))))
    body.append(For(e, per, Store(O, (t * per + e,), S[t * per + e])))
    k = Kernel("tma_swizzle_n" if symbolic else "tma_swizzle", ((n,) if symbolic else ()) + (A, O),
               Allocate(S, Allocate(bar, For(t, nt, seq(*body), "threadIdx.x"))),
               target="cuda", launch=Launch((1, 1, 1), (nt, 1, 1)))

    def inputs(rng):
        head = [np.int32(total_rows)] if symbolic else []
        return head + [rng.standard_normal((total_rows, cols)).astype(BF16), np.full(rows * cols, 7, BF16)]

    def reference(arrays):
        arrays = arrays[1:] if symbolic else arrays
        a = arrays[0].astype(np.float32)
        box = np.zeros((rows, cols), np.float32)
        valid = a[row0:row0 + rows, col0:col0 + cols]
        box[:valid.shape[0], :valid.shape[1]] = valid
        return ([None] if symbolic else []) + [None, swizzled_image(box.astype(BF16), 128)]

    return k, inputs, reference


def _acc_store(O, acc, t, n, col0=0):
    """Store a thread's m64nN accumulators to O (64 x n) by the wgmma accumulator layout, written
    out here from the PTX ISA figure (not taken from tessel.ir.intrinsics.wgmma)."""
    i = Var("acc_i")
    w, g, tt = t // 32, (t % 32) // 4, t % 4
    row = w * 16 + g + ((i // 2) % 2) * 8
    col = (i // 4) * 8 + tt * 2 + i % 2
    return For(i, n // 2, Store(O, (row, col + col0), acc[i]), "unrolled")


def wgmma_tile(n=128, k=64, b_major="k", dtype="bfloat16", drop=(), raw=False):
    """(b): TMA loads A (64 x k, K-major, 128B swizzle) and B (k x n as B^T [n][k] K-major, or as
    [k][n] MN-major), then k/16 wgmma m64nNk16 from descriptors (start advanced by 32 bytes per
    k-step inside the 128-byte swizzle atom), commit, wait, store D = A @ B (float32)."""
    npd = BF16 if dtype == "bfloat16" else np.float16
    A = Buffer("A", (64, k), dtype)
    Bg = Buffer("B", (n, k) if b_major == "k" else (k, n), dtype)
    O = Buffer("O", (64, n), "float32")
    SA = Buffer("SA", (64 * k,), dtype, "shared")
    SB = Buffer("SB", (n * k,), dtype, "shared")
    bar = Buffer("bar", (1,), "int64", "shared")
    acc = Buffer("acc", (n // 2,), "float32", "local")
    da = Buffer("da", (1,), "int64", "local")
    db = Buffer("db", (1,), "int64", "local")
    t = Var("t")
    atoms = k // 64  # 128-byte (64-element) swizzle atoms along K (K-major) or along N (MN-major)
    loads = []
    for j in range(k // 64):  # A: 64 rows x 64 k per atom, atom j at j * 8 KB
        loads.append(Intrinsic(tma.tma_load_name(2), (_ref(SA, c(j * 64 * 64)), _ref(bar, 0), _ref(A, c(0), c(64 * j)),
                                                       c(64), c(64), c(128))))
    if b_major == "k":
        for j in range(atoms):
            loads.append(Intrinsic(tma.tma_load_name(2), (_ref(SB, c(j * n * 64)), _ref(bar, 0),
                                                           _ref(Bg, c(0), c(64 * j)), c(n), c(64), c(128))))
    else:
        for j in range(n // 64):  # B [k][n]: atom j holds columns 64j.. for all k rows
            loads.append(Intrinsic(tma.tma_load_name(2), (_ref(SB, c(j * k * 64)), _ref(bar, 0),
                                                           _ref(Bg, c(0), c(64 * j)), c(k), c(64), c(128))))
    nbytes = (64 * k + n * k) * 2
    ks = Var("ks")
    if b_major == "k":
        # K-major, 128B swizzle: 8-row groups 1024 bytes apart; k-step = +32 bytes (+2 in the
        # descriptor) inside an atom, + the atom size at each 64-element boundary.
        a_step = (ks % 4) * 2 + (ks // 4) * (64 * 64 * 2 // 16)
        b_step = (ks % 4) * 2 + (ks // 4) * (n * 64 * 2 // 16)
        b_desc = Intrinsic(wgmma.DESC, (_ref(db, 0), _ref(SB, 0), c(16), c(1024), c(128)))
        tnsp_b = 0
    else:
        # MN-major, 128B swizzle: 8-k-row groups 1024 bytes apart (SBO), 64-column atoms k*128
        # bytes apart (LBO); a k-step of 16 rows = +2048 bytes.
        a_step = (ks % 4) * 2 + (ks // 4) * (64 * 64 * 2 // 16)
        b_step = ks * (16 * 128 // 16)
        b_desc = Intrinsic(wgmma.DESC, (_ref(db, 0), _ref(SB, 0), c(k * 128), c(1024), c(128)))
        tnsp_b = 1
    mma = Intrinsic(wgmma.wgmma_name(n, dtype), (_ref(acc, 0), da[0] + a_step.astype("int64"),
                                                 db[0] + b_step.astype("int64"), Select_(ks > 0), c(0), c(tnsp_b)))
    body = [IfThenElse(t.eq(0), Intrinsic(mbarrier.INIT, (_ref(bar, 0), c(1)))), Barrier(),
            IfThenElse(t.eq(0), seq(Intrinsic(mbarrier.ARRIVE_TX, (_ref(bar, 0), c(nbytes))), *loads))]
    if "wait" not in drop:
        body.append(Intrinsic(mbarrier.WAIT, (_ref(bar, 0), c(0))))
    body += [Intrinsic(wgmma.DESC, (_ref(da, 0), _ref(SA, 0), c(16), c(1024), c(128))), b_desc,
             Intrinsic(wgmma.FENCE, ()), For(ks, k // 16, mma, "unrolled"), Intrinsic(wgmma.COMMIT, ())]
    if "clobber" in drop:  # (a broken variant: rewrites A's tile while the wgmma may still read it)
        body.append(IfThenElse(t.eq(0), Store(SA, (c(0),), Const(1.0, dtype))))
    if "wgmma_wait" not in drop:
        body.append(Intrinsic(wgmma.WAIT, (c(0),)))
    if raw:  # each thread's registers as they are: O[t, i] = acc[i] (the layout itself is compared)
        i = Var("raw_i")
        O = Buffer("O", (128, n // 2), "float32")
        store = For(i, n // 2, Store(O, (t, i), acc[i]), "unrolled")
    else:
        store = _acc_store(O, acc, t, n)
    body += [Intrinsic(wgmma.fence_acc_name(n), (_ref(acc, 0),)), store]
    inner = For(t, 128, Allocate(acc, Allocate(da, Allocate(db, seq(*body)))), "threadIdx.x")
    kern = Kernel(f"wgmma_m64n{n}k{k}_{b_major}{'_raw' if raw else ''}", (A, Bg, O),
                  Allocate(SA, Allocate(SB, Allocate(bar, inner))), target="cuda",
                  launch=Launch((1, 1, 1), (128, 1, 1)))

    def inputs(rng):
        return [rng.standard_normal((64, k)).astype(npd), rng.standard_normal(Bg.shape).astype(npd),
                np.full(O.shape, 7, np.float32)]

    def reference(arrays):
        a = arrays[0].astype(np.float64)
        b = arrays[1].astype(np.float64)
        return [None, None, (a @ (b.T if b_major == "k" else b)).astype(np.float32)]

    return kern, inputs, reference


def Select_(cond):
    return Select(cond, c(1), c(0))


def pipeline_ring(tiles=4, n=64, stages=2, drop=(), regs=None):
    """(c): warpgroup 0 (its thread 0) produces, warpgroup 1 consumes, through a `stages`-deep ring
    of shared (A, B^T) tiles guarded by full / empty mbarriers: C (64 x n) = A (64 x 64 tiles) @ B.
    Producer, for tile kt in stage s = kt % stages: wait empty[s] (parity starts at 1, so the
    first round passes), arrive.expect_tx(full[s]), two TMA loads. Consumer: wait full[s], four
    wgmma k-steps, commit, wait, then its thread 0 arrives on empty[s]."""
    k = 64 * tiles
    A = Buffer("A", (64, k), "bfloat16")
    Bt = Buffer("B", (n, k), "bfloat16")
    O = Buffer("O", (64, n), "float32")
    SA = Buffer("SA", (stages * 64 * 64,), "bfloat16", "shared")
    SB = Buffer("SB", (stages * n * 64,), "bfloat16", "shared")
    full = Buffer("full", (stages,), "int64", "shared")
    empty = Buffer("empty", (stages,), "int64", "shared")
    acc = Buffer("acc", (n // 2,), "float32", "local")
    da = Buffer("da", (1,), "int64", "local")
    db = Buffer("db", (1,), "int64", "local")
    t, kt, ks, s_ = Var("t"), Var("kt"), Var("ks"), Var("st")
    nbytes = (64 * 64 + n * 64) * 2
    stage = kt % stages
    parity = (kt // stages) % 2
    init = For(s_, stages, seq(Intrinsic(mbarrier.INIT, (_ref(full, s_), c(1))),
                               Intrinsic(mbarrier.INIT, (_ref(empty, s_), c(1)))))
    produce = []
    if "empty_wait" not in drop:
        produce.append(Intrinsic(mbarrier.WAIT, (_ref(empty, stage), (parity + 1) % 2)))
    produce += [Intrinsic(mbarrier.ARRIVE_TX, (_ref(full, stage), c(nbytes))),
                Intrinsic(tma.tma_load_name(2), (_ref(SA, stage * 4096), _ref(full, stage), _ref(A, c(0), kt * 64),
                                                  c(64), c(64), c(128))),
                Intrinsic(tma.tma_load_name(2), (_ref(SB, stage * (n * 64)), _ref(full, stage),
                                                  _ref(Bt, c(0), kt * 64), c(n), c(64), c(128)))]
    producer = IfThenElse(t.eq(0), For(kt, tiles, seq(*produce)))
    if regs is not None:  # warp specialisation's register split: the producer gives, the consumer takes
        producer = seq(Intrinsic("setmaxnreg.dec.sync.aligned.u32", (c(regs[0]),)), producer)
    mma = Intrinsic(wgmma.wgmma_name(n, "bfloat16"), (_ref(acc, 0), da[0] + (ks * 2).astype("int64"),
                                                      db[0] + (ks * 2).astype("int64"),
                                                      Select((kt > 0) | (ks > 0), c(1), c(0)), c(0), c(0)))
    consume = []
    if "full_wait" not in drop:
        consume.append(Intrinsic(mbarrier.WAIT, (_ref(full, stage), parity)))
    consume += [Intrinsic(wgmma.DESC, (_ref(da, 0), _ref(SA, stage * 4096), c(16), c(1024), c(128))),
                Intrinsic(wgmma.DESC, (_ref(db, 0), _ref(SB, stage * (n * 64)), c(16), c(1024), c(128))),
                Intrinsic(wgmma.FENCE, ()), For(ks, 4, mma, "unrolled"), Intrinsic(wgmma.COMMIT, ()),
                Intrinsic(wgmma.WAIT, (c(0),))]
    if "empty_arrive" not in drop:
        consume.append(IfThenElse((t - 128).eq(0), Intrinsic(mbarrier.ARRIVE, (_ref(empty, stage),))))
    consumer = seq(For(kt, tiles, seq(*consume)), Intrinsic(wgmma.fence_acc_name(n), (_ref(acc, 0),)),
                   _acc_store(O, acc, t - 128, n))
    if regs is not None:
        consumer = seq(Intrinsic("setmaxnreg.inc.sync.aligned.u32", (c(regs[1]),)), consumer)
    body = [IfThenElse(t.eq(0), init)]
    if "barrier" not in drop:
        body.append(Barrier())
    body.append(IfThenElse(t < 128, producer, Allocate(acc, Allocate(da, Allocate(db, consumer)))))
    kern = Kernel(f"ring{stages}_m64n{n}_t{tiles}{'_regs' if regs else ''}", (A, Bt, O),
                  Allocate(SA, Allocate(SB, Allocate(full, Allocate(empty, For(t, 256, seq(*body), "threadIdx.x"))))),
                  target="cuda", launch=Launch((1, 1, 1), (256, 1, 1)))

    def inputs(rng):
        return [rng.standard_normal((64, k)).astype(BF16), rng.standard_normal((n, k)).astype(BF16),
                np.full((64, n), 7, np.float32)]

    def reference(arrays):
        return [None, None, (arrays[0].astype(np.float64) @ arrays[1].astype(np.float64).T).astype(np.float32)]

    return kern, inputs, reference


def cluster_multicast(drop=(), remote_arrive=False):
    """(d): a cluster of 2 CTAs; CTA r TMA-loads rows 32r .. 32r+31 of A (64 x 64 bf16, 128B
    swizzle) and multicasts them to both CTAs (mask 0b11), so each CTA's barrier completes on both
    halves (8 KB). Each CTA then copies its shared image to O[r]."""
    A = Buffer("A", (64, 64), "bfloat16")
    O = Buffer("O", (2, 64 * 64), "bfloat16")
    S = Buffer("S_tile", (64 * 64,), "bfloat16", "shared")
    bar = Buffer("S_bar", (1,), "int64", "shared")
    b, t, e = Var("b"), Var("t"), Var("e")
    per = 64 * 64 // 128
    done = Buffer("S_done", (1,), "int64", "shared")
    body = [IfThenElse(t.eq(0), seq(Intrinsic(mbarrier.INIT, (_ref(bar, 0), c(1))),
                                    Intrinsic(mbarrier.INIT, (_ref(done, 0), c(1))),
                                    Intrinsic(mbarrier.FENCE_INIT, ())))]
    if "cluster_sync" not in drop:
        body += [Intrinsic("barrier.cluster.arrive", ()), Intrinsic("barrier.cluster.wait", ())]
    body.append(IfThenElse(t.eq(0), seq(
        Intrinsic(mbarrier.ARRIVE_TX, (_ref(bar, 0), c(64 * 64 * 2))),
        Intrinsic(tma.tma_load_name(2, multicast=True), (_ref(S, b * (32 * 64)), _ref(bar, 0), _ref(A, b * 32, c(0)),
                                                          c(32), c(64), c(128), c(3))))))
    if "wait" not in drop:
        body.append(Intrinsic(mbarrier.WAIT, (_ref(bar, 0), c(0))))
    body.append(For(e, per, Store(O, (b, t * per + e), S[t * per + e])))
    if remote_arrive:  # leave together: each CTA tells the other (mapa + remote arrive) that it is done
        body.append(IfThenElse(t.eq(0), seq(*([] if "remote_arrive" in drop else
                                               [Intrinsic(mbarrier.ARRIVE_CLUSTER, (_ref(done, 0), 1 - b))]),
                                            Intrinsic(mbarrier.WAIT, (_ref(done, 0), c(0))))))
    else:
        body += [Intrinsic("barrier.cluster.arrive", ()), Intrinsic("barrier.cluster.wait", ())]
    k = Kernel("cluster_multicast" + ("_remote" if remote_arrive else ""), (A, O),
               For(b, 2, Allocate(S, Allocate(bar, Allocate(done, For(t, 128, seq(*body), "threadIdx.x")))),
                   "blockIdx.x"),
               target="cuda", launch=Launch((2, 1, 1), (128, 1, 1), cluster=(2, 1, 1)))

    def inputs(rng):
        return [rng.standard_normal((64, 64)).astype(BF16), np.full((2, 64 * 64), 7, BF16)]

    def reference(arrays):
        img = swizzled_image(arrays[0], 128)
        return [None, np.stack([img, img])]

    return k, inputs, reference


def atomic_splitk(m=128, k=256, splits=4, drop=()):
    """(e): y = y0 + A @ x with K split over `splits` blocks; thread t of block s sums its row's
    slice s in a register and adds it to y[t] with red.add.f32 (drop "atomic": a plain
    load-add-store, which races between blocks)."""
    A = Buffer("A", (m, k), "float32")
    x = Buffer("x", (k,), "float32")
    y = Buffer("y", (m,), "float32")
    acc = Buffer("acc", (1,), "float32", "local")
    s, t, j = Var("s"), Var("t"), Var("j")
    kk = k // splits
    add = (Store(y, (t,), y[t] + acc[0]) if "atomic" in drop
           else Intrinsic("red.add.f32", (_ref(y, t), acc[0])))
    body = Allocate(acc, seq(Store(acc, (c(0),), Const(0.0, "float32")),
                             For(j, kk, Store(acc, (c(0),), acc[0] + A[t, s * kk + j] * x[s * kk + j])), add))
    kern = Kernel("atomic_splitk", (A, x, y), For(s, splits, For(t, m, body, "threadIdx.x"), "blockIdx.x"),
                  target="cuda", launch=Launch((splits, 1, 1), (m, 1, 1)))

    def inputs(rng):
        return [rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal(k).astype(np.float32),
                rng.standard_normal(m).astype(np.float32)]

    def reference(arrays):
        a, xv, y0 = (v.astype(np.float64) for v in arrays)
        return [None, None, (y0 + a @ xv).astype(np.float32)]

    return kern, inputs, reference


def named_barrier_handoff(rounds=3):
    """Warp-specialised handoff without mbarriers: warps 0-1 (64 threads) write a tile of S and
    bar.arrive on barrier 1 (count 128); warps 2-3 bar.sync on it, read S, write O; then the roles
    swap direction through barrier 2 so the producers can overwrite S in the next round."""
    A = Buffer("A", (rounds, 64), "float32")
    O = Buffer("O", (rounds, 64), "float32")
    S = Buffer("S_nb", (64,), "float32", "shared")
    t, r = Var("t"), Var("r")
    prod = seq(Intrinsic("bar.sync", (c(2), c(128))), Store(S, (t,), A[r, t] * 3.0),
               Intrinsic("bar.arrive", (c(1), c(128))))
    cons = seq(Intrinsic("bar.sync", (c(1), c(128))), Store(O, (r, t - 64), S[t - 64]),
               IfThenElse(r < rounds - 1, Intrinsic("bar.arrive", (c(2), c(128)))))  # none left pending at exit
    first = IfThenElse(t >= 64, Intrinsic("bar.arrive", (c(2), c(128))))  # the slot starts empty
    body = seq(first, For(r, rounds, IfThenElse(t < 64, prod, cons)))
    kern = Kernel("named_barrier_handoff", (A, O), Allocate(S, For(t, 128, body, "threadIdx.x")), target="cuda",
                  launch=Launch((1, 1, 1), (128, 1, 1)))

    def inputs(rng):
        return [rng.standard_normal((rounds, 64)).astype(np.float32), np.full((rounds, 64), 7, np.float32)]

    def reference(arrays):
        return [None, (arrays[0].astype(np.float64) * 3).astype(np.float32)]

    return kern, inputs, reference


def builder_gemm_tile(n=128, b_major="mn", k=128):
    """The GEMM tile of one warpgroup built with tessel.ir.intrinsics.hopper_ir: TMA loads of A
    (64 x k, K-major) and B (K-major B^T or MN-major), k/16 wgmma steps with advanced
    descriptors, the epilogue store guarded to C (60 x n-3)."""
    from tessel.ir.intrinsics import hopper_ir as hi


    A = Buffer("A", (64, k), "bfloat16")
    B = Buffer("B", (n, k) if b_major == "k" else (k, n), "bfloat16")
    m_out, n_out = 60, n - 3  # the epilogue's guard keeps the store inside C
    C = Buffer("C", (m_out, n_out), "float32")
    SA, SB = Buffer("SA", (64 * k,), "bfloat16", "shared"), Buffer("SB", (n * k,), "bfloat16", "shared")
    bar = Buffer("bar", (1,), "int64", "shared")
    acc = Buffer("acc", (n // 2,), "float32", "local")
    da, db = Buffer("da", (1,), "int64", "local"), Buffer("db", (1,), "int64", "local")
    t, ks = Var("t"), Var("ks")
    loads = [hi.tma_load(SA, j * 64 * 64, bar, 0, A, (0, 64 * j), (64, 64)) for j in range(k // 64)]
    if b_major == "k":
        loads += [hi.tma_load(SB, j * n * 64, bar, 0, B, (0, 64 * j), (n, 64)) for j in range(k // 64)]
        bdesc = hi.smem_desc(db, SB, 0, "k", 128)
    else:
        loads += [hi.tma_load(SB, j * k * 64, bar, 0, B, (0, 64 * j), (k, 64)) for j in range(n // 64)]
        bdesc = hi.smem_desc(db, SB, 0, "mn", 128, k_rows=k)
    mma = hi.wgmma_ss(acc, hi.desc_plus(da[0], hi.k_step_bytes("k", 128, ks, 64)),
                      hi.desc_plus(db[0], hi.k_step_bytes(b_major, 128, ks, n)), n, "bfloat16", ks > 0,
                      tnsp_b=int(b_major == "mn"))
    body = seq(IfThenElse(t.eq(0), hi.mbar_init(bar, 0, 1)), Barrier(),
               IfThenElse(t.eq(0), seq(hi.mbar_arrive_tx(bar, 0, (64 + n) * k * 2), *loads)),
               hi.mbar_wait(bar, 0, 0), hi.smem_desc(da, SA, 0, "k", 128), bdesc, hi.wgmma_fence(),
               For(ks, k // 16, mma, "unrolled"), hi.wgmma_commit(), hi.wgmma_wait(0), hi.fence_acc(acc, n),
               hi.acc_store(C, acc, t, n, rows=m_out, cols=n_out))
    kern = Kernel("hi_gemm", (A, B, C), Allocate(SA, Allocate(SB, Allocate(bar, For(t, 128, Allocate(
        acc, Allocate(da, Allocate(db, body))), "threadIdx.x")))), target="cuda", launch=Launch((1, 1, 1), (128, 1, 1)))

    def inputs(rng):
        return [rng.standard_normal(A.shape).astype(BF16), rng.standard_normal(B.shape).astype(BF16),
                np.full(C.shape, 7, np.float32)]

    def reference(arrays):
        a, b = arrays[0].astype(np.float64), arrays[1].astype(np.float64)
        full = a @ (b.T if b_major == "k" else b)
        return [None, None, full[:m_out, :n_out].astype(np.float32)]

    return kern, inputs, reference


def ws_gemm_tile(n=128, k_tiles=4, stages=3, m_out=60, drop=()):
    """A warp-specialised GEMM tile from tessel.ir.intrinsics.hopper_ir's ring and epilogue
    builders: warpgroup 0's thread 0 produces TMA loads of A (64 x 64) and B^T (n x 64) tiles into a
    `stages`-deep ring, warpgroup 1 consumes them with 4 wgmma k-steps per tile, then converts
    its accumulators to bf16, stmatrix-es them into a 128B-swizzled shared tile, fences, syncs
    its warpgroup (named barrier 1) and TMA-stores C (rows past `m_out` clipped by the TMA)."""
    from tessel.ir.intrinsics import hopper_ir as hi

    k = 64 * k_tiles
    A = Buffer("A", (64, k), "bfloat16")
    B = Buffer("B", (n, k), "bfloat16")
    C = Buffer("C", (m_out, n), "bfloat16")
    SA = Buffer("SA", (stages * 4096,), "bfloat16", "shared")
    SB = Buffer("SB", (stages * n * 64,), "bfloat16", "shared")
    CS = Buffer("CS", (64 * n,), "bfloat16", "shared")
    full = Buffer("full", (stages,), "int64", "shared")
    empty = Buffer("empty", (stages,), "int64", "shared")
    acc = Buffer("acc", (n // 2,), "float32", "local")
    frag = Buffer("frag", (8,), "bfloat16", "local")
    da, db = Buffer("da", (1,), "int64", "local"), Buffer("db", (1,), "int64", "local")
    t, ks, s_ = Var("t"), Var("ks"), Var("s_init")
    lane = t - 128

    def loads(kt, s):
        return [hi.tma_load(SA, s * 4096, full, s, A, (0, kt * 64), (64, 64)),
                hi.tma_load(SB, s * (n * 64), full, s, B, (0, kt * 64), (n, 64))]

    def compute(kt, s):
        mma = hi.wgmma_ss(acc, hi.desc_plus(da[0], ks * 32), hi.desc_plus(db[0], ks * 32), n, "bfloat16",
                          (kt > 0) | (ks > 0))
        return [hi.smem_desc(da, SA, s * 4096), hi.smem_desc(db, SB, s * (n * 64)), hi.wgmma_fence(),
                For(ks, 4, mma, "unrolled"), hi.wgmma_commit(), hi.wgmma_wait(0)]

    init = For(s_, stages, seq(hi.mbar_init(full, s_, 1), hi.mbar_init(empty, s_, 1)))
    producer = IfThenElse(t.eq(0), hi.ring_producer(k_tiles, stages, full, empty, (64 + n) * 64 * 2, loads))
    epilogue = [hi.fence_acc(acc, n), hi.epilogue_stmatrix(acc, frag, CS, lane, n), Intrinsic(tma.FENCE, ())]
    if "epilogue_sync" not in drop:
        epilogue.append(Intrinsic("bar.sync", (c(1), c(128))))
    epilogue.append(IfThenElse(lane.eq(0), seq(*hi.tma_store_tile(C, 0, 0, CS, n))))
    consumer = seq(hi.ring_consumer(k_tiles, stages, full, empty, compute, lane.eq(0)), *epilogue)
    body = seq(IfThenElse(t.eq(0), init), Barrier(),
               IfThenElse(t < 128, producer, Allocate(acc, Allocate(frag, Allocate(da, Allocate(db, consumer))))))
    kern = Kernel(f"ws_gemm_n{n}_s{stages}", (A, B, C),
                  Allocate(SA, Allocate(SB, Allocate(CS, Allocate(full, Allocate(empty, For(t, 256, body,
                                                                                          "threadIdx.x")))))),
                  target="cuda", launch=Launch((1, 1, 1), (256, 1, 1)))

    def inputs(rng):
        return [rng.standard_normal(A.shape).astype(BF16), rng.standard_normal(B.shape).astype(BF16),
                np.full(C.shape, 7, BF16)]

    def reference(arrays):
        full_c = arrays[0].astype(np.float64) @ arrays[1].astype(np.float64).T
        return [None, None, full_c[:m_out].astype(np.float32).astype(BF16)]

    return kern, inputs, reference


# per-intrinsic kernels live in gpu_hopper_parts (re-exported here for the tests)
from tests.codegen.gpu_hopper_parts import (  # noqa: E402, F401
    MODES, atomic_kernel, k_major_offsets, mn_major_offsets, place, stmatrix_warp, tma_box_kernel, wgmma_image_kernel,
    bulk_load_kernel, zfill_kernel,
)


def attention_tile(n_kv=64, d=64):
    """Attention's two chained products in one warpgroup, without softmax: S = Q K^T (SS wgmma,
    m64n{n_kv}k16 over d), P = bf16(S) kept in registers as the A operand (hopper_ir.acc_to_a_fragment),
    O = P V (RS wgmma m64n{d}k16 over n_kv, V MN-major as stored [kv][d])."""
    from tessel.ir.intrinsics import hopper_ir as hi

    Q, K, V = Buffer("Q", (64, d), "bfloat16"), Buffer("K", (n_kv, d), "bfloat16"), Buffer("V", (n_kv, d), "bfloat16")
    O = Buffer("O", (64, d), "float32")
    SQ, SK = Buffer("SQ", (64 * d,), "bfloat16", "shared"), Buffer("SK", (n_kv * d,), "bfloat16", "shared")
    SV = Buffer("SV", (n_kv * d,), "bfloat16", "shared")
    bar = Buffer("bar", (1,), "int64", "shared")
    s_acc, o_acc = Buffer("s_acc", (n_kv // 2,), "float32", "local"), Buffer("o_acc", (d // 2,), "float32", "local")
    frag = Buffer("pfrag", (8,), "bfloat16", "local")
    dq, dk, dv = (Buffer(f"d{x}", (1,), "int64", "local") for x in "qkv")
    t, ks, kk = Var("t"), Var("ks"), Var("kk")
    loads = [hi.tma_load(SQ, 0, bar, 0, Q, (0, 0), (64, 64)), hi.tma_load(SK, 0, bar, 0, K, (0, 0), (n_kv, 64)),
             hi.tma_load(SV, 0, bar, 0, V, (0, 0), (n_kv, 64))]
    qk = hi.wgmma_ss(s_acc, hi.desc_plus(dq[0], ks * 32), hi.desc_plus(dk[0], ks * 32), n_kv, "bfloat16", ks > 0)
    pv = hi.wgmma_rs(o_acc, frag, hi.desc_plus(dv[0], kk * 16 * 128), d, "bfloat16", kk > 0, tnsp_b=1)
    body = seq(IfThenElse(t.eq(0), hi.mbar_init(bar, 0, 1)), Barrier(),
               IfThenElse(t.eq(0), seq(hi.mbar_arrive_tx(bar, 0, (64 + 2 * n_kv) * d * 2), *loads)),
               hi.mbar_wait(bar, 0, 0), hi.smem_desc(dq, SQ, 0), hi.smem_desc(dk, SK, 0),
               hi.smem_desc(dv, SV, 0, "mn", 128, k_rows=n_kv), hi.wgmma_fence(), For(ks, d // 16, qk, "unrolled"),
               hi.wgmma_commit(), hi.wgmma_wait(0), hi.fence_acc(s_acc, n_kv),
               For(kk, n_kv // 16, seq(hi.acc_to_a_fragment(s_acc, frag, kk), hi.wgmma_fence(), pv,
                                       hi.wgmma_commit(), hi.wgmma_wait(0)), "unrolled"),
               hi.fence_acc(o_acc, d), hi.acc_store(O, o_acc, t, d))
    regs = Allocate(s_acc, Allocate(o_acc, Allocate(frag, Allocate(dq, Allocate(dk, Allocate(dv, body))))))
    kern = Kernel(f"attn_tile_kv{n_kv}", (Q, K, V, O),
                  Allocate(SQ, Allocate(SK, Allocate(SV, Allocate(bar, For(t, 128, regs, "threadIdx.x"))))),
                  target="cuda", launch=Launch((1, 1, 1), (128, 1, 1)))

    def inputs(rng):
        return [rng.standard_normal(Q.shape).astype(BF16), rng.standard_normal(K.shape).astype(BF16),
                rng.standard_normal(V.shape).astype(BF16), np.full(O.shape, 7, np.float32)]

    def reference(arrays):
        q, k, v = (a.astype(np.float64) for a in arrays[:3])
        p = (q @ k.T).astype(np.float32).astype(BF16).astype(np.float64)  # P rounded to bf16, as in registers
        return [None, None, None, (p @ v).astype(np.float32)]

    return kern, inputs, reference
